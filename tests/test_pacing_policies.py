"""Unit tests of the pure pacing policies, estimators and the abandon controller."""

from __future__ import annotations

import math
import random

import pytest

from dialer.pacing import (
    AbandonController,
    FinishedCall,
    Observation,
    PredictivePolicy,
    ProgressivePolicy,
    RatioPolicy,
    VicidialPolicy,
    make_policy,
)
from dialer.pacing.estimators import AnswerRate, Duration, RingTime


def obs(**kw: object) -> Observation:
    base: dict[str, object] = {"now": 100.0, "time_of_day": 10 * 3600.0, "agents_logged_in": 10, "idle": 10}
    base.update(kw)
    return Observation(**base)  # type: ignore[arg-type]


def test_progressive_keeps_one_ringing_call_per_idle_agent() -> None:
    p = ProgressivePolicy()
    assert p.decide(obs(idle=4, ringing_since=(99.0,), waiting=1, talking_since=(0.0,) * 6)) == 2
    assert p.decide(obs(idle=1, ringing_since=(99.0, 98.0))) == 0
    assert p.decide(obs(idle=10, budget=3)) == 3


def test_progressive_without_live_data_counts_every_unresolved_call() -> None:
    assert ProgressivePolicy().decide(obs(live=False, idle=10, ringing_since=(1.0,) * 7)) == 3


def test_ratio_keeps_a_fixed_number_of_lines() -> None:
    r = RatioPolicy(1.5)
    assert r.decide(obs(idle=2, talking_since=(0.0,) * 8, ringing_since=(99.0,) * 3)) == 15 - 11
    assert r.decide(obs(idle=0, talking_since=(0.0,) * 10, ringing_since=(99.0,) * 6)) == 0


def test_make_policy_parses_every_spec_and_rejects_bad_ones() -> None:
    assert isinstance(make_policy("progressive").inner, ProgressivePolicy)
    ratio = make_policy("ratio:2.5").inner
    assert isinstance(ratio, RatioPolicy) and ratio.k == 2.5
    tapered = make_policy("vicidial").inner
    assert isinstance(tapered, VicidialPolicy) and tapered.mode == "tapered"
    average = make_policy("vicidial-average").inner
    assert isinstance(average, VicidialPolicy) and average.mode == "average"
    tuned = make_policy("vicidial:diff=-4,max=2").inner
    assert isinstance(tuned, VicidialPolicy) and tuned.dl_diff_target == -4 and tuned.max_level == 2
    assert isinstance(make_policy("predictive").inner, PredictivePolicy)
    for bad in ("ratio:x", "ratio:0", "turbo", "vicidial:speed=3", "predictive:margin=abc", "progressive:1"):
        with pytest.raises(ValueError):
            make_policy(bad)


def test_vicidial_raises_its_dial_level_while_agents_sit_ready() -> None:
    v = VicidialPolicy()
    decisions = []
    for t in range(0, 61):
        decisions.append(v.decide(obs(now=float(t), idle=10, talking_since=())))
    assert v.dial_level > 1.0
    # It dials only every 2.5 s.
    assert sum(1 for d in decisions if d > 0) <= 26


def test_vicidial_average_halves_when_today_is_over_target() -> None:
    v = VicidialPolicy(mode="average")
    v.dial_level = 2.0
    for t in range(0, 16):
        v.decide(obs(now=float(t), idle=0, talking_since=(0.0,) * 10, answered_today=100, abandoned_today=10))
    assert v.dial_level == pytest.approx(1.0)


def test_vicidial_tapered_goes_to_one_after_the_latest_time() -> None:
    v = VicidialPolicy(mode="tapered")
    v.dial_level = 2.5
    for t in range(0, 16):
        v.decide(
            obs(
                now=float(t),
                time_of_day=21.5 * 3600,
                idle=0,
                talking_since=(0.0,) * 10,
                answered_today=100,
                abandoned_today=10,
            )
        )
    assert v.dial_level == 1.0


def test_policies_never_exceed_the_budget_nor_go_negative() -> None:
    rng = random.Random(3)
    policies = [
        make_policy(s) for s in ("progressive", "ratio:3", "vicidial", "vicidial-average", "predictive")
    ]
    for t in range(600):
        o = obs(
            now=float(t),
            idle=rng.randint(0, 10),
            budget=rng.randint(0, 5),
            ringing_since=tuple(float(t) - rng.random() * 20 for _ in range(rng.randint(0, 5))),
        )
        for p in policies:
            n = p.decide(o)
            assert 0 <= n <= o.budget


def _feed_history(p: PredictivePolicy, answered: int, talks: int, now: float = 500.0) -> None:
    calls = []
    for i in range(answered * 4):
        ans = i % 4 == 0
        calls.append(
            FinishedCall(
                placed_at=now - 300,
                ended_at=now - 10,
                answered=ans,
                connected=ans,
                abandoned=False,
                ring_s=8.0 if ans else 25.0,
                talk_s=180.0 if ans else 0.0,
            )
        )
    p.decide(obs(now=now, finished=tuple(calls[: max(talks, 0) * 4]), idle=0, talking_since=(now - 1,) * 10))


def test_predictive_dials_progressively_until_it_has_data() -> None:
    p = PredictivePolicy()
    o = obs(idle=3, ringing_since=(99.0,))
    assert p.decide(o) == ProgressivePolicy().decide(o) == 2


def test_predictive_dials_harder_than_progressive_once_warm_and_respects_budget() -> None:
    p = PredictivePolicy()
    _feed_history(p, answered=60, talks=60)
    # All 10 agents idle, answer rate ~0.25: it should place several calls per idle agent.
    n = p.decide(obs(now=501.0, idle=10))
    assert n > 10
    assert p.decide(obs(now=502.0, idle=10, budget=4)) == 4


def test_predictive_counts_long_ringing_calls_as_unlikely_to_answer() -> None:
    p = PredictivePolicy()
    _feed_history(p, answered=60, talks=60)
    fresh = p.decide(obs(now=600.0, idle=2, talking_since=(590.0,) * 8, ringing_since=(599.0,) * 6))
    stale = p.decide(obs(now=601.0, idle=2, talking_since=(591.0,) * 8, ringing_since=(580.0,) * 6))
    assert stale > fresh


def test_answer_rate_learns_per_hour_rates() -> None:
    a = AnswerRate()
    rng = random.Random(1)
    for _day in range(3):
        for i in range(2000):
            tod = 9 * 3600 + i * 14.4  # 09:00-17:00
            p = 0.35 if tod < 13 * 3600 else 0.15
            a.add(rng.random() < p, tod)
    assert a.at(10 * 3600) > 0.28
    assert a.at(16 * 3600) < 0.22


def test_ring_time_q_falls_with_elapsed_ringing() -> None:
    r = RingTime()
    rng = random.Random(2)
    for _ in range(2000):
        if rng.random() < 0.25:
            r.add(FinishedCall(0, 30, True, True, False, ring_s=rng.uniform(4, 14), talk_s=60))
        else:
            r.add(FinishedCall(0, 25, False, False, False, ring_s=25.0))
    q = r.q_table(0.25)
    assert q[0] == pytest.approx(0.25, abs=0.02)
    assert q[8] < q[2]
    assert q[16] < 0.02
    assert 8.0 < r.mean_answer_s() < 10.0


def test_duration_hazard_uses_elapsed_time() -> None:
    d = Duration()
    rng = random.Random(4)
    for _ in range(3000):
        d.add(rng.lognormvariate(math.log(150), 0.4))
    tab = d.free_table(10.0)
    # A lognormal talk that has lasted 200 s is far likelier to end in the next 10 s than one that just began.
    assert tab[200] > 5 * tab[5]


def test_abandon_controller_lowers_the_threshold_on_abandons_and_aims_below_the_cap() -> None:
    c = AbandonController(cap=0.03)
    c.set_daily_answers(1300)
    assert 0.02 < c.aim < 0.03
    c.set_daily_answers(100_000)
    assert c.aim > 0.029
    before = c.base_threshold
    c.observe(abandoned=True)
    assert c.base_threshold < before
    for _ in range(50):
        c.observe(abandoned=False)
    # Over today's aim: the guard pulls the threshold down at once.
    assert c.threshold(1000, 10, 200, 20) < c.threshold(1000, 10, 200, 0)
