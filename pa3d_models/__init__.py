"""pa3d_models: the PatchAlign3D model and its registry, text encoders and text banks, 2D teacher encoders,
checkpoints (pa3d's own format, the official converter, hub resolution) and zero-shot ``segment()``.

Flat re-exports: ``from pa3d_models import create_model, OpenCLIPTextEncoder, load_official_checkpoint``.
"""

from . import deps, files  # noqa: E402, F401
from .checkpoint import (  # noqa: E402
    PretrainedMixin,
    check_state_dict,
    file_sha256,
    load_torch_file,
    load_weights,
    read_config,
    read_metadata,
    resolve_checkpoint,
    save_pretrained,
)
from .deps import MissingDependencyError  # noqa: E402
from .loaders import (  # noqa: E402
    CheckpointOrigin,
    InitReport,
    init_from_checkpoint,
    load_checkpoint,
    load_official_checkpoint,
    load_pretrained,
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
from .teachers import (  # noqa: E402
    TEACHERS,
    DINOv2Teacher,
    MissingWeightsError,
    Teacher,
    TinyTeacher,
    build_teacher,
    default_weights_path,
)
from .text import (  # noqa: E402
    DEFAULT_TEMPLATES,
    BaseTextEncoder,
    FixedTextEncoder,
    OpenCLIPTextEncoder,
    SentenceTransformerTextEncoder,
    TextBank,
    TextEncoder,
    check_text_features,
    clean_part_name,
    resolve_text_encoder,
    text_embeddings,
)
from .version import __version__  # noqa: E402, F401

__all__ = [
    "files",
    "deps",
    "MissingDependencyError",
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
    "check_text_features",
    "save_pretrained",
    "PretrainedMixin",
    "read_config",
    "load_weights",
    "load_pretrained",
    "load_official_checkpoint",
    "load_checkpoint",
    "resolve_checkpoint",
    "read_metadata",
    "load_torch_file",
    "file_sha256",
    "check_state_dict",
    "init_from_checkpoint",
    "InitReport",
    "CheckpointOrigin",
    "Teacher",
    "DINOv2Teacher",
    "TinyTeacher",
    "build_teacher",
    "TEACHERS",
    "default_weights_path",
    "MissingWeightsError",
]
