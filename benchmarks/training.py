"""Training-step throughput and peak memory: Stage 1 (full model, cosine distillation to a teacher) and
Stage 2 (frozen encoder except the last block and final norm, multi-positive sigmoid loss), and Stage 2 against
a plain re-statement of the official training step in the same run.

The official step (:func:`measure_official_stage2_step`, written from the facts about the release, not copied)
runs :class:`benchmarks.reference.ReferenceEncoder` with a Linear(384 -> 1280) text projection and a learned
log-scale (clamped at 100, no bias), trains ``blocks.blocks.11``, ``norm``, ``reduce_dim``, ``cls_token`` and
``cls_pos`` (``--train_last_block_only``) in train mode, and computes its loss in a Python loop over the shapes:
per shape, the patch-label fractions from the shape's own ``patch_idx``, then
``binary_cross_entropy_with_logits(logits, Y, pos_weight=max(1, L - 1))``, averaged over the batch; AdamW with
the release's three groups (1e-4 / 5e-4 / 5e-4, weight decay 0.05). pa3d's row with the same trainable set
(``freeze_for_stage2(policy="official", freeze_bn_stats=False)``) is the like-for-like comparison.

Every measurement runs in its own Python process (``benchmarks._probe``) so its peak memory is its own: max
RSS on CPU (``base_rss_mb`` is the process after imports, before the model is built), and
``torch.cuda.max_memory_allocated`` on GPU. Inputs are random (points, teacher targets, texts, labels): the
step's cost does not depend on their values. A step = forward, loss, backward, AdamW update.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from ._harness import Context, run_probe

__all__ = ["run", "measure_step", "measure_official_stage2_step"]


def _timed_steps(step: Any, steps: int, dev: torch.device) -> list[float]:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def measure_official_stage2_step(batch: int, num_points: int, steps: int, device: str,
                                 num_labels: int = 8, model: str = "patchalign3d_base") -> dict[str, Any]:
    """The official Stage-2 training step re-stated (module docstring): ``steps`` timed steps after one warm-up."""
    import math

    from benchmarks.reference import ReferenceEncoder
    from pa3d_models import MODELS

    dev = torch.device(device)
    torch.manual_seed(0)
    cfg = {k: MODELS[model][k] for k in ("num_groups", "group_size", "tokenizer_dim", "embed_dim", "depth",
                                        "num_heads", "mlp_ratio", "drop_path_rate")}
    enc = ReferenceEncoder(**cfg).to(dev).train()
    text_dim = MODELS[model]["text_dim"]
    proj = torch.nn.Linear(cfg["embed_dim"], text_dim).to(dev)
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07), device=dev))
    last = f"blocks.blocks.{cfg['depth'] - 1}."
    for name, p in enc.named_parameters():
        p.requires_grad_(name.startswith((last, "norm.", "reduce_dim.")) or name in ("cls_token", "cls_pos"))
    trainable = [p for p in enc.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": trainable, "lr": 1e-4}, {"params": list(proj.parameters()), "lr": 5e-4},
                             {"params": [log_scale], "lr": 5e-4}], weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(batch, num_points, 3, generator=g).to(dev)
    texts = F.normalize(torch.randn(batch, num_labels, text_dim, generator=g), dim=-1).to(dev)
    labels = torch.randint(0, num_labels, (batch, num_points), generator=g).to(dev)
    label_ids = torch.arange(num_labels, device=dev)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = enc.forward_patches(pts)
        feats = F.normalize(proj(out["feats"]), dim=-1)
        scale = log_scale.exp().clamp(max=100.0)
        losses = []
        for b in range(batch):  # the release's per-shape loop
            masks = labels[b].unsqueeze(0) == label_ids.unsqueeze(1)  # (L, N)
            y = masks[:, out["patch_idx"][b]].float().mean(-1).T  # (G, L): fraction of each patch in each label
            logits = feats[b] @ texts[b].T * scale
            pw = torch.full((num_labels,), max(1.0, num_labels - 1.0), device=dev)
            losses.append(F.binary_cross_entropy_with_logits(logits, y, pos_weight=pw))
        torch.stack(losses).mean().backward()
        opt.step()

    times = _timed_steps(step, steps, dev)
    out: dict[str, Any] = {
        "median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "repeats": len(times),
        "trainable_params": sum(p.numel() for p in trainable) + sum(p.numel() for p in proj.parameters()) + 1,
    }
    if dev.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


def measure_step(stage: int, model: str, batch: int, num_points: int, steps: int, device: str,
                 num_labels: int = 8, policy: str = "paper") -> dict[str, Any]:
    """Build ``model``, run ``steps`` timed training steps of ``stage`` (after one warm-up), return times."""
    from pa3d_losses import cosine_distillation_loss, fractional_patch_labels, multi_positive_sigmoid_loss
    from pa3d_models import create_model, freeze_for_stage2

    dev = torch.device(device)
    torch.manual_seed(0)
    net = create_model(model).to(dev).train()
    if stage == 2:
        freeze_for_stage2(net, policy, freeze_bn_stats=policy != "official")
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

    times = _timed_steps(step, steps, dev)
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
    common = dict(model=model, batch=batch, num_points=n, steps=steps, device=str(ctx.device))
    for stage, policy, name in ((1, "paper", "stage 1 step"), (2, "paper", "stage 2 step (paper freeze)"),
                                (2, "official", "stage 2 step (official freeze)")):
        r = run_probe("benchmarks.training:measure_step", dict(stage=stage, policy=policy, **common))
        rows.append({"name": name, "variant": "pa3d", "batch": batch, **r, "shapes_per_s": 1e3 * batch / r["median_ms"],
                     "load": round(os.getloadavg()[0], 2)})
    r = run_probe("benchmarks.training:measure_official_stage2_step", common)
    rows.append({"name": "stage 2 step (official freeze)", "variant": "official re-statement (per-shape loss loop)",
                 "batch": batch, **r, "shapes_per_s": 1e3 * batch / r["median_ms"],
                 "load": round(os.getloadavg()[0], 2)})
    speedup = rows[-1]["min_ms"] / rows[-2]["min_ms"]
    rows[-2]["speedup_vs_official"] = speedup
    notes.append("stage 2 (official freeze): the same trainable set in both rows (last block, final norm, reduce_dim, "
                 "cls token/pos, text head, scale), train mode; speedup_vs_official compares the best steps.")
    targets = [{"target": f"Stage-2 step faster than the official re-statement (batch {batch})", "measured": speedup,
                "goal": 1.0, "unit": "x", "met": bool(speedup > 1.0)}]
    return {"rows": rows, "notes": notes, "targets": targets}
