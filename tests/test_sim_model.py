"""The call model: outcome rates, common random numbers, agents, routing, schedules."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from dialer.sim.model import CallModel
from dialer.sim.scenario import Scenario, ScenarioError, default_scenario


def _scenario(**over: object) -> Scenario:
    d: dict = {
        "seed": 7,
        "agents": {"count": 10},
        "calls": {
            "answer_probability": 0.3,
            "p_busy": 0.1,
            "p_failed": 0.05,
            "p_unallocated": 0.02,
            "talk_time": {"dist": "exponential", "mean": 120},
            "ring_time": {"dist": "uniform", "low": 4, "high": 14},
        },
    }
    for key, value in over.items():
        section, _, name = key.partition("__")
        if name:
            d.setdefault(section, {})[name] = value
        else:
            d[section] = value
    return Scenario.from_dict(d)


def _run_all(model: CallModel) -> None:
    while (t := model.next_event_time()) is not None:
        model.advance(t)


def _ci_contains(p: float, hits: int, n: int) -> bool:
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    return abs(hits / n - p) <= half


def test_rates_and_mean_talk_time_match_the_scenario_over_2000_calls() -> None:
    sc = _scenario(agents__count=2000)  # enough agents that every answered call connects
    m = CallModel(sc, 0.0)
    n = 2000
    for i in range(n):
        m.place_call(f"+4420700{i:05d}", i * 0.5)
    _run_all(m)
    outcomes = Counter(c.outcome for c in m.calls.values())
    assert _ci_contains(0.3, outcomes["answered"], n), outcomes
    assert _ci_contains(0.1, outcomes["busy"], n), outcomes
    assert _ci_contains(0.05, outcomes["failed"], n), outcomes
    assert _ci_contains(0.02, outcomes["unallocated"], n), outcomes
    talks = [c.talk_seconds for c in m.calls.values() if c.connected]
    assert len(talks) == outcomes["answered"]
    mean = sum(talks) / len(talks)
    assert abs(mean - 120) <= 1.96 * 120 / math.sqrt(len(talks)), mean
    assert all(c.ended_at is not None for c in m.calls.values())
    assert {c.disposition for c in m.calls.values()} == {
        "answered",
        "busy",
        "call failed",
        "unallocated number",
        "no answer",
    }


def test_same_seed_same_dial_sequence_gives_same_outcomes_whatever_the_timing() -> None:
    sc = _scenario()
    a = CallModel(sc, 0.0)
    b = CallModel(sc, 1_700_000_000.0, time_scale=20)
    for i in range(300):
        a.place_call(f"+44{i}", i * 3.0)
        b.place_call(f"+44{i}", 1_700_000_000.0 + i * 0.01)
    _run_all(a)
    _run_all(b)
    for ca, cb in zip(a.calls.values(), b.calls.values(), strict=True):
        assert ca.outcome == cb.outcome
        assert ca.talk_planned == pytest.approx(cb.talk_planned * 20)
        assert ca.ring_seconds == pytest.approx(cb.ring_seconds * 20)
    other = CallModel(Scenario.from_dict({**_dict_seed(8)}), 0.0)
    for i in range(300):
        other.place_call(f"+44{i}", i * 3.0)
    assert [c.outcome for c in other.calls.values()] != [c.outcome for c in a.calls.values()]


def _dict_seed(seed: int) -> dict:
    return {
        "seed": seed,
        "calls": {"answer_probability": 0.3, "p_busy": 0.1, "p_failed": 0.05, "p_unallocated": 0.02},
    }


def test_answered_call_waits_for_an_agent_then_abandons_after_grace() -> None:
    sc = Scenario.from_dict(
        {
            "agents": {"count": 1},
            "calls": {"talk_time": 100, "ring_time": 5, "connect_grace_s": 2, "max_ring_s": 25},
            "fixed_numbers": {"+441": "answered", "+442": "answered", "+443": "answered", "+444": "busy"},
        }
    )
    m = CallModel(sc, 0.0)
    c1 = m.place_call("+441", 0.0)
    c2 = m.place_call("+442", 0.0)
    c4 = m.place_call("+444", 0.0)
    c3 = m.place_call("441", 99.0)  # answered at 104, agent frees at 105 (within 2 s grace)
    events = m.advance(1000)
    kinds = [(e.kind, e.call_id) for e in events]
    assert ("connected", c1.id) in kinds
    assert c2.abandoned and not c2.connected and c2.pbx_disposition == "no answer"
    assert c2.ended_at == pytest.approx(5 + 2 + sc.ivr_message_s)
    assert c3.connected and c3.agent == "100" and c3.connected_at == pytest.approx(105.0)
    assert c4.outcome == "busy" and c4.disposition == "busy" and c4.ended_at == pytest.approx(3.0)
    times = [e.time for e in events]
    assert times == sorted(times)
    assert sum(1 for e in events if e.kind == "ended") == 4


def test_router_and_longest_idle_agent() -> None:
    sc = Scenario.from_dict(
        {
            "agents": {"count": 3, "wrapup": 10},
            "calls": {"talk_time": 50, "ring_time": 5},
            "fixed_numbers": {"1": "answered"},
        }
    )
    m = CallModel(sc, 0.0)
    first = m.place_call("1", 0.0)
    m.advance(6)
    assert first.agent == "100"  # all idle since the start: the first logged in is the longest idle
    m.router = lambda call: "102"
    routed = m.place_call("1", 10.0)
    m.advance(16)
    assert routed.agent == "102"
    m.router = lambda call: "100"  # busy: the customer waits like any unrouted call, and agent 101 is free
    waits = m.place_call("1", 20.0)
    m.advance(30)
    assert waits.requested_agent == "100"
    assert waits.abandoned  # 101 was free but the router insisted on busy 100... unless someone frees in time
    m.router = None
    last = m.place_call("1", 40.0)
    m.advance(46)
    assert last.agent == "101"


def test_deferred_routing_honours_redirect_hangup_and_ivr() -> None:
    sc = Scenario.from_dict(
        {
            "agents": {"count": 3},
            "calls": {"talk_time": 50, "ring_time": 5},
            "fixed_numbers": {"1": "answered"},
        }
    )
    m = CallModel(sc, 0.0, defer_routing=True)
    a = m.place_call("1", 0.0)
    b = m.place_call("1", 0.0)
    c = m.place_call("1", 0.0)
    m.advance(5.0)
    assert a.state == "routing"
    assert m.route(a.id, 5.1, "101")
    assert m.route(b.id, 5.1, "hangup")
    assert m.route(c.id, 5.2, "ivr:42")
    m.advance(100)
    assert a.agent == "101" and a.connected
    assert (
        b.hangup == "hangup"
        and b.abandoned  # answered, hung up with no agent: abandoned in law and in the reports
        and b.pbx_disposition == "cancel"
        and b.ended_at == pytest.approx(5.1)
    )
    assert c.abandoned and c.ivr == "42" and c.pbx_disposition == "cancel"
    late = m.place_call("1", 200.0)
    m.advance(300)
    assert late.state == "routing"  # the grace starts only once the routing decision is made
    assert m.route(late.id, 300.0, "100")
    assert late.agent == "100" and late.connected_at == 300.0
    assert not m.route(late.id, 301.0, "101")


def test_agent_schedule_lunch_waves_and_answer_schedule() -> None:
    sc = Scenario.from_dict(
        {
            "shift": {"start": "09:00", "hours": 8},
            "agents": {
                "schedule": [
                    {"start": "09:00", "end": "17:00", "count": 4},
                    {"start": "09:00", "end": "12:00", "count": 2},
                    {"start": "13:00", "end": "17:00", "count": 2},
                ]
            },
            "calls": {
                "answer_probability": 0.35,
                "answer_schedule": [{"at": "09:00", "p": 0.35}, {"at": "13:00", "p": 0.15}],
            },
        }
    )
    assert sc.agent_count == 6
    m = CallModel(sc, 0.0)
    assert m.logged_in_agents(0.0) == 6
    assert m.logged_in_agents(3.5 * 3600) == 4
    assert m.logged_in_agents(4.5 * 3600) == 6
    assert m.logged_in_agents(9 * 3600) == 0
    assert m.answer_probability_at(3600) == 0.35
    assert m.answer_probability_at(5 * 3600) == 0.15
    events = m.advance(3.5 * 3600)
    assert sum(1 for e in events if e.kind == "agent_login") == 6
    assert sum(1 for e in events if e.kind == "agent_logout") == 2
    assert sum(a.logged_in for a in m.agents) == 4
    m.advance(8.5 * 3600)
    assert sum(a.logged_in for a in m.agents) == 0
    # Answered share follows the schedule.
    m2 = CallModel(sc, 0.0)
    morning = [m2.place_call(str(i), 3600.0 + i * 0.01).outcome for i in range(1500)]
    afternoon = [m2.place_call(str(i), 5 * 3600.0 + i * 0.01).outcome for i in range(1500)]
    assert morning.count("answered") / 1500 == pytest.approx(0.35, abs=0.04)
    assert afternoon.count("answered") / 1500 == pytest.approx(0.15, abs=0.03)


def test_bad_scenarios_get_clear_errors() -> None:
    with pytest.raises(ScenarioError, match="exceed 1"):
        Scenario.from_dict({"calls": {"answer_probability": 0.9, "p_busy": 0.2}})
    with pytest.raises(ScenarioError, match="unknown key"):
        Scenario.from_dict({"calls": {"answer_prob": 0.3}})
    with pytest.raises(ScenarioError, match="unknown fault"):
        Scenario.from_dict({"faults": {"explode": 1}})
    with pytest.raises(ScenarioError, match="clock time"):
        Scenario.from_dict({"shift": {"start": "9am"}})
    assert default_scenario().agent_count == 10
    assert default_scenario().answer_probability == 0.3
