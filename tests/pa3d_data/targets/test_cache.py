"""The target cache: round trip, resume rules, corrupt files, atomic writes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from pa3d_data.targets import CacheMismatchError, TargetCache, load_targets
from pa3d_data.targets import cache as cache_module

SETTINGS = {"teacher": "tiny", "views": 10, "num_groups": 4, "group_size": 8, "seed": 0, "image_size": 64}


def entry(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(4, 3, generator=g), F.normalize(torch.randn(4, 6, generator=g), dim=-1)


def test_round_trip_with_metadata(tmp_path):
    cache = TargetCache(tmp_path, SETTINGS)
    centers, targets = entry()
    path = cache.write("chair/12", centers, targets)
    assert path == tmp_path / "chair_12.safetensors"
    assert cache.is_done("chair/12") and not cache.is_done("chair_12")  # the id is checked, not just the name
    data = load_targets(path)
    assert torch.equal(data["centers"], centers) and torch.equal(data["targets"], targets)
    meta = data["metadata"]
    assert meta["teacher"] == "tiny" and meta["views"] == "10" and meta["num_groups"] == "4"
    assert meta["group_size"] == "8" and meta["seed"] == "0" and meta["shape_id"] == "chair/12"
    assert meta["feature_dim"] == "6"
    manifest = json.loads((tmp_path / "cache.json").read_text())
    assert manifest["settings"]["teacher"] == "tiny"


def test_fp16_targets_still_count_as_done(tmp_path):
    cache = TargetCache(tmp_path, SETTINGS)
    cache.write("a", *entry(), dtype=torch.float16)
    assert cache.load("a")["targets"].dtype == torch.float16
    assert cache.is_done("a")


def test_resume_with_other_settings_is_refused(tmp_path):
    TargetCache(tmp_path, SETTINGS, info={"data": "/somewhere"}).write("a", *entry())
    TargetCache(tmp_path, SETTINGS, info={"data": "/elsewhere"}).write("b", *entry(1))  # info is not compared
    with pytest.raises(CacheMismatchError, match="views: cached 10 vs asked 4"):
        TargetCache(tmp_path, {**SETTINGS, "views": 4})
    assert json.loads((tmp_path / "cache.json").read_text())["info"] == {"data": "/somewhere"}  # written once


def test_settings_are_written_with_the_first_file_only(tmp_path):
    # a run that fails before writing anything (issue 18: --views 0) must not refuse the corrected run
    TargetCache(tmp_path, {**SETTINGS, "views": 0})
    assert not (tmp_path / "cache.json").exists()
    cache = TargetCache(tmp_path, SETTINGS)
    cache.write("a", *entry())
    assert json.loads((tmp_path / "cache.json").read_text())["settings"]["views"] == 10


def test_two_runs_opened_before_any_write_first_writer_wins(tmp_path):
    first, second = TargetCache(tmp_path, SETTINGS), TargetCache(tmp_path, {**SETTINGS, "seed": 1})
    first.write("a", *entry())
    with pytest.raises(CacheMismatchError, match="seed: cached 0 vs asked 1"):
        second.write("b", *entry(1))
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["a.safetensors"]


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "JSONDecodeError"),
        (b"{not json", "JSONDecodeError"),
        (b"\xff\xfe\x00garbage", "UnicodeDecodeError"),
        (b"[1, 2]", "TypeError"),
        (b'{"info": {}}', "KeyError"),
        (b'{"settings": "views=10"}', "'settings' is a str"),
    ],
)
def test_corrupt_manifest_gives_one_clear_message(tmp_path, content, reason):
    (tmp_path / "cache.json").write_bytes(content)
    with pytest.raises(CacheMismatchError, match=rf"cache.json is unreadable \({reason}.*remove it or use another"):
        TargetCache(tmp_path, SETTINGS)
    assert (tmp_path / "cache.json").read_bytes() == content  # never overwritten


def test_root_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "cache"
    target.write_text("mine")
    with pytest.raises(ValueError, match="cache folder .*cache exists and is not a folder"):
        TargetCache(target, SETTINGS)
    assert target.read_text() == "mine"


def test_stale_temp_files_of_a_killed_write_are_removed_young_ones_kept(tmp_path):
    import os
    import time

    TargetCache(tmp_path, SETTINGS).write("a", *entry())
    old = [tmp_path / ".a.safetensors.k1ll3d.tmp", tmp_path / ".cache.json.tmp-4242"]
    young = tmp_path / ".b.safetensors.l1ve.tmp"
    keep = tmp_path / ".hidden_user_file.tmp"  # not a temp file of this cache
    for path in [*old, young, keep]:
        path.write_bytes(b"partial")
    past = time.time() - 3600
    for path in [*old, keep]:
        os.utime(path, (past, past))
    cache = TargetCache(tmp_path, SETTINGS)
    assert sorted(cache.removed_temp_files) == sorted(old)
    assert young.exists() and keep.exists() and not any(p.exists() for p in old)
    assert cache.is_done("a")


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),  # truncated
        lambda p: p.write_bytes(b"\x00" * 64),  # garbage
    ],
)
def test_corrupt_file_is_detected(tmp_path, damage):
    cache = TargetCache(tmp_path, SETTINGS)
    cache.write("a", *entry())
    damage(cache.path("a"))
    assert not cache.is_done("a")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        cache.load("a")
    cache.write("a", *entry())  # recomputed in place
    assert cache.is_done("a")


def test_files_of_other_settings_or_non_unit_targets_are_not_done(tmp_path):
    cache = TargetCache(tmp_path, SETTINGS)
    centers, targets = entry()
    cache.write("a", centers, targets * 2)
    assert not cache.is_done("a")
    other = TargetCache(tmp_path / "other", {**SETTINGS, "seed": 1})
    other.write("b", centers, targets)
    (tmp_path / "b.safetensors").write_bytes(other.path("b").read_bytes())
    assert not cache.is_done("b")


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    cache = TargetCache(tmp_path, SETTINGS)
    cache.write("a", *entry(0))
    before = cache.path("a").read_bytes()

    def crash(fd):  # interrupted after the bytes went to the temporary file, before it is moved into place
        raise KeyboardInterrupt

    monkeypatch.setattr("os.fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.write("a", *entry(1))
    with pytest.raises(KeyboardInterrupt):
        cache.write("b", *entry(1))
    assert cache.path("a").read_bytes() == before  # the old file is untouched
    assert not cache.path("b").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "cache.json"]


def test_bad_input(tmp_path):
    cache = TargetCache(tmp_path, SETTINGS)
    with pytest.raises(ValueError, match=r"centers must be \(G, 3\)"):
        cache.write("a", torch.zeros(4, 2), torch.zeros(4, 6))
    with pytest.raises(ValueError, match=r"targets must be \(G, T\) with G=4"):
        cache.write("a", torch.zeros(4, 3), torch.zeros(3, 6))
    with pytest.raises(ValueError, match="shape_id must be a non-empty string"):
        cache.path("")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "cache.json").write_text("{not json")
    with pytest.raises(CacheMismatchError, match="is unreadable"):
        TargetCache(tmp_path / "broken", SETTINGS)
    assert cache_module.FORMAT.startswith("pa3d-teacher-targets/")


# ------------------------------------------------------------------------------------------- precompute loop
def shapes(n: int, num_points: int = 128):
    from pa3d_data import PartSample

    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        points = F.normalize(torch.randn(num_points, 3, generator=g), dim=-1) * (1 + i)
        out.append(PartSample(points, torch.zeros(num_points, dtype=torch.long), ["part"], "blob", f"s{i}"))
    return out


def test_precompute_targets_counts_shards_and_failures(tmp_path):
    from pa3d_data.targets import precompute_targets
    from pa3d_models import TinyTeacher

    data = shapes(5)
    data[3].points[0, 0] = float("nan")  # a bad shape fails alone
    cache = TargetCache(tmp_path, {**SETTINGS, "group_size": 16})
    teacher = TinyTeacher(6)
    first = precompute_targets(data, teacher, cache, views=2, image_size=32, rank=1, world_size=2, progress=False)
    assert (first.done, first.skipped, first.failed) == (1, 0, 1)  # shapes 1 and 3
    assert str(first).startswith("1 done, 0 skipped, 1 failed")
    rest = precompute_targets(data, teacher, cache, views=2, image_size=32, progress=False)
    assert (rest.done, rest.skipped, rest.failed) == (3, 1, 1)
    for i in (0, 1, 2, 4):
        entry_i = cache.load(f"s{i}")
        assert entry_i["centers"].shape == (4, 3) and entry_i["targets"].shape == (4, 6)  # G, K from the settings
        assert (entry_i["centers"][:, None] - data[i].points[None]).norm(dim=-1).min(1).values.max() == 0
    assert not cache.path("s3").exists()
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size\)"):
        precompute_targets(data, teacher, cache, rank=2, world_size=2)
