"""pa3d_train: the training engine and everything around a run.

The way ``open_clip_train`` sits beside ``open_clip``: the engine (:func:`fit`, one epoch loop for both stages
with DDP, AMP and its scaler, exact resume, learning-rate schedules, time budgets, logging), configuration
(:func:`resolve_config`: YAML defaults < preset < command line), the stage drivers, the evaluation driver,
metrics, reports and figures, and :func:`main`/:func:`run` for a whole PatchAlign3D run. Recipes compose
these; nothing here imports a recipe.

Flat re-exports: ``from pa3d_train import fit, main, evaluate_segmentation, instance_miou``.
"""

from .baselines import (
    baseline_markdown,
    one_label_labels,
    patch_ceiling_labels,
    patch_majority_labels,
    reference_baselines,
)
from .config import (
    COMMANDS,
    DEFAULTS,
    RESUME_KEYS,
    ConfigError,
    build_parser,
    check_config,
    import_user_module,
    load_yaml,
    presets,
    resolve_config,
    resolve_loss,
)
from .ema import ProgressEMA, check_ema_horizon
from .engine import (
    TRAINING_STATE_FORMAT,
    DistributedContext,
    FitResult,
    JsonlLogger,
    atomic_torch_save,
    check_resume,
    clean_stale_temporaries,
    fit,
    grouping_backend,
    init_distributed,
    load_training_state,
    param_groups,
    read_training_state,
    rng_state,
    save_training_state,
    seed_everything,
    set_rng_state,
)
from .evaluate import Candidates, evaluate_segmentation, segment_votes, write_prediction
from .finetune import check_init_checkpoint, finetune_markdown, finetune_summary, frozen_copy, init_for_finetuning
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
from .run import STAGES, main, run
from .schedule import SCHEDULES, Budget, RunProgress, format_duration, lr_factor, split_budget, warmup_cosine
from .seeds import mean_sd, parse_seeds, run_seeds, summarise_seeds
from .stages import (
    TrainingView,
    all_prompts,
    build_datasets,
    eval_candidates,
    evaluate_all,
    load_for_eval,
    make_collate,
    model_transform,
    new_model,
    stage1_teacher_dim,
    steps_per_epoch,
    teacher_targets,
    train_stage1,
    train_stage2,
)
from .viz import colorize_labels, part_palette, pca_rgb, save_feature_figure, save_part_figure

__all__ = [
    # reference baselines (patch ceiling, one-label predictor)
    "reference_baselines",
    "patch_ceiling_labels",
    "patch_majority_labels",
    "one_label_labels",
    "baseline_markdown",
    # several seeds
    "run_seeds",
    "parse_seeds",
    "mean_sd",
    "summarise_seeds",
    # engine
    "fit",
    "FitResult",
    "seed_everything",
    "atomic_torch_save",
    "save_training_state",
    "load_training_state",
    "read_training_state",
    "check_resume",
    "clean_stale_temporaries",
    "TRAINING_STATE_FORMAT",
    "JsonlLogger",
    "param_groups",
    "DistributedContext",
    "init_distributed",
    "grouping_backend",
    "rng_state",
    "set_rng_state",
    "ProgressEMA",
    "check_ema_horizon",
    # schedules and budgets
    "SCHEDULES",
    "lr_factor",
    "warmup_cosine",
    "split_budget",
    "Budget",
    "RunProgress",
    "format_duration",
    # configuration
    "COMMANDS",
    "DEFAULTS",
    "RESUME_KEYS",
    "ConfigError",
    "build_parser",
    "resolve_config",
    "check_config",
    "load_yaml",
    "presets",
    "resolve_loss",
    "import_user_module",
    # a whole run and its stages
    "main",
    "run",
    "STAGES",
    "model_transform",
    "build_datasets",
    "TrainingView",
    "make_collate",
    "all_prompts",
    "steps_per_epoch",
    "new_model",
    "teacher_targets",
    "stage1_teacher_dim",
    "train_stage1",
    "train_stage2",
    "load_for_eval",
    "eval_candidates",
    "evaluate_all",
    # fine-tuning from released or saved weights
    "init_for_finetuning",
    "check_init_checkpoint",
    "frozen_copy",
    "finetune_summary",
    "finetune_markdown",
    # evaluation and metrics
    "Candidates",
    "evaluate_segmentation",
    "segment_votes",
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
