"""End to end: ``PatchAlign3D.segment()`` latency for one shape with a cached text bank.

The model is ``create_model("patchalign3d_base")`` in eval mode (random weights: the latency does not depend
on them), the text side a :class:`~pa3d_models.TextBank` built once for 8 part names (so no text encoder runs
per call, as with a cached bank), and the input one shape of N = 2048 points. A call covers the checks,
grouping, the encoder, the text head, the patch-text similarities and the propagation to every point
(``assign="nearest"``). Measured in fp32 and under bf16 autocast.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ._harness import Context, time_fn

__all__ = ["run"]

NAMES = ["head", "body", "wing", "foot", "tail", "leg", "arm", "back"]


def run(ctx: Context) -> dict[str, Any]:
    from pa3d_models import FixedTextEncoder, TextBank, create_model

    name, n = ("patchalign3d_tiny", 256) if ctx.toy else ("patchalign3d_base", 2048)
    torch.manual_seed(0)
    model = create_model(name).to(ctx.device).eval()
    bank = TextBank.build(NAMES, FixedTextEncoder(dim=model.text_dim))
    pts = torch.rand(n, 3, generator=torch.Generator().manual_seed(0)).to(ctx.device)
    rows = []
    for label, auto in (("fp32", False), ("bf16 autocast", True)):
        def call(auto: bool = auto) -> Any:
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=auto):
                return model.segment(pts, NAMES, bank)

        res = call()
        t = time_fn(call, ctx, repeats=max(ctx.repeats, 5))
        rows.append({"name": f"segment 1 x {n} points, {len(NAMES)} parts", "variant": label, **t,
                     "shapes_per_s": 1e3 / t["median_ms"], "labelled_points": int((res.labels >= 0).sum()),
                     "load": round(os.getloadavg()[0], 2)})
    notes = [f"{name}, eval mode, one shape of {n} points, a TextBank of {len(NAMES)} names built once (cached); "
             "time from points in to per-point labels, scores and similarities out."]
    return {"rows": rows, "notes": notes}
