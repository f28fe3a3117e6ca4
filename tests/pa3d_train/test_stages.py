"""Stage drivers' small decisions: evaluation grouping, the Stage-2-only comparison, the evaluation estimate."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pa3d_train.run import wants_stage2_only
from pa3d_train.stages import eval_grouping


@given(g=st.integers(1, 256), k=st.integers(1, 64), n=st.sampled_from([256, 512, 1024, 2048]),
       factor=st.sampled_from([1, 2, 4, 8]))
def test_eval_grouping_keeps_each_patch_s_share_of_the_surface(g, k, n, factor):
    cfg = {"command": "all", "num_points": n}
    G, K = eval_grouping(cfg, g, k, n * factor)
    assert G <= n * factor and K <= n * factor
    if g * factor <= n * factor and k * factor <= n * factor:
        assert (G, K) == (g * factor, k * factor)  # K / N (one patch's share) and G * K / N (coverage) kept
        assert K / (n * factor) == pytest.approx(k / n)


def test_eval_grouping_keeps_a_checkpoint_s_own_grouping_and_never_shrinks():
    assert eval_grouping({"command": "eval", "num_points": 1024}, 128, 32, 2048) == (128, 32)
    assert eval_grouping({"command": "all", "num_points": 2048}, 128, 32, 1024) == (128, 32)
    assert eval_grouping({"command": "all", "num_points": 1024}, 64, 16, 2048) == (128, 32)


@pytest.mark.parametrize(("flag", "dataset", "expected"), [
    (None, "synthetic", True), (None, "lpsb", False), (True, "lpsb", True), (False, "synthetic", False),
])
def test_stage2_only_comparison_runs_by_default_on_the_demo_only(flag, dataset, expected):
    assert wants_stage2_only({"stage2_only": flag, "dataset": dataset}) is expected


@pytest.mark.parametrize(("flags", "expected"), [
    ({"avx2", "avx512f"}, "none"), ({"avx512f", "avx512_bf16"}, "bf16"), ({"amx_tile", "amx_bf16"}, "bf16"),
    (set(), "none"),
])
def test_amp_auto_is_bf16_only_on_cpus_that_compute_it_natively(monkeypatch, flags, expected):
    from pa3d_train import engine

    monkeypatch.setattr(engine, "cpu_flags", lambda: frozenset(flags))
    assert engine.resolve_amp("auto", "cpu") == expected
    for explicit in ("none", "bf16", "fp16"):  # an explicit choice is never overridden
        assert engine.resolve_amp(explicit, "cpu") == explicit


def test_cpu_flags_reads_this_machine():
    from pa3d_train.engine import cpu_flags

    flags = cpu_flags()
    assert isinstance(flags, frozenset)
    import os

    if os.path.exists("/proc/cpuinfo") and "flags" in open("/proc/cpuinfo").read():
        assert flags, "a Linux x86 machine lists its flags"


def test_eval_estimate_times_every_evaluation_set_and_leaves_the_model_as_it_was():
    from pa3d_data import SyntheticPartDataset
    from pa3d_models import FixedTextEncoder, create_model
    from pa3d_models.text import TextBank
    from pa3d_train.stages import EVAL_MARGIN, all_prompts, estimate_eval_seconds

    kw = {"num_points": 128, "seed": 0}
    sets = {"train": SyntheticPartDataset(4, split="train", **kw),
            "heldout_shapes": SyntheticPartDataset(3, split="test", **kw)}
    bank = TextBank.build(all_prompts(sets), FixedTextEncoder(16))
    model = create_model("patchalign3d_tiny", text_dim=16, num_groups=8, group_size=8)
    cfg = {"command": "all", "num_points": 128, "dataset": "synthetic", "eval_root": None, "eval_dataset": None,
           "assign": "nearest", "iou_convention": "strict", "baselines": True}
    seconds = estimate_eval_seconds(model, sets, bank, cfg, num_models=2)
    assert seconds >= EVAL_MARGIN * 15.0 and seconds < 1e4
    assert (model.encoder.grouper.num_groups, model.encoder.grouper.group_size) == (8, 8)


@pytest.mark.parametrize(("flags", "expected"), [({}, (32, 16)), ({"num_groups": 64, "group_size": 24}, (64, 24)),
                                                 ({"group_size": 8}, (32, 8))])
def test_eval_scores_a_saved_model_at_its_own_grouping_unless_told(tmp_path, flags, expected):
    from pa3d_models import FixedTextEncoder, TextBank, create_model
    from pa3d_train.stages import load_for_eval

    create_model("patchalign3d_tiny").save_pretrained(tmp_path / "model")
    cfg = {"checkpoint": str(tmp_path / "model"), "out": str(tmp_path), "num_groups": None, "group_size": None,
           "text_model": "fixed:64", **flags}
    model = load_for_eval(cfg, TextBank.build(["leg"], FixedTextEncoder(dim=64)))
    assert (model.encoder.grouper.num_groups, model.encoder.grouper.group_size) == expected
