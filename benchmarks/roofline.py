"""The hardware limit: a square fp32 GEMM (2048 x 2048 x 2048, 2 n^3 FLOPs) measured in the same run.

bf16 is measured too. On CPUs without native bf16 (no AVX512-BF16/AMX) PyTorch's bf16 matmul is far slower
than fp32, so on CPU it is measured at n = 512 and the size is recorded.
"""

from __future__ import annotations

from typing import Any

import torch

from ._harness import Context, time_fn

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
    n16 = n if ctx.device.type == "cuda" else min(n, 128 if ctx.toy else 512)
    rows.append(gemm_gflops(ctx, n16, torch.bfloat16))
    if n16 != n:
        notes.append(f"bf16 GEMM measured at n = {n16} on CPU (no native bf16 here: it is orders of magnitude slower).")
    ctx.shared["gemm_fp32_gflops"] = rows[0]["gflops"]
    ctx.shared["gemm_bf16_gflops"] = rows[1]["gflops"]
    return {"rows": rows, "notes": notes}
