"""Fine-tuning through the recipe (issue 19): ``stage2 --init-checkpoint`` from a folder the recipe wrote and from
an official-layout ``.pt``, ``all --init-checkpoint`` (Stage 1 skipped) with ``--reinit-text-head``: frozen
parameters keep the checkpoint's values, trained ones change, the report and metrics.json hold mIoU before and
after, the written folder records its origin; bad checkpoints stop the run with one line before any training.

One run goes through ``recipes/patchalign3d.py`` as a user starts it; the others call ``pa3d_train.main`` (the
same code, in-process) to stay fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pa3d_models import create_model, freeze_for_stage2, load_pretrained, read_metadata
from pa3d_train import main

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "patchalign3d.py"
CONFIGS = ROOT / "recipes" / "configs"

# the recipe tests' tiny settings, smaller still: 14 training shapes in 2 steps, no figures
TINY = [
    "--model", "patchalign3d_tiny", "--num-points", "256", "--train-shapes", "14", "--eval-shapes", "7",
    "--heldout-shapes", "4", "--stage2-epochs", "1", "--batch-size", "7", "--text-model", "fixed:32",
    "--figures", "0", "--num-workers", "0",
]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recipe(args, out: Path) -> int:
    return main([*TINY, *args, "--out", str(out)], config_dir=CONFIGS)  # args after TINY win


def trainable(policy: str, text_dim: int = 32) -> set[str]:
    """Reference: the names freeze_for_stage2 leaves trainable on a fresh model of the same config."""
    if policy == "none":
        return {n for n, _ in create_model("patchalign3d_tiny", text_dim=text_dim).named_parameters()}
    return set(freeze_for_stage2(create_model("patchalign3d_tiny", text_dim=text_dim), policy))


def assert_frozen_kept_trained_changed(start: dict[str, torch.Tensor], tuned_dir: Path, policy: str, *,
                                       ignore=("teacher_head.",)) -> None:
    tuned = load_pretrained(tuned_dir)
    params = dict(tuned.named_parameters())
    names = trainable(policy)
    assert names, policy
    for name, value in tuned.state_dict().items():
        if name.startswith(ignore) or name not in start:
            continue
        if name in names:
            assert not torch.equal(value, start[name]), f"{name} is trained by {policy!r} but did not change"
        elif name in params:
            assert torch.equal(value, start[name]), f"{name} is frozen by {policy!r} but changed"
        elif "running_" in name and name.rsplit(".", 1)[0] + ".weight" not in names:  # a frozen BatchNorm's stats
            assert torch.equal(value, start[name]), f"{name} (frozen BatchNorm) changed under {policy!r}"


def assert_before_after(out: Path, sha256: str) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    ft = metrics["fine_tuning"]
    assert ft["init_checkpoint"]["sha256"] == sha256
    assert set(metrics["evaluations"]) >= {"before fine-tuning", "after fine-tuning"}
    for name, row in ft["sets"].items():
        for when in ("before", "after"):
            assert row[when]["instance_miou"] == metrics["evaluations"][f"{when} fine-tuning"][name]["instance_miou"]
        assert row["gain"]["instance_miou"] == pytest.approx(row["after"]["instance_miou"]
                                                             - row["before"]["instance_miou"])
    report = (out / "report.md").read_text()
    assert "## Fine-tuning: before and after" in report and sha256 in report
    assert "| category | after fine-tuning | before fine-tuning |" in report  # both, per evaluation set
    assert read_metadata(out / "stage2" / "model")["init_checkpoint"]["sha256"] == sha256
    return metrics


@pytest.fixture(scope="module")
def recipe_folder(tmp_path_factory):
    """A folder the recipe wrote: the recipe fine-tunes a saved tiny model once (as a user runs it)."""
    base = tmp_path_factory.mktemp("finetune")
    torch.manual_seed(0)
    create_model("patchalign3d_tiny", text_dim=32).save_pretrained(base / "start")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, str(RECIPE), "stage2", *TINY, "--init-checkpoint", str(base / "start"),
                          "--out", str(base / "first")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "fine-tuning from" in res.stdout and "took encoder, text_head, logit, teacher_head" in res.stdout
    assert "freeze policy 'paper' (auto: fine-tuning trained weights" in res.stdout  # the default policy is auto
    assert not (base / "first" / "stage1").exists()
    assert_before_after(base / "first", sha(base / "start" / "model.safetensors"))
    return base / "first" / "stage2" / "model"


def test_stage2_fine_tunes_a_folder_the_recipe_wrote(recipe_folder, tmp_path):
    start = load_pretrained(recipe_folder).state_dict()
    out = tmp_path / "again"
    assert recipe(["stage2", "--init-checkpoint", str(recipe_folder), "--freeze-policy", "paper"], out) == 0
    assert_frozen_kept_trained_changed(start, out / "stage2" / "model", "paper")
    assert_before_after(out, sha(recipe_folder / "model.safetensors"))


def test_stage2_fine_tunes_an_official_layout_file(tmp_path):
    torch.manual_seed(1)
    source = create_model("patchalign3d_tiny", text_dim=32)
    sd = source.state_dict()
    official = {"epoch": 99, "model": {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")},
                "proj": {"proj.weight": sd["text_head.weight"], "proj.bias": sd["text_head.bias"]},
                "temp": {"log_scale": sd["logit.log_scale"]}, "args": {"num_heads": 2}}
    torch.save(official, tmp_path / "official.pt")
    out = tmp_path / "run"
    assert recipe(["stage2", "--init-checkpoint", str(tmp_path / "official.pt"), "--freeze-policy", "official"],
                  out) == 0
    start = {**{k: v for k, v in sd.items() if not k.startswith("logit.bias")}, "logit.bias": torch.tensor(0.0)}
    assert_frozen_kept_trained_changed(start, out / "stage2" / "model", "official")
    metrics = assert_before_after(out, sha(tmp_path / "official.pt"))
    assert metrics["fine_tuning"]["init_checkpoint"]["kind"] == "official"
    assert any("logit bias" in n for n in metrics["fine_tuning"]["notes"])


def test_all_skips_stage1_and_reinit_text_head_trains_a_new_head(tmp_path, capsys):
    torch.manual_seed(2)
    create_model("patchalign3d_tiny", text_dim=16).save_pretrained(tmp_path / "start16")
    start = load_pretrained(tmp_path / "start16").state_dict()
    out = tmp_path / "run"
    args = ["all", "--init-checkpoint", str(tmp_path / "start16"), "--no-stage2-only", "--freeze-policy", "none"]
    assert recipe(args, out) == 2  # a 16-d text head for 32-d text features
    err = capsys.readouterr().err
    assert "text head width: checkpoint 16 vs model 32" in err and "--reinit-text-head" in err
    assert not (out / "stage2").exists()
    assert recipe([*args, "--reinit-text-head"], out) == 0
    log = capsys.readouterr().out
    assert "text head re-initialised (32-d" in log
    assert not (out / "stage1").exists() and not (out / "stage2_only").exists()
    assert_frozen_kept_trained_changed(start, out / "stage2" / "model", "none", ignore=("teacher_head.",
                                                                                          "text_head."))
    metrics = assert_before_after(out, sha(tmp_path / "start16" / "model.safetensors"))
    assert metrics["fine_tuning"]["reinitialised"] == ["text_head"]


def _evil(marker: Path):
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return {"model": Payload()}


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["stage1", "--init-checkpoint", "{tmp}/x"], "--init-checkpoint applies to stage2 and all"),
        (None, ["stage2", "--reinit-text-head"], "--reinit-text-head needs --init-checkpoint"),
        ("folder", ["stage2", "--init-checkpoint", "{tmp}/start", "--stage1-checkpoint", "{tmp}/start/config.json"],
         "--init-checkpoint and --stage1-checkpoint both initialise Stage 2"),
        (None, ["stage2", "--init-checkpoint", "{tmp}/missing"], "--init-checkpoint .*missing does not exist"),
        (None, ["stage2", "--init-checkpoint", "hf://nobody/not-cached"], "not in the local cache"),
        ("empty_dir", ["stage2", "--init-checkpoint", "{tmp}/start"], "holds no weights"),
        ("truncated", ["stage2", "--init-checkpoint", "{tmp}/start.pt"], "cannot be read: truncated"),
        ("evil", ["stage2", "--init-checkpoint", "{tmp}/start.pt"], r"holds Python objects .*\(io.open\)"),
        ("folder", ["stage2", "--init-checkpoint", "{tmp}/start", "--model", "patchalign3d_small"],
         r"does not fit the model's architecture: .*embed_dim: checkpoint 64 vs model 128"),
    ],
    ids=["stage1", "reinit_alone", "both_inits", "missing", "hub_offline", "empty_folder", "truncated", "evil_pickle",
         "other_architecture"],
)
def test_bad_init_checkpoints_stop_before_training(setup, args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if setup == "folder":
        create_model("patchalign3d_tiny", text_dim=32).save_pretrained(tmp_path / "start")
    elif setup == "empty_dir":
        (tmp_path / "start").mkdir()
    elif setup == "truncated":
        create_model("patchalign3d_tiny", text_dim=32).save_pretrained(tmp_path / "f")
        torch.save({"model": load_pretrained(tmp_path / "f").state_dict()}, tmp_path / "full.pt")
        (tmp_path / "start.pt").write_bytes((tmp_path / "full.pt").read_bytes()[:4000])
    elif setup == "evil":
        torch.save(_evil(tmp_path / "EXECUTED"), tmp_path / "start.pt")
    out = tmp_path / "run"
    assert recipe([a.replace("{tmp}", str(tmp_path)) for a in args], out) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert not (out / "stage2").exists() and not (out / "config.yaml").exists()
    assert not (tmp_path / "EXECUTED").exists()
