"""torch.compile on the default path: the model's forward traces with no graph break (fullgraph=True), with
the grouping backend the installation picks (torch-cluster runs as custom ops with fake kernels), and gives
the eager outputs."""

from __future__ import annotations

import pytest
import torch

from pa3d_layers import group_points
from pa3d_layers._backend import WITH_TORCH_CLUSTER

BACKENDS = ["torch"] + (["cluster"] if WITH_TORCH_CLUSTER else [])


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_model_compiles_without_graph_breaks_and_matches_eager(backend):
    from pa3d_models import create_model

    torch.manual_seed(0)
    model = create_model("patchalign3d_tiny", backend=backend).eval()
    pts = torch.rand(2, 256, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = model(pts)  # also emits the once-only "extension missing" warning outside the trace
        compiled = torch.compile(model, backend="eager", fullgraph=True)(pts)
    assert torch.equal(compiled["patch_idx"], eager["patch_idx"])
    assert torch.equal(compiled["centers"], eager["centers"])
    torch.testing.assert_close(compiled["patch_feats"], eager["patch_feats"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_group_points_compiles_with_aot_autograd(backend):
    pts = torch.rand(3, 64, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    eager = group_points(pts, 8, 4, backend=backend)
    fn = torch.compile(lambda p: group_points(p, 8, 4, backend=backend), backend="aot_eager", fullgraph=True)
    out = fn(pts)
    assert torch.equal(out.patch_idx, eager.patch_idx) and torch.equal(out.center_idx, eager.center_idx)
    out.neighborhoods.square().sum().backward()  # gradients reach the points through the gathers
    assert pts.grad is not None and bool(pts.grad.abs().sum() > 0)


@pytest.mark.skipif(not WITH_TORCH_CLUSTER, reason="torch-cluster not installed")
def test_cluster_custom_ops_pass_opcheck():
    from pa3d_layers.grouping import _cluster_fps_dense, _cluster_knn_dense

    pts = torch.rand(2, 40, 3, generator=torch.Generator().manual_seed(2))
    torch.library.opcheck(_cluster_fps_dense, (pts, 7, False), test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(_cluster_knn_dense, (pts, pts[:, :5].clone(), 4),
                          test_utils=("test_schema", "test_faketensor"))


def test_checks_still_run_in_eager_mode():
    from pa3d_models import create_model

    model = create_model("patchalign3d_tiny", backend="torch").eval()
    with pytest.raises(ValueError, match="points must be finite"):
        model(torch.full((1, 256, 3), float("nan")))
