"""Timing, memory and environment helpers shared by the benchmark families.

Every figure is the median of repeated runs with their min and max. A run can be bounded by a time budget:
it stops repeating once the budget is spent (always at least one timed run after the warm-up), and the row
records how many repeats it got, so a reduced measurement is visible in the results.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from pa3d_train.engine import cpu_flags as _all_cpu_flags
from pa3d_train.engine import native_bf16

__all__ = ["Context", "time_fn", "environment", "run_probe", "peak_memory_mb", "reset_peak_memory", "cpu_flags"]

#: CPU features that decide which precision is fast: bf16 dot products (AVX512-BF16), matrix tiles (AMX).
_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags() -> list[str]:
    """The performance-relevant CPU flags of this machine (from ``/proc/cpuinfo``; empty where unreadable)."""
    have = _all_cpu_flags()
    return [fl for fl in _FLAGS if fl in have]


@dataclass
class Context:
    """What every family's ``run(ctx)`` receives.

    Args:
        quick: a reduced run (smaller sizes, fewer repeats), for smoke tests and CI.
        device: where the benchmarks run (``cuda`` when available, else ``cpu``).
        repeats: timed runs per measurement (a family may lower it for slow cases, and says so).
        budget_s: the default time budget of one measurement in seconds.
        toy: tiny sizes for the test suite (implies quick).
        log: progress printer.
    """

    quick: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    repeats: int = 5
    budget_s: float = 20.0
    toy: bool = False
    log: Callable[[str], None] = print
    shared: dict[str, Any] = field(default_factory=dict)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def time_fn(
    fn: Callable[[], Any],
    ctx: Context,
    *,
    repeats: int | None = None,
    warmup: int = 1,
    budget_s: float | None = None,
) -> dict[str, Any]:
    """Time ``fn()``: ``warmup`` untimed calls, then up to ``repeats`` timed ones within ``budget_s``.

    Returns:
        ``{"median_ms", "min_ms", "max_ms", "repeats"}``. When the warm-up alone spends the budget, the warm-up
        call is used as the single sample and ``"warm"`` is False.
    """
    repeats = ctx.repeats if repeats is None else repeats
    budget = ctx.budget_s if budget_s is None else budget_s
    start = time.perf_counter()
    first = None
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        ctx.sync()
        first = time.perf_counter() - t0
    times: list[float] = []
    warm = True
    if first is not None and first > budget:
        times, warm = [first], False
    else:
        while len(times) < repeats and (not times or time.perf_counter() - start < budget):
            t0 = time.perf_counter()
            fn()
            ctx.sync()
            times.append(time.perf_counter() - t0)
    ms = [t * 1e3 for t in times]
    out: dict[str, Any] = {
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "repeats": len(ms),
    }
    if not warm:
        out["warm"] = False
    return out


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: ``torch.cuda.max_memory_allocated`` on GPU, the process's max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_probe(target: str, kwargs: dict[str, Any], *, timeout: float = 600.0) -> dict[str, Any]:
    """Run ``target`` (``"module:function"``) in a fresh Python process and return its JSON result.

    A fresh process is how peak memory is measured per measurement on CPU: the child's max RSS is its own.
    """
    cmd = [sys.executable, "-m", "benchmarks._probe", target, json.dumps(kwargs)]
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"probe {target} failed (rc {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _git_commit() -> str | None:
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root)
        return out.stdout.strip() or None
    except OSError:  # pragma: no cover
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """The machine and software the figures were measured on."""
    from pa3d_layers._backend import WITH_TORCH_CLUSTER, WITH_TORCH_SCATTER

    env: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": cpu_flags(),
        "native_bf16": device.type == "cuda" or native_bf16("cpu"),
        "load_avg_start": [round(v, 2) for v in os.getloadavg()],
        "gpu_available": torch.cuda.is_available(),
        "torch_cluster": WITH_TORCH_CLUSTER,
        "torch_scatter": WITH_TORCH_SCATTER,
        "git_commit": _git_commit(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    env["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env
