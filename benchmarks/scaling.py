"""Scaling: one encoder forward (batch 1, fp32, inference) as N grows from 2k to 100k points, with adaptive
G = ``num_groups_for(N, 32)`` (coverage 2: G = N / 16) so patches keep K = 32 points.

Each N runs in its own process so its peak memory (max RSS on CPU, max_memory_allocated on GPU) is its own.
Grouping uses the ``auto`` backend (torch-cluster when installed; otherwise the torch references, whose kNN is
chunked). Attention is over G + 1 tokens, so its cost grows as N^2.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from ._harness import Context, run_probe

__all__ = ["run", "measure_forward"]


def measure_forward(model: str, num_points: int, repeats: int, warmup: int, device: str) -> dict[str, Any]:
    """Time ``repeats`` forwards of ``model``'s encoder with adaptive G at ``num_points``."""
    from pa3d_layers import num_groups_for
    from pa3d_models import create_model

    from .encoder import encoder_flops

    dev = torch.device(device)
    net = create_model(model)
    K = net.encoder.config["group_size"]
    G = num_groups_for(num_points, K)
    cfg = {**net.encoder.config, "num_groups": G}
    from pa3d_models import PatchEncoder

    torch.manual_seed(0)
    enc = PatchEncoder(**cfg).to(dev).eval()
    pts = torch.rand(1, num_points, 3, generator=torch.Generator().manual_seed(0)).to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            enc(pts)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    out: dict[str, Any] = {"num_groups": G, "median_ms": statistics.median(times), "min_ms": min(times),
                           "max_ms": max(times), "repeats": len(times), "warmup": warmup,
                           "gflop": encoder_flops(**cfg, factorised=True) / 1e9}
    if dev.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


def run(ctx: Context) -> dict[str, Any]:
    if ctx.toy:
        model, sizes = "patchalign3d_tiny", [256, 512]
    elif ctx.quick:
        model, sizes = "patchalign3d_base", [2048, 8192]
    else:
        model, sizes = "patchalign3d_base", [2048, 10_000, 50_000, 100_000]
    rows = []
    for n in sizes:
        big = n > 10_000 and ctx.device.type == "cpu"
        r = run_probe("benchmarks.scaling:measure_forward",
                      dict(model=model, num_points=n, repeats=1 if big else 3, warmup=0 if big else 1,
                           device=str(ctx.device)))
        rows.append({"name": f"encoder N={n}", **r, "gflops": r["gflop"] / (r["median_ms"] * 1e-3)})
    notes = [f"{model}, batch 1, G = num_groups_for(N, K) (coverage 2); gflop = pa3d's (factorised) analytic count."]
    if any(n > 10_000 for n in sizes) and ctx.device.type == "cpu":
        notes.append("N > 10k on CPU: one timed forward without warm-up (a reduction to bound the run time).")
    return {"rows": rows, "notes": notes}
