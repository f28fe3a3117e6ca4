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


def test_a_budget_too_small_for_training_is_refused_before_training(tmp_path):
    out = run(["all", *TINY, "--max-minutes", "0.2", "--out", str(tmp_path / "o")], check=False)
    assert out.returncode == 2 and "--max-minutes 0.2 is too small: evaluation alone is estimated at" in out.stderr
    assert "give at least" in out.stderr and "Traceback" not in out.stderr
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


# ------------------------------------------------------------------------------------ refusals and resume
def test_refused_resume_leaves_config_yaml_untouched(tmp_path):
    out = tmp_path / "o"
    run(["stage1", *TINY, "--out", str(out)])
    before = (out / "config.yaml").read_bytes()
    for flag in (["--train-shapes", "21"], ["--amp", "bf16"]):
        res = run(["stage1", *TINY, "--out", str(out), "--resume", *flag], check=False)
        key = flag[0][2:].replace("-", "_")
        assert res.returncode == 2 and f"resume from {out / 'stage1' / 'last.pt'} refused" in res.stderr
        assert f"{key}: checkpoint" in res.stderr and "Traceback" not in res.stderr
        assert (out / "config.yaml").read_bytes() == before


def test_damaged_files_are_one_line_errors(tmp_path):
    out = tmp_path / "o"
    run(["stage1", *TINY, "--out", str(out)])
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes((out / "stage1" / "last.pt").read_bytes()[:1000])
    res = run(["stage2", *TINY, "--stage1-checkpoint", str(truncated), "--out", str(tmp_path / "s2")], check=False)
    assert res.returncode == 2 and f"checkpoint {truncated} is unreadable" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "s2" / "stage2").exists()

    garbage = tmp_path / "random.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    res = run(["eval", *TINY, "--checkpoint", str(garbage), "--out", str(tmp_path / "e")], check=False)
    assert res.returncode == 2 and str(garbage) in res.stderr and "Traceback" not in res.stderr

    (out / "teacher_cache" / "cache.json").write_text("{ not json")
    res = run(["stage1", *TINY, "--out", str(out)], check=False)
    assert res.returncode == 2 and "cache.json is unreadable" in res.stderr and "Traceback" not in res.stderr


def _shapenetpart_fixture(root: Path) -> None:
    """Two chairs and two tables in the ShapeNetPart layout (global part ids), as in tutorial 4."""
    from pa3d_data import SYNTHETIC_PART_NAMES, synthetic_shape

    rng = np.random.default_rng(0)
    cats = {"Chair": ("03001627", "chair", {"backrest": 12, "seat": 13, "leg": 14, "armrest": 15}),
            "Table": ("04379243", "table", {"tabletop": 47, "leg": 48})}
    (root / "train_test_split").mkdir(parents=True)
    (root / "synsetoffset2category.txt").write_text("".join(f"{c}\t{s}\n" for c, (s, _, _) in cats.items()))
    entries = []
    for synset, synthetic, ids in cats.values():
        (root / synset).mkdir()
        for k in range(2):
            points, labels = synthetic_shape(synthetic, rng, num_points=300)
            gid = np.array([ids[n] for n in SYNTHETIC_PART_NAMES[synthetic]])[labels]
            np.savetxt(root / synset / f"s{k}.txt", np.concatenate([points, np.zeros_like(points), gid[:, None]], 1))
            entries.append(f"shape_data/{synset}/s{k}")
    for split in ("train", "val", "test"):
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(
            json.dumps(entries if split == "test" else []))


def test_eval_evaluates_exactly_the_named_set(tiny_run, tmp_path):
    trained, _ = tiny_run
    root = tmp_path / "snp"
    _shapenetpart_fixture(root)
    common = ["eval", *TINY, "--checkpoint", str(trained / "stage2" / "model"), "--eval-dataset", "shapenetpart",
              "--eval-root", str(root)]
    run([*common, "--out", str(tmp_path / "all")])
    metrics = json.loads((tmp_path / "all" / "metrics.json").read_text())
    assert list(metrics["evaluations"]["checkpoint"]) == ["eval"]
    assert sorted(metrics["per_category"]) == ["Chair", "Table"]
    assert len(list((tmp_path / "all" / "predictions").glob("*/*.npz"))) == 4
    run([*common, "--dataset-option", "class_choice=Chair", "--out", str(tmp_path / "chairs")])
    assert sorted(json.loads((tmp_path / "chairs" / "metrics.json").read_text())["per_category"]) == ["Chair"]
    res = run([*common, "--dataset-option", "colour=red", "--out", str(tmp_path / "bad")], check=False)
    assert res.returncode == 2 and "dataset 'shapenetpart' takes no 'colour'; valid keys: [" in res.stderr
    assert "'class_choice'" in res.stderr


def _weights(path: Path, *, average: bool = False) -> dict[str, torch.Tensor]:
    """A last.pt's last-step weights, or (``average``) the weights a next stage starts from (its --ema average)."""
    from pa3d_models.loaders import training_state_weights

    payload = torch.load(path, map_location="cpu", weights_only=True)
    return training_state_weights(payload) if average else payload["model"]


def test_killed_mid_epoch_then_resumed_ends_with_the_same_weights(tmp_path):
    # a checkpoint after every epoch (the recipe's default writes at most every 30 s)
    args = ["stage1", *TINY, "--stage1-epochs", "3", "--train-shapes", "42", "--checkpoint-interval", "0"]
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
    assert torch.load(killed / "stage1" / "last.pt", weights_only=True)["epoch"] in (1, 2)
    run([*args, "--out", str(killed), "--resume"])
    a, b = _weights(tmp_path / "straight" / "stage1" / "last.pt"), _weights(killed / "stage1" / "last.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = [json.loads(line) for line in (killed / "stage1" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3], "an epoch was logged twice (or lost) across the resume"


def test_resumed_run_reports_the_stages_finished_before_it(tiny_run, tmp_path):
    import shutil

    done, _ = tiny_run
    again = tmp_path / "again"
    shutil.copytree(done, again)
    res = run([*TINY, "--out", str(again), "--resume"])
    assert "[stage1] resumed from" in res.stdout and "[stage1] epoch" not in res.stdout  # nothing left to train
    report = (again / "report.md").read_text()
    for stage in ("stage1", "stage2", "stage2_only"):
        assert f"| {stage} | 1 |" in report, report
    first = json.loads((done / "metrics.json").read_text())
    second = json.loads((again / "metrics.json").read_text())
    assert second["training"] == first["training"]
    assert second["instance_miou"] == pytest.approx(first["instance_miou"])


# Distributed runs: 2 processes (gloo) against 1, on every path a user can reach: Stage 1, Stage 2 with each
# freeze policy, and `all` (Stage 1, Stage 2 with the paper's freezing, the Stage-2-only run without freezing).
# Plain SGD makes the weights after a step the initial weights minus lr x the mean gradient, so the two must
# agree to float rounding. BatchNorm in train mode normalises each process's half batch with its own statistics
# (SyncBatchNorm is GPU-only), so these runs keep BN statistics frozen (--bn-eval); everything else trains.
DDP = [*TINY, "--optimizer", "sgd", "--lr-head", "0.5", "--lr-logit", "0.5", "--lr-encoder", "0.5",
       "--stage1-lr-encoder", "0.5", "--batch-size", "14", "--weight-decay", "0", "--bn-eval", "--figures", "0",
       "--eval-shapes", "2", "--heldout-shapes", "2", "--freeze-policy", "paper",  # `all`: the paper's freezing
       "--amp", "none",  # float32: bf16 rounding of half batches vs whole batches would exceed the tolerance
       "--ema", "0.5"]  # the weight average (off by default) is kept the same way by both launches


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    torchrun = BIN / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to this interpreter")
    base = tmp_path_factory.mktemp("ddp")
    two = (str(torchrun), "--standalone", "--nproc-per-node", "2")
    cache = ["--teacher-cache", str(base / "cache")]  # the same Stage-1 targets for both launches
    logs = {}
    for name, launcher in (("one", (sys.executable,)), ("two", two)):
        logs[name] = run(["all", *DDP, *cache, "--out", str(base / name / "all")], launcher=launcher).stdout
        init = str(base / "one" / "all" / "stage1" / "last.pt")
        for policy in ("official", "none"):
            run(["stage2", *DDP, "--freeze-policy", policy, "--stage1-checkpoint", init,
                 "--out", str(base / name / policy)], launcher=launcher)
    return base, logs


def _model_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model" / "model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "trained", "frozen"),
    [
        ("all/stage1", "encoder.", "text_head."),          # Stage 1: the text head and logit take no part
        ("all/stage2", "text_head.", "encoder.encoder."),  # paper: the tokenizer stays frozen
        ("all/stage2_only", "encoder.encoder.", "teacher_head."),  # no freezing; the teacher head is unused
        ("official/stage2", "encoder.reduce_dim.", "encoder.encoder."),
        ("none/stage2", "encoder.encoder.", "teacher_head."),
    ],
)
def test_torchrun_two_processes_match_one_process(ddp_runs, path, trained, frozen):
    base, logs = ddp_runs
    assert "(2 process(es), cpu; grouping: " in logs["two"].splitlines()[0]
    assert "(1 process(es), cpu; grouping: " in logs["one"].splitlines()[0]
    if path.endswith("stage1"):  # the last step's weights and the --ema average both agree
        for average in (False, True):
            a, b = (_weights(base / n / path / "last.pt", average=average) for n in ("one", "two"))
            assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5, rtol=0) for k in a)
    else:
        a, b = _model_weights(base / "one" / path), _model_weights(base / "two" / path)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=0), key
    start = _weights(base / "one" / "all" / "stage1" / "last.pt", average=True) \
        if not path.endswith(("stage1", "stage2_only")) else None
    if start is not None:  # Stage 2 from the Stage-1 weights: what trains moved, what is frozen did not
        assert any(not torch.equal(a[k], start[k]) for k in a if k.startswith(trained)), f"{trained} did not train"
        assert all(torch.equal(a[k], start[k]) for k in a if k.startswith(frozen)), f"{frozen} moved"
