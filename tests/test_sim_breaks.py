"""The call model's agents on a scenario's schedule and breaks, held until the driver releases them (the desk's
gate), and the ``[desk]`` and ``[agents] breaks`` tables: what they mean and every bad value refused with its key."""

from __future__ import annotations

from typing import Any

import pytest

from dialer.sim.model import CallModel
from dialer.sim.scenario import Scenario, ScenarioError

BASE: dict[str, Any] = {
    "shift": {"start": "09:00"},
    "agents": {"count": 4, "wrapup": 5, "breaks": [{"start": "09:10", "end": "09:20", "count": 2, "code": "lunch"}]},
    "calls": {"answer_probability": 1.0, "p_busy": 0, "p_failed": 0, "p_unallocated": 0, "ring_time": 2,
              "talk_time": 300},
}  # fmt: skip


def _presence(events: list[Any]) -> list[tuple[str, str | None, float]]:
    return [(e.kind, e.agent, e.time) for e in events if e.kind.startswith("agent_")]


def test_a_break_takes_idle_agents_at_once_and_busy_ones_after_their_call() -> None:
    m = CallModel(Scenario.from_dict(BASE), 0.0)
    m.advance(0)
    m.place_call("+447700900001", 500.0)  # answered at 502, talks 300 s: busy at 09:10 (t=600)
    ev = m.advance(600.0)
    busy = next(a for a in m.agents if a.state == "talking")
    assert [(k, t) for k, _, t in _presence(ev)] == [("agent_pause", 600.0), ("agent_pause", 600.0)]
    assert busy.extension not in [a for _, a, _ in _presence(ev)]  # idle ones first, the busy one keeps talking
    paused = {a.extension for a in m.agents if a.state == "paused"}
    assert {a.pause_code for a in m.agents if a.state == "paused"} == {"lunch"} and len(paused) == 2
    ev = m.advance(1200.0)
    assert sorted(a for k, a, _ in _presence(ev) if k == "agent_ready") == sorted(paused)
    assert m.free_agents() == 4  # the call ended at 802 (and its wrap-up at 807)


def test_a_break_due_during_a_call_starts_when_the_call_and_wrapup_end() -> None:
    world = {**BASE, "agents": {**BASE["agents"], "count": 1,
                                "breaks": [{"start": "09:05", "end": "09:30", "count": 1}]}}  # fmt: skip
    m = CallModel(Scenario.from_dict(world), 0.0)
    m.advance(0)
    call = m.place_call("+447700900001", 200.0)
    ev = m.advance(900.0)
    assert call.connected_at == 202.0
    # Talk ends at 502, wrap-up at 507: only then does the agent go on the break (code "break" by default).
    assert _presence(ev) == [("agent_pause", "100", 507.0)]
    assert m.agents[0].pause_code == "break"


def test_held_agents_take_no_call_until_released() -> None:
    m = CallModel(Scenario.from_dict(BASE), 0.0, gate_agents=True)
    assert [k for k, _, _ in _presence(m.advance(0))] == ["agent_login"] * 4
    assert m.free_agents() == 0 and {a.state for a in m.agents} == {"held"}
    assert m.release("101", 1.0) and not m.release("101", 1.0) and not m.release("999", 1.0)
    assert m.free_agents() == 1
    call = m.place_call("+447700900001", 2.0)
    m.advance(10.0)
    assert call.agent == "101"
    # Back from a break, an agent is held again until released.
    for a in m.agents:
        m.release(a.extension, 10.0)
    m.advance(1200.0)
    assert sum(a.state == "held" for a in m.agents) == 2


def test_desk_table_is_read_with_defaults() -> None:
    sc = Scenario.from_dict({**BASE, "desk": {"pin": "1111", "only_me": 0.25,
                                              "dispositions": {"sale": 1, "dnc": 3}}})  # fmt: skip
    assert sc.desk is not None
    assert (sc.desk.pin, sc.desk.only_me, sc.desk.dispositions) == ("1111", 0.25, {"sale": 1.0, "dnc": 3.0})
    assert sc.desk.login_for("105", 5) == "agent105"
    assert sc.summary()["agent_breaks"] == [{"start": "09:10", "end": "09:20", "count": 2, "code": "lunch"}]
    assert Scenario.from_dict(BASE).desk is None


@pytest.mark.parametrize(("patch", "message"), [
    ({"desk": {"colour": "red"}}, "[desk]: unknown key 'colour'"),
    ({"desk": "yes"}, "[desk] must be a table"),
    ({"desk": {"only_me": 2}}, "desk.only_me"),
    ({"desk": {"only_me": -1}}, "desk.only_me"),
    ({"desk": {"dispositions": {"sale": -1}}}, "desk.dispositions.sale"),
    ({"desk": {"dispositions": {"sale": 0}}}, "add up to 0"),
    ({"desk": {"dispositions": []}}, "desk.dispositions"),
    ({"desk": {"login": "agent{nope}"}}, "desk.login"),
    ({"desk": {"callback_after": {"dist": "weird"}}}, "desk.callback_after"),
    ({"agents": {"breaks": [{"start": "25:00", "end": "10:00"}]}}, "agents.breaks[0].start"),
    ({"agents": {"breaks": [{"start": "09:00", "count": -1}]}}, "agents.breaks[0].count"),
    ({"agents": {"breaks": [{"start": "09:00", "count": "two"}]}}, "agents.breaks[0].count"),
    ({"agents": {"breaks": {"start": "09:00"}}}, "agents.breaks: expected a list"),
    ({"agents": {"breaks": ["09:00"]}}, "agents.breaks[0]"),
    ({"agents": {"breaks": [{"start": "09:00", "code": ""}]}}, "agents.breaks[0].code"),
    ({"agents": {"schedule": [{"start": "09:00", "count": 1.5}]}}, "agents.schedule[0].count"),
])  # fmt: skip
def test_bad_desk_and_breaks_are_refused_with_their_key(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict({**BASE, **patch})
    assert message in str(err.value)


def test_with_held_agents_a_redirected_call_waits_for_its_agent_only() -> None:
    m = CallModel(Scenario.from_dict(BASE), 0.0, gate_agents=True, defer_routing=True)
    m.advance(0)
    m.release("100", 0.0)
    m.release("101", 0.0)
    first = m.place_call("+447700900001", 1.0)
    m.advance(5.0)
    assert m.route(first.id, 5.0, "100") and first.agent == "100"
    # A customer redirected to 100 (busy) is not given to 102 when it becomes free: it waits for 100, then abandons.
    second = m.place_call("+447700900002", 6.0)
    m.advance(10.0)
    assert m.route(second.id, 10.0, "100")
    m.release("102", 10.5)
    m.advance(100.0)
    assert second.agent is None and second.abandoned
