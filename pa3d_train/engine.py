"""Training infrastructure shared by recipes: seeding, atomic checkpoints with exact resume, JSON-lines
logging, optimiser parameter groups, and the distributed (DDP) set-up.

Nothing here knows about a particular stage or loss: recipes compose these pieces.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pa3d_models.files import atomic_write_with

__all__ = [
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
]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` that never leaves a partial file behind (temporary file + ``os.replace``)."""
    return atomic_write_with(path, lambda fh: torch.save(obj, fh))


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch CPU RNG states (for exact resume)."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_training_state(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    epoch: int,
    step: int,
    config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a resumable checkpoint atomically: weights, optimiser, counters, RNG states and the config.

    Args:
        path: the ``.pt`` file to write.
        model: the model (a DDP wrapper is unwrapped).
        optimizer: its optimiser, or None.
        epoch: number of completed epochs.
        step: number of completed optimiser steps.
        config: the resolved run configuration; :func:`load_training_state` refuses another one.
        extra: anything else to keep (metrics, ...).
    """
    model = getattr(model, "module", model)
    payload = {
        "format": "pa3d-training-state/1",
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": epoch,
        "step": step,
        "config": dict(config),
        "rng": rng_state(),
        "extra": dict(extra or {}),
    }
    return atomic_torch_save(payload, path)


def load_training_state(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    config: Mapping[str, Any] | None = None,
    compare_keys: Iterable[str] | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load what :func:`save_training_state` wrote into ``model`` (and ``optimizer``).

    Args:
        path: the checkpoint.
        model: the model to load into (strict).
        optimizer: the optimiser to restore, if any.
        config: the current run's configuration; when given, the keys in ``compare_keys`` (default: all keys
            of the saved config) must match, or a ``ValueError`` names the differences.
        compare_keys: which configuration keys must agree for a resume.
        restore_rng: restore the RNG states saved with the checkpoint.

    Returns:
        The checkpoint's ``epoch``, ``step``, ``config`` and ``extra``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != "pa3d-training-state/1":
        raise ValueError(f"checkpoint {path} is not a pa3d training state (format pa3d-training-state/1)")
    if config is not None:
        saved = payload["config"]
        keys = list(compare_keys) if compare_keys is not None else sorted(saved)
        diffs = [
            f"{k}: checkpoint {saved.get(k)!r} vs now {config.get(k)!r}" for k in keys if saved.get(k) != config.get(k)
        ]
        if diffs:
            raise ValueError(f"resume from {path} refused: the run's configuration differs: " + "; ".join(diffs))
    getattr(model, "module", model).load_state_dict(payload["model"])
    if optimizer is not None and payload["optimizer"] is not None:
        optimizer.load_state_dict(payload["optimizer"])
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
