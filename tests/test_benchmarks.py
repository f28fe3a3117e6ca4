"""The benchmark harness at toy sizes (schema, files, markdown) and the official-architecture reference."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import FAMILIES, run_benchmarks, to_markdown
from benchmarks._harness import Context, time_fn
from benchmarks.encoder import PAPER, TOY, encoder_flops
from benchmarks.reference import ReferenceEncoder, reference_fps, reference_group, reference_knn

TINY = dict(num_groups=8, group_size=4, tokenizer_dim=16, embed_dim=16, depth=2, num_heads=2)
ROW_KEYS = {"name", "median_ms", "min_ms", "max_ms", "repeats"}


def test_harness_toy_run_writes_schema(tmp_path):
    families = ["roofline", "losses", "encoder", "accuracy", "segment"]
    res = run_benchmarks(families, toy=True, out_dir=tmp_path, docs_page=tmp_path / "d.md", log=lambda s: None)
    assert res["schema"] == 1 and res["mode"] == "toy"
    env_keys = {"device", "torch", "threads", "torch_cluster", "cpu_flags", "native_bf16", "load_avg_start"}
    assert env_keys <= set(res["env"])
    assert list(res["families"]) == ["roofline", "losses", "encoder", "accuracy", "segment"]
    for name, fam in res["families"].items():
        assert "error" not in fam, (name, fam.get("traceback"))
        assert fam["rows"], name
        for row in fam["rows"]:
            if row.get("skipped") or name == "accuracy":
                continue
            assert ROW_KEYS <= set(row), (name, row)
            assert row["min_ms"] <= row["median_ms"] <= row["max_ms"]
            assert row["repeats"] >= 1
    enc = res["families"]["encoder"]
    variants = {r["variant"] for r in enc["rows"]}
    assert {"baseline fp32", "pa3d fp32", "pa3d bf16 autocast"} <= variants
    assert all(isinstance(t["met"], bool) for t in enc["targets"])
    assert all(r["max_abs_diff_vs_baseline"] < 1e-4 for r in enc["rows"] if r["variant"] == "pa3d fp32")
    for r in enc["rows"]:  # every encoder figure carries the GEMM rate measured beside it and the load
        if r["name"].startswith("encoder"):
            assert r["gemm_bf16_gflops" if "bf16" in r["variant"] else "gemm_fp32_gflops"] > 0 and "load" in r
    assert 0.0 <= next(r for r in enc["rows"] if "bf16" in r["variant"])["label_agreement_vs_fp32"] <= 1.0
    blocks = {r["variant"] for r in enc["profile"]}
    assert {"grouping", "tokenizer", "attention", "mlp", "norms", "other", "whole forward"} <= blocks
    seg = res["families"]["segment"]["rows"]
    assert [r["variant"] for r in seg] == ["fp32", "bf16 autocast"] and all(r["labelled_points"] == 256 for r in seg)
    acc = res["families"]["accuracy"]["rows"][0]
    assert acc["train_steps"] >= 1 and 0.0 <= acc["argmax_agreement"] <= 1.0 and -1.0 <= acc["mean_cosine"] <= 1.0
    assert {t["target"] for t in res["families"]["accuracy"]["targets"]} >= {
        "bf16 patch features mean cosine to fp32 >= 0.99"}
    files = sorted(p.name for p in tmp_path.iterdir())
    assert any(re.fullmatch(r"\d{4}-\d{2}-\d{2}-toy\.json", f) for f in files), files
    written = json.loads(next(tmp_path.glob("*-toy.json")).read_text())
    assert written["families"].keys() == res["families"].keys()
    md = (tmp_path / "d.md").read_text()
    assert md.startswith("# Benchmarks") and "## Targets" in md and "| encoder B=1 | pa3d fp32 |" in md
    assert "### Per-block profile" in md and "native bf16:" in md


def test_probe_measures_in_a_fresh_process():
    from benchmarks._harness import run_probe

    r = run_probe("benchmarks.scaling:measure_forward",
                  dict(model="patchalign3d_tiny", num_points=256, repeats=1, warmup=0, device="cpu"))
    assert r["num_groups"] == 32 and r["repeats"] == 1
    assert r["peak_rss_mb"] >= r["base_rss_mb"] > 0
    with pytest.raises(RuntimeError, match="probe benchmarks.scaling:nope failed"):
        run_probe("benchmarks.scaling:nope", {})


def test_unknown_family_is_rejected():
    with pytest.raises(ValueError, match="only must name families"):
        run_benchmarks(["nope"], toy=True, out_dir=None)
    assert FAMILIES[0] == "roofline"


def test_failing_family_is_reported_not_fatal(monkeypatch, tmp_path):
    import benchmarks.losses as losses

    def boom(ctx):
        raise RuntimeError("kaput")

    monkeypatch.setattr(losses, "run", boom)
    res = run_benchmarks(["losses"], toy=True, out_dir=None, log=lambda s: None)
    assert res["families"]["losses"]["error"] == "RuntimeError: kaput"
    assert "Not measured: `RuntimeError: kaput`" in to_markdown(res)


def test_time_fn_counts_repeats_and_budget():
    calls = []
    t = time_fn(lambda: calls.append(1), Context(repeats=4), warmup=1)
    assert t["repeats"] == 4 and len(calls) == 5
    slow = time_fn(lambda: torch.randn(300, 300) @ torch.randn(300, 300), Context(repeats=50), budget_s=0.0)
    assert slow["repeats"] == 1 and slow.get("warm") is False


@pytest.mark.parametrize("cfg", [TOY, TINY])
def test_flop_formula_matches_flop_counter(cfg):
    ref = ReferenceEncoder(**cfg).eval()
    G, K = cfg["num_groups"], cfg["group_size"]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        ref.forward_tokens(torch.rand(1, G, K, 3), torch.rand(1, G, 3))
    assert counter.get_total_flops() == encoder_flops(**cfg)
    assert encoder_flops(**cfg, factorised=True) < encoder_flops(**cfg)


def test_paper_flop_count():
    assert encoder_flops(**PAPER) == 9_315_665_920


@pytest.mark.parametrize("cfg", [TOY, TINY])
def test_rearranged_tokenizer_flops_match_flop_counter(cfg):
    from benchmarks.encoder import block_flops
    from pa3d_layers import PointNetTokenizer

    tok = PointNetTokenizer(3, cfg["tokenizer_dim"]).eval()
    G, K = cfg["num_groups"], cfg["group_size"]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        tok(torch.rand(1, G, K, 3))
    weights = 2 * 512 * 256 * 128  # W_l W_1, formed once per call (not per shape)
    assert counter.get_total_flops() - weights == block_flops(**cfg, factorised=True)["tokenizer"]


def test_official_stage2_step_restatement_runs():
    from benchmarks.training import measure_official_stage2_step

    r = measure_official_stage2_step(batch=2, num_points=256, steps=1, device="cpu", model="patchalign3d_tiny")
    assert r["repeats"] == 1 and r["trainable_params"] > 0


# ------------------------------------------------------------------------------------------ reference encoder


def test_reference_state_dict_is_the_official_layout():
    sd = ReferenceEncoder().state_dict()
    assert len(sd) == 160
    assert sum(v.numel() for k, v in sd.items() if "running" not in k and "num_batches" not in k) == 21_858_816
    assert list(sd)[:2] == ["cls_token", "cls_pos"]
    expected = {
        "encoder.first_conv.0.weight": (128, 3, 1),
        "encoder.first_conv.3.weight": (256, 128, 1),
        "encoder.second_conv.0.weight": (512, 512, 1),
        "encoder.second_conv.3.weight": (256, 512, 1),
        "encoder.second_conv.1.running_var": (512,),
        "reduce_dim.weight": (384, 256),
        "pos_embed.0.weight": (128, 3),
        "pos_embed.2.weight": (384, 128),
        "blocks.blocks.11.attn.qkv.weight": (1152, 384),
        "blocks.blocks.0.attn.proj.bias": (384,),
        "blocks.blocks.3.mlp.fc1.weight": (1536, 384),
        "blocks.blocks.3.mlp.fc2.weight": (384, 1536),
        "norm.weight": (384,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "blocks.blocks.0.attn.qkv.bias" not in sd
    assert sum(v.numel() for k, v in sd.items() if k.startswith("blocks.blocks.0.")) == 1_773_312


def test_reference_grouping_hand_case():
    pts = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0.2, 0, 0], [0.9, 0, 0], [0.5, 0, 0]]])
    assert reference_fps(pts, 3).tolist() == [[0, 1, 4]]
    assert reference_knn(pts, pts[:, [1]], 2).tolist() == [[[1, 3]]]
    nb, c, idx = reference_group(pts, 2, 2)
    assert torch.equal(c, pts[:, [0, 1]]) and torch.allclose(nb[0, 1, 1], torch.tensor([-0.1, 0, 0]))
    with pytest.raises(ValueError, match="num_samples must be in"):
        reference_fps(pts, 6)


def test_reference_matches_pa3d_encoder_on_shared_weights():
    PatchEncoder = pytest.importorskip("pa3d_models").PatchEncoder
    torch.manual_seed(0)
    ref = ReferenceEncoder(**TINY).eval()
    ours = PatchEncoder(**TINY, backend="torch").eval()
    ours.load_state_dict(ref.state_dict())  # strict: the key layouts are identical
    # Non-trivial BatchNorm statistics so that eval-mode BN is exercised.
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    ours.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(1)
    pts = torch.rand(3, 96, 3, generator=g)
    with torch.no_grad():
        nb, c, _ = reference_group(pts, TINY["num_groups"], TINY["group_size"])
        torch.testing.assert_close(ours.forward_tokens(nb, c), ref.forward_tokens(nb, c), atol=1e-4, rtol=0)
        a, b = ours.forward_patches(pts), ref.forward_patches(pts)
        torch.testing.assert_close(a["centers"], b["centers"])
        torch.testing.assert_close(a["feats"], b["feats"], atol=1e-4, rtol=0)
    # and back: pa3d's weights load into the reference
    ReferenceEncoder(**TINY).load_state_dict(ours.state_dict())


def test_reference_train_mode_runs_backward():
    ref = ReferenceEncoder(**TINY).train()
    ref(torch.rand(2, 64, 3)).sum().backward()
    assert ref.cls_pos.grad is not None and ref.encoder.first_conv[0].weight.grad is not None
