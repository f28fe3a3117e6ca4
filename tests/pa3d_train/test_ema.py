"""ProgressEMA (a weight average whose horizon is a fraction of the run) and ``fit(ema=...)``."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pa3d_train import ProgressEMA, check_ema_horizon, fit, load_training_state, read_training_state


class _Net(torch.nn.Module):
    """Linear + BatchNorm (an integer buffer) + dropout (the RNG a resume must restore)."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.2))
        self.head = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.head(torch.relu(self.body(x))).squeeze(-1)


class _Data(torch.utils.data.Dataset):
    def __init__(self, n=24):
        g = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randn(n, 4, generator=g), torch.randn(n, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"points": self.x[i], "y": self.y[i]}


def _mse(out, batch):
    return ((out - batch["y"]) ** 2).mean()


class _Crash(Exception):
    pass


def _crashing_loss(after_steps):
    calls = [0]

    def loss(out, batch):
        calls[0] += 1
        if calls[0] > after_steps:
            raise _Crash
        return _mse(out, batch)

    return loss


def _reference(snapshots: list[float], progress: list[float], horizon: float) -> float:
    """The closed form: x_1 weighted by prod_j d_j, each later x_i by (1 - d_i) * prod_{j > i} d_j."""
    n = len(snapshots)
    keep = [math.exp(-max(0.0, progress[i] - progress[i - 1]) / horizon) if i else 0.0 for i in range(n)]
    total = 0.0
    for i, x in enumerate(snapshots):
        w = 1.0 if i == 0 else 1.0 - keep[i]
        for j in range(i + 1, n):
            w *= keep[j]
        total += w * x
    return total


class _Scalar(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))


_values = st.floats(-100, 100, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_values, st.floats(0, 0.3)), min_size=1, max_size=12), st.floats(0.01, 1.0))
def test_matches_the_closed_form_and_stays_a_convex_combination(steps, horizon):
    net, ema = _Scalar(), ProgressEMA(horizon)
    snapshots, progress, p = [], [], 0.0
    for i, (x, dp) in enumerate(steps):
        p += dp
        with torch.no_grad():
            net.w.fill_(x)
            net.count.fill_(i)
        ema.update(net, p)
        snapshots.append(x)
        progress.append(p)
    got = ema.weights["w"].item()
    assert got == pytest.approx(_reference(snapshots, progress, horizon), rel=1e-9, abs=1e-9)
    assert min(snapshots) - 1e-9 <= got <= max(snapshots) + 1e-9
    assert ema.weights["count"].item() == len(steps) - 1  # integer buffers take the latest value
    assert ema.updates == len(steps) and ema.progress == pytest.approx(p)


@given(_values, st.lists(st.floats(0, 0.5), min_size=1, max_size=8), st.floats(0.01, 1.0))
def test_constant_weights_average_to_themselves(x, steps, horizon):
    net, ema, p = _Scalar(), ProgressEMA(horizon), 0.0
    with torch.no_grad():
        net.w.fill_(x)
    for dp in steps:
        p += dp
        ema.update(net, p)
    assert ema.weights["w"].item() == pytest.approx(x, rel=1e-12, abs=1e-12)


def test_the_horizon_is_in_progress_not_steps():
    """A jump from 0 to 1 held for a tenth of the run weighs 1 - exp(-1), in 10 steps or in 1000."""
    for steps in (10, 1000):
        net, ema = _Scalar(), ProgressEMA(0.1)
        ema.update(net, 0.0)
        with torch.no_grad():
            net.w.fill_(1.0)
        for i in range(1, steps + 1):
            ema.update(net, 0.1 * i / steps)
        assert ema.weights["w"].item() == pytest.approx(1 - math.exp(-1), abs=1e-9)


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    a, b, net = ProgressEMA(0.2), ProgressEMA(0.2), torch.nn.Linear(3, 2)
    for i in range(3):
        torch.nn.init.normal_(net.weight)
        a.update(net, 0.1 * i)
    b.load_state_dict(a.state_dict())
    for i in range(3, 6):
        torch.nn.init.normal_(net.weight)
        a.update(net, 0.1 * i)
        b.update(net, 0.1 * i)
    for k in a.weights:
        assert torch.equal(a.weights[k], b.weights[k]), k
    a.copy_to(net)
    assert torch.equal(net.weight, a.weights["weight"])


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), float("inf"), True, "0.1", None])
def test_bad_horizons_are_refused(bad):
    with pytest.raises(ValueError, match=r"fraction of the run in \(0, 1\]"):
        check_ema_horizon(bad, flag="--ema")
    with pytest.raises(ValueError, match="horizon"):
        ProgressEMA(bad)


def test_another_model_or_a_non_finite_progress_is_refused():
    ema = ProgressEMA(0.1)
    ema.update(torch.nn.Linear(2, 2), 0.0)
    with pytest.raises(ValueError, match="other keys"):
        ema.update(torch.nn.Linear(2, 2, bias=False), 0.1)
    with pytest.raises(ValueError, match="finite"):
        ema.update(torch.nn.Linear(2, 2), float("nan"))
    with pytest.raises(ValueError, match="map names to tensors"):
        ema.load_state_dict({"weights": {"w": 1.0}})


# ------------------------------------------------------------------------------------------------ fit(ema=)
def _fit(out, epochs, *, ema=0.3, resume=False, loss=_mse):
    torch.manual_seed(0)
    net = _Net()
    result = fit(net, loss, _Data(), epochs=epochs, batch_size=6, lr=0.05, schedule="cosine", warmup=0.2,
                 out_dir=out, config={"seed": 0}, ema=ema, resume=resume, log=None)
    return net, result


def test_fit_leaves_the_average_in_the_model_and_both_in_last_pt(tmp_path):
    net, result = _fit(tmp_path / "ema", 3)
    raw, _ = _fit(tmp_path / "raw", 3, ema=None)
    state = read_training_state(tmp_path / "ema" / "last.pt")
    assert result.ema == 0.3 and state["extra"]["ema"]["updates"] == result.steps == 12
    # the trajectory is the same with or without the average: last.pt holds the last step's weights
    for k, v in raw.state_dict().items():
        assert torch.equal(state["model"][k], v), k
    # the model holds the average, which differs from the last step's weights
    for k, v in net.state_dict().items():
        assert torch.equal(state["extra"]["ema"]["weights"][k], v), k
    assert not torch.equal(net.head.weight, raw.head.weight)
    # a next stage or an evaluation loads the average; a resume the last step
    fresh = _Net()
    load_training_state(tmp_path / "ema" / "last.pt", model=fresh, restore_rng=False, average=True)
    assert torch.equal(fresh.head.weight, net.head.weight)
    load_training_state(tmp_path / "ema" / "last.pt", model=fresh, restore_rng=False)
    assert torch.equal(fresh.head.weight, raw.head.weight)
    assert _fit(tmp_path / "off", 1, ema=0)[1].ema is None


def test_a_resumed_run_averages_exactly_as_one_straight_run(tmp_path):
    straight, _ = _fit(tmp_path / "a", 3)
    torch.manual_seed(0)
    with pytest.raises(_Crash):
        fit(_Net(), _crashing_loss(6), _Data(), epochs=3, batch_size=6, lr=0.05, schedule="cosine", warmup=0.2,
            out_dir=tmp_path / "b", config={"seed": 0}, ema=0.3, log=None)
    torch.manual_seed(123)
    resumed, result = _fit(tmp_path / "b", 3, resume=True)
    assert result.resumed_from == 1
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_init_from_a_recipe_checkpoint_takes_its_average(tmp_path):
    from pa3d_models.loaders import training_state_weights

    net, _ = _fit(tmp_path / "ema", 2)
    payload = torch.load(tmp_path / "ema" / "last.pt", weights_only=True)
    assert torch.equal(training_state_weights(payload)["head.weight"], net.head.weight)
    del payload["extra"]["ema"]
    assert training_state_weights(payload) is payload["model"]


@pytest.mark.parametrize("bad", ["1.5", "-0.2", "nan"])
def test_the_recipe_refuses_a_bad_ema_before_training(bad):
    from pa3d_train import ConfigError, resolve_config

    with pytest.raises(ConfigError, match=r"--ema must be a fraction of the run in \(0, 1\].*none or 0"):
        resolve_config(["--ema", bad])


@pytest.mark.parametrize(("flag", "value"), [("0", 0.0), ("none", None), ("0.05", 0.05)])
def test_the_recipe_reads_ema(flag, value):
    from pa3d_train import resolve_config

    assert resolve_config(["--ema", flag])["ema"] == value


# ------------------------------------------------------------------------------- fit(checkpoint_interval_s=)
def test_a_checkpoint_interval_writes_less_often_and_still_ends_with_the_last_epoch(tmp_path, monkeypatch):
    import pa3d_train.engine as engine

    writes = []
    real = engine.save_training_state
    monkeypatch.setattr(engine, "save_training_state", lambda *a, **k: (writes.append(k["epoch"]), real(*a, **k))[1])
    torch.manual_seed(0)
    net = _Net()
    fit(net, _mse, _Data(), epochs=4, batch_size=6, lr=0.05, out_dir=tmp_path / "a", config={}, log=None,
        checkpoint_interval_s=3600)
    assert writes == [4]  # only the last epoch
    writes.clear()
    fit(_Net(), _mse, _Data(), epochs=None, time_budget_s=0.5, batch_size=6, lr=0.05, out_dir=tmp_path / "b",
        config={}, log=None, checkpoint_interval_s=3600)
    state = read_training_state(tmp_path / "b" / "last.pt")
    assert writes and writes[-1] == state["epoch"] and state["step"] > 0  # the budget's end is written
    writes.clear()
    fit(_Net(), _mse, _Data(), epochs=3, batch_size=6, lr=0.05, out_dir=tmp_path / "c", config={}, log=None)
    assert writes == [1, 2, 3]  # the default: after every epoch
    with pytest.raises(ValueError, match="checkpoint_interval_s must be a finite number >= 0"):
        fit(_Net(), _mse, _Data(), epochs=1, batch_size=6, checkpoint_interval_s=-1, log=None)


@pytest.mark.parametrize("bad", ["-1", "inf", "nan"])
def test_the_recipe_refuses_a_bad_checkpoint_interval(bad):
    from pa3d_train import ConfigError, resolve_config

    with pytest.raises(ConfigError, match="--checkpoint-interval must be a number of seconds >= 0"):
        resolve_config(["--checkpoint-interval", bad])
