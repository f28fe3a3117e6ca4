"""pa3d_layers: ops and ``nn.Module``s on point clouds.

Grouping (FPS + kNN into patches), the PointNet patch tokenizer, the Transformer encoder,
patch-to-point propagation and the per-shape calibration of point-to-name scores. Every op is a function
plus a thin module; torch-cluster / torch-scatter are used when installed, with pure-PyTorch references
otherwise.
"""

from . import testing  # noqa: F401 (pa3d_layers.testing: property assertions)
from .calibration import CALIBRATIONS, PriorCorrection, name_prior, prior_correction
from .encoder import (
    Attention,
    DropPath,
    Mlp,
    PatchEmbedding,
    TransformerBlock,
    TransformerEncoder,
    drop_path,
    init_weights,
    to_dense_batch,
)
from .grouping import PatchGrouper, PatchGroups, fps, group_points, knn, num_groups_for
from .propagation import PROPAGATION_MODES, PatchToPointPropagation, propagate_to_points
from .scatter import scatter
from .tokenizer import PointNetTokenizer

__version__ = "0.1.0"

__all__ = [
    "fps",
    "knn",
    "group_points",
    "num_groups_for",
    "PatchGroups",
    "PatchGrouper",
    "PointNetTokenizer",
    "PatchEmbedding",
    "TransformerEncoder",
    "TransformerBlock",
    "to_dense_batch",
    "Attention",
    "Mlp",
    "drop_path",
    "DropPath",
    "init_weights",
    "propagate_to_points",
    "PatchToPointPropagation",
    "PROPAGATION_MODES",
    "prior_correction",
    "name_prior",
    "PriorCorrection",
    "CALIBRATIONS",
    "scatter",
]
