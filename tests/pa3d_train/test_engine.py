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


# ------------------------------------------------------------------------------------------ fit, in-process
from pa3d_train import FitResult, check_resume, fit, read_training_state  # noqa: E402


class _Net(torch.nn.Module):
    """Small, with BatchNorm (batch statistics) and dropout (the RNG), like the model's tokenizer."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                        torch.nn.Dropout(0.2))
        self.head = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.body(x)).squeeze(-1)


class _Data(torch.utils.data.Dataset):
    """A regression set whose items depend on the epoch (like augmentation): the epoch must reach it."""

    def __init__(self, n=24):
        g = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randn(n, 4, generator=g), torch.randn(n, generator=g)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"points": self.x[i] * (1.0 + 0.1 * self.epoch), "y": self.y[i]}


def _mse(out, batch):
    return {"mse_loss": ((out - batch["y"]) ** 2).mean(), "mean_pred": out.mean().detach()}


def _fit(out, epochs, **kw):
    torch.manual_seed(0)
    net = _Net()
    kw = {"batch_size": 6, "lr": 0.05, "schedule": "cosine", "warmup": 0.2, "log": None, **kw}
    return net, fit(net, _mse, _Data(), epochs=epochs, out_dir=out, config={"seed": 0}, **kw)


def test_fit_two_epochs_in_process_trains_logs_and_checkpoints(tmp_path):
    net, result = _fit(tmp_path / "run", 2)
    assert isinstance(result, FitResult)
    assert (result.epochs, result.steps, result.stopped_early) == (2, 8, False)
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert {"loss", "mse_loss", "mean_pred", "lr", "steps_per_s"} <= set(result.history[0])
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["step"] == 8
    state = read_training_state(tmp_path / "run" / "last.pt")
    assert state["epoch"] == 2 and state["step"] == 8
    for key, value in net.state_dict().items():
        assert torch.equal(state["model"][key], value), key
    # the cosine schedule ended near 0 (the last step ran at progress 7/8)
    assert result.history[-1]["lr"] < 0.05 * 0.1


class _Crash(Exception):
    pass


def _crashing_loss(after_steps):
    calls = [0]

    def loss(out, batch):
        calls[0] += 1
        if calls[0] > after_steps:
            raise _Crash  # a kill in the middle of epoch 2
        return _mse(out, batch)

    return loss


def test_fit_resumed_after_a_crash_equals_one_straight_run(tmp_path):
    straight, _ = _fit(tmp_path / "a", 3)
    torch.manual_seed(0)
    with pytest.raises(_Crash):
        fit(_Net(), _crashing_loss(6), _Data(), epochs=3, batch_size=6, lr=0.05, schedule="cosine", warmup=0.2,
            out_dir=tmp_path / "b", config={"seed": 0}, log=None)
    assert read_training_state(tmp_path / "b" / "last.pt")["epoch"] == 1
    torch.manual_seed(123)  # whatever the RNG holds now, the resume restores the checkpoint's
    resumed, result = _fit(tmp_path / "b", 3, resume=True)
    assert result.resumed_from == 1 and [r["epoch"] for r in result.history] == [1, 2, 3]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    rows = [json.loads(line)["epoch"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3]


def test_resume_drops_log_rows_the_checkpoint_does_not_hold(tmp_path):
    _fit(tmp_path / "r", 1)
    with (tmp_path / "r" / "log.jsonl").open("a") as fh:  # epoch 2 logged, then killed before its checkpoint
        fh.write(json.dumps({"epoch": 2, "loss": 9.0}) + "\n" + '{"epoch": 3, "lo')
    _fit(tmp_path / "r", 2, resume=True)
    rows = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["loss"] != 9.0


def test_fp16_scaler_state_is_saved_and_restored_and_the_resume_is_exact(tmp_path):
    straight, _ = _fit(tmp_path / "a", 2, amp="fp16")
    state = read_training_state(tmp_path / "a" / "last.pt")
    # fp16 overflowed early and the scaler backed off: a resume that lost this state would step differently
    assert set(state["scaler"]) >= {"scale", "_growth_tracker"} and state["scaler"]["scale"] < 65536.0
    torch.manual_seed(0)
    with pytest.raises(_Crash):
        fit(_Net(), _crashing_loss(5), _Data(), epochs=2, batch_size=6, lr=0.05, schedule="cosine", warmup=0.2,
            amp="fp16", out_dir=tmp_path / "b", config={"seed": 0}, log=None)
    resumed, _ = _fit(tmp_path / "b", 2, amp="fp16", resume=True)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert read_training_state(tmp_path / "b" / "last.pt")["scaler"] == state["scaler"]

    scaler = torch.amp.GradScaler("cpu", init_scale=8.0, growth_interval=3)
    save_training_state(tmp_path / "s.pt", model=_model(), optimizer=None, epoch=0, step=0, config={}, scaler=scaler)
    other = torch.amp.GradScaler("cpu")
    load_training_state(tmp_path / "s.pt", model=_model(), scaler=other)
    assert other.state_dict() == scaler.state_dict()


def test_resume_refuses_a_changed_key_before_loading(tmp_path):
    _fit(tmp_path / "r", 1)
    with pytest.raises(ValueError, match=r"refused.*seed: checkpoint 0 vs now 1"):
        check_resume(tmp_path / "r" / "last.pt", {"seed": 1}, ["seed"])
    with pytest.raises(ValueError, match="seed: checkpoint 0 vs now 5"):
        torch.manual_seed(0)
        fit(_Net(), _mse, _Data(), epochs=2, batch_size=6, out_dir=tmp_path / "r", resume=True, config={"seed": 5},
            log=None)


def test_checkpoints_are_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"format": "pa3d-training-state/2", "model": {}, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="unreadable .*weights_only=True"):
        load_training_state(tmp_path / "evil.pt", model=_model())
    assert not marker.exists(), "loading a checkpoint ran code"
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "evil.pt").read_bytes()[:40])
    with pytest.raises(ValueError, match="unreadable"):
        read_training_state(tmp_path / "trunc.pt")


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (run / "keep.tmp").write_bytes(b"not ours")
    _fit(run, 1)
    assert sorted(p.name for p in run.iterdir()) == ["keep.tmp", "last.pt", "log.jsonl"]


def test_time_budget_ends_the_run_cleanly_with_a_checkpoint(tmp_path):
    net, result = _fit(tmp_path / "t", None, time_budget_s=1e-9)
    assert result.stopped_early and result.steps == 0
    assert read_training_state(tmp_path / "t" / "last.pt")["step"] == 0
    _, spent = _fit(tmp_path / "z", 3, time_budget_s=0.0)  # a budget used up by earlier parts: 0 steps, the start kept
    assert spent.steps == 0 and spent.stopped_early and (tmp_path / "z" / "last.pt").is_file()
    with pytest.raises(ValueError, match="epochs: None needs a time_budget_s"):
        _fit(None, None)


def test_bn_eval_keeps_running_statistics_and_frozen_parameters_stay(tmp_path):
    torch.manual_seed(0)
    net = _Net()
    net.head.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fit(net, _mse, _Data(), epochs=1, batch_size=6, lr=0.1, bn_eval=True, log=None)
    after = net.state_dict()
    assert torch.equal(after["body.1.running_mean"], before["body.1.running_mean"])
    assert torch.equal(after["head.weight"], before["head.weight"])
    assert not torch.equal(after["body.0.weight"], before["body.0.weight"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 25}, "batch_size 25 is larger than the training set: 24 shapes give 24 per process for 25"),
        ({"batch_size": 0}, "batch_size must be a positive multiple of the 1 process"),
        ({"epochs": -1}, "epochs must be >= 0, got -1"),
        ({"amp": "fp8"}, "amp must be 'none', 'bf16', 'fp16' or 'auto'"),
        ({"schedule": "step"}, "schedule must be one of"),
    ],
)
def test_fit_refuses_bad_settings(kwargs, message):
    kw = {"epochs": 1, "batch_size": 6, "log": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        fit(_Net(), _mse, _Data(), **kw)


@given(n=st.integers(1, 40), bs=st.integers(1, 12))
def test_steps_per_epoch_matches_the_loader(n, bs):
    from pa3d_train import steps_per_epoch

    if bs > n:
        return
    data = [{"points": torch.zeros(4), "y": torch.zeros(())} for _ in range(n)]
    seen = []
    fit(torch.nn.Linear(4, 1), lambda o, b: (o.sum() * 0 + 1).requires_grad_(), data, epochs=1, batch_size=bs,
        log=None, forward=lambda net, b: seen.append(1) or net(b["points"]))
    assert len(seen) == steps_per_epoch(n, bs) == n // bs
