"""Self-healing live state: calls whose end event was lost are closed, their agents come back, pacing never counts
a phantom call.

Webhooks get lost (a 20% drop left 9 calls "ringing" and 4 agents "talking" while the database had no live
attempt, and an agent "talking" for 4 hours). Two things close such a call:

- the database: an attempt that is no longer live there (the statistics, or any other source, completed it) has no
  live call any more (``close_calls``, fed each tick by the daemon);
- time, learned from the calls seen to end: a call ringing, or an agent talking, for longer than twice the 99th
  percentile of the observed ring (talk) times is taken as ended (``Durations.bound``); a customer left waiting
  for an agent longer than a call may ring is too. Until enough calls were seen the old fixed bounds apply.

``HealingSide`` is a part of ``dialer.dialing.live.LiveState`` (a base class, like ``AgentSide``): it changes the
shared records only under the live state's lock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

from dialer.dialing.live_types import (
    AGENT_TALKING,
    ENDED,
    IDLE,
    RESERVED,
    ROUTED,
    TALKING,
    WAITING,
    AgentRecord,
    LiveCall,
)

_KEEP = 500  # durations remembered (the recent calls: a list's talk times change with its customers)
_MIN_SAMPLES = 20
_FACTOR = 2.0


class Durations:
    """The last ``_KEEP`` observed durations of one kind (ring or talk, in the live state's seconds) and the bound
    past which a call still in that phase is taken as ended: twice their 99th percentile, or ``fallback_s``
    until ``_MIN_SAMPLES`` were seen (never more than ``fallback_s``)."""

    def __init__(self, fallback_s: float) -> None:
        self.fallback_s = fallback_s
        self._seen: deque[float] = deque(maxlen=_KEEP)
        self._bound: float | None = None

    def add(self, seconds: float) -> None:
        if seconds >= 0:
            self._seen.append(seconds)
            self._bound = None

    def bound(self) -> float:
        if self._bound is None:
            if len(self._seen) < _MIN_SAMPLES:
                self._bound = self.fallback_s
            else:
                ordered = sorted(self._seen)
                q99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
                self._bound = min(self.fallback_s, _FACTOR * q99)
        return self._bound


class HealingSide:
    """The healing half of ``LiveState`` (see the module docstring); it declares the state it shares."""

    _lock: threading.RLock
    _agents: dict[str, AgentRecord]
    _calls: dict[int, LiveCall]
    _pbx: dict[str, int]
    rings: Durations
    talks: Durations
    healed: int  # calls closed by the database or a learned bound (for status and tests)

    def live_attempts(self, campaign_id: int) -> list[int]:
        """The attempts of ``campaign_id`` the live state still has in progress."""
        with self._lock:
            return [a for a, c in self._calls.items() if c.campaign_id == campaign_id and c.state != ENDED]

    def close_calls(self, attempt_ids: Iterable[int], now: float) -> int:
        """The database says these attempts are over: drop their calls and free their agents (to idle: the call
        ended some time ago). Returns how many calls were still live here."""
        closed = 0
        with self._lock:
            for attempt_id in attempt_ids:
                call = self._calls.get(attempt_id)
                if call is None or call.state == ENDED:
                    continue
                self._close(call, now)
                closed += 1
        return closed

    def _close(self, call: LiveCall, now: float) -> None:
        for agent in self._agents.values():
            if agent.attempt_id == call.attempt_id and agent.state in (RESERVED, AGENT_TALKING):
                agent.state, agent.since, agent.idle_since, agent.held = IDLE, now, now, False
                agent.pbx_call_id, agent.attempt_id = None, None
        # Ended without a FinishedCall: its outcome is the database's (pacing reads the counts from there).
        call.state, call.ended_at, call.finished = ENDED, now, True
        self.healed += 1

    def _heal(self, now: float) -> None:
        """Close what the learned bounds say has ended (called by the live state's sweep, under its lock)."""
        talk_bound = self.talks.bound()
        for agent in self._agents.values():
            if agent.state == AGENT_TALKING and now - agent.since > talk_bound:
                call = self._calls.get(agent.attempt_id) if agent.attempt_id is not None else None
                if call is not None and call.state != ENDED:
                    self._close(call, now)
                else:
                    agent.state, agent.since, agent.idle_since = IDLE, now, now
                    agent.pbx_call_id, agent.attempt_id = None, None
        for call in list(self._calls.values()):
            if call.state == ENDED:
                continue
            started = call.connected_at or call.answered_at or call.placed_at
            if (call.state == TALKING and now - started > talk_bound) or (
                call.state in (WAITING, ROUTED) and now - started > self.waiting_bound_s()
            ):
                self._close(call, now)

    def waiting_bound_s(self) -> float:
        """How long an answered customer may wait for (or ring) an agent before the call counts as over: as long
        as a call may ring (a PBX gives up on a waiting customer within seconds)."""
        return self.rings.bound()

    def ring_bound_s(self, ring_timeout_s: float) -> float:
        """How long a call may ring before pacing stops counting it: learned, at most ``ring_timeout_s``."""
        return min(ring_timeout_s, self.rings.bound())
