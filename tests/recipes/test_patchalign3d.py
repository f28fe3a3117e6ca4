"""The recipe, run as users run it: bad settings refused up front, a tiny end-to-end run, exact resume after a
kill, and torchrun with 2 CPU processes giving the gradients of one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "patchalign3d.py"
BIN = Path(sys.executable).parent

# the smallest run that exercises every stage (about a minute on 2 busy cores)
TINY = [
    "--model", "patchalign3d_tiny", "--num-points", "256", "--train-shapes", "28", "--eval-shapes", "14",
    "--heldout-shapes", "8", "--stage1-epochs", "1", "--stage2-epochs", "1", "--views", "2", "--image-size", "64",
    "--teacher", "tiny", "--batch-size", "7", "--text-model", "fixed:32", "--figures", "2",
]


def run(args, *, launcher=(sys.executable,), check=True, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([*launcher, str(RECIPE), *args], capture_output=True, text=True, env=env, cwd=ROOT, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"recipe failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loss", "nope"], "--loss 'nope' is not a registered loss; valid: .*multi_positive_sigmoid"),
        (["--dataset", "lpsb"], "--dataset lpsb needs --train-root"),
        (["--label-noise", "1.5"], r"--label-noise must be in \[0, 1\)"),
        (["--dataset", "nope"], "invalid choice: 'nope'"),
    ],
)
def test_bad_settings_are_refused_before_any_work(args, message, tmp_path):
    out = run([*args, "--out", str(tmp_path / "o")], check=False)
    assert out.returncode != 0
    import re

    assert re.search(message, out.stderr), out.stderr[-2000:]
    assert not (tmp_path / "o" / "stage1").exists(), "training must not start"


def test_resume_refuses_another_config(tmp_path):
    from pa3d_train.engine import save_training_state

    out = tmp_path / "o"
    save_training_state(out / "stage1" / "last.pt", model=torch.nn.Linear(1, 1), optimizer=None, epoch=1, step=1,
                        config={"model": "patchalign3d_base", "optimizer": "adamw"})
    res = run(["stage1", *TINY, "--out", str(out), "--resume", "--train-shapes", "14"], check=False)
    assert res.returncode != 0 and "resume from" in res.stderr and "model: checkpoint 'patchalign3d_base'" in res.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe") / "run"
    res = run([*TINY, "--out", str(out)])
    return out, res


def test_end_to_end_writes_metrics_report_figures_and_predictions(tiny_run):
    out, res = tiny_run
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("instance_miou", "category_miou", "per_category", "evaluations", "text_encoder", "teacher"):
        assert key in metrics
    assert set(metrics["evaluations"]) == {"stage1+stage2", "stage2 only"}
    assert set(metrics["evaluations"]["stage1+stage2"]) == {"heldout_shapes", "heldout_categories"}
    assert set(metrics["evaluations"]["stage1+stage2"]["heldout_categories"]["per_category"]) == {
        "stool", "bench", "jug", "scooter"}
    assert 0.0 <= metrics["instance_miou"] <= 1.0
    report = (out / "report.md").read_text()
    assert "## heldout_categories: mIoU (%)" in report and "| stage1+stage2 | stage2 only |" in report
    for png in ("parts.png", "patch_features_pca.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    preds = sorted((out / "predictions").glob("*/*.npz"))
    assert len(preds) == 14
    with np.load(preds[0]) as z:
        assert z["points"].shape == (256, 3) and z["pred"].shape == (256,)
        assert z["pred"].max() < len(z["names"])
    assert (out / "config.yaml").is_file() and (out / "stage2" / "model" / "model.safetensors").is_file()
    assert "stage2 epoch 1/1" in res.stderr or "[stage2] epoch 1/1" in res.stdout


def test_eval_subcommand_reproduces_the_pipeline_numbers(tiny_run, tmp_path):
    out, _ = tiny_run
    res = run(["eval", *TINY, "--out", str(tmp_path / "e"), "--checkpoint", str(out / "stage2" / "model")])
    first = json.loads((out / "metrics.json").read_text())["evaluations"]["stage1+stage2"]
    again = json.loads((tmp_path / "e" / "metrics.json").read_text())["evaluations"]["checkpoint"]
    assert again["heldout_shapes"]["instance_miou"] == pytest.approx(first["heldout_shapes"]["instance_miou"])
    assert "checkpoint" in res.stdout


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_killed_mid_epoch_then_resumed_ends_with_the_same_weights(tmp_path):
    args = ["stage1", *TINY, "--stage1-epochs", "3", "--train-shapes", "42"]
    run([*args, "--out", str(tmp_path / "straight")])
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(RECIPE), *args, "--out", str(killed)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = []
    for line in proc.stdout:  # kill right after epoch 1's checkpoint, i.e. during epoch 2
        log.append(line)
        if "[stage1] epoch 1/3" in line:
            time.sleep(0.3)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(log)[-2000:]
    assert torch.load(killed / "stage1" / "last.pt", weights_only=False)["epoch"] in (1, 2)
    run([*args, "--out", str(killed), "--resume"])
    a, b = _weights(tmp_path / "straight" / "stage1" / "last.pt"), _weights(killed / "stage1" / "last.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_torchrun_two_processes_match_one_process(tmp_path):
    torchrun = BIN / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to this interpreter")
    run(["stage1", *TINY, "--out", str(tmp_path / "s1")])
    stage2 = ["stage2", *TINY, "--stage1-checkpoint", str(tmp_path / "s1" / "stage1" / "last.pt"),
              "--optimizer", "sgd", "--lr-head", "0.5", "--lr-logit", "0.5", "--lr-encoder", "0.5",
              "--batch-size", "14", "--weight-decay", "0"]
    run([*stage2, "--out", str(tmp_path / "one")])
    run([*stage2, "--out", str(tmp_path / "two")],
        launcher=(str(torchrun), "--standalone", "--nproc-per-node", "2"))
    a = load_file(tmp_path / "one" / "stage2" / "model" / "model.safetensors")
    b = load_file(tmp_path / "two" / "stage2" / "model" / "model.safetensors")
    # with plain SGD the weights after the run are the initial weights minus lr x the summed gradients
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=0), key
    initial = _weights(tmp_path / "s1" / "stage1" / "last.pt")
    changed = [k for k in a if k in initial and not torch.allclose(a[k], initial[k])]
    assert any(k.startswith("text_head") for k in changed), "Stage 2 did not train"
