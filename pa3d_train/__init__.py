"""pa3d_train: the training engine and everything around a run.

The way ``open_clip_train`` sits beside ``open_clip``: the engine (an epoch loop used by both stages, DDP, AMP
with its scaler, exact resume, learning-rate schedules, time budgets, logging), configuration parsing, the
evaluation driver, metrics, reports and figures. Recipes compose these; nothing here imports a recipe.

Flat re-exports: ``from pa3d_train import evaluate_segmentation, instance_miou, init_distributed``.
"""

from .engine import (
    DistributedContext,
    JsonlLogger,
    atomic_torch_save,
    init_distributed,
    load_training_state,
    param_groups,
    rng_state,
    save_training_state,
    seed_everything,
    set_rng_state,
)
from .evaluate import Candidates, evaluate_segmentation, write_prediction
from .metrics import (
    IOU_CONVENTIONS,
    SegmentationMeter,
    category_miou,
    instance_miou,
    patch_accuracy,
    per_part_iou,
    point_accuracy,
    shape_iou,
)
from .report import miou_table, write_metrics, write_report
from .viz import colorize_labels, part_palette, pca_rgb, save_feature_figure, save_part_figure

__all__ = [
    # engine
    "seed_everything",
    "atomic_torch_save",
    "save_training_state",
    "load_training_state",
    "JsonlLogger",
    "param_groups",
    "DistributedContext",
    "init_distributed",
    "rng_state",
    "set_rng_state",
    # evaluation and metrics
    "Candidates",
    "evaluate_segmentation",
    "write_prediction",
    "IOU_CONVENTIONS",
    "SegmentationMeter",
    "shape_iou",
    "per_part_iou",
    "instance_miou",
    "category_miou",
    "point_accuracy",
    "patch_accuracy",
    # reports and figures
    "miou_table",
    "write_metrics",
    "write_report",
    "part_palette",
    "colorize_labels",
    "pca_rgb",
    "save_part_figure",
    "save_feature_figure",
]
