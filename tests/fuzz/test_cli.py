"""A corpus of broken files through every command line (issue 18).

The corpus is generated here (nothing binary is committed): truncated, garbage, empty and wrong-type files,
unicode names, folders where files belong, and a pickle payload that would create a marker file if it were
ever unpickled. Every case must end with a non-zero exit and a clear message on stderr, never a traceback; no
marker file may appear and no input may change. ``pa3d`` subcommands run in-process through
``pa3d_cli.main.main``; the recipe runs in-process through ``pa3d_train.main`` and once as a subprocess.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pa3d_cli.main import main

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
MARKER = "PWNED_MARKER"
TINY = ["--model", "patchalign3d_tiny", "--text-model", "fixed:64", "--num-points", "256"]


class _Payload:
    """Unpickling this creates the marker file (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _ply(path: Path, n: int = 300, seed: int = 0) -> Path:
    pts = np.random.default_rng(seed).random((n, 3))
    header = (f"ply\nformat ascii 1.0\nelement vertex {n}\n"
              "property float x\nproperty float y\nproperty float z\nend_header\n")
    path.write_text(header + "\n".join(f"{a:.6f} {b:.6f} {c:.6f}" for a, b, c in pts) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    marker = root / MARKER
    files: dict[str, Path] = {}
    files["cloud"] = _ply(root / "cloud.ply")
    files["unicode_ok"] = _ply(root / "chaise ünï 名前.ply", seed=1)
    # broken geometry
    (root / "empty.ply").write_bytes(b"")
    files["empty"] = root / "empty.ply"
    (root / "garbage.ply").write_bytes(os.urandom(512) + b"\x00" * 64)
    files["garbage"] = root / "garbage.ply"
    full = files["cloud"].read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "truncated.ply").write_text("".join(full[:20]), encoding="utf-8")
    files["truncated"] = root / "truncated.ply"
    (root / "wrong_type.ply").write_text('{"this": "is json"}', encoding="utf-8")
    files["wrong_type"] = root / "wrong_type.ply"
    (root / "mesh.obj").write_bytes(b"v 0 0 0\nv 1 0 0\nf 1 2 9\nf x y z\n")
    files["bad_obj"] = root / "mesh.obj"
    (root / "ünï broken 名前.ply").write_bytes(os.urandom(100))
    files["unicode_broken"] = root / "ünï broken 名前.ply"
    (root / "folder.ply").mkdir()
    files["folder"] = root / "folder.ply"
    # names files
    (root / "names_binary.txt").write_bytes(b"\x00\xff\xfe" + os.urandom(200))
    files["names_binary"] = root / "names_binary.txt"
    (root / "names_empty.txt").write_text("# nothing\n\n", encoding="utf-8")
    files["names_empty"] = root / "names_empty.txt"
    (root / "names ünï.txt").write_text("pied\n座面\nça va\n", encoding="utf-8")
    files["names_unicode"] = root / "names ünï.txt"
    # checkpoints
    torch.save({"model": {"w": torch.zeros(1)}, "evil": _Payload(marker)}, root / "evil.pt",
               pickle_protocol=pickle.DEFAULT_PROTOCOL)
    files["evil"] = root / "evil.pt"
    (root / "garbage.pt").write_bytes(os.urandom(1024))
    files["garbage_pt"] = root / "garbage.pt"
    (root / "empty.pt").write_bytes(b"")
    files["empty_pt"] = root / "empty.pt"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 8)}}, root / "truncated.pt")
    (root / "truncated.pt").write_bytes((root / "truncated.pt").read_bytes()[:80])
    files["truncated_pt"] = root / "truncated.pt"
    torch.save([1, 2, 3], root / "list.pt")
    files["list_pt"] = root / "list.pt"
    (root / "ckpt_dir").mkdir()
    (root / "ckpt_dir" / "model.safetensors").write_bytes(os.urandom(300))
    (root / "ckpt_dir" / "config.json").write_text("{not json", encoding="utf-8")
    files["ckpt_dir"] = root / "ckpt_dir"
    (root / "empty_dir").mkdir()
    files["empty_dir"] = root / "empty_dir"
    files["marker"] = marker
    return files


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def clean(corpus, count_case):
    """Run a command and hold it to the rules: non-zero exit, one clear message, no traceback, no marker,
    the corpus unchanged."""
    root = corpus["cloud"].parent

    def run(area: str, argv: list[str], capsys, *, expect_ok: bool = False, usage: bool = False) -> str:
        count_case(area)
        before = _snapshot(root)
        try:
            rc = main(argv)
        except SystemExit as exit_:  # argparse
            rc = exit_.code
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err, err
        assert not corpus["marker"].exists(), "a pickle payload was executed"
        assert _snapshot(root) == before, "an input file changed"
        if expect_ok:
            assert rc == 0, err
        else:
            assert rc not in (0, None), f"exit 0 for {argv}: {out}{err}"
            assert err.strip(), f"no message for {argv}"
            if usage:  # argparse: the usage lines, then "error: ..."
                assert "error:" in err or "invalid choice" in err, err
            else:
                assert len(err.strip().splitlines()) <= 3, err
        return err

    return run


BROKEN_INPUTS = ["empty", "garbage", "truncated", "wrong_type", "bad_obj", "unicode_broken", "folder"]
BROKEN_CHECKPOINTS = ["evil", "garbage_pt", "empty_pt", "truncated_pt", "list_pt", "ckpt_dir", "empty_dir"]


@pytest.mark.parametrize("name", BROKEN_INPUTS)
def test_segment_broken_inputs(corpus, clean, capsys, tmp_path, name):
    out = tmp_path / "out.ply"
    err = clean("cli.segment", ["segment", str(corpus[name]), "--parts", "leg,seat", *TINY, "--output", str(out)],
                capsys)
    assert corpus[name].name in err and not out.exists()


@pytest.mark.parametrize("name", BROKEN_CHECKPOINTS)
def test_segment_broken_checkpoints(corpus, clean, capsys, tmp_path, name):
    out = tmp_path / "out.ply"
    argv = ["segment", str(corpus["cloud"]), "--parts", "leg,seat", "--checkpoint", str(corpus[name]),
            "--text-model", "fixed:64", "--output", str(out)]
    err = clean("cli.segment", argv, capsys)
    assert corpus[name].name in err and not out.exists()


@pytest.mark.parametrize(
    "extra",
    [
        ["--text-model", "fixed:0"],
        ["--text-model", "fixed:abc"],
        ["--text-model", "fixed:-4"],
        ["--min-score", "nan"],
        ["--num-points", "0"],
        ["--num-points", "-7"],
        ["--parts", ""],
        ["--parts", ",,,"],
    ],
)
def test_segment_bad_options(corpus, clean, capsys, tmp_path, extra):
    argv = ["segment", str(corpus["cloud"]), "--parts", "leg,seat", *TINY, "--output", str(tmp_path / "o.ply"), *extra]
    clean("cli.segment", argv, capsys)


@pytest.mark.parametrize("flag", ["--output", "--png", "--legend"])
def test_segment_never_overwrites_its_input(corpus, clean, capsys, tmp_path, flag):
    argv = ["segment", str(corpus["cloud"]), "--parts", "leg,seat", *TINY, flag, str(corpus["cloud"])]
    if flag != "--output":
        argv += ["--output", str(tmp_path / "o.ply")]
    err = clean("cli.segment", argv, capsys)
    assert str(corpus["cloud"].name) in err


def test_segment_outputs_never_overwrite_each_other(corpus, clean, capsys, tmp_path):
    target = tmp_path / "o.ply"
    argv = ["segment", str(corpus["cloud"]), "--parts", "leg,seat", *TINY, "--output", str(target),
            "--legend", str(target)]
    clean("cli.segment", argv, capsys)
    assert not target.exists()


def test_segment_output_under_a_file(corpus, clean, capsys):
    bad = corpus["cloud"] / "out.ply"  # a "folder" that is a file
    clean("cli.segment", ["segment", str(corpus["cloud"]), "--parts", "leg,seat", *TINY, "--output", str(bad)], capsys)


def test_segment_unicode_names_and_paths_work(corpus, clean, capsys, tmp_path):
    out = tmp_path / "sortie ünï.ply"
    argv = ["segment", str(corpus["unicode_ok"]), "--parts", "pied,座面,dossier", *TINY, "--output", str(out)]
    clean("cli.segment", argv, capsys, expect_ok=True)
    assert out.stat().st_size > 0


@pytest.mark.parametrize("name", ["names_binary", "names_empty", "folder", "empty"])
def test_build_text_bank_broken_names(corpus, clean, capsys, tmp_path, name):
    out = tmp_path / "bank.safetensors"
    err = clean("cli.build-text-bank", ["build-text-bank", "--names", str(corpus[name]), "--text-model", "fixed:8",
                                        "--out", str(out)], capsys)
    assert corpus[name].name in err and not out.exists()


@pytest.mark.parametrize(
    "case",
    ["out_is_names", "out_is_folder", "dataset_option", "bad_spec"],
)
def test_build_text_bank_bad_options(corpus, clean, capsys, tmp_path, case):
    names = str(corpus["names_unicode"])
    argv = {
        "out_is_names": ["--names", names, "--text-model", "fixed:8", "--out", names],
        "out_is_folder": ["--names", names, "--text-model", "fixed:8", "--out", str(corpus["empty_dir"])],
        "dataset_option": ["--dataset", "synthetic", "--dataset-option", "foo=1", "--text-model", "fixed:8",
                           "--out", str(tmp_path / "b.safetensors")],
        "bad_spec": ["--names", names, "--text-model", "fixed:abc", "--out", str(tmp_path / "b.safetensors")],
    }[case]
    clean("cli.build-text-bank", ["build-text-bank", *argv], capsys)


def test_build_text_bank_unicode_names_work(corpus, clean, capsys, tmp_path):
    out = tmp_path / "banque ünï.safetensors"
    clean("cli.build-text-bank", ["build-text-bank", "--names", str(corpus["names_unicode"]), "--text-model",
                                  "fixed:8", "--out", str(out)], capsys, expect_ok=True)
    assert out.is_file()


SYNTHETIC = ["--dataset", "synthetic", "--num-points", "256", "--dataset-kw", "num_shapes=2", "--dataset-kw",
             "cache=false", "--views", "2", "--image-size", "32", "--num-groups", "8", "--group-size", "8"]


@pytest.mark.parametrize("name", ["evil", "garbage_pt", "empty_pt", "folder"])
def test_precompute_teacher_broken_weights(corpus, clean, capsys, tmp_path, name):
    pytest.importorskip("timm")
    argv = ["precompute-teacher", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "cache"), *SYNTHETIC,
            "--teacher", "dinov2_vits14", "--teacher-size", "28", "--weights", str(corpus[name])]
    err = clean("cli.precompute-teacher", argv, capsys)
    assert corpus[name].name in err and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("case", ["out_is_file", "image_size_0", "views_0", "bad_yaml", "teacher"])
def test_precompute_teacher_bad_options(corpus, clean, capsys, tmp_path, case):
    out = {"out_is_file": str(corpus["cloud"])}.get(case, str(tmp_path / "cache"))
    extra = {"image_size_0": ["--image-size", "0"], "views_0": ["--views", "0"],
             "bad_yaml": ["--dataset-kw", "x=[1"], "teacher": ["--teacher", "resnet50"]}.get(case, [])
    argv = ["precompute-teacher", "--data", str(tmp_path / "data"), "--out", out, *SYNTHETIC, "--teacher", "tiny",
            *extra]
    clean("cli.precompute-teacher", argv, capsys)


@pytest.mark.parametrize("argv", [["info", "--bogus"], ["nonsense-command"], ["segment"], ["build-text-bank"]])
def test_usage_errors(clean, capsys, argv):
    clean("cli.usage", argv, capsys, usage=True)


def test_info_runs(clean, capsys):
    clean("cli.info", ["info"], capsys, expect_ok=True)


# ------------------------------------------------------------------------------------------------- the recipe


def _recipe(argv: list[str]) -> int:
    from pa3d_train import main as recipe_main

    try:
        return recipe_main(argv, config_dir=ROOT / "recipes" / "configs")
    except SystemExit as exit_:
        return exit_.code


RECIPE_TINY = ["--model", "patchalign3d_tiny", "--train-shapes", "2", "--eval-shapes", "1", "--heldout-shapes", "1",
               "--num-points", "256", "--text-model", "fixed:64", "--device", "cpu", "--teacher", "tiny",
               "--batch-size", "2", "--views", "2", "--image-size", "32"]


@pytest.mark.parametrize("name", ["evil", "garbage_pt", "empty_pt", "truncated_pt", "list_pt"])
@pytest.mark.parametrize("how", ["stage1_checkpoint", "resume", "eval_checkpoint"])
def test_recipe_refuses_broken_checkpoints(corpus, count_case, capsys, tmp_path, name, how):
    count_case("recipe")
    out = tmp_path / "run"
    if how == "stage1_checkpoint":
        argv = ["stage2", "--stage1-checkpoint", str(corpus[name])]
    elif how == "resume":
        (out / "stage2").mkdir(parents=True)
        (out / "stage2" / "last.pt").write_bytes(corpus[name].read_bytes())
        argv = ["stage2", "--resume"]
    else:
        argv = ["eval", "--checkpoint", str(corpus[name])]
    before = _snapshot(corpus["cloud"].parent)
    rc = _recipe([*argv, "--out", str(out), *RECIPE_TINY])
    _, err = capsys.readouterr()
    assert rc not in (0, None) and err.strip() and "Traceback" not in err, err
    # refused for the checkpoint, not for some other setting
    assert ("last.pt" if how == "resume" else corpus[name].name) in err, err
    assert not corpus["marker"].exists()
    assert _snapshot(corpus["cloud"].parent) == before
    assert not (out / "stage2" / "model.safetensors").exists()


def test_recipe_script_refuses_a_pickle_payload_without_a_traceback(corpus, count_case, tmp_path):
    count_case("recipe")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "patchalign3d.py"), "stage2", "--stage1-checkpoint",
         str(corpus["evil"]), "--out", str(tmp_path / "run"), *RECIPE_TINY],
        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT,
    )
    assert proc.returncode != 0 and proc.stderr.strip()
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert corpus["evil"].name in proc.stderr, proc.stderr
    assert not corpus["marker"].exists()


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "-7"], "--batch-size"),
        (["--batch-size", "100"], "--batch-size"),  # more than the 2 training shapes: zero optimiser steps
        (["--train-shapes", "0"], "--train-shapes"),
        (["--loss-args", '{"foo": 1}'], "foo"),
        (["--stage1-epochs", "-1"], "--stage1-epochs"),
        (["--views", "0"], "--views"),
        (["--num-points", "8"], "--num-points"),
        (["--config", "MISSING.yaml"], "missing.yaml"),
        (["--config", "BAD_YAML"], "bad.yaml"),
        (["--out", "A_FILE"], "--out"),
    ],
    ids=lambda e: " ".join(e) if isinstance(e, list) else "",
)
def test_recipe_refuses_bad_options_before_any_work(corpus, count_case, capsys, tmp_path, extra, named):
    count_case("recipe")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("stage2_epochs: [1\n", encoding="utf-8")
    swap = {"MISSING.yaml": str(tmp_path / "missing.yaml"), "BAD_YAML": str(bad_yaml), "A_FILE": str(corpus["cloud"])}
    extra = [swap.get(x, x) for x in extra]
    out = tmp_path / "run"
    argv = ["all", *RECIPE_TINY, "--stage1-epochs", "1", "--stage2-epochs", "1", "--max-minutes", "0.05"]
    argv += ["--out", str(out)] if "--out" not in extra else []
    before = _snapshot(corpus["cloud"].parent)
    rc = _recipe([*argv, *extra])
    _, err = capsys.readouterr()
    assert rc not in (0, None) and err.strip() and "Traceback" not in err, err
    assert named in err, err  # refused for this option, not another
    assert _snapshot(corpus["cloud"].parent) == before
    assert not (out / "stage1" / "last.pt").exists() and not (out / "stage2" / "last.pt").exists()


def test_refused_resume_leaves_the_config_untouched(corpus, count_case, capsys, tmp_path):
    count_case("recipe")
    out = tmp_path / "run"
    (out / "stage2").mkdir(parents=True)
    (out / "stage2" / "last.pt").write_bytes(corpus["garbage_pt"].read_bytes())
    (out / "config.yaml").write_text("# the accepted configuration of the first run\n", encoding="utf-8")
    rc = _recipe(["stage2", "--resume", "--out", str(out), *RECIPE_TINY])
    _, err = capsys.readouterr()
    assert rc not in (0, None) and "last.pt" in err, err
    assert (out / "config.yaml").read_text(encoding="utf-8") == "# the accepted configuration of the first run\n"


def test_segment_keeps_far_off_coordinates_and_file_modes(corpus, clean, capsys, tmp_path):
    # a cloud at 1e6 + U(0, 1): the written coordinates stay within 1e-3 of the input (issue 18: %.6g wrote 1e+06)
    src = tmp_path / "far.ply"
    pts = np.random.default_rng(3).random((300, 3)) + 1e6
    header = ("ply\nformat ascii 1.0\nelement vertex 300\nproperty double x\nproperty double y\nproperty double z\n"
              "end_header\n")
    src.write_text(header + "\n".join(" ".join(repr(float(v)) for v in row) for row in pts) + "\n", encoding="utf-8")
    out, legend = tmp_path / "far_out.ply", tmp_path / "legend.json"
    argv = ["segment", str(src), "--parts", "leg,seat", *TINY, "--output", str(out), "--legend", str(legend)]
    clean("cli.segment", argv, capsys, expect_ok=True)
    from pa3d_data.readers import read_points

    written = np.asarray(read_points(out)["points"], dtype=np.float64)
    assert written.shape == pts.shape and np.abs(written - pts).max() < 1e-3
    assert legend.stat().st_mode & 0o777 == out.stat().st_mode & 0o777  # the legend was 0600, the PLY 0644
