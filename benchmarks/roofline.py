"""The hardware limit: a square GEMM (2048 x 2048 x 2048, 2 n^3 FLOPs) in fp32 and bf16, measured in the same run.

On CPUs with native bf16 (AVX512-BF16 or AMX, read from ``/proc/cpuinfo``) the bf16 GEMM is the fastest path
and is measured at n = 2048 like fp32. Without it PyTorch's bf16 matmul is far slower than fp32, so it is
measured at n = 512 and the size is recorded. The encoder family also times this GEMM right beside each of
its repeats; these rows are the run's reference figures.
"""

from __future__ import annotations

from typing import Any

import torch

from ._harness import Context, native_bf16, time_fn

__all__ = ["run", "gemm_gflops"]


def gemm_gflops(ctx: Context, n: int, dtype: torch.dtype) -> dict[str, Any]:
    """Time ``a @ b`` for ``(n, n)`` matrices and return the row with ``gflops``."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(ctx.device, dtype)
    b = torch.randn(n, n, generator=g).to(ctx.device, dtype)
    t = time_fn(lambda: a @ b, ctx, repeats=max(ctx.repeats, 5))
    return {"name": f"gemm {str(dtype).removeprefix('torch.')} n={n}", **t,
            "gflops": 2 * n**3 / (t["median_ms"] * 1e-3) / 1e9}


def run(ctx: Context) -> dict[str, Any]:
    n = 256 if ctx.toy else 2048
    rows = [gemm_gflops(ctx, n, torch.float32)]
    notes = [f"FLOPs of one GEMM = 2 n^3 (n = {n}); GFLOP/s from the median time."]
    native = ctx.device.type == "cuda" or native_bf16("cpu")
    ctx.shared["native_bf16"] = native
    n16 = n if native else min(n, 128 if ctx.toy else 512)
    rows.append(gemm_gflops(ctx, n16, torch.bfloat16))
    if n16 != n:
        notes.append(f"bf16 GEMM measured at n = {n16} on CPU (no native bf16 here: it is orders of magnitude slower).")
    else:
        notes.append("native bf16 on this device: bf16 GEMM measured at the same n as fp32.")
    ctx.shared["gemm_fp32_gflops"] = rows[0]["gflops"]
    ctx.shared["gemm_bf16_gflops"] = rows[1]["gflops"]
    return {"rows": rows, "notes": notes}
