"""Live call and agent state, folded from PBX webhooks and from the engine's own placements.

One ``LiveState`` per process, shared by the webhook server (which writes it) and the daemon's tick (which reads it
through ``view`` and ``drain_finished``). Every method is thread-safe. Times are float unix seconds and every method
that changes state takes ``now`` explicitly, so replaying stored events with their receive times rebuilds exactly the
decisions taken live (wrap-up ends and longest-idle choices depend on time).

Agents are PBX extensions and belong to the PBX, not to a campaign: an agent talking on campaign B's call (or on an
inbound call) is busy for campaign A too. A campaign names its extensions (``Campaign.agent_extensions``) or only a
count (``Campaign.agents``); with a count, the extensions are learned from the events of its calls.

Call states: ``ringing`` (placed, customer not answered yet) -> ``waiting`` (customer answered, NOTIFY_START seen, no
agent yet) -> ``routed`` (an agent was named by our ``redirect`` or rings, NOTIFY_INTERNAL) -> ``talking``
(NOTIFY_ANSWER) -> ``ended``. In a ``LiveView`` a routed call's agent counts as talking (the agent is taken) and the
call is not waiting, so a pacing policy never counts one answered customer twice.

The agents' side (presence, reservations, holds, wrap-ups) is ``dialer.dialing.live_agents.AgentSide``, this class's
base. A campaign with agent sessions (``dialer.agents``) has its extensions and their presence set by the engine each
tick (``sync_team``), and ``route`` is told which of them the sessions say are ready.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping

from dialer.dialing.live_agents import AgentSide
from dialer.dialing.live_heal import Durations, HealingSide
from dialer.dialing.live_types import (
    AGENT_TALKING,
    ANSWERED_UNKNOWN,
    ENDED,
    IDLE,
    MAX_UNDRAINED,
    OFFLINE,
    RESERVED,
    RINGING,
    ROUTED,
    TALKING,
    WAITING,
    WRAPUP,
    AgentRecord,
    CampaignLike,
    CampaignRecord,
    EndResult,
    LiveCall,
    LiveView,
)
from dialer.pacing.observation import FinishedCall, Observation

# How long an ended call stays known, so late events (OUT_END after END, resent events) still find it.
KEEP_ENDED_S = 900.0
# An agent reserved by our redirect whose call never reports ANSWER or END (dropped webhook) is released after this.
RESERVATION_TIMEOUT_S = 60.0
# A talking agent whose END was lost is freed after this; no real call-centre call lasts 4 hours.
STALE_TALK_S = 4 * 3600.0


class LiveState(HealingSide, AgentSide):
    """Thread-safe live state of every campaign: the model is in the module docstring, records in live_types."""

    def __init__(
        self,
        *,
        wrapup_s: float | Mapping[int, float] = 0.0,
        ring_timeout_s: float = 120.0,
    ) -> None:
        self._lock = threading.RLock()
        self._default_wrapup = float(wrapup_s) if isinstance(wrapup_s, int | float) else 0.0
        self._wrapup_map: dict[int, float] = (
            {} if isinstance(wrapup_s, int | float) else {int(k): float(v) for k, v in wrapup_s.items()}
        )
        self.ring_timeout_s = ring_timeout_s
        self._campaigns: dict[int, CampaignRecord] = {}
        self._agents: dict[str, AgentRecord] = {}
        self._calls: dict[int, LiveCall] = {}
        self._pbx: dict[str, int] = {}
        self._subscribers: list[Callable[[int], None]] = []
        self._last_event_at: float | None = None
        self._placed_since_event: float | None = None
        self._events = 0
        self._last_sweep = 0.0
        # Learned from the calls seen to end: past these a call whose end event was lost counts as over.
        self.rings = Durations(ring_timeout_s)
        self.talks = Durations(STALE_TALK_S)
        self.healed = 0

    # --- configuration ----------------------------------------------------------------------------------

    def configure_campaign(
        self,
        campaign_id: int,
        *,
        extensions: Iterable[str] = (),
        agents: int = 0,
        wrapup_s: float | None = None,
        now: float = 0.0,
    ) -> None:
        """Declare (or update) a campaign's agents: a list of extensions, or only a count (learned from events)."""
        with self._lock:
            camp = self._campaign(campaign_id)
            camp.extensions = [str(e) for e in extensions]
            camp.count = int(agents)
            camp.configured = True
            if wrapup_s is not None:
                self._wrapup_map[campaign_id] = float(wrapup_s)
            camp.wrapup_s = self._wrapup_map.get(campaign_id, self._default_wrapup)
            for ext in camp.extensions:
                self._agent(ext, now)

    def is_configured(self, campaign_id: int) -> bool:
        with self._lock:
            camp = self._campaigns.get(campaign_id)
            return camp is not None and camp.configured

    def subscribe(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """``callback(campaign_id)`` runs (on the webhook worker thread, outside any lock) when a customer answers,
        an agent answers or a call ends. Returns a function that unsubscribes."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def notify(self, campaign_ids: Iterable[int]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for campaign_id in dict.fromkeys(campaign_ids):
            for callback in subscribers:
                callback(campaign_id)

    # --- the engine's side ------------------------------------------------------------------------------

    def call_placed(self, campaign_id: int, attempt_id: int, phone: str, placed_at: float) -> None:
        """The engine sent a callback for ``attempt_id`` (call it when the request is sent, before the answer)."""
        with self._lock:
            self._campaign(campaign_id)
            if attempt_id not in self._calls:
                self._calls[attempt_id] = LiveCall(attempt_id, campaign_id, phone, placed_at)
            if self._placed_since_event is None:
                self._placed_since_event = placed_at

    def call_failed(self, campaign_id: int, attempt_id: int, now: float | None = None) -> None:
        """The callback was refused or certainly never placed: forget the call (no FinishedCall) and free an agent
        held for it."""
        with self._lock:
            held = self._held_for(attempt_id)
            if held is not None:
                self._release_hold(attempt_id, self._agents[held].since if now is None else now)
            call = self._calls.pop(attempt_id, None)
            if call is not None:
                for pbx in call.pbx_ids:
                    self._pbx.pop(pbx, None)

    # --- silence ----------------------------------------------------------------------------------------

    @property
    def last_event_at(self) -> float | None:
        with self._lock:
            return self._last_event_at

    @property
    def events_seen(self) -> int:
        with self._lock:
            return self._events

    def event_received(self, now: float) -> None:
        with self._lock:
            self._events += 1
            if self._last_event_at is None or now > self._last_event_at:
                self._last_event_at = now
            self._placed_since_event = None

    def is_silent(self, now: float, timeout_s: float) -> bool:
        """True when calls were placed more than ``timeout_s`` ago and no webhook arrived since (or none ever did
        and nothing is being dialled): the daemon should then pace from statistics and log that it does."""
        with self._lock:
            if self._last_event_at is None:
                return True
            if self._placed_since_event is not None:
                return now - self._placed_since_event > timeout_s
            return False

    # --- reading ----------------------------------------------------------------------------------------

    def view(self, campaign_id: int, now: float) -> LiveView:
        with self._lock:
            self._sweep(now)
            camp = self._campaign(campaign_id)
            talking: list[tuple[str, float]] = []
            wrapup: list[float] = []
            idle: list[tuple[str, float]] = []
            offline = 0
            # Named extensions, else the ones learned from a count-only campaign's calls.
            for ext in camp.extensions or camp.learned:
                agent = self._agent(ext, now)
                if agent.state == OFFLINE:
                    offline += 1
                elif agent.state in (RESERVED, AGENT_TALKING):
                    talking.append((ext, agent.since))
                elif agent.state == WRAPUP:
                    wrapup.append(agent.since)
                else:
                    idle.append((ext, agent.idle_since))
            if camp.extensions:
                logged = len(camp.extensions) - offline
                idle_count = len(idle)
            else:
                # This campaign's calls talking to an agent we could not name still hold an agent.
                for call in self._calls.values():
                    if call.campaign_id == campaign_id and call.state == TALKING and not call.agent:
                        talking.append(("", call.connected_at or now))
                logged = max(0, camp.count - offline)
                idle_count = max(0, logged - len(talking) - len(wrapup))
            idle.sort(key=lambda item: item[1])
            ring_bound = self.ring_bound_s(self.ring_timeout_s)
            ringing = sorted(
                c.placed_at
                for c in self._calls.values()
                if c.campaign_id == campaign_id
                and c.state == RINGING
                and now - c.placed_at <= ring_bound
            )
            waiting = sum(
                1 for c in self._calls.values() if c.campaign_id == campaign_id and c.state == WAITING
            )
            return LiveView(
                campaign_id=campaign_id,
                now=now,
                agents_logged_in=logged,
                idle=idle_count,
                talking_since=tuple(sorted(s for _, s in talking)),
                wrapup_since=tuple(sorted(wrapup)),
                ringing_since=tuple(ringing),
                waiting=waiting,
                idle_agents=tuple(idle),
                talking=tuple(sorted(talking, key=lambda item: item[1])),
                last_event_at=self._last_event_at,
            )

    def observation(self, campaign: CampaignLike, now: float) -> Observation:
        """The pacing ``Observation`` of ``campaign`` at ``now`` from live state (``live=True``), with the calls and
        wrap-ups finished since the previous call drained into it. The caller fills the database-side fields
        (abandon counts, budget, time of day) with ``dataclasses.replace``."""
        campaign_id = int(campaign.id or 0)
        if not self.is_configured(campaign_id):
            self.configure_campaign(
                campaign_id, extensions=list(campaign.agent_extensions or []), agents=campaign.agents, now=now
            )
        view = self.view(campaign_id, now)
        return Observation(
            now=now,
            time_of_day=0.0,
            agents_logged_in=view.agents_logged_in,
            idle=view.idle,
            talking_since=view.talking_since,
            wrapup_since=view.wrapup_since,
            ringing_since=view.ringing_since,
            waiting=view.waiting,
            finished=tuple(self.drain_finished(campaign_id)),
            wrapups_finished=tuple(self.drain_wrapups(campaign_id, now)),
            live=True,
        )

    def snapshot(self, now: float | None = None) -> dict[str, object]:
        """A JSON-able summary for status output."""
        now = time.time() if now is None else now
        with self._lock:
            campaigns = sorted(self._campaigns)
            last, events = self._last_event_at, self._events
        out: dict[str, object] = {
            "events": events,
            "last_event_age_s": None if last is None else round(now - last, 3),
            "campaigns": {},
        }
        per: dict[str, object] = {}
        for campaign_id in campaigns:
            v = self.view(campaign_id, now)
            per[str(campaign_id)] = {
                "agents_logged_in": v.agents_logged_in,
                "idle": v.idle,
                "talking": [{"extension": e, "since": s} for e, s in v.talking],
                "wrapup": len(v.wrapup_since),
                "ringing": len(v.ringing_since),
                "waiting": v.waiting,
            }
        out["campaigns"] = per
        return out

    def drain_finished(self, campaign_id: int) -> list[FinishedCall]:
        """Calls of the campaign that finished since the previous drain, in the order they finished."""
        with self._lock:
            camp = self._campaign(campaign_id)
            out, camp.finished = camp.finished, []
            return out

    def drain_wrapups(self, campaign_id: int, now: float) -> list[float]:
        """Durations of the campaign's agents' wrap-ups that ended since the previous drain."""
        with self._lock:
            self._sweep(now, force=True)
            camp = self._campaign(campaign_id)
            out, camp.wrapups_done = camp.wrapups_done, []
            return out

    def call(self, attempt_id: int) -> LiveCall | None:
        with self._lock:
            return self._calls.get(attempt_id)

    def attempt_for(self, pbx_call_id: str | None) -> int | None:
        if not pbx_call_id:
            return None
        with self._lock:
            return self._pbx.get(pbx_call_id)

    def campaigns(self) -> list[int]:
        with self._lock:
            return sorted(self._campaigns)

    # --- folding events (called by dialer.outcomes.events) ---------------------------------------------

    def ensure_call(self, campaign_id: int, attempt_id: int, phone: str, placed_at: float) -> LiveCall:
        """The call for ``attempt_id``, created from the attempt when the engine did not announce it."""
        with self._lock:
            call = self._calls.get(attempt_id)
            if call is None:
                self._campaign(campaign_id)
                call = self._calls[attempt_id] = LiveCall(attempt_id, campaign_id, phone, placed_at)
            return call

    def link(self, pbx_call_id: str | None, attempt_id: int) -> None:
        if not pbx_call_id:
            return
        with self._lock:
            self._pbx[pbx_call_id] = attempt_id
            call = self._calls.get(attempt_id)
            if call is not None:
                call.pbx_ids.add(pbx_call_id)

    def out_ended(
        self, attempt_id: int, now: float, disposition: str, *, answered: bool
    ) -> FinishedCall | None:
        """NOTIFY_OUT_END. A customer who never answered finishes the call here; an answered customer leg only
        stops counting as ringing (the PBX leg's events say whether an agent took it)."""
        with self._lock:
            call = self._calls.get(attempt_id)
            if call is None or call.finished:
                return None
            if answered:
                if call.state == RINGING:
                    call.state, call.answered_at = ANSWERED_UNKNOWN, now
                return None
            call.state, call.ended_at = ENDED, now
            self._release_hold(attempt_id, now)
            return self._emit(
                call,
                FinishedCall(
                    call.placed_at, now, False, False, False, max(0.0, now - call.placed_at), 0.0, disposition
                ),
            )

    def customer_answered(self, attempt_id: int, now: float) -> None:
        """NOTIFY_START for our customer: the call waits for an agent."""
        with self._lock:
            call = self._calls.get(attempt_id)
            if call is not None and call.state in (RINGING, ANSWERED_UNKNOWN):
                call.state = WAITING
                call.answered_at = call.answered_at or now

    def route(
        self, campaign_id: int, attempt_id: int, pbx_call_id: str | None, now: float,
        allowed: frozenset[str] | None = None,
    ) -> tuple[str, str | None]:
        """Pick the agent for an answered customer and reserve them.

        Returns ("agent", extension) for the agent held for this call ("only me") or else the longest-idle free
        agent of the call's campaign, ("pbx", None) when agents are free but not known by extension (count-only
        campaign: let the PBX choose), or ("none", None) when nobody is free. ``allowed``: the extensions whose
        agent sessions are ready (None: a campaign without sessions); no one else is chosen.
        """
        with self._lock:
            self._sweep(now, force=True)
            call = self._calls.get(attempt_id)
            for ext in allowed or ():
                if ext in self._agents:
                    self._admit(self._agents[ext], now)
            held = self._held_for(attempt_id)
            if held is not None and allowed is not None and held not in allowed:
                self._release_hold(attempt_id, now)
                held = None
            view = self.view(campaign_id, now)
            idle = [ext for ext, _ in view.idle_agents if allowed is None or ext in allowed]
            if held is not None or idle:
                ext = held if held is not None else idle[0]
                agent = self._agents[ext]
                agent.held = False
                agent.state, agent.since = RESERVED, now
                agent.pbx_call_id, agent.attempt_id = pbx_call_id, attempt_id
                if call is not None:
                    call.state, call.agent = ROUTED, ext
                return "agent", ext
            if view.idle > 0 and allowed is None:
                return "pbx", None
            return "none", None

    def abandoned(self, attempt_id: int, now: float) -> FinishedCall | None:
        """The customer answered and nobody was free: our answer played the abandon message or hung up."""
        with self._lock:
            call = self._calls.get(attempt_id)
            if call is None or call.finished:
                return None
            call.state, call.ended_at = ENDED, now
            answered_at = call.answered_at or now
            return self._emit(
                call,
                FinishedCall(
                    call.placed_at,
                    now,
                    True,
                    False,
                    True,
                    max(0.0, answered_at - call.placed_at),
                    0.0,
                    "answered",
                ),
            )

    def call_ended(
        self,
        pbx_call_id: str | None,
        attempt_id: int | None,
        now: float,
        *,
        agent: str | None,
        connected: bool | None,
        talk_s: float | None,
        disposition: str,
    ) -> EndResult:
        """NOTIFY_END of the PBX leg: free its agent (into wrap-up if they talked) and finish the call.

        ``connected`` None lets the live state decide from what it saw (an ANSWER); the caller passes its own
        verdict otherwise, so the FinishedCall and the stored outcome agree.
        """
        with self._lock:
            call = self._calls.get(attempt_id) if attempt_id is not None else None
            agent_answered = call is not None and call.connected_at is not None
            who = (call.agent if call is not None else None) or agent
            answered_at = call.answered_at if call is not None else None
            connected_at = call.connected_at if call is not None else None
            placed_at = call.placed_at if call is not None else None
            campaign_id = call.campaign_id if call is not None else None
            talked = False
            for ext, a in list(self._agents.items()):
                on_call = (pbx_call_id and a.pbx_call_id == pbx_call_id) or (
                    attempt_id is not None and a.attempt_id == attempt_id
                )
                if on_call and a.state in (RESERVED, AGENT_TALKING):
                    talked = talked or a.state == AGENT_TALKING
                    if a.state == AGENT_TALKING:
                        self._to_wrapup(a, now, campaign_id)
                    else:
                        self._release(ext, pbx_call_id, attempt_id, now)
            if not talked and agent and agent in self._agents and connected:
                # The ANSWER was lost but the END says this agent talked: they are in wrap-up now.
                a = self._agents[agent]
                if a.state == IDLE or (a.state == RESERVED and a.pbx_call_id in (None, pbx_call_id)):
                    self._to_wrapup(a, now, campaign_id)
            finished: FinishedCall | None = None
            if call is not None and not call.finished:
                is_connected = agent_answered if connected is None else connected
                call.state, call.ended_at = ENDED, now
                call.answered_at = answered_at = answered_at or now
                ring_s = max(0.0, answered_at - call.placed_at)
                if is_connected:
                    # Pacing compares talk times with its own clock (``now - talking_since``), so it learns
                    # from the time it saw pass; the PBX's ``duration`` only when the answer was never seen.
                    if connected_at is not None or talk_s is None:
                        talk_s = max(0.0, now - (connected_at or answered_at))
                    finished = FinishedCall(
                        call.placed_at, now, True, True, False, ring_s, talk_s, disposition
                    )
                else:
                    finished = FinishedCall(call.placed_at, now, True, False, True, ring_s, 0.0, disposition)
                self._emit(call, finished)
            return EndResult(agent_answered, who, answered_at, connected_at, placed_at, finished)

    # --- internals --------------------------------------------------------------------------------------

    def _emit(self, call: LiveCall, finished: FinishedCall) -> FinishedCall:
        call.finished = True
        self.rings.add(finished.ring_s)
        if finished.connected:
            self.talks.add(finished.talk_s)
        camp = self._campaign(call.campaign_id)
        camp.finished.append(finished)
        if len(camp.finished) > MAX_UNDRAINED:  # nobody drains (e.g. `dialer webhooks serve` alone)
            del camp.finished[: len(camp.finished) - MAX_UNDRAINED]
        return finished

    def _sweep(self, now: float, *, force: bool = False) -> None:
        for agent in self._agents.values():
            if agent.state == WRAPUP and agent.wrapup_until is not None and now >= agent.wrapup_until:
                self._finish_wrapup(agent, now)
        if not force and now - self._last_sweep < 5.0:
            return
        self._last_sweep = now
        self._heal(now)
        # A hold waits for the customer to answer at all: as long as a call may ring, then as long as a reservation.
        hold_s = self.ring_timeout_s + RESERVATION_TIMEOUT_S
        for agent in self._agents.values():
            reserved_s = hold_s if agent.held else RESERVATION_TIMEOUT_S
            if (agent.state == RESERVED and now - agent.since > reserved_s) or (
                agent.state == AGENT_TALKING and now - agent.since > STALE_TALK_S
            ):
                agent.state, agent.since, agent.idle_since, agent.held = IDLE, now, now, False
                agent.pbx_call_id, agent.attempt_id = None, None
        stale = [
            a
            for a, c in self._calls.items()
            if (c.state == ENDED and c.ended_at is not None and now - c.ended_at > KEEP_ENDED_S)
            or (
                c.state in (RINGING, ANSWERED_UNKNOWN)
                and now - c.placed_at > max(KEEP_ENDED_S, self.ring_timeout_s)
            )
            or now - c.placed_at > STALE_TALK_S
        ]
        for attempt_id in stale:
            call = self._calls.pop(attempt_id)
            for pbx in call.pbx_ids:
                if self._pbx.get(pbx) == attempt_id:
                    del self._pbx[pbx]
