"""Figures: palettes, PCA colours and that PNGs are written (valid, atomically)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pa3d_train.viz import colorize_labels, pca_rgb, save_feature_figure, save_part_figure


@given(st.integers(2, 12), st.integers(1, 16), st.integers(0, 2**16))
def test_pca_rgb_in_unit_cube_and_translation_invariant(m, d, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, d, generator=gen)
    rgb = pca_rgb(x)
    assert rgb.shape == (m, 3) and bool((rgb >= 0).all()) and bool((rgb <= 1 + 1e-6).all())
    assert torch.allclose(pca_rgb(x + 5.0), rgb, atol=1e-4)


def test_pca_rgb_separates_two_clusters():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(20, 16, generator=gen) * 0.01 + 1
    b = torch.randn(20, 16, generator=gen) * 0.01 - 1
    rgb = pca_rgb(torch.cat([a, b]))
    # the first component splits the clusters: one cluster near 0, the other near 1
    assert {round(float(rgb[:20, 0].mean())), round(float(rgb[20:, 0].mean()))} == {0, 1}


def test_colorize_labels_unlabelled_grey_and_errors():
    colors = colorize_labels(torch.tensor([0, -1, 2]), 3)
    assert colors.shape == (3, 3) and colors[1].tolist() == [170, 170, 170]
    assert colors[0].tolist() != colors[2].tolist()
    with pytest.raises(ValueError, match="labels must be < num_parts=2"):
        colorize_labels(torch.tensor([2]), 2)
    with pytest.raises(ValueError, match=r"features must be \(M, D\)"):
        pca_rgb(torch.randn(1, 4))


def test_figures_are_valid_pngs(tmp_path):
    pts = torch.rand(64, 3)
    labels = (pts[:, 1] > 0.5).long()
    out = save_part_figure(
        tmp_path / "parts.png", [{"points": pts, "pred": labels, "target": labels, "names": ["a", "b"], "title": "s"}]
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = save_feature_figure(tmp_path / "pca.png", [{"points": pts, "features": torch.randn(64, 8), "title": "s"}])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts.png", "pca.png"]
    with pytest.raises(ValueError, match="at least one shape"):
        save_part_figure(tmp_path / "x.png", [])
