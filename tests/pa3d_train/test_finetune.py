"""pa3d_train.finetune: initialising the run's model from --init-checkpoint (errors as one-line ConfigErrors naming
the flag), the frozen copy scored before fine-tuning, and the before/after summary of metrics.json and the report.
The recipe-level runs are in tests/recipes/test_finetune.py."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pa3d_models import CheckpointOrigin, InitReport, create_model
from pa3d_train import DEFAULTS, ConfigError
from pa3d_train.finetune import (
    AFTER,
    BEFORE,
    check_init_checkpoint,
    finetune_markdown,
    finetune_summary,
    frozen_copy,
    init_for_finetuning,
)


def cfg(**kw):
    return {**DEFAULTS, "model": "patchalign3d_tiny", "command": "stage2", **kw}


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    model = create_model("patchalign3d_tiny", text_dim=32)
    model.save_pretrained(tmp_path / "start")
    return tmp_path / "start", model


def test_init_for_finetuning_takes_the_checkpoint_and_says_so(folder):
    path, source = folder
    lines = []
    model, report = init_for_finetuning(cfg(init_checkpoint=str(path)), text_dim=32, say=lines.append)
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert report.origin.kind == "pretrained" and report.loaded == ("encoder", "text_head", "logit", "teacher_head")
    assert lines[0].startswith(f"  fine-tuning from {path.resolve()} (pretrained, sha256 {report.origin.sha256[:12]})")
    # the run's overrides apply to the built model: a paper-mode scale/bias is replaced by the checkpoint's
    model2, _ = init_for_finetuning(cfg(init_checkpoint=str(path), init_scale=3.0, init_bias=-1.0), text_dim=32,
                                    say=lambda *_: None)
    assert torch.equal(model2.logit.log_scale, source.logit.log_scale)


@pytest.mark.parametrize(
    ("kw", "text_dim", "message"),
    [
        ({"model": "patchalign3d_small"}, 32, r"^--init-checkpoint .*start: checkpoint .* does not fit the model's "
                                              r"architecture: depth: checkpoint 2 vs model 4"),
        ({}, 48, r"^--init-checkpoint .*: .*text head width: checkpoint 32 vs model 48"),
    ],
    ids=["architecture", "text_width"],
)
def test_init_for_finetuning_errors_name_the_flag(folder, kw, text_dim, message):
    path, _ = folder
    with pytest.raises(ConfigError, match=message):
        init_for_finetuning(cfg(init_checkpoint=str(path), **kw), text_dim=text_dim, say=lambda *_: None)


def test_reinit_text_head_is_said_in_the_log(folder):
    path, _ = folder
    lines = []
    model, report = init_for_finetuning(cfg(init_checkpoint=str(path), reinit_text_head=True), text_dim=48,
                                        say=lines.append)
    assert model.text_dim == 48 and report.reinitialised == ("text_head",)
    assert any("text head re-initialised (48-d" in line for line in lines)


def test_check_init_checkpoint_ignores_the_text_width_but_not_the_rest(folder, tmp_path):
    path, _ = folder
    check_init_checkpoint(cfg(init_checkpoint=str(path)))  # the text width is checked later, once it is known
    (tmp_path / "bad.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ConfigError, match=r"^--init-checkpoint .*bad.pt: checkpoint .*cannot be read"):
        check_init_checkpoint(cfg(init_checkpoint=str(tmp_path / "bad.pt")))
    with pytest.raises(ConfigError, match=r"does not fit the model's architecture"):
        check_init_checkpoint(cfg(init_checkpoint=str(path), model="patchalign3d_small"))


def test_frozen_copy_is_equal_independent_and_not_trainable(folder):
    _, model = folder
    model.train()
    twin = frozen_copy(model)
    assert not twin.training and not any(p.requires_grad for p in twin.parameters())
    assert all(p.requires_grad for p in model.parameters()) and model.training
    points = torch.rand(2, 128, 3)
    torch.testing.assert_close(twin(points)["patch_feats"], model.eval()(points)["patch_feats"])
    with torch.no_grad():
        model.text_head.weight.add_(1.0)
    assert not torch.equal(twin.text_head.weight, model.text_head.weight)


def _report():
    origin = CheckpointOrigin("runs/x", "/abs/runs/x", "pretrained", "/abs/runs/x/model.safetensors", "f" * 64)
    return InitReport(origin, ("encoder", "logit"), ("text_head",), ("text head re-initialised (32-d",))


miou = st.floats(0.0, 1.0, allow_nan=False)


@given(rows=st.dictionaries(st.sampled_from(["eval", "heldout_shapes", "heldout_categories"]),
                            st.tuples(miou, miou, miou, miou), min_size=1))
def test_property_summary_gain_is_after_minus_before_per_set(rows):
    results = {AFTER: {}, BEFORE: {}}
    for name, (bi, bc, ai, ac) in rows.items():
        results[BEFORE][name] = {"instance_miou": bi, "category_miou": bc, "per_category": {}}
        results[AFTER][name] = {"instance_miou": ai, "category_miou": ac, "per_category": {}}
    summary = finetune_summary(results, _report())
    assert set(summary["sets"]) == set(rows)
    for name, (bi, bc, ai, ac) in rows.items():
        row = summary["sets"][name]
        assert row["before"] == {"instance_miou": bi, "category_miou": bc}
        assert row["after"] == {"instance_miou": ai, "category_miou": ac}
        assert math.isclose(row["gain"]["instance_miou"], ai - bi, abs_tol=1e-12)
        assert math.isclose(row["gain"]["category_miou"], ac - bc, abs_tol=1e-12)
    text = finetune_markdown(summary)
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    assert len(table) == len(rows) + 1  # the header and one row per set
    for name, (bi, _, ai, _) in rows.items():
        assert f"| {name} | {100 * bi:.1f} | {100 * ai:.1f} | {100 * (ai - bi):+.1f} |" in text


def test_summary_and_markdown_reference():
    results = {AFTER: {"eval": {"instance_miou": 0.5, "category_miou": 0.25}},
               BEFORE: {"eval": {"instance_miou": 0.125, "category_miou": 0.25}}}
    summary = finetune_summary(results, _report())
    assert summary["init_checkpoint"]["sha256"] == "f" * 64
    assert summary["loaded"] == ["encoder", "logit"] and summary["reinitialised"] == ["text_head"]
    text = finetune_markdown(summary)
    assert "Initialised from `/abs/runs/x` (pretrained; SHA-256 of `/abs/runs/x/model.safetensors`" in text
    assert "re-initialised: text_head" in text
    assert "| eval | 12.5 | 50.0 | +37.5 | 25.0 | 25.0 | +0.0 |" in text
    assert "- text head re-initialised (32-d" in text
    with pytest.raises(ValueError, match=r"results must hold the runs 'before fine-tuning' and 'after fine-tuning'"):
        finetune_summary({AFTER: {}}, _report())
