"""`pa3d precompute-teacher`: end to end with the tiny teacher, resume, corrupt files, refused settings."""

from __future__ import annotations

import os

import pytest
import torch

from pa3d_cli.main import main
from pa3d_cli.precompute_teacher import parse_shard
from pa3d_data.targets import CacheMismatchError, TargetCache, load_targets

SMALL = ["--teacher", "tiny", "--views", "4", "--image-size", "64", "--num-groups", "16", "--group-size", "16"]


def synthetic(out, *extra: str) -> list[str]:
    return ["precompute-teacher", "--dataset", "synthetic", "--data", str(out / "data"), "--out", str(out / "cache"),
            "--num-points", "256", "--dataset-kw", "num_shapes=3", "--dataset-kw", "cache=false", *SMALL, *extra]


def check_cache(folder, expected_ids):
    files = sorted(p.name for p in folder.glob("*.safetensors"))
    assert files == sorted(f"{i}.safetensors" for i in expected_ids)
    for name in files:
        data = load_targets(folder / name)
        assert data["centers"].shape == (16, 3)
        assert torch.allclose(data["targets"].norm(dim=-1), torch.ones(16), atol=1e-5)
        meta = data["metadata"]
        assert meta["teacher"] == "tiny" and meta["views"] == "4" and meta["num_groups"] == "16"
        assert meta["group_size"] == "16" and meta["seed"] == "0" and meta["image_size"] == "64"
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]


def test_run_resume_and_corrupt_file(tmp_path, capsys):
    assert main(synthetic(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "3 done, 0 skipped, 0 failed" in out
    cache = tmp_path / "cache"
    check_cache(cache, ["train_0", "train_1", "train_2"])
    # The stored centres are input points of each shape (FPS picks).
    from pa3d_data import build_dataset

    for sample in build_dataset("synthetic", None, num_shapes=3, cache=False, num_points=256, seed=0):
        centers = load_targets(cache / f"{sample.shape_id}.safetensors")["centers"]
        assert (centers[:, None] - sample.points[None]).norm(dim=-1).min(dim=1).values.max() == 0
    mtimes = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.safetensors")}

    # A second run skips every done shape and leaves its file untouched.
    assert main(synthetic(tmp_path)) == 0
    assert "0 done, 3 skipped, 0 failed" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.safetensors")} == mtimes

    # A damaged file is detected and computed again; the others stay untouched.
    damaged = cache / "train_1.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    assert main(synthetic(tmp_path)) == 0
    assert "1 done, 2 skipped, 0 failed" in capsys.readouterr().out
    check_cache(cache, ["train_0", "train_1", "train_2"])
    for name in ("train_0.safetensors", "train_2.safetensors"):
        assert (cache / name).stat().st_mtime_ns == mtimes[name]


def test_shards_split_the_work_and_limit_cuts_it(tmp_path, capsys):
    assert main(synthetic(tmp_path, "--shard", "1/2")) == 0
    assert "1 done" in capsys.readouterr().out
    check_cache(tmp_path / "cache", ["train_1"])
    assert main(synthetic(tmp_path, "--shard", "0/2", "--limit", "1")) == 0
    check_cache(tmp_path / "cache", ["train_0", "train_1"])


def test_resume_with_other_settings_is_refused(tmp_path, capsys):
    assert main(synthetic(tmp_path, "--limit", "1")) == 0
    capsys.readouterr()
    assert main(synthetic(tmp_path, "--views", "6")) == 2
    err = capsys.readouterr().err
    assert "views: cached 4 vs asked 6" in err
    with pytest.raises(CacheMismatchError):
        TargetCache(tmp_path / "cache", {"teacher": "tiny"})


def test_missing_weights_and_bad_arguments(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PA3D_WEIGHTS", str(tmp_path / "weights"))
    args = synthetic(tmp_path)
    args[args.index("tiny")] = "dinov2_vits14"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "vit_small_patch14_dinov2.safetensors" in err and "--weights FILE" in err
    assert not (tmp_path / "cache").exists()  # nothing written before the teacher exists
    assert main(synthetic(tmp_path, "--shard", "2/2")) == 2
    assert "--shard must be i/n" in capsys.readouterr().err
    assert main(synthetic(tmp_path, "--dataset-kw", "oops")) == 2
    assert "--dataset-kw must be KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--shard must be i/n"):
        parse_shard("a/b")


@pytest.mark.data
def test_end_to_end_on_three_lpsb_meshes(shared_data, tmp_path, capsys):
    root = shared_data / "lpsb"
    if not root.is_dir():
        pytest.skip("L-PSB not in the shared data")
    args = ["precompute-teacher", "--dataset", "lpsb", "--data", str(root), "--out", str(tmp_path),
            "--num-points", "1024", "--limit", "3", "--renderer", "mesh", *SMALL]
    assert main(args) == 0
    assert "3 done, 0 skipped, 0 failed" in capsys.readouterr().out
    ids = sorted(p.stem for p in tmp_path.glob("*.safetensors"))
    assert len(ids) == 3
    check_cache(tmp_path, ids)
    mtimes = {i: os.stat(tmp_path / f"{i}.safetensors").st_mtime_ns for i in ids}
    assert main(args) == 0
    assert "0 done, 3 skipped, 0 failed" in capsys.readouterr().out
    assert {i: os.stat(tmp_path / f"{i}.safetensors").st_mtime_ns for i in ids} == mtimes


# ---------------------------------------------------------------------------------------------- bad input (issue 18)


def _pickle_payload(path, marker):
    """A .pth whose unpickling would create ``marker`` (a stand-in for arbitrary code)."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": {"w": torch.zeros(1)}, "evil": Payload()}, path, pickle_protocol=pickle.DEFAULT_PROTOCOL)


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated", "pickle", "wrong_type"])
def test_bad_weights_file_gives_one_line_and_never_unpickles(tmp_path, capsys, kind):
    pytest.importorskip("timm")
    weights = tmp_path / "weights.pth"
    marker = tmp_path / "PWNED"
    if kind == "garbage":
        weights.write_bytes(os.urandom(256))
    elif kind == "empty":
        weights.write_bytes(b"")
    elif kind == "truncated":
        torch.save({"w": torch.zeros(64)}, weights)
        weights.write_bytes(weights.read_bytes()[:100])
    elif kind == "pickle":
        _pickle_payload(weights, marker)
    else:
        torch.save([1, 2, 3], weights)
    before = weights.read_bytes()
    args = synthetic(tmp_path, "--weights", str(weights))
    args[args.index("tiny")] = "dinov2_vits14"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("pa3d precompute-teacher: teacher weights") and str(weights) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()
    assert weights.read_bytes() == before
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--views", "0"], "--views must be >= 1, got 0"),
        (["--image-size", "0"], "--image-size must be >= 16, got 0"),
        (["--num-groups", "-1"], "--num-groups must be >= 1, got -1"),
        (["--group-size", "0"], "--group-size must be >= 1, got 0"),
        (["--limit", "0"], "--limit must be >= 1, got 0"),
        (["--num-points", "8"], "--num-points must be >= --num-groups (16) and --group-size (16), got 8"),
        (["--dataset-kw", "categories=[Chair"], "--dataset-kw 'categories=[Chair': the value is not valid YAML"),
        (["--device", "gpu0"], "--device 'gpu0' is not a torch device"),
        (["--weights", "w.pth"], "--weights is not used by --teacher tiny"),
    ],
)
def test_bad_arguments_write_nothing_and_the_corrected_run_works(tmp_path, capsys, extra, message):
    assert main(synthetic(tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    # issue 18: after a refused --views 0 the corrected run was refused ("holds targets of other settings")
    assert main(synthetic(tmp_path, "--limit", "1")) == 0


def test_out_that_is_a_file_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "cache"
    out.write_text("my notes")
    assert main(synthetic(tmp_path)) == 2
    assert f"--out must be a folder (the cache), {out} is a file" in capsys.readouterr().err
    assert out.read_text() == "my notes"


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe", b"[]", b'{"settings": 3}'])
def test_corrupt_cache_json_is_one_clear_line(tmp_path, capsys, content):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "cache.json").write_bytes(content)
    assert main(synthetic(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "cache.json is unreadable" in err and "remove it or use another --out" in err
    assert "Traceback" not in err and (tmp_path / "cache" / "cache.json").read_bytes() == content


def test_a_killed_writes_temp_file_is_cleaned_on_the_next_run(tmp_path, capsys):
    assert main(synthetic(tmp_path, "--limit", "1")) == 0
    stale = tmp_path / "cache" / ".train_1.safetensors.abc123.tmp"
    stale.write_bytes(b"half a file")
    os.utime(stale, (1, 1))
    assert main(synthetic(tmp_path)) == 0
    assert "removed 1 temporary file(s) of an interrupted run" in capsys.readouterr().err
    assert not stale.exists()
    check_cache(tmp_path / "cache", ["train_0", "train_1", "train_2"])


def test_unwritable_cache_folder_is_one_line_exit_1(tmp_path, capsys, monkeypatch):
    from pa3d_data.targets import cache as cache_module

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_module.TargetCache, "write", full_disk)
    assert main(synthetic(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err


def test_the_pickle_payload_is_live(tmp_path):
    # the payload above really runs when unpickled: the refusal tests are not vacuous
    weights, marker = tmp_path / "w.pth", tmp_path / "PWNED"
    _pickle_payload(weights, marker)
    torch.load(weights, weights_only=False)
    assert marker.exists()


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    from pa3d_data.targets import precompute as precompute_module

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero somewhere deep")

    monkeypatch.setattr(precompute_module, "precompute_targets", broken)
    assert main(synthetic(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "ZeroDivisionError: division by zero somewhere deep" in err and "rerun with --debug" in err
    assert "Traceback" not in err
    with pytest.raises(ZeroDivisionError):
        main(synthetic(tmp_path, "--debug"))
