"""``PatchAlign3D.segment`` on ragged batches (``(pos, batch)``, PyG ``Batch``), other dtypes, and the value
checks that sit at its door (NaN text features, NaN weights, ``min_score=nan``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pa3d_models import FixedTextEncoder, create_model

NAMES = ["leg", "seat", "back"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("patchalign3d_tiny", backend="torch").eval(), FixedTextEncoder(dim=64)


@settings(max_examples=8)
@given(sizes=st.lists(st.integers(40, 120), min_size=1, max_size=3), seed=st.integers(0, 2**16),
       assign=st.sampled_from(["nearest", "membership", "idw"]))
def test_ragged_equals_each_cloud_alone(model, sizes, seed, assign):
    m, enc = model
    g = torch.Generator().manual_seed(seed)
    clouds = [torch.rand(n, 3, generator=g) for n in sizes]
    pos = torch.cat(clouds)
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    ragged = m.segment(pos, NAMES, enc, batch=batch, assign=assign)
    assert isinstance(ragged, list) and len(ragged) == len(sizes)
    for cloud, res in zip(clouds, ragged):
        alone = m.segment(cloud, NAMES, enc, assign=assign)
        assert res.labels.shape == (len(cloud),) and res.similarities.shape == (len(cloud), 3)
        torch.testing.assert_close(res.similarities, alone.similarities, atol=1e-5, rtol=1e-5)
        top2 = alone.similarities.topk(2, dim=-1).values
        clear = (top2[:, 0] - top2[:, 1]) > 1e-4  # ties may break either way at float32 precision
        assert torch.equal(res.labels[clear], alone.labels[clear])


def test_pyg_batch_gives_per_cloud_results(model):
    pyg = pytest.importorskip("torch_geometric.data")
    m, enc = model
    a, b = torch.rand(90, 3), torch.rand(70, 3)
    out = m.segment(pyg.Batch.from_data_list([pyg.Data(pos=a), pyg.Data(pos=b)]), NAMES, enc)
    assert [tuple(r.labels.shape) for r in out] == [(90,), (70,)]
    assert torch.equal(out[1].labels, m.segment(b, NAMES, enc).labels)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_dtypes_are_cast_at_the_door(model, dtype):
    m, enc = model
    pts = torch.rand(2, 100, 3)
    ref = m.segment(pts, NAMES, enc)
    out = m.segment(pts.to(dtype), NAMES, enc)
    assert out.labels.shape == (2, 100) and out.similarities.dtype == torch.float32
    if dtype == torch.float64:
        assert torch.equal(out.labels, ref.labels)


def test_values_that_spoil_a_result_are_refused(model):
    m, enc = model
    pts = torch.rand(100, 3)
    with pytest.raises(ValueError, match="min_score must be a finite number or None, got nan"):
        m.segment(pts, NAMES, enc, min_score=float("nan"))
    with pytest.raises(ValueError, match="text (features|embeddings) must be finite"):
        text = enc.encode(NAMES).clone()
        text[1, 0] = float("nan")
        m.segment(pts, NAMES, text)
    with pytest.raises(ValueError, match=r"points \(cast to torch.float32\) must be finite"):
        m.segment(torch.full((100, 3), 1e300, dtype=torch.float64), NAMES, enc)
    bad = create_model("patchalign3d_tiny", backend="torch")
    with torch.no_grad():
        bad.text_head.bias[0] = float("inf")
    with pytest.raises(ValueError, match="weights must be finite, but text_head.bias holds NaN/Inf"):
        bad.segment(pts, NAMES, enc)
    with pytest.raises(ValueError, match="batch must be sorted"):
        m.segment(torch.rand(100, 3), NAMES, enc, batch=torch.tensor([1] * 50 + [0] * 50))
