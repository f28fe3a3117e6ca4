"""Training-step throughput and peak memory: Stage 1 (full model, cosine distillation to a teacher) and
Stage 2 (frozen encoder except the last block and final norm, multi-positive sigmoid loss).

Every measurement runs in its own Python process (``benchmarks._probe``) so its peak memory is its own: max
RSS on CPU (``base_rss_mb`` is the process after imports, before the model is built), and
``torch.cuda.max_memory_allocated`` on GPU. Inputs are random (points, teacher targets, texts, labels): the
step's cost does not depend on their values. A step = forward, loss, backward, AdamW update.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from ._harness import Context, run_probe

__all__ = ["run", "measure_step"]


def measure_step(stage: int, model: str, batch: int, num_points: int, steps: int, device: str,
                 num_labels: int = 8) -> dict[str, Any]:
    """Build ``model``, run ``steps`` timed training steps of ``stage`` (after one warm-up), return times."""
    from pa3d_losses import cosine_distillation_loss, fractional_patch_labels, multi_positive_sigmoid_loss
    from pa3d_models import create_model, freeze_for_stage2

    dev = torch.device(device)
    torch.manual_seed(0)
    net = create_model(model).to(dev).train()
    if stage == 2:
        freeze_for_stage2(net, "paper")
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(batch, num_points, 3, generator=g).to(dev)
    G = net.encoder.num_groups
    teacher = F.normalize(torch.randn(batch, G, net.teacher_dim, generator=g), dim=-1).to(dev)
    texts = F.normalize(torch.randn(batch, num_labels, net.text_dim, generator=g), dim=-1).to(dev)
    labels = torch.randint(0, num_labels, (batch, num_points), generator=g).to(dev)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if stage == 1:
            out = net(pts, return_teacher=True, return_text=False)
            loss = cosine_distillation_loss(out["teacher_feats"], teacher)
        else:
            out = net(pts)
            y = fractional_patch_labels(out["patch_idx"], point_labels=labels, num_labels=num_labels)
            loss = multi_positive_sigmoid_loss(out["patch_feats"], texts, y, logit_scale=out["logit_scale"],
                                               logit_bias=out["logit_bias"])
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    out: dict[str, Any] = {
        "median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "repeats": len(times),
        "trainable_params": sum(p.numel() for p in params),
    }
    if dev.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


def run(ctx: Context) -> dict[str, Any]:
    if ctx.toy:
        model, batch, n, steps = "patchalign3d_tiny", 2, 256, 2
    elif ctx.quick:
        model, batch, n, steps = "patchalign3d_base", 2, 2048, 2
    else:
        model, batch, n, steps = "patchalign3d_base", 8, 2048, 3
    if ctx.device.type == "cuda" and not ctx.toy:
        batch, steps = 32, 5
    notes = [f"{model}, N = {n}, batch {batch}, {steps} timed steps after 1 warm-up, each in a fresh process; "
             "peak memory = the process's max RSS (CPU) or max_memory_allocated (GPU)."]
    if ctx.device.type == "cpu" and not ctx.toy and batch < 32:
        notes.append(f"batch {batch} instead of the paper's 32 to bound the run time on this CPU.")
    rows = []
    for stage in (1, 2):
        r = run_probe("benchmarks.training:measure_step",
                      dict(stage=stage, model=model, batch=batch, num_points=n, steps=steps, device=str(ctx.device)))
        rows.append({"name": f"stage {stage} step" + (" (frozen encoder)" if stage == 2 else ""), "batch": batch, **r,
                     "shapes_per_s": 1e3 * batch / r["median_ms"]})
    return {"rows": rows, "notes": notes}
