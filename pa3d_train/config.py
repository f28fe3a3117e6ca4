"""Run configuration: every key with its default, the command line, YAML files and presets, and validation.

Resolution order (later wins): :data:`DEFAULTS` < ``CONFIG_DIR/default.yaml`` < ``--preset NAME``
(``CONFIG_DIR/NAME.yaml``) < ``--config FILE`` < the command line. The result is one flat ``dict`` (the
"resolved configuration"), checked by :func:`check_config` before any work and written next to the
checkpoints once a resume has been accepted. A recipe passes its own ``config_dir`` (``recipes/configs``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pa3d_data import DATASETS
from pa3d_layers import CALIBRATIONS
from pa3d_losses import LOSSES, build_loss
from pa3d_models import MODELS, list_models
from pa3d_models.deps import require

from .ema import check_ema_horizon
from .schedule import SCHEDULES

__all__ = [
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
]

COMMANDS = ("all", "stage1", "stage2", "eval")
"""What a run does: both stages then evaluation, one stage, or evaluation of a checkpoint."""

#: Every configuration key and its library default (``recipes/configs/default.yaml`` holds the recipe's).
DEFAULTS: dict[str, Any] = {
    "out": "runs/patchalign3d",
    "dataset": "synthetic",
    "eval_dataset": None,
    "train_root": None,
    "eval_root": None,
    "dataset_option": {},
    "train_shapes": 420,
    "eval_shapes": 84,
    "heldout_shapes": 48,
    "train_split": None,
    "model": "patchalign3d_small",
    "model_option": {},
    "num_points": 1024,
    "normalize": "unit_sphere",
    "swap_yz": False,
    "num_groups": None,
    "group_size": None,
    "seed": 0,
    "device": None,
    "amp": "auto",
    "batch_size": 8,
    "num_workers": 0,
    "optimizer": "adamw",
    "weight_decay": 0.05,
    "lr_encoder": 5e-4,
    "lr_head": 2e-3,
    "lr_logit": 2e-3,
    "stage1_lr_encoder": 5e-4,
    "lr_schedule": "constant",
    "warmup": 0.0,
    "min_lr_factor": 0.0,
    "ema": None,
    "grad_clip": None,
    "bn_eval": False,
    "stage1_epochs": 8,
    "stage2_epochs": 20,
    "stage1_loss": "cosine_distillation",
    "loss": "multi_positive_sigmoid",
    "loss_args": {},
    "imports": [],
    "freeze_policy": "paper",
    "freeze_bn_stats": True,
    "scale_mode": "paper",
    "init_scale": 10.0,
    "init_bias": -2.0,
    "augment": False,
    "train_categories": [],
    "eval_categories": [],
    "split_file": None,
    "eval_num_points": None,
    "eval_votes": 1,
    "eval_calibration": "none",
    "baselines": True,
    "seeds": None,
    "label_noise": 0.0,
    "teacher": "dinov2_vits14",
    "teacher_weights": None,
    "teacher_cache": None,
    "views": 6,
    "image_size": 112,
    "teacher_size": 112,
    "text_model": "auto",
    "stage2_only": None,
    "assign": "nearest",
    "iou_convention": "strict",
    "max_minutes": None,
    # stage1 None: 1 after a pretrained teacher, 0.4 after a weight-free one (pa3d_train.run.budget_weights)
    "budget_weights": {"stage1": None, "stage2": 2.0, "stage2_only": 2.0, "eval": 1.0},
    "resume": False,
    "checkpoint_interval": 0.0,
    "stage1_checkpoint": None,
    "init_checkpoint": None,
    "reinit_text_head": False,
    "trust_checkpoint": False,
    "checkpoint": None,
    "tensorboard": False,
    "figures": 4,
    "debug": False,
}

#: Keys whose change makes a checkpoint useless for a resume: they change the model, the data the steps see,
#: the precision or the optimisation. Others (epochs, budgets, evaluation settings) may change.
RESUME_KEYS = (
    "model", "model_option", "optimizer", "num_points", "num_groups", "group_size", "dataset", "train_root",
    "train_split", "train_shapes", "dataset_option", "normalize", "swap_yz", "seed", "batch_size", "amp", "loss",
    "loss_args", "stage1_loss", "freeze_policy", "freeze_bn_stats", "bn_eval", "scale_mode", "init_scale",
    "init_bias", "label_noise", "augment", "text_model", "weight_decay", "lr_encoder", "lr_head", "lr_logit",
    "stage1_lr_encoder", "lr_schedule", "warmup", "min_lr_factor", "grad_clip", "teacher", "teacher_weights",
    "views", "image_size", "teacher_size", "init_checkpoint", "reinit_text_head", "train_categories",
    "eval_categories", "split_file",
)


class ConfigError(ValueError):
    """A setting that cannot work, found before any work starts (the message names the flag and the value)."""


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def load_yaml(path: str | Path, *, what: str = "--config") -> dict[str, Any]:
    """Read a YAML mapping of configuration keys; a clear :class:`ConfigError` for anything else."""
    yaml = require("yaml", "reading configuration files")

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path}: no such file")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{what} {path}: not valid YAML ({first})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {path}: expected a mapping of keys to values, got {type(loaded).__name__}")
    unknown = sorted(set(loaded) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"{what} {path}: unknown keys {unknown}; valid keys: {sorted(DEFAULTS)}")
    return loaded


def presets(config_dir: str | Path | None) -> dict[str, Path]:
    """Preset name -> YAML file: every ``*.yaml`` in ``config_dir`` except ``default.yaml``."""
    if config_dir is None or not Path(config_dir).is_dir():
        return {}
    return {p.stem: p for p in sorted(Path(config_dir).glob("*.yaml")) if p.stem != "default"}


def _key_value(text: str) -> tuple[str, Any]:
    yaml = require("yaml", "KEY=VALUE options")

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def _name_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _optional_float(text: str) -> float | None:
    if text.strip().lower() in ("none", "null", "off", ""):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {text!r}") from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"gamma\": 2}}', got {text!r}")
    return value


def build_parser(*, prog: str = "patchalign3d", description: str | None = None,
                 config_dir: str | Path | None = None) -> argparse.ArgumentParser:
    """The command line: one flag per configuration key (``--stage2-epochs`` sets ``stage2_epochs``)."""
    names = sorted(presets(config_dir))
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", choices=COMMANDS, default="all", help="what to run (default: all)")
    p.add_argument("--config", help="YAML file of settings (keys as below, with _ for -)")
    p.add_argument("--preset", choices=names or None, help=f"a named set of settings ({', '.join(names) or 'none'})")
    p.add_argument("--out", help="output folder (checkpoints, logs, metrics.json, report.md, figures)")
    p.add_argument("--debug", action="store_true", default=None, help="show tracebacks instead of one-line errors")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=sorted(DATASETS), help="dataset (default: synthetic, embedded)")
    g.add_argument("--train-root", help="training data root")
    g.add_argument("--eval-root", help="evaluation data root (default: the training root)")
    g.add_argument("--eval-dataset", choices=sorted(DATASETS), help="format of --eval-root (default: --dataset)")
    g.add_argument("--dataset-option", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="keyword of the dataset loader, e.g. class_choice=Cap (repeatable)")
    g.add_argument("--train-split", choices=["first_half", "second_half"],
                   help="train on one half of the shapes of each category of --train-root, evaluate on the other")
    g.add_argument("--train-shapes", type=int, help="synthetic: training shapes")
    g.add_argument("--eval-shapes", type=int, help="synthetic: held-out shapes of the training categories")
    g.add_argument("--heldout-shapes", type=int, help="synthetic: shapes of the held-out categories")
    g.add_argument("--num-points", type=int, help="points per training shape (N)")
    g.add_argument("--normalize", choices=["unit_sphere", "box", "none"],
                   help="real data: centre and scale before the model (predictions stay in file coordinates)")
    g.add_argument("--swap-yz", action=argparse.BooleanOptionalAction,
                   help="the official release's Y/Z swap (a reflection) before the model")
    g.add_argument("--augment", nargs="?", const="official", metavar="NAME",
                   help="training augmentation: auto (official for real data, none for synthetic), real (SO(3) "
                        "rotation, scale, jitter), real_up, official, so3, none; --augment alone = official")
    g.add_argument("--no-augment", dest="augment", action="store_const", const="none", help="no augmentation")
    g.add_argument("--train-categories", type=_name_list, metavar="A,B",
                   help="train on these categories only (default: all, or all but --eval-categories)")
    g.add_argument("--eval-categories", type=_name_list, metavar="A,B",
                   help="evaluate zero-shot on these categories, left out of training")
    g.add_argument("--split-file", help='JSON {"train": [...], "eval": [...]} (pa3d_data.load_category_split)')
    g.add_argument("--seeds", metavar="0,1,2",
                   help="run once per seed (OUT/seed_<s>) and report mean +- sd (OUT/seeds.md)")
    g.add_argument("--eval-num-points", type=int,
                   help="points per evaluated shape (default: --num-points for synthetic data, at least 2048 for real)")
    g.add_argument("--baselines", action=argparse.BooleanOptionalAction,
                   help="print the patch ceiling and the one-label predictor beside every evaluation")
    g.add_argument("--label-noise", type=float, help="fraction of training points given another name of the shape")
    g.add_argument("--num-workers", type=int, help="DataLoader workers")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=list_models(), help="registered model config")
    g.add_argument("--model-option", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="a keyword of the registered model config, e.g. depth=6 or "
                        "tokenizer_hidden_dims=[128,256,512] (repeatable)")
    g.add_argument("--num-groups", type=int, help="G, patches per shape (default: the model config's)")
    g.add_argument("--group-size", type=int, help="K, points per patch (default: the model config's)")
    g.add_argument("--scale-mode", choices=["paper", "official"], help="logit scale/bias parameterisation")
    g.add_argument("--init-scale", type=float, help="initial logit scale (paper: 10)")
    g.add_argument("--init-bias", type=float, help="initial logit bias (paper: -10)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    g.add_argument("--amp", choices=["auto", "none", "bf16", "fp16"],
                   help="mixed precision through torch.autocast; auto: bf16 where the CPU/GPU computes it natively "
                        "(AVX512-BF16, AMX, recent GPUs), else none")
    g.add_argument("--batch-size", type=int, help="global batch size (split across processes)")
    g.add_argument("--optimizer", choices=["adamw", "sgd"], help="AdamW (the paper) or plain SGD")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--lr-encoder", type=float, help="Stage 2: trainable encoder parameters")
    g.add_argument("--lr-head", type=float, help="both stages: the projection heads")
    g.add_argument("--lr-logit", type=float, help="Stage 2: logit scale and bias")
    g.add_argument("--stage1-lr-encoder", type=float, help="Stage 1: the whole encoder")
    g.add_argument("--lr-schedule", choices=list(SCHEDULES), help="learning-rate decay over the run or budget")
    g.add_argument("--warmup", type=float, help="fraction of each stage spent in linear warm-up")
    g.add_argument("--min-lr-factor", type=float, help="final learning-rate factor of the decaying schedules")
    g.add_argument("--ema", type=_optional_float, metavar="FRACTION",
                   help="evaluate and save each stage's weights averaged over about this last fraction of it "
                        "(an exponential moving average in the run's progress, pa3d_train.ProgressEMA); "
                        "none or 0: the last step's weights")
    g.add_argument("--grad-clip", type=float, help="clip the gradient norm to this value")
    g.add_argument("--bn-eval", action=argparse.BooleanOptionalAction,
                   help="BatchNorm uses running statistics while training (every process then equals one)")
    g.add_argument("--stage1-epochs", type=int, help="Stage-1 epochs (an upper bound with --max-minutes)")
    g.add_argument("--stage2-epochs", type=int, help="Stage-2 epochs (an upper bound with --max-minutes)")
    g.add_argument("--stage1-loss", help=f"Stage-1 loss: a registry name ({', '.join(sorted(LOSSES))}) or module:Name")
    g.add_argument("--loss", help=f"Stage-2 loss: a registry name ({', '.join(sorted(LOSSES))}) or module:Name")
    g.add_argument("--loss-args", type=_json_object,
                   help='keyword arguments of the loss as JSON, e.g. \'{"pos_weight": 2}\'')
    g.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                   help="import a module (or a .py file) first, e.g. one that registers losses (repeatable)")
    g.add_argument("--freeze-policy", choices=["auto", "paper", "official", "none"],
                   help="what Stage 2 trains (auto: the paper's freezing after a pretrained teacher, else everything)")
    g.add_argument("--freeze-bn-stats", action=argparse.BooleanOptionalAction, help="keep frozen BN stats frozen")
    g.add_argument("--max-minutes", type=float,
                   help="bound the whole command (training and evaluation); schedules span the budget")
    g.add_argument("--resume", action=argparse.BooleanOptionalAction, help="continue from OUT/<stage>/last.pt")
    g.add_argument("--checkpoint-interval", type=float, metavar="SECONDS",
                   help="write each stage's last.pt at most once per this many seconds (always at its end); "
                        "0: after every epoch")
    g.add_argument("--stage1-checkpoint", help="Stage 2: initialise from this Stage-1 checkpoint (a last.pt)")
    g.add_argument("--init-checkpoint", help="stage2, all: fine-tune from these weights (a save_pretrained folder, "
                   "a last.pt, an official .pt or hf://ORG/REPO[/FILE]); all then skips Stage 1")
    g.add_argument("--reinit-text-head", action=argparse.BooleanOptionalAction,
                   help="with --init-checkpoint: start a new text head (a text model of another width)")
    g.add_argument("--trust-checkpoint", action=argparse.BooleanOptionalAction,
                   help="load a checkpoint holding Python objects (unpickling can run code: only files you trust)")
    g.add_argument("--checkpoint", help="eval: a save_pretrained folder or an official .pt")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, help="also log to TensorBoard")
    g = p.add_argument_group("teacher (Stage 1)")
    g.add_argument("--teacher", help="tiny, dinov2_vits14, dinov2_vitb14, ... (timm DINOv2 names)")
    g.add_argument("--teacher-weights", help="local DINOv2 weights file")
    g.add_argument("--teacher-cache", help="folder of cached patch targets (default OUT/teacher_cache)")
    g.add_argument("--views", type=int, help="rendered views per shape")
    g.add_argument("--image-size", type=int, help="render side in pixels")
    g.add_argument("--teacher-size", type=int, help="teacher input side (multiple of 14)")
    g = p.add_argument_group("text and evaluation")
    g.add_argument("--text-model", help="auto, minilm, a sentence-transformers path, or open_clip:MODEL[:PRETRAINED]")
    g.add_argument("--stage2-only", action=argparse.BooleanOptionalAction,
                   help="all: also train Stage 2 alone (no Stage 1) on the same data, for comparison "
                        "(default: on the synthetic demo, off on real data, where it would halve the budget)")
    g.add_argument("--assign", choices=["nearest", "membership", "idw"], help="patch -> point assignment")
    g.add_argument("--eval-votes", type=int,
                   help="segmentation passes per evaluated shape, each over the points in another order (other "
                        "patch centres), similarities averaged; 1 = the official single pass")
    g.add_argument("--eval-calibration", choices=list(CALIBRATIONS),
                   help="how labels are read from a shape's similarities: none = each point's best name (the "
                        "official rule); prior = each name's probability divided by its mean over the shape first "
                        "(pa3d_layers.prior_correction)")
    g.add_argument("--iou-convention", choices=["strict", "patchalign3d", "find3d", "pointnet"])
    g.add_argument("--figures", type=int, help="shapes drawn in the figures")
    return p


def resolve_config(argv: Sequence[str] | None = None, *, config_dir: str | Path | None = None,
                   prog: str = "patchalign3d", description: str | None = None) -> dict[str, Any]:
    """DEFAULTS < ``config_dir/default.yaml`` < preset < ``--config`` file < command line, then checked.

    Args:
        argv: the command line without the program (default: ``sys.argv[1:]``).
        config_dir: folder of ``default.yaml`` and the preset files (a recipe's ``configs/``).
        prog: the program name in messages.
        description: the ``--help`` text.

    Raises:
        ConfigError: a bad file, key or value (the message names the flag, the value and what is expected).
        SystemExit: argparse's own errors (unknown flag, invalid choice) and ``--help``.
    """
    parser = build_parser(prog=prog, description=description, config_dir=config_dir)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    cfg = dict(DEFAULTS)
    if config_dir is not None and (Path(config_dir) / "default.yaml").is_file():
        cfg.update(load_yaml(Path(config_dir) / "default.yaml", what="defaults"))
    if args.preset:
        cfg.update(load_yaml(presets(config_dir)[args.preset], what=f"--preset {args.preset}"))
    if args.config:
        cfg.update(load_yaml(args.config))
    for key, value in vars(args).items():
        if key in DEFAULTS and value is not None:
            cfg[key] = dict(value) if key in ("dataset_option", "model_option") else value
    cfg["command"] = args.command
    _check_types(cfg, parser)
    check_config(cfg)
    return cfg


def _check_types(cfg: dict[str, Any], parser: argparse.ArgumentParser) -> None:
    """Values from YAML files get the checks the command line gives: types and choices."""
    for action in parser._actions:
        key, value = action.dest, cfg.get(action.dest)
        if key not in DEFAULTS or value is None:
            continue
        if action.choices is not None and not isinstance(value, (list, dict)) and value not in action.choices:
            raise ConfigError(f"{_flag(key)} {value!r} is not valid; expected one of {sorted(action.choices)}")
        if action.type is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{_flag(key)} must be an integer, got {value!r}")
        if action.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{_flag(key)} must be a number, got {value!r}")
            cfg[key] = float(value)
        if isinstance(action, argparse.BooleanOptionalAction) and not isinstance(value, bool):
            raise ConfigError(f"{_flag(key)} must be true or false, got {value!r}")
    for key in ("dataset_option", "model_option", "loss_args", "budget_weights"):
        if not isinstance(cfg[key], dict):
            raise ConfigError(f"{key} must be a mapping, got {cfg[key]!r}")
    if isinstance(cfg["imports"], str):
        cfg["imports"] = [cfg["imports"]]


#: Model keywords a run sets from its own flags or data, so --model-option may not: key -> what sets it.
_RUN_SET_MODEL_KEYS = {"num_groups": "--num-groups", "group_size": "--group-size", "text_dim": "the text model",
                       "teacher_dim": "the teacher", "logit_mode": "--scale-mode", "logit_scale_init": "--init-scale",
                       "logit_bias_init": "--init-bias"}


def _check_model_option(cfg: dict[str, Any]) -> None:
    """``--model-option`` keys are keywords of the model, valid on top of the registered config."""
    from pa3d_models import check_model_kwargs

    options = cfg["model_option"]
    for key in options:
        if key in _RUN_SET_MODEL_KEYS:
            raise ConfigError(f"--model-option {key}: set by {_RUN_SET_MODEL_KEYS[key]}, not --model-option")
    try:
        check_model_kwargs({**MODELS[cfg["model"]], **options})
    except ValueError as err:
        raise ConfigError(f"--model-option: {err}") from None


def import_user_module(name: str) -> Any:
    """Import ``name``: a module on the path, a module file in the working folder, or a ``.py`` file path."""
    path = Path(name)
    if name.endswith(".py") or not path.suffix and (Path.cwd() / f"{name}.py").is_file() and "." not in name:
        file = path if name.endswith(".py") else Path.cwd() / f"{name}.py"
        if not file.is_file():
            raise ConfigError(f"--import {name}: no such file")
        mod_name = file.stem
        if mod_name in sys.modules and getattr(sys.modules[mod_name], "__file__", None) == str(file.resolve()):
            return sys.modules[mod_name]
        spec = importlib.util.spec_from_file_location(mod_name, file.resolve())
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(f"--import {name}: cannot import it ({exc})") from None


def resolve_loss(spec: str, loss_args: Mapping[str, Any] | None = None, *, flag: str = "--loss") -> Any:
    """Build a loss from a registry name or ``module:Name`` (a class, a factory or an instance), with its args.

    ``module`` is imported as by :func:`import_user_module` (so ``my_losses:Focal`` finds ``./my_losses.py``).

    Raises:
        ConfigError: an unknown name, a module or attribute that does not exist, or keyword arguments the
            loss does not take.
    """
    loss_args = dict(loss_args or {})
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        module = import_user_module(module_name)
        if not hasattr(module, attr):
            public = sorted(n for n in vars(module) if not n.startswith("_"))
            raise ConfigError(f"{flag} {spec}: module {module_name!r} has no {attr!r}; it has {public}")
        obj = getattr(module, attr)
        if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "forward") and loss_args):
            return _construct(obj, loss_args, spec, flag)
        if loss_args:
            raise ConfigError(f"{flag} {spec} is an instance; it takes no --loss-args, got {loss_args}")
        return obj
    if spec not in LOSSES:
        raise ConfigError(f"{flag} {spec!r} is not a registered loss; valid: {sorted(LOSSES)} (or module:Name)")
    return _construct(lambda **kw: build_loss({"type": spec, **kw}), loss_args, spec, flag, target=LOSSES[spec])


def _construct(factory: Callable, kwargs: dict[str, Any], spec: str, flag: str, *, target: Any = None) -> Any:
    target = target if target is not None else factory
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    valid = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n != "self"]
    unknown = sorted(set(kwargs) - set(valid) - {"loss_weight"})
    if params and not takes_any and unknown:
        raise ConfigError(f"--loss-args {json.dumps(kwargs)}: {spec} does not take {unknown}; valid: {valid}")
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{flag} {spec} with --loss-args {json.dumps(kwargs)}: {exc}") from None


def _dataset_keywords(name: str) -> tuple[list[str], bool]:
    cls = DATASETS[name]
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    set_by_run = {"root", "num_points", "seed", "transform", "self"}
    if name == "synthetic":
        set_by_run |= {"split", "num_shapes"}
    return [n for n in params if n not in set_by_run and params[n].kind is not inspect.Parameter.VAR_KEYWORD
            and params[n].kind is not inspect.Parameter.VAR_POSITIONAL], takes_any


def check_config(cfg: dict[str, Any]) -> None:
    """Refuse settings that cannot work, before any work starts.

    Raises:
        ConfigError: naming the flag, the value and what is expected.
    """
    cmd = cfg["command"]
    if cmd not in COMMANDS:
        raise ConfigError(f"command must be one of {list(COMMANDS)}, got {cmd!r}")
    out = Path(cfg["out"])
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is an existing file; expected a folder (created when missing)")
    for module in cfg["imports"]:
        import_user_module(module)
    if cfg["dataset"] not in DATASETS:
        raise ConfigError(f"--dataset {cfg['dataset']!r} is unknown; valid: {sorted(DATASETS)}")
    if cfg["dataset"] != "synthetic" and not cfg["train_root"] and cmd != "eval":
        raise ConfigError(f"--dataset {cfg['dataset']} needs --train-root")
    if cmd == "eval" and cfg["eval_root"] and not cfg["eval_dataset"] and cfg["dataset"] == "synthetic":
        raise ConfigError(f"eval --eval-root {cfg['eval_root']}: name its format with --eval-dataset "
                          f"(one of {sorted(set(DATASETS) - {'synthetic'})})")
    if cfg["model"] not in MODELS:
        raise ConfigError(f"--model {cfg['model']!r} is unknown; valid: {list_models()}")
    _check_model_option(cfg)
    if not 0.0 <= float(cfg["label_noise"]) < 1.0:
        raise ConfigError(f"--label-noise must be in [0, 1), got {cfg['label_noise']}")
    from pa3d_data import AUGMENTATIONS

    if cfg["augment"] is True or cfg["augment"] is False:  # the historical boolean
        cfg["augment"] = "official" if cfg["augment"] else "none"
    if cfg["augment"] != "auto" and cfg["augment"] not in AUGMENTATIONS:
        raise ConfigError(f"--augment {cfg['augment']!r} is not valid; expected auto or one of {sorted(AUGMENTATIONS)}")
    for key in ("train_categories", "eval_categories"):
        if isinstance(cfg[key], str):
            cfg[key] = _name_list(cfg[key])
        if not isinstance(cfg[key], list) or len(set(cfg[key])) != len(cfg[key]):
            raise ConfigError(f"{_flag(key)} must be a list of distinct names, got {cfg[key]!r}")
    if cfg["split_file"] and (cfg["train_categories"] or cfg["eval_categories"]):
        raise ConfigError("--split-file and --train-categories/--eval-categories exclude each other")
    if cfg["max_minutes"] and cfg["dataset"] != "synthetic":
        # real data under a budget: the budget sets how long each stage trains (the epoch counts of the YAML
        # are sized for the synthetic demo and would stop a small real set after a few hundred steps)
        cfg["stage1_epochs"] = cfg["stage2_epochs"] = None
    if cfg["seeds"] is not None:
        from .seeds import parse_seeds

        try:
            cfg["seeds"] = parse_seeds(cfg["seeds"] if isinstance(cfg["seeds"], (str, list)) else str(cfg["seeds"]))
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if cfg["eval_num_points"] is not None and cfg["eval_num_points"] < 1:
        raise ConfigError(f"--eval-num-points must be >= 1, got {cfg['eval_num_points']}")
    positive = ["batch_size", "num_points", "views", "image_size", "teacher_size"]
    if cfg["dataset"] == "synthetic":
        positive += ["train_shapes", "eval_shapes", "heldout_shapes"]
    for key in positive:
        if cfg[key] < 1:
            raise ConfigError(f"{_flag(key)} must be >= 1, got {cfg[key]}")
    if cfg["teacher_size"] % 14:
        raise ConfigError(f"--teacher-size must be a multiple of 14 (the DINOv2 patch), got {cfg['teacher_size']}")
    if not isinstance(cfg["eval_votes"], int) or isinstance(cfg["eval_votes"], bool) or cfg["eval_votes"] < 1:
        raise ConfigError(f"--eval-votes must be an int >= 1, got {cfg['eval_votes']!r}")
    for key in ("num_workers", "figures"):
        if cfg[key] < 0:
            raise ConfigError(f"{_flag(key)} must be >= 0, got {cfg[key]}")
    spec = MODELS[cfg["model"]]
    groups, size = cfg["num_groups"] or spec["num_groups"], cfg["group_size"] or spec["group_size"]
    for key, value in (("num_groups", groups), ("group_size", size)):
        if value < 1 or value > cfg["num_points"]:
            raise ConfigError(f"{_flag(key)} {value} must be in [1, --num-points {cfg['num_points']}]: each shape "
                              f"forms {groups} patches of {size} points from its {cfg['num_points']} points")
    for key in ("stage1_epochs", "stage2_epochs"):
        value = cfg[key]
        if value is None and cfg["max_minutes"] is None:
            raise ConfigError(f"{_flag(key)} may be left empty only with --max-minutes (train until the budget ends)")
        if value is not None and value < 0:
            raise ConfigError(f"{_flag(key)} must be >= 0 (0 skips training), got {value}")
    if cfg["max_minutes"] is not None and not cfg["max_minutes"] > 0:
        raise ConfigError(f"--max-minutes must be > 0, got {cfg['max_minutes']}")
    if not 0.0 <= cfg["warmup"] < 1.0:
        raise ConfigError(f"--warmup must be a fraction of the stage in [0, 1), got {cfg['warmup']}")
    if not 0.0 <= cfg["min_lr_factor"] <= 1.0:
        raise ConfigError(f"--min-lr-factor must be in [0, 1], got {cfg['min_lr_factor']}")
    if cfg["ema"]:
        try:
            check_ema_horizon(cfg["ema"], flag="--ema")
        except ValueError as exc:
            raise ConfigError(f"{exc}; none or 0 turns the average off") from None
    interval = cfg["checkpoint_interval"]
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 <= interval < float("inf"):
        raise ConfigError(f"--checkpoint-interval must be a number of seconds >= 0 (0: after every epoch), "
                          f"got {interval!r}")
    if cfg["grad_clip"] is not None and not cfg["grad_clip"] > 0:
        raise ConfigError(f"--grad-clip must be > 0, got {cfg['grad_clip']}")
    weights = cfg["budget_weights"]
    bad = {k: v for k, v in weights.items() if k not in DEFAULTS["budget_weights"]
           or not (v is None and k == "stage1") and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0)}
    if bad:
        valid = sorted(DEFAULTS["budget_weights"])
        raise ConfigError(f"budget_weights {bad}: expected non-negative numbers for {valid} (stage1 may be null: "
                          "auto)")
    for key in ("lr_encoder", "lr_head", "lr_logit", "stage1_lr_encoder", "weight_decay"):
        if cfg[key] < 0:
            raise ConfigError(f"{_flag(key)} must be >= 0, got {cfg[key]}")
    resolve_loss(cfg["stage1_loss"], None, flag="--stage1-loss")
    resolve_loss(cfg["loss"], cfg["loss_args"], flag="--loss")
    formats = {cfg["dataset"]} if cmd != "eval" or not cfg["eval_dataset"] else set()
    if cfg["eval_dataset"]:
        formats.add(cfg["eval_dataset"])
    for name in sorted(formats):
        valid, takes_any = _dataset_keywords(name)
        unknown = sorted(set(cfg["dataset_option"]) - set(valid))
        if unknown and not takes_any:
            raise ConfigError(f"--dataset-option {unknown[0]}={cfg['dataset_option'][unknown[0]]!r}: dataset "
                              f"{name!r} takes no {unknown[0]!r}; valid keys: {valid}")
    if cmd == "eval" and cfg["checkpoint"] and not Path(cfg["checkpoint"]).exists():
        raise ConfigError(f"--checkpoint {cfg['checkpoint']} does not exist")
    if cfg["init_checkpoint"]:
        spec = str(cfg["init_checkpoint"])
        if cmd not in ("stage2", "all"):
            raise ConfigError(f"--init-checkpoint applies to stage2 and all (fine-tuning), not {cmd}")
        if cfg["stage1_checkpoint"]:
            raise ConfigError("--init-checkpoint and --stage1-checkpoint both initialise Stage 2: pass one of them")
        if not spec.startswith("hf://") and not Path(spec).expanduser().exists():
            raise ConfigError(f"--init-checkpoint {spec} does not exist (expected a save_pretrained folder, a "
                              "last.pt, an official .pt or hf://ORG/REPO[/FILE])")
    elif cfg["reinit_text_head"]:
        raise ConfigError("--reinit-text-head needs --init-checkpoint (it replaces that checkpoint's text head)")
    if cmd == "stage2" and cfg["stage1_checkpoint"] and not Path(cfg["stage1_checkpoint"]).is_file():
        raise ConfigError(f"--stage1-checkpoint {cfg['stage1_checkpoint']} does not exist (expected a Stage-1 last.pt)")
