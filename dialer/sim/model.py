"""The call model: what happens to a dialled number and to the PBX's agents, as a pure discrete-event object.

No I/O and no clock reads: the driver says what time it is. The HTTP simulator drives it on unix time, the
discrete-event pacing benchmark on simulated seconds; both get identical outcomes for the same seed and dial
sequence, because each call's randomness comes from its own RNG seeded by ``(seed, call sequence number)``.

Lifecycle of a predicted callback (times in model seconds, every duration divided by ``time_scale``):

``ringing`` (answered / no-answer calls only) -> one outcome event: ``answered`` | ``no_answer`` | ``busy`` |
``failed`` | ``unallocated``. An answered call is at once ``bridged`` into the PBX, then ``connected`` to an agent
(the router's choice if free, else the longest-idle free agent, else the first agent freeing within
``connect_grace_s``) or ``abandoned`` at ``answered_at + connect_grace_s`` (the PBX then plays the abandon message
for ``ivr_message_s`` and hangs up). With ``defer_routing`` the grace counts from the driver's :meth:`route` call. A connected call ends with ``talk_end`` and the agent's ``wrapup_end``
(emitted even for zero wrap-up). Every call emits ``ended`` exactly once, when its customer leg is over.

Agents log in and out on the scenario's schedule (``agent_login``, ``agent_logout``) and take its breaks
(``agent_pause``, ``agent_ready``); one in a call when their shift or break starts finishes the call and its wrap-up
first. With ``gate_agents`` an agent logging in or back from a break is ``held`` (present, not yet taking calls)
until the driver calls :meth:`release`: the HTTP simulator's desk releases them once the dialer has confirmed them
ready, so the PBX never connects a customer to someone the dialer does not count; and a call redirected to an
extension waits for that agent only (as a real redirect rings one extension), never for whoever frees first.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from dialer.sim.agenda import in_period
from dialer.sim.scenario import DAY_S, Scenario

# Internal heap event codes.
_OUTCOME = 0
_ABANDON = 1
_TALK_END = 2
_WRAP_END = 3
_SCHEDULE = 4
_IVR_END = 5

DISPOSITIONS = {
    "answered": "answered",
    "no_answer": "no answer",
    "busy": "busy",
    "failed": "call failed",
    "unallocated": "unallocated number",
}


class ModelEvent(NamedTuple):
    kind: str
    time: float
    call_id: str | None = None
    agent: str | None = None


@dataclass(slots=True, eq=False)
class SimAgent:
    extension: str
    logged_in: bool = False
    state: str = "offline"  # "idle" | "talking" | "wrapup" | "paused" | "held" | "offline"
    since: float = 0.0
    call_id: str | None = None
    pending_logout: bool = False
    pause_code: str | None = None
    pending_pause: str | None = None  # a break that starts when the current call and wrap-up end
    breaks_taken: int = 0
    break_slot: int | None = None  # which of the scenario's breaks the agent is on (or will take after the call)
    calls_taken: int = 0
    talk_total: float = 0.0
    wrapup_total: float = 0.0
    logged_in_total: float = 0.0  # closed login periods only; see SimAgent.logged_in_seconds
    login_at: float = 0.0

    def logged_in_seconds(self, now: float) -> float:
        return self.logged_in_total + (now - self.login_at if self.logged_in else 0.0)


@dataclass(slots=True, eq=False)
class SimCall:
    id: str
    seq: int
    to: str
    from_: str | None
    placed_at: float
    outcome: str  # the customer's true behaviour: answered | no_answer | busy | failed | unallocated
    ring_seconds: float  # time from placing to the outcome (for answered calls: until the customer picked up)
    talk_planned: float
    wrapup_planned: float
    state: str = "ringing"  # ringing | routing | waiting | talking | ivr | ended
    answered_at: float | None = None
    connected_at: float | None = None
    agent: str | None = None
    abandoned: bool = False
    hangup: str | None = None  # "hangup" | "blacklist" when the NOTIFY_START answer ended the call
    ivr: str | None = None  # file id played as the abandon message
    ended_at: float | None = None
    talk_seconds: float = 0.0
    disposition: str | None = (
        None  # customer leg, Zadarma's words ("answered", "no answer", "call failed", ...)
    )
    pbx_disposition: str | None = None  # PBX leg, once bridged: "answered" | "no answer" | "cancel"
    requested_agent: str | None = None

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def connected(self) -> bool:
        return self.connected_at is not None


Router = Callable[[SimCall], "str | None"]


class CallModel:
    """One PBX with its agents, and every call placed through it."""

    def __init__(
        self,
        scenario: Scenario,
        start_time: float,
        *,
        time_scale: float = 1.0,
        defer_routing: bool = False,
        gate_agents: bool = False,
    ) -> None:
        """``start_time`` is the model time at which the shift clock reads ``[shift] start``.

        ``defer_routing``: answered calls wait in state "routing" until the driver calls :meth:`route` (the HTTP
        simulator waits for the NOTIFY_START answer, or its timeout); the connect grace starts then. A driver that
        defers must route every bridged call.
        """
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.scenario = scenario
        self.start_time = float(start_time)
        self.time_scale = float(time_scale)
        self.defer_routing = defer_routing
        self.gate_agents = gate_agents
        self.router: Router | None = None
        self.now = self.start_time
        self.calls: dict[str, SimCall] = {}
        self.agents: list[SimAgent] = [SimAgent(ext, since=self.start_time) for ext in scenario.extensions]
        self._by_ext = {a.extension: a for a in self.agents}
        self._idle: dict[str, SimAgent] = {}  # insertion order = idle since, so the first is the longest idle
        self._waiting: deque[SimCall] = deque()
        self._heap: list[tuple[float, int, int, object]] = []
        self._hseq = 0
        self._out: list[ModelEvent] = []
        self._seq = 0
        self._rng = random.Random()
        self._seed_base = (int(scenario.seed) & 0xFFFFFFFF) << 32
        k = 1.0 / self.time_scale
        self._k = k
        self._max_ring = scenario.max_ring_s * k
        self._grace = scenario.connect_grace_s * k
        self._busy_after = scenario.busy_after_s * k
        self._failed_after = scenario.failed_after_s * k
        self._ivr_s = scenario.ivr_message_s * k
        self._q_unalloc = scenario.p_unallocated
        self._q_failed = self._q_unalloc + scenario.p_failed
        self._q_busy = self._q_failed + scenario.p_busy
        self._fixed = {k2.lstrip("+"): v for k2, v in scenario.fixed_numbers.items()}
        self._const_p = None if scenario.answer_schedule else scenario.answer_probability
        periods = [(p.start_s, p.end_s) for p in scenario.agent_schedule]
        periods += [(b.start_s, b.end_s) for b in scenario.agent_breaks]
        self._schedule_clocks = sorted({t % DAY_S for p in periods for t in p})
        self._apply_schedule(self.start_time)
        if self._schedule_clocks:
            self._push_next_schedule(self.start_time)

    # -- clocks ----------------------------------------------------------------------------------------
    def clock(self, t: float) -> float:
        """Shift-clock seconds since midnight of the first day (may exceed a day) at model time ``t``."""
        return self.scenario.shift_start_s + (t - self.start_time) * self.time_scale

    def time_at_clock(self, clock_s: float) -> float:
        return self.start_time + (clock_s - self.scenario.shift_start_s) / self.time_scale

    def answer_probability_at(self, t: float) -> float:
        if self._const_p is not None:
            return self._const_p
        return self.scenario.answer_probability_at_clock(self.clock(t))

    def logged_in_agents(self, t: float) -> int:
        """Agents the schedule has logged in at ``t`` (an agent finishing a call before logging out not counted)."""
        return min(len(self.agents), self.scenario.scheduled_agents_at_clock(self.clock(t)))

    def working_agents(self, t: float) -> int:
        """Agents the schedule has logged in and not on a break at ``t``."""
        on_break = sum(self.scenario.breaks_at_clock(self.clock(t)).values()) if self.scenario.agent_breaks else 0
        return max(0, self.logged_in_agents(t) - on_break)

    # -- driver API ------------------------------------------------------------------------------------
    def place_call(self, to: str, now: float, from_: str | None = None) -> SimCall:
        self._run(now)
        if now < self.now:
            now = self.now
        self._seq += 1
        seq = self._seq
        rng = self._rng
        rng.seed(self._seed_base | seq)
        sc = self.scenario
        # Always draw the same four numbers in the same order, so a call's outcome never depends on its path.
        u = rng.random()
        ring = sc.ring_time.sample(rng)
        talk = sc.talk_time.sample(rng)
        wrap = sc.wrapup.sample(rng)
        fixed = self._fixed.get(to.lstrip("+")) if self._fixed else None
        if fixed is not None:
            outcome = fixed
        elif u < self._q_unalloc:
            outcome = "unallocated"
        elif u < self._q_failed:
            outcome = "failed"
        elif u < self._q_busy:
            outcome = "busy"
        elif u < self._q_busy + (
            self._const_p if self._const_p is not None else self.answer_probability_at(now)
        ):
            outcome = "answered"
        else:
            outcome = "no_answer"
        k = self._k
        if outcome == "answered":
            delay = min(ring * k, self._max_ring)
        elif outcome == "no_answer":
            delay = self._max_ring
        elif outcome == "busy":
            delay = self._busy_after
        else:
            delay = self._failed_after
        cid = str(seq)
        call = SimCall(cid, seq, to, from_, now, outcome, delay, max(talk, 1.0) * k, wrap * k)
        self.calls[cid] = call
        if outcome == "answered" or outcome == "no_answer":
            self._out.append(ModelEvent("ringing", now, cid))
        self._push(now + delay, _OUTCOME, call)
        return call

    def advance(self, until: float) -> list[ModelEvent]:
        """Process every event with time <= ``until``; return what happened, in time order."""
        self._run(until)
        out = self._out
        self._out = []
        return out

    def next_event_time(self) -> float | None:
        if self._out:
            return self._out[0].time
        return self._heap[0][0] if self._heap else None

    def route(self, call_id: str, now: float, target: str | None = None) -> bool:
        """Routing decision for a call in state "routing" (``defer_routing``): an extension, None for the PBX's
        default, "hangup" / "blacklist" to end it, or "ivr:<file>" to play the abandon message and hang up.
        Returns False when the call is not waiting for a decision."""
        self._run(now)
        call = self.calls.get(call_id)
        if call is None or call.state != "routing":
            return False
        t = max(now, self.now)
        if target in ("hangup", "blacklist"):
            # The customer answered and was hung up on with no agent: by every legal definition an abandoned call.
            call.hangup = target
            call.abandoned = True
            call.pbx_disposition = "cancel"
            self._out.append(ModelEvent("hangup", t, call.id))
            self._end(call, t)
        elif target is not None and target.startswith("ivr:"):
            call.ivr = target[4:]
            self._abandon(call, t, "cancel")
        else:
            self._route(call, t, target)
        return True

    def release(self, extension: str, now: float) -> bool:
        """A ``held`` agent starts taking calls (``gate_agents``); False if they are not held."""
        self._run(now)
        agent = self._by_ext.get(extension)
        if agent is None or agent.state != "held":
            return False
        self._free(agent, max(now, self.now))
        return True

    # -- stats helpers ---------------------------------------------------------------------------------
    def free_agents(self) -> int:
        return len(self._idle)

    def waiting_calls(self) -> int:
        return sum(1 for c in self._waiting if c.state == "waiting")

    def agent(self, extension: str) -> SimAgent | None:
        return self._by_ext.get(extension)

    # -- internals -------------------------------------------------------------------------------------
    def _push(self, t: float, code: int, obj: object) -> None:
        self._hseq += 1
        heapq.heappush(self._heap, (t, self._hseq, code, obj))

    def _run(self, until: float) -> None:
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= until:
            t, _, code, obj = pop(heap)
            self.now = t
            if code == _OUTCOME:
                self._on_outcome(obj, t)  # type: ignore[arg-type]
            elif code == _TALK_END:
                self._on_talk_end(obj, t)  # type: ignore[arg-type]
            elif code == _ABANDON:
                call: SimCall = obj  # type: ignore[assignment]
                if call.state == "waiting":
                    self._abandon(call, t, "no answer")
            elif code == _WRAP_END:
                self._on_wrap_end(obj, t)  # type: ignore[arg-type]
            elif code == _IVR_END:
                self._end(obj, t)  # type: ignore[arg-type]
            elif code == _SCHEDULE:
                self._apply_schedule(t)
                self._push_next_schedule(t)
        if until > self.now:
            self.now = until

    def _on_outcome(self, call: SimCall, t: float) -> None:
        outcome = call.outcome
        out = self._out
        if outcome != "answered":
            out.append(ModelEvent(outcome, t, call.id))
            call.disposition = DISPOSITIONS[outcome]
            self._end(call, t)
            return
        call.answered_at = t
        call.disposition = "answered"
        out.append(ModelEvent("answered", t, call.id))
        out.append(ModelEvent("bridged", t, call.id))
        if self.defer_routing:
            # The grace starts when the routing decision is made: a sped-up simulator's webhook round trip is
            # not scaled, and counting it would abandon calls a real PBX would have connected.
            call.state = "routing"
            return
        target = self.router(call) if self.router is not None else None
        self._route(call, t, target)

    def _route(self, call: SimCall, t: float, target: str | None) -> None:
        idle = self._idle
        if target is not None:
            call.requested_agent = target
            if target in idle:
                self._connect(call, idle.pop(target), t)
                return
        elif idle:
            ext = next(iter(idle))
            self._connect(call, idle.pop(ext), t)
            return
        call.state = "waiting"
        self._waiting.append(call)
        self._push(t + self._grace, _ABANDON, call)

    def _connect(self, call: SimCall, agent: SimAgent, t: float) -> None:
        call.state = "talking"
        call.connected_at = t
        call.agent = agent.extension
        call.pbx_disposition = "answered"
        agent.state = "talking"
        agent.since = t
        agent.call_id = call.id
        agent.calls_taken += 1
        self._out.append(ModelEvent("connected", t, call.id, agent.extension))
        self._push(t + call.talk_planned, _TALK_END, call)

    def _on_talk_end(self, call: SimCall, t: float) -> None:
        agent = self._by_ext[call.agent]  # type: ignore[index]
        call.talk_seconds = t - call.connected_at  # type: ignore[operator]
        agent.talk_total += call.talk_seconds
        self._out.append(ModelEvent("talk_end", t, call.id, agent.extension))
        self._end(call, t)
        agent.state = "wrapup"
        agent.since = t
        if call.wrapup_planned > 0:
            self._push(t + call.wrapup_planned, _WRAP_END, agent)
        else:
            self._on_wrap_end(agent, t)

    def _on_wrap_end(self, agent: SimAgent, t: float) -> None:
        agent.wrapup_total += t - agent.since
        self._out.append(ModelEvent("wrapup_end", t, agent.call_id, agent.extension))
        agent.call_id = None
        self._free(agent, t)

    def _free(self, agent: SimAgent, t: float) -> None:
        if agent.pending_logout:
            self._logout(agent, t)
            return
        if agent.pending_pause is not None:
            self._pause(agent, t, agent.pending_pause)
            return
        waiting = self._waiting
        if self.gate_agents:
            # A call redirected to one extension rings only that one (its agent may have just left the desk).
            for call in list(waiting):
                if call.state != "waiting":
                    waiting.remove(call)
                elif call.requested_agent in (None, agent.extension):
                    waiting.remove(call)
                    self._connect(call, agent, t)
                    return
        while waiting and not self.gate_agents:
            call = waiting.popleft()
            if call.state == "waiting":
                self._connect(call, agent, t)
                return
        agent.state = "idle"
        agent.since = t
        self._idle[agent.extension] = agent

    def _abandon(self, call: SimCall, t: float, pbx_disposition: str) -> None:
        call.abandoned = True
        call.pbx_disposition = pbx_disposition
        call.state = "ivr"
        self._out.append(ModelEvent("abandoned", t, call.id))
        # The PBX plays the abandon message (identity and a callback number) before hanging up.
        if self._ivr_s > 0:
            self._push(t + self._ivr_s, _IVR_END, call)
        else:
            self._end(call, t)

    def _end(self, call: SimCall, t: float) -> None:
        call.state = "ended"
        call.ended_at = t
        self._out.append(ModelEvent("ended", t, call.id, call.agent))

    # -- agent schedule --------------------------------------------------------------------------------
    def _push_next_schedule(self, t: float) -> None:
        clocks = self._schedule_clocks
        c = self.clock(t)
        day = (c // DAY_S) * DAY_S
        for d in (day, day + DAY_S):
            for cc in clocks:
                if d + cc > c + 1e-9:
                    self._push(self.time_at_clock(d + cc), _SCHEDULE, None)
                    return

    def _apply_schedule(self, t: float) -> None:
        target = self.logged_in_agents(t)
        active = [a for a in self.agents if a.logged_in and not a.pending_logout]
        if len(active) < target:
            need = target - len(active)
            for a in self.agents:
                if need == 0:
                    break
                if a.logged_in and a.pending_logout:
                    a.pending_logout = False
                    need -= 1
            for a in self.agents:
                if need == 0:
                    break
                if not a.logged_in:
                    self._login(a, t)
                    need -= 1
        elif len(active) > target:
            extra = len(active) - target
            # Idle agents leave first (most recently idle first), then busy ones after their current call.
            for ext in reversed(list(self._idle)):
                if extra == 0:
                    break
                self._logout(self._idle.pop(ext), t)
                extra -= 1
            # Then those on a break or not yet taking calls, then busy ones after their current call.
            for a in reversed(active):
                if extra > 0 and a.state in ("paused", "held"):
                    self._logout(a, t)
                    extra -= 1
            for a in reversed(active):
                if extra == 0:
                    break
                if a.logged_in and not a.pending_logout and a.state != "offline":
                    a.pending_logout = True
                    extra -= 1
        if self.scenario.agent_breaks:
            self._apply_breaks(t)

    def _apply_breaks(self, t: float) -> None:
        """Each break of the scenario holds its own ``count`` agents: those back first, then those leaving."""
        c = self.clock(t)
        wanted = [b.count if in_period(b.start_s, b.end_s, c) else 0 for b in self.scenario.agent_breaks]
        for i, n in enumerate(wanted):
            on = [a for a in self.agents if a.logged_in and a.break_slot == i]
            # Back from the break: first those still waiting to start it, then the longest paused.
            on.sort(key=lambda a: (a.pending_pause is None, a.since))
            for a in on[: max(0, len(on) - n)]:
                a.break_slot = None
                if a.pending_pause is not None:
                    a.pending_pause = None
                else:
                    self._unpause(a, t)
        for i, n in enumerate(wanted):
            on = [a for a in self.agents if a.logged_in and a.break_slot == i]
            # Breaks go round the team: those who have had the fewest first, an idle one before a busy one.
            # A held agent (not yet confirmed ready by the dialer) may start the day on a break too.
            cands = [a for a in self.agents if a.state in ("idle", "held", "talking", "wrapup")
                     and not a.pending_logout and a.break_slot is None]  # fmt: skip
            cands.sort(key=lambda a: (a.breaks_taken, a.state not in ("idle", "held")))
            code = self.scenario.agent_breaks[i].code
            for a in cands[: max(0, n - len(on))]:
                a.break_slot = i
                a.breaks_taken += 1
                if a.state in ("idle", "held"):
                    self._idle.pop(a.extension, None)
                    self._pause(a, t, code)
                else:
                    a.pending_pause = code

    def _pause(self, agent: SimAgent, t: float, code: str) -> None:
        agent.state = "paused"
        agent.pause_code = code
        agent.pending_pause = None
        agent.since = t
        self._out.append(ModelEvent("agent_pause", t, None, agent.extension))

    def _unpause(self, agent: SimAgent, t: float) -> None:
        agent.pause_code = None
        self._out.append(ModelEvent("agent_ready", t, None, agent.extension))
        self._hold_or_free(agent, t)

    def _hold_or_free(self, agent: SimAgent, t: float) -> None:
        if self.gate_agents:
            agent.state = "held"
            agent.since = t
        else:
            self._free(agent, t)

    def _login(self, agent: SimAgent, t: float) -> None:
        agent.logged_in = True
        agent.pending_logout = False
        agent.login_at = t
        self._out.append(ModelEvent("agent_login", t, None, agent.extension))
        self._hold_or_free(agent, t)

    def _logout(self, agent: SimAgent, t: float) -> None:
        agent.logged_in_total += t - agent.login_at
        agent.logged_in = False
        agent.pending_logout = False
        agent.pause_code = agent.pending_pause = None
        agent.break_slot = None
        agent.state = "offline"
        agent.since = t
        self._idle.pop(agent.extension, None)
        self._out.append(ModelEvent("agent_logout", t, None, agent.extension))
