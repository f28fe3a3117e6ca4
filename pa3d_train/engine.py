"""The training engine: one epoch loop (:func:`fit`) for every stage, and the pieces it is made of.

:func:`fit` trains any ``nn.Module`` on any dataset with any loss: DDP under ``torchrun`` (gloo on CPU, NCCL on
GPUs), AMP through ``torch.autocast`` with its ``GradScaler``, learning-rate warm-up and decay over a step
count or a wall-clock budget, atomic per-epoch checkpoints that resume exactly (weights, optimiser, scaler,
every RNG, the epoch counter the data sees), JSON-lines (and optionally TensorBoard) logs and progress lines.
The pieces (seeding, checkpoints, parameter groups, logging, the distributed set-up) are public too.

Checkpoints hold tensors and plain Python values only, so :func:`load_training_state` reads them with
``torch.load(weights_only=True)``: a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pa3d_models.files import atomic_write_bytes, atomic_write_with
from pa3d_models.loaders import training_state_weights

from .ema import ProgressEMA, check_ema_horizon
from .schedule import SCHEDULES, RunProgress, format_duration, lr_factor

__all__ = [
    "cpu_flags",
    "native_bf16",
    "resolve_amp",
    "fit",
    "FitResult",
    "seed_everything",
    "atomic_torch_save",
    "save_training_state",
    "load_training_state",
    "read_training_state",
    "check_resume",
    "clean_stale_temporaries",
    "JsonlLogger",
    "param_groups",
    "DistributedContext",
    "init_distributed",
    "grouping_backend",
    "rng_state",
    "set_rng_state",
    "TRAINING_STATE_FORMAT",
]

TRAINING_STATE_FORMAT = "pa3d-training-state/2"
_READABLE_FORMATS = ("pa3d-training-state/1", TRAINING_STATE_FORMAT)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` that never leaves a partial file behind (temporary file + ``os.replace``)."""
    return atomic_write_with(path, lambda fh: torch.save(obj, fh))


def clean_stale_temporaries(folder: str | os.PathLike, name: str = "last.pt") -> list[Path]:
    """Remove temporary files an interrupted atomic write of ``folder/name`` left behind; return them.

    Call it from the only process that writes ``name`` (rank 0), before it writes again.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(folder.glob(f".{name}.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (when initialised) CUDA RNG states, as tensors and plain values."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(gauss)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = list(state["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def save_training_state(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    epoch: int,
    step: int,
    config: Mapping[str, Any],
    scaler: torch.amp.GradScaler | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a resumable checkpoint atomically: weights, optimiser, scaler, counters, RNG states, the config.

    Args:
        path: the ``.pt`` file to write.
        model: the model (a DDP wrapper is unwrapped).
        optimizer: its optimiser, or None.
        epoch: number of completed epochs.
        step: number of completed optimiser steps.
        config: the resolved run configuration; :func:`load_training_state` refuses another one. Plain values
            only (numbers, strings, lists, dicts, None).
        scaler: the AMP gradient scaler, if any (its scale and growth tracker are part of an exact resume).
        extra: anything else to keep (history, elapsed time...); tensors and plain values only.
    """
    model = getattr(model, "module", model)
    payload = {
        "format": TRAINING_STATE_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "epoch": int(epoch),
        "step": int(step),
        "config": dict(config),
        "rng": rng_state(),
        "extra": dict(extra or {}),
    }
    return atomic_torch_save(payload, path)


def read_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint :func:`save_training_state` wrote, without unpickling code (``weights_only=True``).

    Raises:
        ValueError: the file is missing, unreadable (truncated, random bytes, a pickle that needs code) or
            not a pa3d training state.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated, foreign or code-carrying file
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty or truncated file"
        raise ValueError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {msg}); "
                         "pa3d loads checkpoints with weights_only=True and never unpickles code") from None
    if not isinstance(payload, dict) or payload.get("format") not in _READABLE_FORMATS:
        raise ValueError(f"checkpoint {path} is not a pa3d training state (format {TRAINING_STATE_FORMAT})")
    if not isinstance(payload.get("model"), Mapping):
        raise ValueError(f"checkpoint {path}: 'model' must be a state dict, got {type(payload.get('model')).__name__}")
    return payload


def check_resume(
    path: str | os.PathLike, config: Mapping[str, Any], compare_keys: Iterable[str] | None = None
) -> dict[str, Any]:
    """Refuse a resume from ``path`` whose saved configuration differs from ``config`` in ``compare_keys``.

    Returns the checkpoint (see :func:`read_training_state`).

    Raises:
        ValueError: naming every differing key with both values.
    """
    payload = read_training_state(path)
    saved = payload["config"]
    keys = list(compare_keys) if compare_keys is not None else sorted(saved)
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {config.get(k)!r}"
             for k in keys if saved.get(k) != config.get(k)]
    if diffs:
        raise ValueError(f"resume from {path} refused: the run's configuration differs: " + "; ".join(diffs))
    return payload


def load_training_state(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    config: Mapping[str, Any] | None = None,
    compare_keys: Iterable[str] | None = None,
    restore_rng: bool = True,
    average: bool = False,
) -> dict[str, Any]:
    """Load what :func:`save_training_state` wrote into ``model`` (and ``optimizer``, ``scaler``).

    The file is read with ``torch.load(weights_only=True)``: nothing in it is executed.

    Args:
        path: the checkpoint.
        model: the model to load into (strict).
        optimizer: the optimiser to restore, if any.
        scaler: the AMP gradient scaler to restore, if any.
        config: the current run's configuration; when given, the keys in ``compare_keys`` (default: all keys
            of the saved config) must match, or a ``ValueError`` names the differences.
        compare_keys: which configuration keys must agree for a resume.
        restore_rng: restore the RNG states saved with the checkpoint.
        average: load the weight average (``fit(ema=...)``) into ``model`` when the checkpoint holds one,
            instead of the last step's weights (a resume needs the latter; a next stage or an evaluation the
            former).

    Returns:
        The checkpoint's ``epoch``, ``step``, ``config`` and ``extra``.
    """
    payload = check_resume(path, config, compare_keys) if config is not None else read_training_state(path)
    target = getattr(model, "module", model)
    state = training_state_weights(payload) if average else payload["model"]
    try:
        target.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ValueError(f"checkpoint {path} does not fit this model: {' '.join(first[:3])}") from None
    if optimizer is not None and payload["optimizer"] is not None:
        optimizer.load_state_dict(payload["optimizer"])
    if scaler is not None and payload.get("scaler") is not None:
        scaler.load_state_dict(payload["scaler"])
    if restore_rng:
        set_rng_state(payload["rng"])
    return {k: payload[k] for k in ("epoch", "step", "config", "extra")}


class JsonlLogger:
    """Append one JSON object per line to ``path`` (and to TensorBoard when it is installed and asked for).

    Only rank 0 writes in a distributed run (pass ``enabled=False`` elsewhere).
    """

    def __init__(self, path: str | os.PathLike, *, tensorboard: bool = False, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(str(self.path.parent / "tensorboard"))
                except ImportError:  # tensorboard is optional
                    self._tb = None

    def log(self, record: Mapping[str, Any], *, step: int | None = None) -> None:
        """Write ``record`` (numbers and strings) with a wall-clock time stamp."""
        if not self.enabled:
            return
        row = {"time": round(time.time(), 3), **{k: _plain(v) for k, v in record.items()}}
        if step is not None:
            row["step"] = step
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self._tb is not None and step is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("time", "step"):
                    self._tb.add_scalar(key, value, step)

    def truncate(self, keep: Callable[[dict[str, Any]], bool]) -> int:
        """Keep only the rows for which ``keep(row)`` is true (rewritten atomically); return how many went.

        A resume uses it to drop the rows of epochs the checkpoint does not hold, so no epoch is logged twice.
        """
        if not self.enabled or not self.path.is_file():
            return 0
        rows = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = []
        for line in rows:
            try:
                if keep(json.loads(line)):
                    kept.append(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
        if len(kept) != len(rows):
            atomic_write_bytes(self.path, "".join(line + "\n" for line in kept))
        return len(rows) - len(kept)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().item() if value.numel() == 1 else value.detach().tolist()
    return value


def param_groups(model: nn.Module, lrs: Mapping[str, float], *, default_lr: float, weight_decay: float) -> list[dict]:
    """Optimiser parameter groups by name prefix: the longest matching prefix in ``lrs`` sets the lr.

    Frozen parameters (``requires_grad=False``) are left out; empty groups are dropped.

    Examples:
        >>> m = torch.nn.ModuleDict({"encoder": torch.nn.Linear(2, 2), "text_head": torch.nn.Linear(2, 2)})
        >>> [g["lr"] for g in param_groups(m, {"text_head": 5e-4}, default_lr=1e-4, weight_decay=0.05)]
        [0.0001, 0.0005]
    """
    groups: dict[str, list[nn.Parameter]] = {}
    for name, param in getattr(model, "module", model).named_parameters():
        if not param.requires_grad:
            continue
        match = max((p for p in lrs if name.startswith(p)), key=len, default="")
        groups.setdefault(match, []).append(param)
    return [
        {"params": params, "lr": lrs.get(prefix, default_lr), "weight_decay": weight_decay, "name": prefix or "default"}
        for prefix, params in sorted(groups.items(), key=lambda kv: kv[0])
    ]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def describe(self) -> str:
        """``"2 process(es), cpu"``: what the first log line of a run says."""
        return f"{self.world_size} process(es), {self.device}"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where it cannot be read, e.g. not on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16
    or AMX (on other CPUs bf16 is emulated and several times slower than float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    return False


def resolve_amp(amp: str, device: torch.device | str) -> str:
    """``"auto"`` -> ``"bf16"`` where :func:`native_bf16` holds (about 1.7x the training steps per second of
    float32 on an AVX512-BF16 CPU, see ``docs/results.md``), else ``"none"``; other values unchanged.

    Examples:
        >>> resolve_amp("fp16", "cpu"), resolve_amp("none", "cpu")
        ('fp16', 'none')
        >>> resolve_amp("auto", "meta")
        'none'
    """
    if amp != "auto":
        return amp
    return "bf16" if native_bf16(device) else "none"


def init_distributed(device: str | None = None) -> DistributedContext:
    """Initialise ``torch.distributed`` when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    Uses NCCL when CUDA is available and the device is a GPU, otherwise gloo (CPU). Without torchrun it
    returns a single-process context.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def grouping_backend() -> str:
    """Which FPS/kNN backend the grouping uses: ``"torch-cluster"`` or ``"pure-PyTorch fallback"``."""
    try:
        import torch_cluster  # noqa: F401
    except Exception:  # ImportError, or a build that does not load
        return "pure-PyTorch fallback"
    return "torch-cluster"


# ----------------------------------------------------------------------------------------------------- fit
@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: one record per epoch (mean loss terms, lr, steps/s, ...), epochs before a resume included.
        steps: optimiser steps done in total.
        epochs: epochs completed.
        stopped_early: the time budget ended the run before ``epochs``.
        seconds: training time, resumed runs included.
        resumed_from: the epoch the run resumed at (None for a fresh run).
        ema: the horizon of the weight average now in the model (None: the last step's weights).
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    epochs: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    resumed_from: int | None = None
    ema: float | None = None


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Mapping):
        return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return batch.to(device, non_blocking=True) if isinstance(batch, torch.Tensor) else batch


def _default_forward(net: nn.Module, batch: Any) -> Any:
    return net(batch["points"] if isinstance(batch, Mapping) else batch)


def _total_loss(terms: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if isinstance(terms, torch.Tensor):
        return terms, {}
    if isinstance(terms, Mapping):
        named = [v for k, v in terms.items() if k.endswith("_loss")]
        if not named:
            raise ValueError(f"the loss returned a dict without '*_loss' terms: {sorted(terms)}")
        return sum(named), {k: v for k, v in terms.items() if isinstance(v, torch.Tensor) and v.numel() == 1}
    raise TypeError(f"the loss must return a tensor or a dict of '*_loss' tensors, got {type(terms).__name__}")


def _set_epoch(dataset: Any, epoch: int) -> None:
    """Tell the dataset (and what it wraps) the epoch: augmentation and label noise draw from it."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    elif hasattr(dataset, "epoch"):
        dataset.epoch = epoch


def _progress_bar(total: int, desc: str, *, enabled: bool):
    """A tqdm bar on stderr (steps, steps/s, loss, lr, ETA of the run), or None without tqdm or when disabled."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is in the train extra; the epoch lines still report progress
        return None
    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=False)


def _bn_to_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def fit(
    model: nn.Module,
    loss_fn: Callable[..., Any],
    dataset: Any,
    *,
    epochs: int | None,
    batch_size: int,
    lr: float = 1e-3,
    lrs: Mapping[str, float] | None = None,
    weight_decay: float = 0.0,
    optimizer: str = "adamw",
    schedule: str = "constant",
    warmup: float = 0.0,
    min_lr_factor: float = 0.0,
    time_budget_s: float | None = None,
    collate_fn: Callable | None = None,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    amp: str = "none",
    grad_clip: float | None = None,
    bn_eval: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    ctx: DistributedContext | None = None,
    out_dir: str | os.PathLike | None = None,
    name: str = "train",
    resume: bool = False,
    config: Mapping[str, Any] | None = None,
    resume_keys: Sequence[str] | None = None,
    tensorboard: bool = False,
    progress: RunProgress | None = None,
    ema: float | None = None,
    checkpoint_interval_s: float = 0.0,
    log: Callable[[str], Any] | None = print,
) -> FitResult:
    """Train ``model`` on ``dataset``: the epoch loop every stage uses.

    Each step: ``outputs = forward(net, batch)``, ``loss_fn(outputs, batch)`` (a tensor, or a dict whose
    ``*_loss`` terms are summed and whose scalar terms are logged), backward (through the ``GradScaler`` for
    fp16), optional clipping, optimiser step. Under ``torchrun`` the model is wrapped in DDP (parameters with
    ``requires_grad=False`` are left out, so freeze what a stage does not use before calling) and every
    process takes ``batch_size / world_size`` shapes of a ``DistributedSampler``. The learning rate of each
    parameter group is its base rate times ``lr_factor(progress)``, where progress is
    ``max(step / planned steps, elapsed / time_budget_s)``: the schedule spans the epochs or the time budget,
    whichever ends first. With ``out_dir``, ``out_dir/last.pt`` is written atomically after every epoch (or
    every ``checkpoint_interval_s``, and at the end, and when the budget ends mid-epoch) and
    ``out_dir/log.jsonl`` gets one row per epoch; ``resume=True`` continues from ``last.pt`` exactly
    (bit-identical on CPU for step-based schedules: weights, optimiser, scaler, RNGs and the epoch the data
    sees are restored; a budget-ended partial epoch is re-run).

    Args:
        model: the module to train, already on ``ctx.device``.
        loss_fn: ``loss_fn(outputs, batch)`` -> tensor or dict of terms.
        dataset: a map-style dataset; ``set_epoch(epoch)`` (or an ``epoch`` attribute) is called each epoch.
        epochs: number of epochs, or None to train until ``time_budget_s`` ends.
        batch_size: global batch size, split evenly across processes.
        lr: base learning rate of parameters no prefix in ``lrs`` matches.
        lrs: parameter-name prefix -> base learning rate (see :func:`param_groups`).
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
        optimizer: ``"adamw"`` or ``"sgd"`` (plain, no momentum).
        schedule: ``"constant"``, ``"cosine"`` or ``"linear"`` (see :func:`pa3d_train.lr_factor`).
        warmup: fraction of the run spent in linear warm-up.
        min_lr_factor: final factor of the decaying schedules.
        time_budget_s: stop cleanly after this many seconds of training (resumed time included).
        collate_fn: the DataLoader's collate function.
        forward: ``forward(net, batch)`` -> outputs (default: ``net(batch["points"])``).
        amp: ``"none"``, ``"bf16"`` or ``"fp16"`` (autocast; fp16 also scales the loss), or ``"auto"``
            (:func:`resolve_amp`: bf16 where the device computes it natively, else none).
        grad_clip: clip the global gradient norm to this value.
        bn_eval: keep every BatchNorm in eval mode (running statistics); makes a DDP run equal one process.
        num_workers: DataLoader workers.
        seed: the sampler's shuffling seed.
        ctx: the distributed context (default: single process on the model's device).
        out_dir: folder for ``last.pt``, ``log.jsonl`` (and ``tensorboard/``); None writes nothing.
        name: the stage's name in logs and progress lines.
        resume: continue from ``out_dir/last.pt`` when it exists.
        config: the run's configuration, saved with checkpoints and compared on resume.
        resume_keys: which ``config`` keys must match on resume (default: all).
        tensorboard: also log to TensorBoard (when installed).
        progress: a run-wide progress tracker for the ETA of the whole run.
        ema: keep an exponential moving average of the weights over about this fraction of the run's progress
            (:class:`pa3d_train.ProgressEMA`, in (0, 1]) and leave it in ``model`` at the end; ``last.pt`` keeps
            the last step's weights and the average, so a resume continues both. None or 0: no average.
        checkpoint_interval_s: write ``last.pt`` after an epoch only when this many seconds have passed since
            the last write (always after the last epoch and when the budget ends); 0 writes after every epoch.
            A crash then loses at most this much training; short epochs stop paying a write each.
        log: where progress lines go (rank 0 only); None for silence.

    Returns:
        A :class:`FitResult`.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> data = [{"points": torch.randn(4), "y": torch.tensor(1.0)} for _ in range(8)]
        >>> net = torch.nn.Linear(4, 1)
        >>> loss = lambda out, batch: ((out.squeeze(1) - batch["y"]) ** 2).mean()
        >>> result = fit(net, loss, data, epochs=2, batch_size=4, lr=0.1, log=None)
        >>> result.epochs, result.steps, len(result.history)
        (2, 4, 2)
    """
    ctx = ctx or DistributedContext(device=next(model.parameters()).device)
    if epochs is None and time_budget_s is None:
        raise ValueError("epochs: None needs a time_budget_s (train until the budget ends)")
    if epochs is not None and epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if optimizer not in ("adamw", "sgd"):
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
    if amp not in ("none", "bf16", "fp16", "auto"):
        raise ValueError(f"amp must be 'none', 'bf16', 'fp16' or 'auto', got {amp!r}")
    amp = resolve_amp(amp, ctx.device)
    average = ProgressEMA(check_ema_horizon(ema, flag="ema")) if ema else None
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    lr_factor(0.0, schedule=schedule, warmup=warmup, min_factor=min_lr_factor)  # validates the settings
    per_rank = batch_size // ctx.world_size
    if per_rank < 1 or batch_size % ctx.world_size:
        raise ValueError(f"batch_size must be a positive multiple of the {ctx.world_size} process(es), "
                         f"got {batch_size}")
    shapes_per_rank = len(dataset) // ctx.world_size
    if per_rank > shapes_per_rank:
        raise ValueError(f"batch_size {batch_size} is larger than the training set: {len(dataset)} shapes give "
                         f"{shapes_per_rank} per process for {per_rank} per process per step")
    say = (log if log is not None else (lambda *_: None)) if ctx.is_main else (lambda *_: None)
    device = ctx.device
    out = Path(out_dir) if out_dir is not None else None
    last = out / "last.pt" if out is not None else None
    if out is not None and ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for stale in clean_stale_temporaries(out):
            say(f"[{name}] removed {stale.name}, left by an interrupted checkpoint write")
    logger = JsonlLogger(out / "log.jsonl" if out is not None else Path(os.devnull), tensorboard=tensorboard,
                         enabled=ctx.is_main and out is not None)

    net: nn.Module = model
    if ctx.distributed:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    groups = param_groups(model, lrs or {}, default_lr=lr, weight_decay=weight_decay)
    if not groups:
        raise ValueError(f"[{name}] the model has no trainable parameters (every requires_grad is False)")
    for g in groups:
        g["base_lr"] = g["lr"]
    opt = torch.optim.AdamW(groups) if optimizer == "adamw" else torch.optim.SGD(groups)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                                  seed=seed, drop_last=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=per_rank, sampler=sampler, collate_fn=collate_fn,
                                         num_workers=num_workers, drop_last=True)
    steps_per_epoch = len(loader)
    planned = steps_per_epoch * epochs if epochs is not None else None

    result = FitResult()
    start_epoch, step, elapsed_before = 0, 0, 0.0
    if resume and last is not None and last.is_file():
        meta = load_training_state(last, model=model, optimizer=opt, scaler=scaler, config=config,
                                   compare_keys=resume_keys) if config is not None else \
            load_training_state(last, model=model, optimizer=opt, scaler=scaler)
        start_epoch, step = meta["epoch"], meta["step"]
        extra = meta["extra"]
        result.history = [dict(r) for r in extra.get("history", []) if not r.get("partial")]
        elapsed_before = float(extra.get("elapsed_s", 0.0))
        result.resumed_from = start_epoch
        if average is not None and extra.get("ema") is not None:
            average.load_state_dict(extra["ema"])
        elif average is not None and step:
            say(f"[{name}] {last} holds no weight average: the average starts at step {step}")
        if ctx.is_main:
            logger.truncate(lambda row: int(row.get("epoch", 0)) <= start_epoch)
        say(f"[{name}] resumed from {last} at epoch {start_epoch}, step {step}")
    if progress is not None:
        progress.update(name, step)
        progress.planned[name] = planned or 0

    def elapsed_now(t0: float) -> float:
        value = elapsed_before + time.monotonic() - t0
        if ctx.distributed and time_budget_s is not None:  # every process must see the same progress and stop
            t = torch.tensor([value], dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            value = float(t.item())
        return value

    def progress_of(steps: int, elapsed: float) -> float:
        p = steps / planned if planned else 0.0
        if time_budget_s:
            p = max(p, elapsed / time_budget_s)
        return p

    def write_checkpoint(completed: int, partial: bool) -> None:
        nonlocal last_write
        save_training_state(last, model=model, optimizer=opt, scaler=scaler, epoch=completed, step=step,
                            config=config or {}, extra={"history": result.history, "partial_epoch": partial,
                                                        "elapsed_s": elapsed_now(t0) if not ctx.distributed
                                                        else time.monotonic() - t0 + elapsed_before,
                                                        **({"ema": average.state_dict()} if average else {})})
        last_write = time.monotonic()

    if checkpoint_interval_s < 0 or not math.isfinite(checkpoint_interval_s):
        raise ValueError(f"checkpoint_interval_s must be a finite number >= 0, got {checkpoint_interval_s!r}")
    t0 = last_write = time.monotonic()
    unsaved = False
    epoch = start_epoch
    total = str(epochs) if epochs is not None else "?"
    while epochs is None or epoch < epochs:
        elapsed = elapsed_now(t0)
        if time_budget_s is not None and elapsed >= time_budget_s:
            result.stopped_early = epochs is None or epoch < epochs
            break
        sampler.set_epoch(epoch)
        _set_epoch(dataset, epoch)
        net.train()
        if bn_eval:
            _bn_to_eval(net)
        totals: dict[str, float] = {}
        done_in_epoch, partial = 0, False
        epoch_t0 = time.monotonic()
        bar = _progress_bar(len(loader), f"{name} epoch {epoch + 1}/{total}", enabled=ctx.is_main and log is not None)
        for batch in loader:
            elapsed = elapsed_now(t0)
            if time_budget_s is not None and elapsed >= time_budget_s:
                partial = True
                break
            factor = lr_factor(progress_of(step, elapsed), schedule=schedule, warmup=warmup, min_factor=min_lr_factor)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * factor
            batch = _to(batch, device)
            autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
            with autocast:
                outputs = (forward or _default_forward)(net, batch)
                loss, terms = _total_loss(loss_fn(outputs, batch))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], grad_clip)
            scaler.step(opt)
            scaler.update()
            step += 1
            done_in_epoch += 1
            if average is not None:
                average.update(model, progress_of(step, elapsed))
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach())
            totals["loss"] = totals.get("loss", 0.0) + float(loss.detach())
            if bar is not None:
                bar.update(1)
                if progress is not None:
                    progress.update(name, step, steps_per_s=done_in_epoch / max(time.monotonic() - epoch_t0, 1e-9))
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", lr=f"{factor * opt.param_groups[0]['base_lr']:.2e}",
                                run_eta=format_duration(progress.eta_s()) if progress is not None else "?",
                                refresh=False)
        if bar is not None:
            bar.close()
        seconds = time.monotonic() - epoch_t0
        record: dict[str, Any] = {"stage": name, "epoch": epoch + 1,
                                  **{k: v / max(1, done_in_epoch) for k, v in totals.items()},
                                  "lr": max(g["lr"] for g in opt.param_groups), "steps": done_in_epoch,
                                  "steps_per_s": done_in_epoch / seconds if seconds > 0 else 0.0}
        if partial:
            record["partial"] = True
        if done_in_epoch:
            result.history.append(record)
            logger.log(record, step=step)
        if progress is not None:
            progress.update(name, step, steps_per_s=record["steps_per_s"])
        completed = epoch + (0 if partial else 1)
        if ctx.is_main and done_in_epoch:
            eta = progress.eta_s() if progress is not None else None
            say(f"[{name}] epoch {epoch + 1}/{total} " + " ".join(
                f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float) and k != "steps_per_s")
                + f" {record['steps_per_s']:.2f} steps/s" + (f", run ETA {format_duration(eta)}" if progress else ""))
        due = (checkpoint_interval_s <= 0 or partial or (epochs is not None and completed >= epochs)
               or time.monotonic() - last_write >= checkpoint_interval_s)
        if last is not None and ctx.is_main and (done_in_epoch or partial):
            if due:
                write_checkpoint(completed, partial)
            unsaved = not due
        if ctx.distributed:
            dist.barrier()
        if partial:
            result.stopped_early = True
            say(f"[{name}] time budget reached: stopped during epoch {epoch + 1}, checkpoint written")
            break
        epoch += 1
        if steps_per_epoch == 0:
            break
    if unsaved and last is not None and ctx.is_main:  # the budget ended after an epoch no checkpoint holds yet
        write_checkpoint(epoch, False)
    if last is not None and ctx.is_main and not last.is_file():  # nothing trained (0 epochs): keep the start
        save_training_state(last, model=model, optimizer=opt, scaler=scaler, epoch=epoch, step=step,
                            config=config or {}, extra={"history": result.history, "elapsed_s": 0.0})
    if ctx.distributed:
        dist.barrier()
    logger.close()
    if average is not None and average.weights is not None:
        average.copy_to(model)
        result.ema = average.horizon
        say(f"[{name}] the model now holds its weights averaged over about the last {average.horizon:.0%} of the "
            f"stage (--ema {average.horizon:g}); {last if last is not None else 'nothing'} keeps the last step's")
    result.steps, result.epochs = step, epoch
    result.seconds = elapsed_before + time.monotonic() - t0
    return result
