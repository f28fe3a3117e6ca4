"""Part-annotated data for pa3d: the embedded synthetic dataset, loaders for the real benchmark formats,
single-shape readers, fixed-size sampling, transforms and collate functions.

Every dataset returns `PartSample`s; `collate_dense` / `collate_ragged` batch them into the dicts the losses
and models read; `build_dataset(name)` picks a dataset by name.
"""

from .base import PartDataset, item_generator
from .collate import collate_dense, collate_ragged
from .find3d import Find3DDataset, merge_named_masks
from .lpsb import LPSB_CATEGORIES, LPSB_TEXT_MAP, LPSBDataset, read_lpsb_labels
from .others import (
    SCANOBJECTNN_CATEGORIES,
    SCANOBJECTNN_PART_REMAP,
    FaustNpzDataset,
    ObjaverseGeneralDataset,
    ScanObjectNNPartDataset,
)
from .partnet import PartNetDataset, PartNetEDataset, partnet_node_names
from .readers import (
    Mesh,
    SurfaceSampler,
    read_mesh,
    read_obj,
    read_off,
    read_pcd,
    read_ply,
    read_points,
    read_shape,
    read_table,
    sample_surface,
)
from .registry import DATA_SUBDIRS, DATASETS, build_dataset, default_data_root
from .sample import DataFormatError, PartSample, prompt_names, readable_part_name
from .sampling import (
    FPSSample,
    MaskAwareSample,
    RandomSample,
    fps_indices,
    fps_sample,
    mask_aware_indices,
    mask_aware_sample,
    random_indices,
    random_sample,
)
from .shapenetpart import (
    SHAPENETPART_CATEGORIES,
    SHAPENETPART_FIND3D_NAMES,
    SHAPENETPART_PART_NAMES,
    SHAPENETPART_SEG_CLASSES,
    ShapeNetPartDataset,
)
from .splits import (
    LPSB_CROSS_CATEGORY,
    CategorySplit,
    check_category_split,
    load_category_split,
    save_category_split,
    select_categories,
    shared_part_names,
)
from .synthetic import (
    SYNTHETIC_HELDOUT_CATEGORIES,
    SYNTHETIC_PART_NAMES,
    SYNTHETIC_TRAIN_CATEGORIES,
    SYNTHETIC_VERSION,
    SyntheticPartDataset,
    generate_synthetic,
    synthetic_shape,
)
from .transforms import (
    AUGMENTATIONS,
    AxisPermutation,
    Compose,
    Find3DAxes,
    NormalizeBox,
    NormalizeUnitSphere,
    RandomApply,
    RandomAxisRotation,
    RandomJitter,
    RandomRotation,
    RandomScale,
    RandomSO3Rotation,
    RandomTranslate,
    SwapYZ,
    Transform,
    UpAxis,
    axis_rotation_matrix,
    build_augmentation,
    euler_rotation_matrix,
    normalize_box,
    normalize_unit_sphere,
    official_augmentation,
    random_rotation_matrix,
    real_mesh_augmentation,
    swap_yz,
    up_axis_matrix,
)
from .utils import LabelNoise, PartSubset, category_names, corrupt_labels, split_by_category
from .writers import (
    UP_AXIS_ROTATIONS,
    heatmap_colors,
    read_glb,
    write_glb,
    write_npz,
    write_ply_mesh,
    write_ply_points,
)

__all__ = [
    # cross-category splits
    "CategorySplit", "LPSB_CROSS_CATEGORY", "load_category_split", "save_category_split", "check_category_split",
    "select_categories", "shared_part_names",
    # training-run helpers
    "corrupt_labels", "LabelNoise", "PartSubset", "split_by_category", "category_names",
    # samples and base
    "PartSample", "DataFormatError", "readable_part_name", "prompt_names", "PartDataset", "item_generator",
    # datasets
    "SyntheticPartDataset", "ShapeNetPartDataset", "LPSBDataset", "PartNetDataset", "PartNetEDataset",
    "ScanObjectNNPartDataset", "ObjaverseGeneralDataset", "Find3DDataset", "FaustNpzDataset",
    "DATASETS", "DATA_SUBDIRS", "build_dataset", "default_data_root",
    # dataset helpers and constants
    "generate_synthetic", "synthetic_shape", "SYNTHETIC_PART_NAMES", "SYNTHETIC_TRAIN_CATEGORIES",
    "SYNTHETIC_HELDOUT_CATEGORIES", "SYNTHETIC_VERSION", "SHAPENETPART_CATEGORIES", "SHAPENETPART_PART_NAMES",
    "SHAPENETPART_FIND3D_NAMES", "SHAPENETPART_SEG_CLASSES", "LPSB_CATEGORIES", "LPSB_TEXT_MAP",
    "read_lpsb_labels", "partnet_node_names", "merge_named_masks", "SCANOBJECTNN_CATEGORIES",
    "SCANOBJECTNN_PART_REMAP",
    # readers
    "read_shape", "read_mesh", "read_off", "read_obj", "read_points", "read_pcd", "read_ply", "read_table",
    "sample_surface", "SurfaceSampler", "Mesh",
    # sampling
    "random_indices", "fps_indices", "mask_aware_indices", "random_sample", "fps_sample", "mask_aware_sample",
    "RandomSample", "FPSSample", "MaskAwareSample",
    # transforms
    "normalize_unit_sphere", "normalize_box", "swap_yz", "euler_rotation_matrix", "up_axis_matrix", "Transform",
    "Compose", "RandomApply", "NormalizeUnitSphere", "NormalizeBox", "SwapYZ", "AxisPermutation", "Find3DAxes",
    "UpAxis", "RandomRotation", "RandomScale", "RandomTranslate", "RandomJitter", "official_augmentation",
    "random_rotation_matrix", "axis_rotation_matrix", "RandomSO3Rotation", "RandomAxisRotation",
    "real_mesh_augmentation", "AUGMENTATIONS", "build_augmentation",
    # batching
    "collate_dense", "collate_ragged",
    # writers (labelled meshes and points)
    "write_glb", "write_ply_mesh", "write_ply_points", "write_npz", "read_glb", "heatmap_colors",
    "UP_AXIS_ROTATIONS",
]
