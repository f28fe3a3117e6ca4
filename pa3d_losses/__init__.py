"""pa3d_losses: PatchAlign3D's losses and label construction, swappable by name.

Every loss is a pure function plus a thin ``nn.Module`` called as ``loss(outputs, batch, *,
return_dict=False)`` (the protocol is documented in ``docs/losses.md``). Losses hold no parameters: the model
owns `LogitScaleBias` and passes its output in ``outputs``.
"""

from .ablations import (
    BatchNegativesSigmoidLoss,
    HardPatchLabelsSigmoidLoss,
    PointLevelSigmoidLoss,
    SoftmaxMultiPositiveLoss,
    batch_negatives_sigmoid_loss,
    point_level_sigmoid_loss,
    softmax_multi_positive_loss,
)
from .alignment import MultiPositiveSigmoidLoss, multi_positive_sigmoid_loss
from .combine import WeightedSum
from .distillation import CosineDistillationLoss, cosine_distillation_loss
from .labels import fractional_patch_labels, majority_patch_labels, match_teacher_targets
from .registry import LOSSES, build_loss, joint_loss, register_loss
from .scale import LogitScaleBias

__version__ = "0.1.0"

__all__ = [
    # label construction
    "fractional_patch_labels",
    "majority_patch_labels",
    "match_teacher_targets",
    # Stage 1
    "cosine_distillation_loss",
    "CosineDistillationLoss",
    # Stage 2
    "multi_positive_sigmoid_loss",
    "MultiPositiveSigmoidLoss",
    "LogitScaleBias",
    # ablations
    "batch_negatives_sigmoid_loss",
    "BatchNegativesSigmoidLoss",
    "softmax_multi_positive_loss",
    "SoftmaxMultiPositiveLoss",
    "point_level_sigmoid_loss",
    "PointLevelSigmoidLoss",
    "HardPatchLabelsSigmoidLoss",
    # registry and composition
    "LOSSES",
    "register_loss",
    "build_loss",
    "joint_loss",
    "WeightedSum",
]
