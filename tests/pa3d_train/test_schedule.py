"""Learning-rate schedules, budget splitting and run progress: properties and references."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pa3d_train.schedule import (
    SCHEDULES,
    Budget,
    RunProgress,
    format_duration,
    lr_factor,
    split_budget,
    warmup_cosine,
)

fractions = st.floats(0.0, 1.0, allow_nan=False)
warmups = st.floats(0.0, 0.9, allow_nan=False)


@given(p=st.floats(-2.0, 3.0, allow_nan=False), schedule=st.sampled_from(SCHEDULES), warmup=warmups,
       min_factor=fractions)
def test_factor_is_in_unit_interval_and_clips_progress(p, schedule, warmup, min_factor):
    f = lr_factor(p, schedule=schedule, warmup=warmup, min_factor=min_factor)
    assert 0.0 <= f <= 1.0
    assert f == lr_factor(min(max(p, 0.0), 1.0), schedule=schedule, warmup=warmup, min_factor=min_factor)


@given(a=fractions, b=fractions, schedule=st.sampled_from(["cosine", "linear"]), warmup=warmups, min_factor=fractions)
def test_warmup_rises_then_decay_falls_to_min_factor(a, b, schedule, warmup, min_factor):
    lo, hi = sorted((a, b))
    f = lambda p: lr_factor(p, schedule=schedule, warmup=warmup, min_factor=min_factor)  # noqa: E731
    if hi <= warmup:
        assert f(lo) <= f(hi) + 1e-12  # the warm-up rises
    if lo >= warmup:
        assert f(hi) <= f(lo) + 1e-12  # the decay falls
    assert f(1.0) == pytest.approx(min_factor)
    assert f(warmup) == pytest.approx(1.0)
    if warmup > 0:
        assert f(0.0) == 0.0


@given(steps=st.integers(1, 60), eta=st.floats(0.0, 0.5))
def test_cosine_equals_torch_cosine_annealing(steps, eta):
    """Reference: torch's CosineAnnealingLR over ``steps`` steps, with no warm-up."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=eta)
    for k in range(steps + 1):
        assert lr_factor(k / steps, schedule="cosine", min_factor=eta) == pytest.approx(opt.param_groups[0]["lr"],
                                                                                        abs=1e-9)
        opt.step()
        sched.step()


def test_warmup_cosine_is_the_cosine_schedule():
    for p in (0.0, 0.03, 0.5, 0.99):
        assert warmup_cosine(p, warmup=0.05) == lr_factor(p, schedule="cosine", warmup=0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schedule": "step"}, "schedule must be one of"),
        ({"warmup": 1.0}, r"warmup must be a fraction of the run in \[0, 1\), got 1.0"),
        ({"min_factor": -0.1}, r"min_factor must be in \[0, 1\], got -0.1"),
    ],
)
def test_bad_schedule_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lr_factor(0.5, **kwargs)


@given(total=st.floats(0.0, 1e5), weights=st.dictionaries(st.sampled_from("abcde"), st.floats(0.0, 10.0),
                                                          min_size=1).filter(lambda w: sum(w.values()) > 0))
def test_split_budget_sums_to_total_in_proportion(total, weights):
    parts = split_budget(total, weights)
    assert set(parts) == set(weights)
    assert sum(parts.values()) == pytest.approx(total, rel=1e-9, abs=1e-9)
    wsum = sum(weights.values())
    for k, w in weights.items():
        assert parts[k] == pytest.approx(total * w / wsum, rel=1e-9, abs=1e-9)


def test_split_budget_refuses_bad_weights():
    with pytest.raises(ValueError, match="not all 0"):
        split_budget(10, {"a": 0.0})
    with pytest.raises(ValueError, match="total_s must be"):
        split_budget(-1, {"a": 1.0})


@given(minutes=st.floats(0.1, 100.0), w=st.lists(st.floats(0.1, 5.0), min_size=1, max_size=4),
       used=st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4))
def test_budget_allotments_never_exceed_what_is_left_and_the_last_part_gets_all(minutes, w, used):
    names = [f"p{i}" for i in range(len(w))]
    budget = Budget(minutes, dict(zip(names, w)), started=0.0)
    now = 0.0
    for i, name in enumerate(names):
        left = budget.remaining(now)
        got = budget.allot(name, now=now)
        assert 0.0 <= got <= left + 1e-9
        if i == len(names) - 1:
            assert got == pytest.approx(left)
        now += got * used[i]  # the part uses some of its share; the rest goes to the next parts
    assert budget.remaining(now) >= 0.0


def test_budget_gives_unused_time_to_later_parts_and_summarises():
    b = Budget(10, {"stage1": 1, "stage2": 1, "eval": 1}, started=0.0)
    assert b.allot("stage1", now=0.0) == pytest.approx(200.0)
    assert b.allot("stage2", now=50.0) == pytest.approx(275.0)  # stage1 used 50 s of its 200
    assert b.allot("eval", now=325.0) == pytest.approx(275.0)
    line = b.summary(now=400.0)
    assert line.startswith("budget 10 min: stage1 50s of 3m20s, stage2 4m35s of 4m35s, eval 1m15s of 4m35s")
    assert Budget(None, {"a": 1}).allot("a") is None
    with pytest.raises(ValueError, match="part must be one of"):
        b.allot("stage3")
    with pytest.raises(ValueError, match="minutes must be a positive number"):
        Budget(0, {"a": 1})


def test_run_progress_eta_counts_every_stage_and_respects_the_deadline():
    p = RunProgress({"stage1": 10, "stage2": 30})
    assert p.eta_s() is None
    p.update("stage1", 10, steps_per_s=2.0)
    assert p.eta_s() == pytest.approx(15.0)
    p.update("stage2", 20, steps_per_s=5.0)
    assert p.eta_s() == pytest.approx(2.0)
    bounded = RunProgress({"s": 1000}, deadline=100.0)
    bounded.update("s", 0, steps_per_s=1.0)
    assert bounded.eta_s(now=90.0) == pytest.approx(10.0)


@given(s=st.floats(0, 1e6))
def test_format_duration_round_trips_to_the_second_scale(s):
    text = format_duration(s)
    total = 0
    for value, unit in __import__("re").findall(r"(\d+)([hms])", text):
        total += int(value) * {"h": 3600, "m": 60, "s": 1}[unit]
    assert abs(total - s) <= (60 if s >= 3600 else 1)
    assert format_duration(math.inf) == "?"


def test_run_progress_eta_of_a_time_bounded_stage_is_the_time_left_not_zero():
    # --max-minutes without epoch caps plans 0 steps for a stage: the ETA is the budget's end, never "0s"
    p = RunProgress({"stage1": 0, "stage2": 0}, deadline=600.0)
    p.update("stage1", 40, steps_per_s=2.0)
    assert p.eta_s(now=100.0) == pytest.approx(500.0)
    capped = RunProgress({"stage1": 10, "stage2": 0}, deadline=600.0)
    capped.update("stage1", 10, steps_per_s=2.0)
    assert capped.eta_s(now=0.0) == pytest.approx(600.0)


@given(minutes=st.floats(0.5, 60.0), w=st.lists(st.floats(0.1, 5.0), min_size=2, max_size=4),
       cap=st.floats(0.0, 5000.0), used=st.floats(0.0, 1.0))
def test_budget_reserve_gives_a_capped_part_s_unused_share_to_the_parts_before_it(minutes, w, cap, used):
    names = [f"p{i}" for i in range(len(w))]
    plain, capped = (Budget(minutes, dict(zip(names, w)), started=0.0) for _ in range(2))
    capped.reserve(names[-1], cap)
    now_p = now_c = 0.0
    for name in names[:-1]:
        a, b = plain.allot(name, now=now_p), capped.allot(name, now=now_c)
        assert 0.0 <= b <= capped.remaining(now_c) + 1e-9
        assert b >= a - 1e-6  # a cap never takes time from the parts before it
        now_p, now_c = now_p + a * used, now_c + b * used
    last_share = w[-1] / sum(w) * 60.0 * minutes
    if cap >= last_share:  # a cap above the part's share changes nothing
        assert now_c == pytest.approx(now_p)
    if used == 1.0:  # every part before it used all its time: the capped part is left at most its cap
        assert capped.remaining(now_c) <= min(cap, plain.remaining(now_p)) + 1e-6


def test_budget_reserve_refuses_unknown_parts_and_bad_seconds():
    b = Budget(10, {"stage2": 1, "eval": 1})
    with pytest.raises(ValueError, match="part must be one of"):
        b.reserve("stage3", 10.0)
    with pytest.raises(ValueError, match="seconds must be a finite number"):
        b.reserve("eval", float("nan"))
