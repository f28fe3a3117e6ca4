"""pa3d_models: the PatchAlign3D model, text encoders, checkpoints and zero-shot segmentation.

Flat re-exports: ``from pa3d_models import create_model, OpenCLIPTextEncoder, load_official_checkpoint``.
"""

__version__ = "0.1.0"

from . import data, metrics, reference, report, teacher, training, viz  # noqa: E402, F401 - subpackages and modules
from .checkpoint import (  # noqa: E402
    load_checkpoint,
    load_official_checkpoint,
    load_pretrained,
    resolve_checkpoint,
    save_pretrained,
)
from .evaluate import evaluate_segmentation  # noqa: E402
from .metrics import (  # noqa: E402
    IOU_CONVENTIONS,
    SegmentationMeter,
    category_miou,
    instance_miou,
    patch_accuracy,
    point_accuracy,
    shape_iou,
)
from .model import (  # noqa: E402
    MODELS,
    STAGE2_TRAINABLE,
    PatchAlign3D,
    PatchEncoder,
    SegmentResult,
    create_model,
    freeze_for_stage2,
    list_models,
    register_model,
)
from .text import (  # noqa: E402
    DEFAULT_TEMPLATES,
    BaseTextEncoder,
    FixedTextEncoder,
    OpenCLIPTextEncoder,
    SentenceTransformerTextEncoder,
    TextBank,
    TextEncoder,
    clean_part_name,
    resolve_text_encoder,
    text_embeddings,
)

__all__ = [
    "data",
    "teacher",
    "PatchEncoder",
    "PatchAlign3D",
    "SegmentResult",
    "MODELS",
    "register_model",
    "create_model",
    "list_models",
    "freeze_for_stage2",
    "STAGE2_TRAINABLE",
    "TextEncoder",
    "BaseTextEncoder",
    "OpenCLIPTextEncoder",
    "SentenceTransformerTextEncoder",
    "FixedTextEncoder",
    "DEFAULT_TEMPLATES",
    "resolve_text_encoder",
    "TextBank",
    "clean_part_name",
    "text_embeddings",
    "save_pretrained",
    "load_pretrained",
    "load_official_checkpoint",
    "load_checkpoint",
    "resolve_checkpoint",
    "evaluate_segmentation",
    "SegmentationMeter",
    "IOU_CONVENTIONS",
    "shape_iou",
    "instance_miou",
    "category_miou",
    "point_accuracy",
    "patch_accuracy",
]
