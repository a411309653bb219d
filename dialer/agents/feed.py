"""The agents' event streams (server-sent events): each agent's own state changes, the call routed to them with its
record (the screen-pop), the call's end, and the wrap-up timer.

The stream is read from the database, not pushed from memory: every change of an agent's session is an
``agent_event`` row (``dialer.outcomes.agent_states``), and a stream sends the rows after the last one it sent,
turned into events, then the session itself when something changed that has no row (a pause asked for during a
call). The webhooks' writer and the API tell the feed which agents a committed transaction changed
(``agents_changed``), which wakes those agents' streams at once; a stream also looks every ``poll_s`` (changes made
by another process, such as ``dialer agent pause``) and at the end of a wrap-up.

Invariants: a stream sends only its own agent's events; each event carries the id of the last ``agent_event`` row
it reflects, so a client that reconnects with ``Last-Event-ID`` misses nothing; a stream ends when its token stops
being valid (expired, revoked at logout) or the feed closes (the daemon stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from dialer.agents.api_models import CallEndedEvent, EndEvent, StateEvent, StateOut, WrapupEvent
from dialer.agents.tokens import check_token
from dialer.agents.views import call_record, state_out
from dialer.db import session_scope
from dialer.models import Agent, AgentEvent, Attempt, Campaign, utcnow
from dialer.outcomes.states import IN_CALL_AGENT_STATES, AgentState

MAX_REPLAY = 200  # rows replayed after Last-Event-ID; further back, the stream starts afresh
_CALL = frozenset(IN_CALL_AGENT_STATES)


@dataclass
class _Cursor:
    """What a stream has sent: the last row, and the session as its last ``state`` event told it."""

    last_id: int = 0
    told: tuple[str, str | None, str | None] | None = None  # state, pause code, pending change
    wrapup_until: datetime | None = None


@dataclass
class _Read:
    messages: list[str] = field(default_factory=list)
    valid: bool = True
    wake_at: datetime | None = None


@dataclass(eq=False)
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)


def sse(event: str, data: BaseModel, last_id: int) -> str:
    return f"id: {last_id}\nevent: {event}\ndata: {data.model_dump_json()}\n\n"


class AgentFeed:
    """Every connected agent's event stream (see the module docstring). Thread-safe: ``agents_changed`` and
    ``close`` may be called from any thread."""

    def __init__(self, db: Engine, *, poll_s: float = 2.0, keepalive_s: float = 15.0,
                 clock: Callable[[], datetime] = utcnow) -> None:  # fmt: skip
        self.db = db
        self.poll_s = poll_s
        self.keepalive_s = keepalive_s
        self.clock = clock
        self._lock = threading.Lock()
        self._subscribers: dict[int, set[_Subscriber]] = {}
        self._closed = False

    # --- waking streams -----------------------------------------------------------------------------------

    def agents_changed(self, agent_ids: Iterable[int]) -> None:
        """A committed transaction changed these agents' sessions: wake their streams."""
        with self._lock:
            subs = [s for a in agent_ids for s in self._subscribers.get(a, ())]
        for sub in subs:
            self._wake(sub)

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        with self._lock:
            self._closed = True
            subs = [s for group in self._subscribers.values() for s in group]
        for sub in subs:
            self._wake(sub)

    @property
    def closed(self) -> bool:
        return self._closed

    def connected(self, agent_id: int) -> int:
        with self._lock:
            return len(self._subscribers.get(agent_id, ()))

    @staticmethod
    def _wake(sub: _Subscriber) -> None:
        with contextlib.suppress(RuntimeError):  # that stream's loop has closed
            sub.loop.call_soon_threadsafe(sub.event.set)

    # --- one stream ---------------------------------------------------------------------------------------

    async def stream(self, agent_id: int, token: str, last_event_id: int | None = None) -> AsyncIterator[str]:
        """The agent's events as SSE text, until the token stops being valid or the feed closes."""
        sub = _Subscriber(asyncio.get_running_loop())
        with self._lock:
            self._subscribers.setdefault(agent_id, set()).add(sub)
        try:
            cursor = _Cursor()
            first = await asyncio.to_thread(self._start, agent_id, token, last_event_id, cursor)
            if not first.valid:  # the token ended between the request's check and here
                yield sse("end", EndEvent(reason="the session ended (logged out or expired): log in again"), 0)
                return
            yield "retry: 2000\n\n" + "".join(first.messages)
            wake_at = first.wake_at
            loop = asyncio.get_running_loop()
            quiet_since = loop.time()
            while not self._closed:
                timeout = self.poll_s
                if wake_at is not None:
                    timeout = min(timeout, max(0.0, (wake_at - self.clock()).total_seconds()) + 0.05)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sub.event.wait(), timeout)
                # Cleared before reading: a change committed during the read wakes the next round.
                sub.event.clear()
                if self._closed:
                    break
                read = await asyncio.to_thread(self._read, agent_id, token, cursor)
                if not read.valid:
                    yield sse("end", EndEvent(reason="the session ended (logged out or expired): log in again"),
                              cursor.last_id)  # fmt: skip
                    return
                wake_at = read.wake_at
                if read.messages:
                    yield "".join(read.messages)
                    quiet_since = loop.time()
                elif loop.time() - quiet_since >= self.keepalive_s:
                    yield ": keepalive\n\n"
                    quiet_since = loop.time()
            yield sse("end", EndEvent(reason="the server is stopping: reconnect"), cursor.last_id)
        finally:
            with self._lock:
                group = self._subscribers.get(agent_id)
                if group is not None:
                    group.discard(sub)
                    if not group:
                        del self._subscribers[agent_id]

    def _start(self, agent_id: int, token: str, last_event_id: int | None, cursor: _Cursor) -> _Read:
        """The first message: the rows after ``last_event_id`` when resuming, else the session as it is now (with
        the call's record when the agent is in one)."""
        now = self.clock()
        with session_scope(self.db, write=False) as s:
            newest = s.execute(sa.select(sa.func.max(col(AgentEvent.id)))
                               .where(col(AgentEvent.agent_id) == agent_id)).scalar() or 0  # fmt: skip
            resume = last_event_id is not None and 0 <= last_event_id <= newest \
                and newest - last_event_id <= MAX_REPLAY  # fmt: skip
            if resume:
                assert last_event_id is not None
                cursor.last_id = last_event_id
                return self._changes(s, agent_id, token, cursor, now)
            cursor.last_id = int(newest)
            agent = s.get(Agent, agent_id)
            if agent is None or check_token(s, token, now) is None:
                return _Read(valid=False)
            out = _Read()
            state = state_out(agent, now)
            out.messages.append(self._tell(cursor, state))
            if state.state in (*_CALL, AgentState.WRAPUP) and agent.attempt_id is not None:
                attempt = s.get(Attempt, agent.attempt_id)
                if attempt is not None:
                    out.messages.append(sse("call", call_record(s, attempt, agent, now), cursor.last_id))
                if state.wrapup_until is not None:
                    out.messages.append(self._wrapup(agent.attempt_id, state.wrapup_until, now, cursor))
            out.wake_at = state.wrapup_until
            return out

    def _read(self, agent_id: int, token: str, cursor: _Cursor) -> _Read:
        now = self.clock()
        with session_scope(self.db, write=False) as s:
            return self._changes(s, agent_id, token, cursor, now)

    def _changes(self, s: Session, agent_id: int, token: str, cursor: _Cursor, now: datetime) -> _Read:
        agent = s.get(Agent, agent_id)
        if agent is None or check_token(s, token, now) is None:
            return _Read(valid=False)
        out = _Read()
        rows = s.exec(select(AgentEvent).where(col(AgentEvent.agent_id) == agent_id,
                                               col(AgentEvent.id) > cursor.last_id)
                      .order_by(col(AgentEvent.id)).limit(MAX_REPLAY)).all()  # fmt: skip
        for row in rows:
            cursor.last_id = row.id or cursor.last_id
            out.messages.extend(self._row_events(s, agent, row, now, cursor))
        state = state_out(agent, now)
        if (state.state, state.pause_code, state.pending_change) != cursor.told:
            out.messages.append(self._tell(cursor, state))
        out.wake_at = state.wrapup_until
        return out

    def _row_events(self, s: Session, agent: Agent, row: AgentEvent, now: datetime, cursor: _Cursor) -> list[str]:
        """One change as events: ``state``; ``call`` (with the record) when a call starts holding the agent;
        ``call_ended`` when it lets go; ``wrapup_timer`` when wrap-up starts."""
        out: list[str] = []
        wrapup_until = None
        if row.to_state == AgentState.WRAPUP:
            campaign = s.get(Campaign, row.campaign_id) if row.campaign_id is not None else None
            wrapup_until = row.at + timedelta(seconds=campaign.wrapup_s if campaign is not None else 0)
        latest = agent.state == row.to_state and agent.state_since == row.at
        state = StateOut(state=row.to_state, pause_code=row.pause_code, since=row.at,
                         pending_change=state_out(agent, now).pending_change if latest else None,
                         wrapup_until=wrapup_until, attempt_id=row.attempt_id)  # fmt: skip
        # A wrap-up past its limit was already told as ready: its written end is no news.
        if (state.state, state.pause_code, state.pending_change) != cursor.told:
            out.append(self._tell(cursor, state, from_state=row.from_state, reason=row.reason))
        starts = row.to_state in _CALL and row.from_state not in _CALL
        if starts and row.attempt_id is not None:
            attempt = s.get(Attempt, row.attempt_id)
            if attempt is not None:
                out.append(sse("call", call_record(s, attempt, agent, now), cursor.last_id))
        if row.from_state in _CALL and row.to_state not in _CALL:
            out.append(sse("call_ended", CallEndedEvent(attempt_id=row.attempt_id, at=row.at,
                                                        next_state=row.to_state), cursor.last_id))  # fmt: skip
        if wrapup_until is not None:
            out.append(self._wrapup(row.attempt_id, wrapup_until, now, cursor))
        return out

    @staticmethod
    def _tell(cursor: _Cursor, state: StateOut, *, from_state: str | None = None, reason: str | None = None) -> str:
        cursor.told = (state.state, state.pause_code, state.pending_change)
        return sse("state", StateEvent(state=state, from_state=from_state, reason=reason), cursor.last_id)

    @staticmethod
    def _wrapup(attempt_id: int | None, until: datetime, now: datetime, cursor: _Cursor) -> str:
        cursor.wrapup_until = until
        seconds = max(0, round((until - now).total_seconds()))
        return sse("wrapup_timer", WrapupEvent(attempt_id=attempt_id, until=until, seconds=seconds), cursor.last_id)


def parse_last_event_id(value: str | None) -> int | None:
    """The ``Last-Event-ID`` header as a row id; None for anything else (the stream then starts afresh)."""
    text = (value or "").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        return None
    return int(text)

