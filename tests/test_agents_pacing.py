"""Agents in the loop of the daemon's tick: pacing counts the team (a pause of half the agents is paced for at the
next tick), routing names only ready agents, scheduled callbacks go before fresh contacts ("only me" ones wait for
their agent and reach them), and callbacks keep to calling windows, the DNC list and the redial lock.

The engine runs for real on a SQLite file; only the Zadarma client is a stub that accepts every callback (placing is
not under test here), and the webhooks are fed to the real processor by hand.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.engine import Engine as DbEngine
from sqlmodel import col, select

from dialer.agents import accounts
from dialer.agents.sessions import set_presence
from dialer.db import open_database, session_scope
from dialer.dialing.engine import Engine, TickResult
from dialer.dialing.live import LiveState
from dialer.dialing.why import Reason
from dialer.ingest import campaigns
from dialer.models import Agent, AgentEvent, Attempt, Callback, Campaign, Contact, utcnow
from dialer.outcomes.callbacks import schedule_callback
from dialer.outcomes.dispositions import save_disposition
from dialer.outcomes.events import WebhookProcessor
from dialer.outcomes.routing import route_customer
from dialer.outcomes.states import AgentState, AttemptState, CallbackState, ContactState, Presence
from dialer.outcomes.transitions import CallOutcome, attempt_not_placed, complete_attempt
from tests.webhooks_support import answer, end, internal, start

EXT = ["201", "202", "203", "204"]


class _Budget:
    def available(self, kind: str, reserve: int = 0) -> int:
        return 1000

    def reset_in(self, kind: str) -> float:
        return 0.0


class StubClient:
    """Accepts every callback at once (the engine's placing is tested elsewhere)."""

    def __init__(self) -> None:
        self.budget = _Budget()
        self.sent: list[str] = []

    def callback(self, from_: str, to: str, **_kw: Any) -> Any:
        self.sent.append(to)
        return SimpleNamespace(time=None)

    def close(self) -> None:
        pass


@dataclass
class World:
    db: DbEngine
    engine: Engine
    live: LiveState | None
    campaign_id: int
    agents: list[str]

    def campaign(self) -> Campaign:
        with session_scope(self.db, write=False) as s:
            c = s.get(Campaign, self.campaign_id)
            assert c is not None
            return c

    def presence(self, login: str, request: Presence, code: str | None = None) -> None:
        with session_scope(self.db) as s:
            set_presence(s, login, request, utcnow(), code)

    def finish_calls(self) -> None:
        """Every live call ends unanswered (the webhooks' and the database's view alike)."""
        now = utcnow()
        with session_scope(self.db) as s:
            for a in s.exec(select(Attempt).where(col(Attempt.state).in_([AttemptState.PLACED]))).all():
                complete_attempt(s, a, CallOutcome("no answer", False, False, False, finished_at=now), now=now)
                if self.live is not None:
                    self.live.out_ended(a.id or 0, now.timestamp(), "no answer", answered=False)


def _world(tmp_path: Path, *, live: bool, pacing: str = "progressive", agents: int = 4,
           contacts: int = 40, clock: Any = time.time) -> World:
    db = open_database(f"sqlite:///{tmp_path / 'a.db'}")
    now = utcnow()
    with session_scope(db) as s:
        c = campaigns.create_campaign(s, "team", "100", pacing=pacing, window="00:00-24:00", weekdays="mon-sun",
                                      timezone="UTC", agents=1)  # fmt: skip
        for i in range(contacts):
            s.add(Contact(campaign_id=c.id or 0, phone=f"+4479000{i:05d}", timezones=["Europe/London"]))
        campaigns.start_campaign(s, "team")
        cid = c.id or 0
        logins = []
        for i in range(agents):
            login = f"agent{i + 1}"
            accounts.add_agent(s, login, name=f"Agent {i + 1}", extension=EXT[i], campaigns=["team"], pin="1234",
                               now=now)  # fmt: skip
            logins.append(login)
    state = LiveState(ring_timeout_s=600) if live else None
    eng = Engine(db, StubClient(), live=state, clock=clock,  # type: ignore[arg-type]
                 live_observer=(lambda camp, t: state.observation(camp, t)) if state is not None else None)
    return World(db, eng, state, cid, logins)


@pytest.fixture
def worlds(tmp_path: Path) -> Iterator[list[World]]:
    made: list[World] = []
    yield made
    for w in made:
        w.engine.close(timeout=0)
        w.db.dispose()


def _decision(r: TickResult) -> tuple[int, int, int, int]:
    return r.agents, r.idle, r.decided, r.claimed


@pytest.mark.parametrize("live", [False, True], ids=["statistics", "webhooks"])
def test_pausing_half_the_team_is_paced_for_at_the_next_tick(tmp_path: Path, worlds: list[World],
                                                             live: bool) -> None:
    w = _world(tmp_path, live=live)
    worlds.append(w)
    for login in w.agents:
        w.presence(login, Presence.LOGIN)
    decisions = [_decision(w.engine.tick(w.campaign_id))]
    w.finish_calls()
    w.presence("agent1", Presence.PAUSE, "lunch")
    w.presence("agent2", Presence.PAUSE, "break")
    decisions.append(_decision(w.engine.tick(w.campaign_id)))
    w.finish_calls()
    w.presence("agent3", Presence.LOGOUT)
    w.presence("agent4", Presence.PAUSE, "meeting")
    decisions.append(_decision(w.engine.tick(w.campaign_id)))
    w.presence("agent1", Presence.READY)
    decisions.append(_decision(w.engine.tick(w.campaign_id)))
    # (agents pacing saw, idle, calls decided, calls claimed) per tick: progressive pacing, one call per idle agent.
    assert decisions == [(4, 4, 4, 4), (2, 2, 2, 2), (0, 0, 0, 0), (1, 1, 1, 1)]


def test_a_team_with_nobody_ready_places_no_call_and_says_why(tmp_path: Path, worlds: list[World]) -> None:
    w = _world(tmp_path, live=False, pacing="ratio:3")
    worlds.append(w)
    w.presence("agent1", Presence.LOGIN)
    w.presence("agent1", Presence.PAUSE, "lunch")
    for _ in range(3):
        assert _decision(w.engine.tick(w.campaign_id)) == (0, 0, 0, 0)
    c = w.campaign()
    assert (c.dial_reason, c.dial_reason_detail) == (Reason.NO_AGENTS, "no ready agents: 1 paused, 3 logged out")
    assert w.engine.client.sent == []  # type: ignore[attr-defined]


def test_a_campaign_without_agents_keeps_its_configured_count(tmp_path: Path, worlds: list[World]) -> None:
    w = _world(tmp_path, live=False, agents=0)
    worlds.append(w)
    with session_scope(w.db) as s:
        campaigns.change_settings(s, "team", {"agents": 3})
    assert _decision(w.engine.tick(w.campaign_id)) == (3, 3, 3, 3)


def test_the_campaign_does_not_finish_while_an_agent_may_still_disposition(tmp_path: Path,
                                                                           worlds: list[World]) -> None:
    w = _world(tmp_path, live=False, contacts=0)
    worlds.append(w)
    w.presence("agent1", Presence.LOGIN)
    with session_scope(w.db) as s:
        a = s.exec(select(Agent).where(Agent.login == "agent1")).one()
        a.state, a.campaign_id, a.wrapup_until = AgentState.WRAPUP, w.campaign_id, utcnow() + timedelta(minutes=5)
        a.state_since = utcnow() - timedelta(seconds=30)  # the call ended half a minute ago
    w.engine.tick(w.campaign_id)
    assert w.campaign().state == "running"
    with session_scope(w.db) as s:  # the wrap-up runs out: the next tick writes its end, stamped at the limit
        a = s.exec(select(Agent).where(Agent.login == "agent1")).one()
        limit = a.wrapup_until = utcnow() - timedelta(seconds=5)
    w.engine.tick(w.campaign_id)
    with session_scope(w.db, write=False) as s:
        agent = s.exec(select(Agent).where(Agent.login == "agent1")).one()
        last = s.exec(select(AgentEvent).order_by(col(AgentEvent.id).desc())).first()
    assert agent.state == AgentState.READY and last is not None
    assert (last.to_state, last.reason, last.at) == (AgentState.READY, "wrap-up limit", limit)
    w.engine.tick(w.campaign_id)
    assert w.campaign().state == "finished"


# --- routing ------------------------------------------------------------------------------------------------


def test_customers_are_routed_only_to_ready_agents(tmp_path: Path, worlds: list[World]) -> None:
    w = _world(tmp_path, live=True, agents=3)
    worlds.append(w)
    assert w.live is not None
    w.presence("agent1", Presence.LOGIN)
    w.presence("agent2", Presence.LOGIN)
    w.presence("agent2", Presence.PAUSE, "break")  # agent3 never logs in
    r = w.engine.tick(w.campaign_id)
    assert r.claimed == 1  # one idle agent, one call
    with session_scope(w.db) as s:  # two more calls, as a predictive policy would place
        more = w.engine.claim(w.campaign(), 2)
    for a in more:
        w.live.call_placed(w.campaign_id, a.id or 0, a.phone, time.time())
    with session_scope(w.db, write=False) as s:
        calls = s.exec(select(Attempt).order_by(col(Attempt.id))).all()
    proc = WebhookProcessor(w.db, w.live)
    t0 = datetime.now(UTC)

    def at(sec: float) -> datetime:
        return t0 + timedelta(seconds=sec)

    first = proc.process(start(calls[0].phone, "c0"), at(1), True).answer
    assert first is not None and first["redirect"] == "201"
    # Nobody else is ready: the second customer is not sent to the paused or the logged-out agent.
    assert proc.process(start(calls[1].phone, "c1"), at(2), True).answer == {"hangup": 1}
    # agent2 comes back: the next customer reaches them at once (no tick in between).
    w.presence("agent2", Presence.READY)
    third = proc.process(start(calls[2].phone, "c2"), at(3), True).answer
    assert third is not None and third["redirect"] == "202"
    # agent1 asks for lunch while ringing: the call goes on, the pause follows its end (instead of wrap-up).
    w.presence("agent1", Presence.PAUSE, "lunch")
    proc.process(internal(calls[0].phone, "c0", "201"), at(4), True)
    proc.process(answer(calls[0].phone, "c0", "201"), at(5), True)
    proc.process(end(calls[0].phone, "c0", "201", "answered", 60), at(65), True)
    proc.process(answer(calls[2].phone, "c2", "202"), at(6), True)
    proc.process(end(calls[2].phone, "c2", "202", "answered", 30), at(36), True)
    with session_scope(w.db, write=False) as s:
        agents = {a.login: a for a in s.exec(select(Agent)).all()}
        events = s.exec(select(AgentEvent).where(AgentEvent.agent_id == agents["agent1"].id)
                        .order_by(col(AgentEvent.id))).all()  # fmt: skip
        routed = {a.id: a.agent_id for a in s.exec(select(Attempt)).all()}
    assert (agents["agent1"].state, agents["agent1"].pause_code) == (AgentState.PAUSED, "lunch")
    assert agents["agent2"].state == AgentState.WRAPUP and agents["agent2"].attempt_id == calls[2].id
    assert [(e.from_state, e.to_state, e.attempt_id) for e in events[1:]] == [
        (AgentState.READY, AgentState.RINGING, calls[0].id),
        (AgentState.RINGING, AgentState.TALKING, calls[0].id),
        (AgentState.TALKING, AgentState.PAUSED, calls[0].id),
    ]
    assert [e.at for e in events[1:]] == [at(1), at(5), at(65)]
    assert routed == {calls[0].id: agents["agent1"].id, calls[1].id: None, calls[2].id: agents["agent2"].id}
    # The disposition of agent2's call ends their wrap-up.
    with session_scope(w.db) as s:
        save_disposition(s, calls[2].id or 0, "sale", now=utcnow(), agent_id=agents["agent2"].id)
    with session_scope(w.db, write=False) as s:
        assert s.exec(select(Agent).where(Agent.login == "agent2")).one().state == AgentState.READY


# --- callbacks ----------------------------------------------------------------------------------------------


def _callback(w: World, phone: str, due: datetime, agent: str | None = None) -> int:
    with session_scope(w.db) as s:
        contact = s.exec(select(Contact).where(Contact.phone == phone)).one()
        campaign = s.get(Campaign, w.campaign_id)
        assert campaign is not None
        agent_id = s.exec(select(Agent.id).where(Agent.login == agent)).one() if agent else None
        cb = schedule_callback(s, contact, campaign, due, utcnow(), agent_id=agent_id)
        return cb.id or 0


def test_due_callbacks_go_first_and_only_me_waits_for_its_agent(tmp_path: Path, worlds: list[World]) -> None:
    w = _world(tmp_path, live=True, agents=2, contacts=12)
    worlds.append(w)
    assert w.live is not None
    now = utcnow()
    with session_scope(w.db) as s:  # fresh contacts of high priority do not jump the callbacks
        for c in s.exec(select(Contact).where(Contact.phone > "+447900000005")).all():
            c.priority = 9
            s.add(c)
    anyone = _callback(w, "+447900000001", now - timedelta(minutes=1))
    mine = _callback(w, "+447900000002", now - timedelta(minutes=2), agent="agent2")
    later = _callback(w, "+447900000003", now + timedelta(hours=1))
    w.presence("agent1", Presence.LOGIN)  # agent2 is not logged in

    got = w.engine.claim(w.campaign(), 3)
    assert got[0].phone == "+447900000001" and {a.phone for a in got[1:]} <= {f"+4479000{i:05d}" for i in range(6, 12)}
    with session_scope(w.db, write=False) as s:
        cbs = {cb.id: cb for cb in s.exec(select(Callback)).all()}
    assert cbs[anyone].state == CallbackState.PLACED and cbs[anyone].attempt_id == got[0].id
    assert cbs[mine].state == cbs[later].state == CallbackState.SCHEDULED

    # agent2 logs in: their callback is placed at the next tick, the agent held for it, and the customer routed to
    # them though agent1 has been idle longer; the other customer of that tick goes to agent1.
    w.presence("agent2", Presence.LOGIN)
    r = w.engine.tick(w.campaign_id)
    assert (r.decided, r.claimed, r.callbacks) == (2, 2, 1)
    with session_scope(w.db, write=False) as s:
        placed = s.exec(select(Attempt).where(Attempt.state == AttemptState.PLACED).order_by(col(Attempt.id))).all()
    assert placed[-2].phone == "+447900000002"
    answers = {}
    for a in (placed[-1], placed[-2]):
        with session_scope(w.db) as s:
            got_answer = route_customer(s, w.live, campaign_id=w.campaign_id, attempt_id=a.id or 0,
                                        contact_id=a.contact_id, pbx_call_id=f"in_{a.id}", now=time.time())
        assert got_answer is not None
        answers[a.phone] = got_answer["redirect"]
    assert answers == {"+447900000002": "202", placed[-1].phone: "201"}
    # Another "only me" callback for agent2 waits while the first is in progress.
    second = _callback(w, "+447900000004", now - timedelta(minutes=5), agent="agent2")
    assert all(a.phone != "+447900000004" for a in w.engine.claim(w.campaign(), 5))
    with session_scope(w.db, write=False) as s:
        row = s.get(Callback, second)
        assert row is not None and row.state == CallbackState.SCHEDULED


def test_callbacks_wait_for_the_calling_window_and_never_reach_dnc_numbers(tmp_path: Path,
                                                                           worlds: list[World]) -> None:
    noon = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # a Tuesday; London is on UTC in winter
    w = _world(tmp_path, live=False, agents=1, contacts=3, clock=noon.timestamp)
    worlds.append(w)
    w.presence("agent1", Presence.LOGIN)
    with session_scope(w.db) as s:
        campaigns.change_settings(s, "team", {"window": "09:00-10:00"}, now=noon)
    cb = _callback(w, "+447900000001", noon - timedelta(minutes=30))
    assert w.engine.claim(w.campaign(), 2) == []
    with session_scope(w.db, write=False) as s:
        row = s.get(Callback, cb)
        assert row is not None
        assert (row.state, row.due_at, row.next_try_at) == (
            CallbackState.SCHEDULED, noon - timedelta(minutes=30), datetime(2026, 12, 2, 9, 0, tzinfo=UTC))
    # On the DNC list: the callback is cancelled and the contact leaves.
    with session_scope(w.db) as s:
        campaigns.add_dnc(s, ["+447900000001"])
    with session_scope(w.db, write=False) as s:
        row = s.get(Callback, cb)
        contact = s.exec(select(Contact).where(Contact.phone == "+447900000001")).one()
        assert row is not None and row.state == CallbackState.CANCELLED and contact.state == ContactState.DNC


def test_a_callback_never_comes_before_the_redial_lock_and_is_given_back_if_never_sent(
    tmp_path: Path, worlds: list[World]
) -> None:
    w = _world(tmp_path, live=False, agents=1, contacts=2)
    worlds.append(w)
    now = utcnow()
    with session_scope(w.db) as s:
        contact = s.exec(select(Contact).where(Contact.phone == "+447900000001")).one()
        contact.state, contact.attempts = ContactState.DONE, 2
        s.add(Attempt(campaign_id=w.campaign_id, contact_id=contact.id or 0, phone=contact.phone,
                      state=AttemptState.COMPLETED, answered=True, abandoned=True, live=False,
                      finished_at=now - timedelta(days=1)))  # fmt: skip
        reached = Attempt(campaign_id=w.campaign_id, contact_id=contact.id or 0, phone=contact.phone,
                          state=AttemptState.COMPLETED, answered=True, connected=True, live=False, finished_at=now)
        s.add(reached)
        s.flush()
        result = save_disposition(s, reached.id or 0, "callback", now=now, callback_at=now + timedelta(hours=1))
    lock = now - timedelta(days=1) + timedelta(seconds=w.campaign().retry_abandoned_s)
    assert result.callback_next_try_at == lock and result.contact_state == ContactState.CALLBACK
    # Due (the lock over): claimed; the request never left: the callback and its contact wait again.
    with session_scope(w.db) as s:
        cb = s.get(Callback, result.callback_id)
        assert cb is not None
        cb.next_try_at = now - timedelta(seconds=1)
    w.presence("agent1", Presence.LOGIN)
    got = w.engine.claim(w.campaign(), 1)
    assert [a.phone for a in got] == ["+447900000001"]
    with session_scope(w.db) as s:
        attempt = s.get(Attempt, got[0].id)
        assert attempt is not None
        attempt_not_placed(s, attempt, "never sent", now=utcnow())
    with session_scope(w.db, write=False) as s:
        cb = s.get(Callback, result.callback_id)
        contact = s.exec(select(Contact).where(Contact.phone == "+447900000001")).one()
        assert cb is not None and (cb.state, cb.attempt_id) == (CallbackState.SCHEDULED, None)
        assert (contact.state, contact.attempts) == (ContactState.CALLBACK, 3 - 1)
