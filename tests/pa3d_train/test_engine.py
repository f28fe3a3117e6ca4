"""Training infrastructure: atomic writes, exact resume state, config refusal, parameter groups, logging."""

from __future__ import annotations

import json
import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pa3d_models.files import atomic_write_bytes
from pa3d_train.engine import (
    JsonlLogger,
    atomic_torch_save,
    load_training_state,
    param_groups,
    save_training_state,
)


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "ckpt.pt"
    atomic_torch_save({"a": 1}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"bad": Unpicklable()}, target)
    assert torch.load(target) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"], "a temporary file was left behind"


@given(st.binary(max_size=64))
def test_atomic_write_bytes_round_trip(data):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = atomic_write_bytes(Path(d) / "sub" / "f.bin", data)
        assert path.read_bytes() == data and os.listdir(path.parent) == ["f.bin"]


def test_save_and_resume_restore_weights_optimizer_and_rng(tmp_path):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    save_training_state(tmp_path / "last.pt", model=model, optimizer=opt, epoch=3, step=7, config={"lr": 1e-2})
    expected_draw = torch.rand(4)  # what the RNG gives right after the save

    other = _model()
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-2)
    torch.manual_seed(123)
    meta = load_training_state(tmp_path / "last.pt", model=other, optimizer=other_opt, config={"lr": 1e-2})
    assert meta["epoch"] == 3 and meta["step"] == 7
    assert torch.equal(torch.rand(4), expected_draw)
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert other_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_resume_with_other_config_is_refused(tmp_path):
    model = _model()
    save_training_state(tmp_path / "c.pt", model=model, optimizer=None, epoch=1, step=1, config={"lr": 1e-2, "G": 128})
    with pytest.raises(ValueError, match=r"resume from .* refused.*G: checkpoint 128 vs now 64"):
        load_training_state(tmp_path / "c.pt", model=model, config={"lr": 1e-2, "G": 64})
    # only the compared keys matter
    load_training_state(tmp_path / "c.pt", model=model, config={"lr": 5.0, "G": 128}, compare_keys=["G"])


def test_unreadable_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="unreadable"):
        load_training_state(bad, model=_model())
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a pa3d training state"):
        load_training_state(tmp_path / "foreign.pt", model=_model())
    with pytest.raises(ValueError, match="does not exist"):
        load_training_state(tmp_path / "missing.pt", model=_model())


def test_param_groups_longest_prefix_and_frozen_excluded():
    model = torch.nn.ModuleDict(
        {"enc": torch.nn.Linear(2, 2), "enc_head": torch.nn.Linear(2, 2), "frozen": torch.nn.Linear(2, 2)}
    )
    model["frozen"].requires_grad_(False)
    groups = param_groups(model, {"enc": 1e-4, "enc_head": 5e-4}, default_lr=1.0, weight_decay=0.05)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"enc", "enc_head"}
    assert by_name["enc_head"]["lr"] == 5e-4 and len(by_name["enc_head"]["params"]) == 2
    assert sum(len(g["params"]) for g in groups) == 4


def test_jsonl_logger_writes_one_object_per_line(tmp_path):
    logger = JsonlLogger(tmp_path / "log.jsonl")
    logger.log({"loss": torch.tensor(0.5), "stage": "stage2"}, step=1)
    logger.log({"loss": 0.25}, step=2)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == [0.5, 0.25] and rows[0]["stage"] == "stage2" and rows[1]["step"] == 2
    silent = JsonlLogger(tmp_path / "other.jsonl", enabled=False)
    silent.log({"x": 1})
    assert not (tmp_path / "other.jsonl").exists()


def test_atomic_files_get_ordinary_permissions(tmp_path):
    # mkstemp creates 0600 files; caches and checkpoints must be readable like any other file
    from pa3d_models.files import _UMASK

    path = atomic_write_bytes(tmp_path / "f.bin", b"x")
    assert path.stat().st_mode & 0o777 == 0o666 & ~_UMASK
