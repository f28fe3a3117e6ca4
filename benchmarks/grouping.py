"""Grouping: FPS and kNN with torch-cluster vs the pure-PyTorch reference, and the propagation modes.

Paper patching: S = 128 FPS centres per cloud, each with its k = 32 nearest points, batch 32, at N = 2k,
10k and 100k points. The torch reference FPS is a loop over the S samples; the kNN reference is a chunked
distance matrix with ``topk``.
"""

from __future__ import annotations

from typing import Any

import torch

from ._harness import Context, time_fn

__all__ = ["run"]


def run(ctx: Context) -> dict[str, Any]:
    from pa3d_layers import fps, knn
    from pa3d_layers._backend import WITH_TORCH_CLUSTER

    if ctx.toy:
        sizes, batch, S, k = [256], 2, 16, 8
    elif ctx.quick:
        sizes, batch, S, k = [2048, 10_000], 8, 128, 32
    else:
        sizes, batch, S, k = [2048, 10_000, 100_000], 32, 128, 32
    backends = ["torch"] + (["cluster"] if WITH_TORCH_CLUSTER else [])
    notes = [f"B = {batch}, S = {S} centres, k = {k}; each figure is one call on the whole batch."]
    if not WITH_TORCH_CLUSTER:
        notes.append("torch-cluster is not installed here: only the torch reference is measured.")
    if ctx.quick and not ctx.toy:
        notes.append("quick run: batch 8 and N <= 10k (the full run uses batch 32 and N up to 100k).")
    rows = []
    g = torch.Generator().manual_seed(0)
    for n in sizes:
        pts = torch.rand(batch, n, 3, generator=g).to(ctx.device)
        repeats = ctx.repeats if n <= 10_000 else 3
        res: dict[str, dict[str, float]] = {}
        for be in backends:
            t = time_fn(lambda be=be, p=pts: fps(p, S, backend=be), ctx, repeats=repeats)
            res.setdefault("fps", {})[be] = t["median_ms"]
            rows.append({"name": f"fps N={n}", "backend": be, "batch": batch, **t})
            idx = fps(pts, S, backend=be)
            centers = torch.gather(pts, 1, idx[..., None].expand(-1, -1, 3))
            t = time_fn(lambda be=be, c=centers, p=pts: knn(p, c, k, backend=be), ctx, repeats=repeats)
            res.setdefault("knn", {})[be] = t["median_ms"]
            rows.append({"name": f"knn N={n}", "backend": be, "batch": batch, **t})
        if "cluster" in backends:
            for op, r in res.items():
                for row in rows:
                    if row["name"] == f"{op} N={n}" and row["backend"] == "cluster":
                        row["speedup_vs_torch"] = r["torch"] / r["cluster"]
    rows += _propagation(ctx, batch)
    return {"rows": rows, "notes": notes}


def _propagation(ctx: Context, batch: int) -> list[dict[str, Any]]:
    try:
        from pa3d_layers import PROPAGATION_MODES, PatchGrouper, propagate_to_points
    except ImportError:  # pragma: no cover - before the layers land
        return []
    n, G, K, C = (256, 16, 8, 8) if ctx.toy else (2048, 128, 32, 384)
    g = torch.Generator().manual_seed(1)
    pts = torch.rand(batch, n, 3, generator=g).to(ctx.device)
    groups = PatchGrouper(G, K)(pts)
    values = torch.randn(batch, G, C, generator=g).to(ctx.device)
    rows = []
    for mode in PROPAGATION_MODES:
        t = time_fn(
            lambda mode=mode: propagate_to_points(values, pts, groups.centers, patch_idx=groups.patch_idx, mode=mode),
            ctx,
        )
        rows.append({"name": f"propagate {mode} N={n} G={G} C={C}", "backend": "auto", "batch": batch, **t})
    return rows
