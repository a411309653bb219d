"""The whole agent loop end to end: `dialer sim serve` whose ten simulated agents log in, take breaks, one logs out
mid-shift (and comes back later), and save dispositions through the daemon's real /api (``[desk]``), against `dialer run` with
webhooks on. Checked against the simulator's truth (its calls and the desk's record of what each agent told the
dialer): no customer routed to an agent who was away, the abandon rate under the cap, a disposition for every
connected call, no call ever again to a do-not-call number, every callback placed within 60 world seconds of its
time (an "only me" one: from the first moment after its time that its agent was ready for a tick), and "only me"
callbacks reaching their agent.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import col, select

from dialer.models import Agent, AgentEvent, Attempt, Callback, Contact
from tests.conftest import wait_for
from tests.desk_support import PIN, desk_world, routed_to_away
from tests.e2e import Stack, stack

pytestmark = pytest.mark.slow

SCALE = 30.0
AGENTS = 10
TICK = 0.1  # the daemon's tick in the e2e stack (`dialer run --tick 0.1`)


def _unix(dt: Any) -> float:
    return float(dt.replace(tzinfo=UTC).timestamp() if dt.tzinfo is None else dt.timestamp())


def _centre(st: Stack, name: str, contacts: int) -> list[str]:
    """A progressive campaign, the desk's ten agents' accounts, then the simulator (its shift clock starts now)."""
    phones = st.make_campaign(name, contacts, agents=AGENTS, pacing="progressive", max_attempts=2)
    # Wrap-up ends with the agent's disposition, or after one wall second (30 world seconds).
    st.cli("campaign", "set", name, "wrapup=1")
    for i in range(AGENTS):
        st.cli("agent", "add", f"agent{100 + i}", "--name", f"Agent {i}", "--extension", str(100 + i),
               "--campaign", name, "--pin-stdin", input=PIN + "\n")  # fmt: skip
    st.start_sim()
    return phones


def first_ready(events: list[AgentEvent], t: float, hold: float) -> float:
    """The first moment at or after ``t`` from which the agent stayed ready for ``hold`` seconds (by their event
    rows): a ready moment shorter than a tick, ended by a customer already ringing, gives the claim no chance."""
    spans = []
    for e, nxt in zip(events, [*events[1:], None], strict=True):
        if e.to_state == "ready":
            spans.append((_unix(e.at), _unix(nxt.at) if nxt is not None else math.inf))
    for start, end in spans:
        begin = max(start, t)
        if end - begin >= hold:
            return begin
    return math.inf


def test_ten_simulated_agents_work_a_campaign_through_the_api(tmp_path: Path) -> None:
    # The simulator starts after the setup: its shift clock (the breaks) starts with it.
    with stack(tmp_path, time_scale=SCALE, webhooks=True, scenario=desk_world(agents=AGENTS), start_sim=False) as st:
        phones = _centre(st, "desk", 120)
        proc = st.run_daemon(300, start="desk")
        assert proc.returncode == 0, st.daemon_log()[-3000:]
        calls = st.wait_truth_settled()
        desk = httpx.get(st.api + "/_sim/desk", timeout=10).json()
        wait_for(lambda: all(d["at"] is not None for d in httpx.get(st.api + "/_sim/desk", timeout=10)
                             .json()["dispositions"]), timeout=60, what="the desk's dispositions to be answered")
        desk = httpx.get(st.api + "/_sim/desk", timeout=10).json()
        report = st.report_json("desk")
        with st.db() as s:
            attempts = list(s.exec(select(Attempt)).all())
            contacts = {c.id: c for c in s.exec(select(Contact)).all()}
            callbacks = list(s.exec(select(Callback)).all())
            agents = {a.id: a for a in s.exec(select(Agent)).all()}
            events: dict[int, list[AgentEvent]] = {}
            for e in s.exec(select(AgentEvent).order_by(col(AgentEvent.id))).all():
                events.setdefault(e.agent_id, []).append(e)
    timeline = desk["timeline"]
    states = Counter((r["state"], r["code"]) for r in timeline)
    print(f"desk timeline: {dict(states)}; errors {desk['errors']}")
    # The schedule happened: every agent logged in, most of the seven breaks and lunches were taken (one due during
    # a call starts after it, so a short break can pass before the call ends), one logout and that agent's return;
    # each came back from each pause.
    pauses = states[("paused", "break")] + states[("paused", "lunch")]
    assert pauses >= 5 and states[("paused", "lunch")] >= 1
    assert states[("logged_out", None)] == 1
    # An agent whose day starts on a break (before the dialer heard of them) is first told paused, not ready.
    first = {}
    for r in sorted(timeline, key=lambda r: r["asked_at"]):
        first.setdefault(r["extension"], r["state"])
    assert len(first) == AGENTS
    assert states[("ready", None)] + sum(s == "paused" for s in first.values()) == AGENTS + pauses + 1
    assert all(r["ok"] for r in timeline), [r for r in timeline if not r["ok"]]

    # 1. No customer routed to an agent who was paused or logged out.
    routed = [c for c in calls if (c.get("webhook_answer") or {}).get("redirect")]
    bad = routed_to_away(calls, timeline)
    print(f"routed by the dialer: {len(routed)}; to an agent who was away: {len(bad)}")
    assert routed and not bad, bad[:3]
    # The PBX connected each customer to the agent the dialer named (the desk holds agents the dialer does not count).
    named = [c for c in calls if c["connected"] and (c.get("webhook_answer") or {}).get("redirect")]
    assert all(c["agent"] == str(c["webhook_answer"]["redirect"]) for c in named)

    # 2. Abandon rate under the cap (3% of answered calls).
    answered = sum(1 for c in calls if c["answered"])
    abandoned = sum(1 for c in calls if c["abandoned"])
    print(f"answered {answered}, abandoned {abandoned} ({100 * abandoned / max(answered, 1):.2f}%)")
    assert answered >= 40
    assert abandoned / answered <= 0.03

    # 3. Every connected call has a disposition, saved by the agent it was routed to.
    connected = [a for a in attempts if a.connected]
    missing = [a.id for a in connected if not a.agent_disposition]
    print(f"connected {len(connected)}, without a disposition: {len(missing)}; by code "
          f"{dict(Counter(a.agent_disposition for a in connected))}")  # fmt: skip
    assert connected and not missing
    assert len(connected) == sum(1 for c in calls if c["connected"])
    saved = {d["attempt_id"]: d for d in desk["dispositions"]}
    assert all(saved[a.id]["login"] == agents[a.agent_id].login for a in connected if a.agent_id in agents)

    # 4. A do-not-call number is never called again.
    dnc_at: dict[str, float] = {}
    for a in connected:
        if a.agent_disposition == "dnc" and a.disposition_at is not None:
            dnc_at[contacts[a.contact_id].phone] = _unix(a.disposition_at)
    again = [c for c in calls if "+" + c["to"].lstrip("+") in dnc_at and c["received_at"] > dnc_at["+" + c["to"].lstrip("+")]]
    print(f"do-not-call numbers: {len(dnc_at)}; called again after: {len(again)}")
    assert dnc_at and not again

    # 5. Every scheduled callback placed within 60 world seconds of its time (the window is always open).
    placed = [cb for cb in callbacks if cb.attempt_id is not None]
    by_attempt = {a.id: a for a in attempts}
    late = []
    delays = []
    raw: list[float] = []  # only-me ones from the first ready moment, however short
    for cb in placed:
        a = by_attempt[cb.attempt_id]
        start = _unix(cb.due_at)
        if cb.agent_id is not None:
            raw.append((_unix(a.created_at) - first_ready(events.get(cb.agent_id, []), start, 0.0)) * SCALE)
            start = first_ready(events.get(cb.agent_id, []), start, TICK)
        delay = (_unix(a.created_at) - start) * SCALE
        delays.append(delay)
        if delay > 60:
            late.append((cb.id, round(delay, 1), cb.agent_id))
    print(f"callbacks scheduled {len(callbacks)}, placed {len(placed)}; placed after their time (world s): "
          f"median {sorted(delays)[len(delays) // 2] if delays else math.nan:.1f}, max {max(delays, default=0):.1f}; "
          f"late {late}; only-me from the first ready moment: max {max(raw, default=0):.1f}")  # fmt: skip
    assert placed and len(placed) == len(callbacks)
    assert not late
    # 6. "Only me" callbacks reach that agent.
    mine = [cb for cb in placed if cb.agent_id is not None]
    reached = [cb for cb in mine if by_attempt[cb.attempt_id].connected]
    wrong = [cb.id for cb in reached if by_attempt[cb.attempt_id].agent_id != cb.agent_id]
    print(f"only-me callbacks placed {len(mine)}, connected {len(reached)}, to another agent {len(wrong)}")
    assert mine and not wrong
    assert report["agents"], "the report has a per-agent table"
    assert {p for p in phones} >= {contacts[a.contact_id].phone for a in attempts}


def _team_log(text: str) -> list[tuple[float, int, int, int]]:
    """(unix time, agents, idle, decided) of each "pacing for a new team size" line of the daemon's log."""
    from datetime import datetime

    out = []
    for line in text.splitlines():
        if "pacing for a new team size" not in line:
            continue
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part and not part.startswith("msg="))
        at = datetime.fromisoformat(fields["ts"].replace("Z", "+00:00")).timestamp()
        out.append((at, int(fields["agents"]), int(fields["idle"]), int(fields["decided"])))
    return out


def test_a_pause_of_half_the_team_is_paced_for_within_a_tick(tmp_path: Path) -> None:
    world = desk_world(agents=AGENTS, logout="23:00", back="23:30",
                       breaks='{ start = "09:08", end = "09:12", count = 5, code = "break" }')  # fmt: skip
    with stack(tmp_path, time_scale=SCALE, webhooks=True, scenario=world, start_sim=False) as st:
        _centre(st, "half", 80)
        proc = st.run_daemon(300, start="half")
        assert proc.returncode == 0, st.daemon_log()[-3000:]
        timeline = httpx.get(st.api + "/_sim/desk", timeout=10).json()["timeline"]
        team = _team_log(st.daemon_log())
    paused = sorted((r["asked_at"], r["at"]) for r in timeline if r["state"] == "paused")
    pauses = [at for _, at in paused]
    # Five go on a break; one in a long call when it starts may still be in it when the break ends (then stays).
    assert len(pauses) >= 4, (timeline, team)
    t0 = team[0][0]
    print("team decisions (s from the first, agents, idle, decided):",
          [(round(t - t0, 2), a, i, d) for t, a, i, d in team])  # fmt: skip
    # Each pause is followed by a decision for a team at least one smaller within a tick (0.1 s: the API ticks the
    # agent's campaigns at once, or the next tick does if one is placing), counted from the dialer's answer to it.
    # Pauses answered together may be paced for in one decision.
    lags = []
    for k, (asked, at) in enumerate(paused, start=1):
        when = [t for t, a, _, _ in team if a <= AGENTS - k and t >= asked]
        assert when, (k, team)
        lags.append(max(0.0, when[0] - at))
    print(f"from each pause to pacing for the smaller team: {[round(x * 1000) for x in lags]} ms")
    assert max(lags) < 1.0
    # While they are away, no decision paces for more: the next change is their return.
    after = [a for t, a, _, _ in team if t > pauses[-1] + 0.5]
    assert after and after[0] > AGENTS - len(pauses)
