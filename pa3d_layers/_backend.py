"""Optional compiled backends, detected once.

torch-cluster (FPS, kNN) and torch-scatter (reductions) accelerate pa3d; every op has a pure-PyTorch
reference beside it (``backend="torch"``). With ``backend="auto"`` an op uses the extension when it is
importable and otherwise falls back to the reference, warning once per extension.
"""

from __future__ import annotations

import warnings
from typing import Literal

__all__ = ["WITH_TORCH_CLUSTER", "WITH_TORCH_SCATTER", "AUTO_PREFERS_TORCH", "Backend", "resolve_backend"]

Backend = Literal["auto", "torch", "cluster", "scatter"]

try:  # pragma: no cover - depends on the environment
    import torch_cluster  # noqa: F401

    WITH_TORCH_CLUSTER = True
except (ImportError, OSError):  # pragma: no cover
    WITH_TORCH_CLUSTER = False

try:  # pragma: no cover - depends on the environment
    import torch_scatter  # noqa: F401

    WITH_TORCH_SCATTER = True
except (ImportError, OSError):  # pragma: no cover
    WITH_TORCH_SCATTER = False

_AVAILABLE = {"cluster": lambda: WITH_TORCH_CLUSTER, "scatter": lambda: WITH_TORCH_SCATTER}
_PACKAGE = {"cluster": "torch-cluster", "scatter": "torch-scatter"}
_warned: set[str] = set()

#: Ops for which ``backend="auto"`` uses the torch reference even when the extension is installed, because it
#: is measured faster: FPS (torch-cluster loops over clouds with one ATen call per pick and cloud; the torch
#: loop picks for the whole batch at once), 32 clouds x 128 picks: 58 vs 119 ms at N=2,048, 189 vs 540 ms at
#: N=10k, 3.3 vs 5.7 s at N=100k (benchmarks/results/2026-12-01.md, 2-core EPYC). kNN stays on torch-cluster
#: (1.8x faster at N=100k).
AUTO_PREFERS_TORCH = frozenset({"fps"})


def resolve_backend(backend: str, extension: Literal["cluster", "scatter"], op: str) -> str:
    """Return ``"torch"`` or ``extension`` for an op.

    ``"auto"`` picks the backend measured faster for the op: the extension when it is installed, except for
    the ops in :data:`AUTO_PREFERS_TORCH`.

    Args:
        backend: ``"auto"``, ``"torch"`` or the extension's name.
        extension: which compiled extension accelerates this op.
        op: the op's name, for messages.

    Raises:
        ValueError: for an unknown backend name, or an extension asked for explicitly but not installed.
    """
    if backend == "torch":
        return "torch"
    if backend == extension:
        if not _AVAILABLE[extension]():
            raise ValueError(
                f"backend={backend!r} for {op} needs {_PACKAGE[extension]}, which is not installed "
                f"(pip install --no-build-isolation {_PACKAGE[extension]}: the pa3d[accel] extra, `make accel` in a "
                f"checkout), or use backend='torch'"
            )
        return extension
    if backend == "auto":
        if op in AUTO_PREFERS_TORCH:
            return "torch"
        if _AVAILABLE[extension]():
            return extension
        if extension not in _warned:
            _warned.add(extension)
            warnings.warn(
                f"{_PACKAGE[extension]} is not installed: pa3d uses its pure-PyTorch reference "
                f"(slower). Install it with `pip install --no-build-isolation {_PACKAGE[extension]}` (the pa3d[accel] "
                "extra; `make accel` in a checkout compiles both extensions at once).",
                stacklevel=3,
            )
        return "torch"
    raise ValueError(f"backend must be one of 'auto', 'torch', {extension!r}; got {backend!r}")
