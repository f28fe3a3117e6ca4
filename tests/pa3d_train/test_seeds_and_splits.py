"""Seeds (mean +- sd over runs), the cross-category wiring of a run, the freeze policy chosen by the teacher."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pa3d_data import SyntheticPartDataset
from pa3d_train.seeds import mean_sd, parse_seeds, seeds_markdown, summarise_seeds
from pa3d_train.stages import apply_category_split, resolve_freeze_policy


@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=8))
def test_mean_sd_equals_statistics(values):
    m, sd = mean_sd(values)
    assert m == pytest.approx(statistics.fmean(values), abs=1e-9)
    assert sd == pytest.approx(statistics.stdev(values) if len(values) > 1 else 0.0, abs=1e-9)


@given(st.lists(st.integers(0, 50), min_size=1, max_size=6, unique=True))
def test_parse_seeds_round_trip(seeds):
    assert parse_seeds(",".join(map(str, seeds))) == seeds


@pytest.mark.parametrize(("text", "match"), [("0,1,0", r"--seeds repeats \[0\]"), ("a,1", r"comma-separated integers"),
                                              ("-1", r"integers >= 0"), ("", r"integers >= 0")])
def test_bad_seeds(text, match):
    with pytest.raises(ValueError, match=match):
        parse_seeds(text)


def test_summary_over_seeds():
    def res(x):
        refs = {"patch_ceiling": {"instance_miou": 0.8}, "one_label": {"instance_miou": 0.3}, "num_points": 2048}
        return {"m": {"eval": {"instance_miou": x, "category_miou": x / 2, "baselines": refs}}}

    out = summarise_seeds({0: res(0.5), 1: res(0.7)})
    row = out["m"]["eval"]
    assert row["instance_miou"]["values"] == [0.5, 0.7] and row["instance_miou"]["mean"] == pytest.approx(0.6)
    assert row["category_miou"]["sd"] == pytest.approx(statistics.stdev([0.25, 0.35]))
    assert row["patch_ceiling_instance_miou"]["sd"] == 0.0
    assert "| m | eval | 60.0 +- 14.1 | 30.0 +- 7.1 | - | 80.0 +- 0.0 | 30.0 +- 0.0 |" in seeds_markdown(out, [0, 1])
    # with a calibration, the same similarities read without it get their own column
    calibrated = {s: res(x) for s, x in ((0, 0.5), (1, 0.7))}
    for s, x in ((0, 0.4), (1, 0.5)):
        calibrated[s]["m"]["eval"]["uncalibrated"] = {"instance_miou": x, "category_miou": x}
    out = summarise_seeds(calibrated)
    assert out["m"]["eval"]["uncalibrated_instance_miou"]["values"] == [0.4, 0.5]
    assert "| m | eval | 60.0 +- 14.1 | 30.0 +- 7.1 | 45.0 +- 7.1 | 80.0 +- 0.0 | 30.0 +- 0.0 |" in seeds_markdown(
        out, [0, 1])


def _cfg(**kw):
    return {"split_file": None, "train_categories": [], "eval_categories": [], **kw}


def _sets():
    return {"train": SyntheticPartDataset(28, num_points=16, cache=False),
            "eval": SyntheticPartDataset(28, num_points=16, cache=False, split="test")}


def test_category_split_keeps_the_named_categories():
    out = apply_category_split(_sets(), _cfg(eval_categories=["chair", "mug"]))
    assert {s.category for s in out["eval"]} == {"chair", "mug"}
    train_cats = {s.category for s in out["train"]}
    assert not train_cats & {"chair", "mug"} and len(train_cats) == 12
    only_train = apply_category_split(_sets(), _cfg(train_categories=["chair"]))
    assert {s.category for s in only_train["train"]} == {"chair"}
    assert "chair" not in {s.category for s in only_train["eval"]}
    assert apply_category_split(_sets(), _cfg())["train"] is not None  # no split: unchanged


def test_category_split_errors_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"eval categories \['spaceship'\] are not in the data"):
        apply_category_split(_sets(), _cfg(eval_categories=["spaceship"]))
    (tmp_path / "s.json").write_text('{"eval": ["chair"], "train": ["chair"]}')
    with pytest.raises(ValueError, match=r"\['chair'\] are both trained on and evaluated"):
        apply_category_split(_sets(), _cfg(split_file=str(tmp_path / "s.json")))


def test_freeze_policy_auto_follows_the_teacher(tmp_path, monkeypatch):
    monkeypatch.setenv("PA3D_WEIGHTS", str(tmp_path))
    base = {"freeze_policy": "auto", "teacher_weights": None}
    assert resolve_freeze_policy({**base, "teacher": "auto"})[0] == "none"
    assert resolve_freeze_policy({**base, "teacher": "geometry"})[0] == "none"
    assert resolve_freeze_policy({**base, "teacher": "dinov2_vits14"})[0] == "none"  # random weights only
    assert resolve_freeze_policy({**base, "teacher": "dinov2_vits14", "teacher_weights": "w.pt"})[0] == "paper"
    (tmp_path / "vit_small_patch14_dinov2.safetensors").write_bytes(b"")
    assert resolve_freeze_policy({**base, "teacher": "auto"})[0] == "paper"
    assert resolve_freeze_policy({**base, "freeze_policy": "official", "teacher": "auto"}) == (
        "official", "set by --freeze-policy")
