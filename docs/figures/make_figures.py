"""Generate the documentation figures into docs/images/ (committed; rerun after changing the library).

    .venv/bin/python docs/figures/make_figures.py              # all figures (the segmented one trains ~6 min)
    .venv/bin/python docs/figures/make_figures.py pipeline patches

- ``pipeline.png``: the PatchAlign3D pipeline (patches -> tokens -> Transformer -> the two heads), drawn with
  matplotlib boxes and arrows.
- ``patches.png``: a synthetic chair with its parts, the FPS centres, the points coloured by the patch whose
  centre is nearest, and one patch's fractional labels.
- ``segmented.png``: segmentation of held-out synthetic shapes (of the training categories) by the tiny model
  after a short run of the recipe (`pa3d_train.main`) on the embedded synthetic data (fixed text vectors:
  part names seen in training; Stage 2 fine-tunes the whole encoder, `--freeze-policy none`), next to the
  ground truth. Small and CPU-only: it illustrates the output, it is not a benchmark (the run's held-out mIoU
  was 69.7 on the training categories, 43.9 on the held-out categories).

Everything is seeded; the PNGs are written atomically, small (low dpi).
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

__all__ = ["pipeline_figure", "patches_figure", "segmented_figure", "main"]

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "docs" / "images"
DPI = 110


def _save(fig, name: str) -> Path:
    IMAGES.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    path = IMAGES / name
    fd, tmp = tempfile.mkstemp(dir=IMAGES, suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(buf.getvalue())
    os.chmod(tmp, 0o644)  # mkstemp creates 0600
    os.replace(tmp, path)
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)")
    return path


def _box(ax, xy, w, h, text, color, fontsize=8.5):
    x, y = xy
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.06", fc=color, ec="#333",
                                lw=0.8))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, wrap=True)


def _arrow(ax, a, b, text=None, color="#333", style="-|>", ls="-"):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=10, color=color, lw=1.0, ls=ls))
    if text:
        ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.09, text, ha="center", va="bottom", fontsize=7,
                color=color)


def pipeline_figure() -> Path:
    """The encoder and both training stages as one diagram."""
    fig, ax = plt.subplots(figsize=(11, 4.2))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 4.2)
    ax.axis("off")
    enc, s1, s2 = "#dbe9f6", "#fde2c8", "#d9f0d3"
    y = 2.0
    _box(ax, (0.1, y), 1.4, 0.9, "points\n(B, N, 3)\nXYZ only", "#eeeeee")
    _box(ax, (1.9, y), 1.6, 0.9, "PatchGrouper\nFPS centres (B, G, 3)\n+ kNN (B, G, K, 3)", enc)
    _box(ax, (3.9, y), 1.6, 0.9, "PointNetTokenizer\nmini-PointNet\n(B, G, D)", enc)
    _box(ax, (5.9, y), 1.7, 0.9, "TransformerEncoder\n12 blocks, position\nre-added per block", enc)
    _box(ax, (3.9, 0.5), 1.6, 0.7, "PatchEmbedding\ncentres -> (B, G, D)", enc)
    for a, b in (((1.5, y + 0.45), (1.9, y + 0.45)), ((3.5, y + 0.45), (3.9, y + 0.45)),
                 ((5.5, y + 0.45), (5.9, y + 0.45))):
        _arrow(ax, a, b)
    _arrow(ax, (2.7, y), (3.9, 0.85), "centres")
    _arrow(ax, (5.5, 0.85), (6.75, y), "pos")
    # heads
    _box(ax, (8.1, 3.05), 1.3, 0.8, "teacher head\n(B, G, T)", s1)
    _box(ax, (8.1, 0.9), 1.3, 0.8, "text head\n(B, G, D_text)", s2)
    _arrow(ax, (7.6, y + 0.6), (8.1, 3.45))
    _arrow(ax, (7.6, y + 0.3), (8.1, 1.3))
    _box(ax, (9.7, 3.05), 1.25, 0.8, "Stage 1: cosine\nvs DINOv2 patch\ntargets", s1, fontsize=7.5)
    _box(ax, (9.7, 1.55), 1.25, 0.95, "Stage 2: sigmoid\nBCE vs fractional\nlabels, in-shape\nnegatives", s2,
         fontsize=7.5)
    _box(ax, (9.7, 0.2), 1.25, 0.9, "inference: argmax\nover part names,\npatch -> points", "#f3e6f7",
         fontsize=7.5)
    _arrow(ax, (9.4, 3.45), (9.7, 3.45))
    _arrow(ax, (9.4, 1.4), (9.7, 2.0))
    _arrow(ax, (9.4, 1.2), (9.7, 0.65))
    ax.text(10.33, 4.05, "rendered views -> DINOv2 -> back-projected,\naveraged per patch (cached)", ha="center",
            va="center", fontsize=6.5, color="#8a4b08")
    ax.text(8.75, 0.45, "text encoder:\n'leg', 'seat', ...", ha="center", va="center", fontsize=7,
            color="#2d6a1f")
    ax.text(0.1, 3.95, "PatchAlign3D in pa3d", fontsize=11, weight="bold", va="center")
    ax.text(0.1, 3.55, "blue: pa3d_layers (inside pa3d_models.PatchEncoder)   orange: Stage 1\n"
            "green: Stage 2 (only the last block, the final norm and the heads train)", fontsize=7, va="center",
            color="#444")
    return _save(fig, "pipeline.png")


def _view(ax, pts, colors, title, size=4.0):
    pts = pts[:, [0, 2, 1]]  # the synthetic shapes are y-up; matplotlib draws z up
    ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=colors, s=size, linewidths=0, depthshade=False)
    ax.view_init(elev=18, azim=-60)
    ax.set_box_aspect(np.ptp(pts, axis=0) + 1e-6)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def patches_figure() -> Path:
    """A synthetic chair: parts, patches (nearest centre), one patch's label fractions."""
    from pa3d_data import SYNTHETIC_PART_NAMES, synthetic_shape
    from pa3d_layers import PatchGrouper
    from pa3d_losses import fractional_patch_labels
    from pa3d_train.viz import colorize_labels

    rng = np.random.default_rng(3)
    pts_np, lab_np = synthetic_shape("chair", rng, num_points=1024)
    names = SYNTHETIC_PART_NAMES["chair"]
    points = torch.from_numpy(pts_np)[None]
    labels = torch.from_numpy(lab_np)[None]
    groups = PatchGrouper(32, 64, backend="torch")(points)  # the paper's coverage G*K/N = 2, fewer patches
    centers = groups.centers[0]
    nearest = torch.cdist(points[0], centers).argmin(-1).numpy()
    frac = fractional_patch_labels(groups.patch_idx, point_labels=labels, num_labels=len(names), backend="torch")[0]
    mixed = int(((frac > 0).sum(-1)).argmax())  # a patch that straddles parts
    palette = plt.get_cmap("tab20")(np.linspace(0, 1, 20))[:, :3]
    patch_colors = palette[(nearest * 7) % 20]

    fig = plt.figure(figsize=(11, 3.9))
    ax = fig.add_subplot(1, 3, 1, projection="3d")
    _view(ax, pts_np, colorize_labels(lab_np, len(names)) / 255.0, "parts (labels)")
    ax = fig.add_subplot(1, 3, 2, projection="3d")
    _view(ax, pts_np, patch_colors, "G = 32 patches (FPS centres x, K = 64)")
    c = centers.numpy()
    ax.scatter(c[:, 0], c[:, 2], c[:, 1], c="k", s=14, marker="x", linewidths=0.8, depthshade=False)
    ax = fig.add_subplot(1, 3, 3, projection="3d")
    grey = np.full((len(pts_np), 3), 0.85)
    member = groups.patch_idx[0, mixed].numpy()
    grey[member] = colorize_labels(lab_np[member], len(names)) / 255.0
    shares = ", ".join(f"{n} {float(f):.2f}" for n, f in zip(names, frac[mixed]) if f > 0)
    sizes = np.full(len(pts_np), 3.0)
    sizes[member] = 12.0
    _view(ax, pts_np, grey, f"one patch's targets:\n{shares}", size=sizes)
    ax.scatter(c[mixed, 0], c[mixed, 2], c[mixed, 1], c="k", s=40, marker="x", depthshade=False)
    return _save(fig, "patches.png")


# A short CPU run of the recipe: the tiny model, Stage 2 training the whole encoder at a raised learning rate
# so that a few minutes suffice; fixed text vectors (the part names are the training names).
RECIPE_ARGS = [
    "all", "--model", "patchalign3d_tiny", "--train-shapes", "280", "--eval-shapes", "14", "--heldout-shapes", "8",
    "--stage1-epochs", "1", "--stage2-epochs", "15", "--num-points", "512", "--views", "2", "--image-size", "64",
    "--teacher", "tiny", "--batch-size", "14", "--text-model", "fixed:32", "--no-stage2-only", "--figures", "0",
    "--freeze-policy", "none", "--lr-encoder", "1e-3", "--lr-head", "2e-3", "--lr-logit", "1e-2",
]


def segmented_figure(out_dir: str | None = None) -> Path:
    """Train the tiny model briefly with the recipe, then segment held-out shapes next to the ground truth."""
    from pa3d_data import SyntheticPartDataset
    from pa3d_models import load_pretrained, resolve_text_encoder

    torch.manual_seed(0)
    work = Path(out_dir or tempfile.mkdtemp(prefix="pa3d_fig_"))
    run = work / "run"
    if not (run / "stage2" / "model").is_dir():
        from pa3d_train import main

        if main([*RECIPE_ARGS, "--out", str(run)], config_dir=ROOT / "recipes" / "configs") != 0:
            raise RuntimeError(f"the training run for the figure failed; see {run}")
    model = load_pretrained(run / "stage2" / "model")
    text = resolve_text_encoder("fixed:32", verbose=False)
    test = SyntheticPartDataset(40, split="test", num_points=512, seed=123, cache=False)
    wanted, shapes = ["chair", "table", "airplane"], []
    from pa3d_train.viz import colorize_labels

    for cat in wanted:
        s = next(test[i] for i in range(len(test)) if test[i].category == cat)
        res = model.segment(s.points, s.label_names, text)
        shapes.append((s, res.labels))
    fig = plt.figure(figsize=(3.0 * len(shapes), 5.4))
    for col, (s, pred) in enumerate(shapes):
        pts = s.points.numpy()
        n = len(s.label_names)
        acc = float((pred == s.labels).float().mean())
        ax = fig.add_subplot(2, len(shapes), col + 1, projection="3d")
        _view(ax, pts, colorize_labels(pred, n) / 255.0, f"{s.category}: predicted ({acc:.0%} of points)", 3.0)
        ax = fig.add_subplot(2, len(shapes), len(shapes) + col + 1, projection="3d")
        _view(ax, pts, colorize_labels(s.labels, n) / 255.0, "ground truth: " + ", ".join(s.label_names), 3.0)
    fig.suptitle("pa3d segment: tiny model, a few CPU minutes of training on the synthetic data", fontsize=9)
    return _save(fig, "segmented.png")


FIGURES = {"pipeline": pipeline_figure, "patches": patches_figure, "segmented": segmented_figure}


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(FIGURES)
    for name in names:
        if name not in FIGURES:
            raise SystemExit(f"unknown figure {name!r}; choose from {sorted(FIGURES)}")
        FIGURES[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
