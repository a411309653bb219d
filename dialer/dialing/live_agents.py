"""The agents' side of the live state: PBX extensions' presence, reservations and wrap-ups, folded from webhooks and
synced from agent sessions (``dialer.agents``).

``AgentSide`` is a part of ``dialer.dialing.live.LiveState`` (its base class), kept apart so each file stays readable:
it owns the agent records and changes them only under the live state's lock. Invariants: an agent reserved for a
call (by our redirect, the PBX ringing them, or held for an "only me" callback) is never offered to another
customer; a campaign with agent sessions counts only extensions whose agent is logged in and not paused (the others
are ``offline``), and an agent in a call stays in it whatever the session says until the call ends.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from dialer.dialing.live_types import (
    AGENT_TALKING,
    ANSWERED_UNKNOWN,
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
    CampaignRecord,
    LiveCall,
)


class AgentSide:
    """The agent half of ``LiveState`` (see the module docstring); it declares the state it shares."""

    _lock: threading.RLock
    _agents: dict[str, AgentRecord]
    _calls: dict[int, LiveCall]
    _campaigns: dict[int, CampaignRecord]
    _wrapup_map: dict[int, float]
    _default_wrapup: float

    # --- presence ---------------------------------------------------------------------------------------

    def set_agent_online(self, extension: str, online: bool, now: float) -> None:
        """Presence from another source (e.g. ``/v1/pbx/internal/<N>/status/`` polling)."""
        with self._lock:
            agent = self._agent(extension, now)
            if not online:
                agent.state, agent.since = OFFLINE, now
            elif agent.state == OFFLINE:
                agent.state, agent.since, agent.idle_since = IDLE, now, now

    def sync_team(
        self, campaign_id: int, members: Mapping[str, tuple[str, float | None]], *, wrapup_s: float, now: float
    ) -> None:
        """A campaign with agent sessions: its extensions are its agents', and each one's presence is
        ``IDLE`` (ready), ``WRAPUP`` (until the given time), ``OFFLINE`` (paused or logged out) or
        ``AGENT_TALKING`` (in a call: the webhooks follow it). A session that ended a wrap-up early (a
        disposition) ends it here too; an agent in a call is left to finish it."""
        with self._lock:
            camp = self._campaign(campaign_id)
            camp.extensions = list(members)
            camp.count = len(members)
            camp.configured = True
            self._wrapup_map[campaign_id] = camp.wrapup_s = float(wrapup_s)
            for ext, (presence, until) in members.items():
                agent = self._agent(ext, now)
                if presence == OFFLINE:
                    if agent.state in (IDLE, WRAPUP) or (agent.state == RESERVED and agent.held):
                        self._finish_wrapup(agent, now)
                        agent.state, agent.since, agent.held = OFFLINE, now, False
                        agent.pbx_call_id, agent.attempt_id = None, None
                elif presence == IDLE:
                    self._admit(agent, now)
                elif presence == WRAPUP and agent.state == OFFLINE and until is not None and until > now:
                    agent.state, agent.since = WRAPUP, now
                    agent.wrapup_until, agent.wrapup_campaign = until, campaign_id

    def _admit(self, agent: AgentRecord, now: float) -> None:
        """The agent's session is ready: offline becomes idle, and a wrap-up still running here ends."""
        if agent.state == OFFLINE:
            agent.state, agent.since, agent.idle_since = IDLE, now, now
        elif agent.state == WRAPUP:
            self._finish_wrapup(agent, now)

    def hold_agent(self, extension: str, attempt_id: int, now: float) -> bool:
        """Keep an idle agent for the "only me" callback ``attempt_id``: no other customer is routed to them
        until it is answered (and routed to them), or ends. False when the agent is not idle."""
        with self._lock:
            agent = self._agents.get(extension)
            if agent is None or agent.state != IDLE:
                return False
            agent.state, agent.since, agent.held = RESERVED, now, True
            agent.pbx_call_id, agent.attempt_id = None, attempt_id
            return True

    def _held_for(self, attempt_id: int) -> str | None:
        for ext, agent in self._agents.items():
            if agent.held and agent.state == RESERVED and agent.attempt_id == attempt_id:
                return ext
        return None

    def _release_hold(self, attempt_id: int, now: float) -> None:
        ext = self._held_for(attempt_id)
        if ext is not None:
            self._release(ext, None, attempt_id, now)

    # --- calls ------------------------------------------------------------------------------------------

    def agent_ringing(
        self, pbx_call_id: str | None, extension: str, now: float, attempt_id: int | None
    ) -> None:
        """NOTIFY_INTERNAL: the PBX rings ``extension`` for this call: that agent is taken."""
        with self._lock:
            call = self._calls.get(attempt_id) if attempt_id is not None else None
            if call is not None:
                self._learn(call.campaign_id, extension)
                if call.state in (RINGING, WAITING, ANSWERED_UNKNOWN):
                    call.state, call.agent = ROUTED, extension
                    call.answered_at = call.answered_at or now
            agent = self._agent(extension, now)
            if agent.state in (IDLE, WRAPUP):
                self._finish_wrapup(agent, now)
                agent.state, agent.since = RESERVED, now
                agent.pbx_call_id, agent.attempt_id = pbx_call_id, attempt_id

    def agent_answered(
        self, pbx_call_id: str | None, extension: str, now: float, attempt_id: int | None
    ) -> None:
        """NOTIFY_ANSWER: ``extension`` talks to the caller from now."""
        with self._lock:
            call = self._calls.get(attempt_id) if attempt_id is not None else None
            if call is not None:
                self._learn(call.campaign_id, extension)
                if call.agent and call.agent != extension:
                    self._release(call.agent, pbx_call_id, attempt_id, now)
                call.state, call.agent, call.connected_at = TALKING, extension, now
                call.answered_at = call.answered_at or now
            agent = self._agent(extension, now)
            self._finish_wrapup(agent, now)
            agent.state, agent.since, agent.held = AGENT_TALKING, now, False
            agent.pbx_call_id, agent.attempt_id = pbx_call_id, attempt_id

    def agent_leg_ended(self, pbx_call_id: str | None, extension: str, now: float, attempt_id: int | None) -> None:
        """NOTIFY_INTERNAL_END of an extension that never answered: the agent reserved for the call is free again."""
        with self._lock:
            self._release(extension, pbx_call_id, attempt_id, now)

    # --- internals --------------------------------------------------------------------------------------

    def _campaign(self, campaign_id: int) -> CampaignRecord:
        camp = self._campaigns.get(campaign_id)
        if camp is None:
            wrap = self._wrapup_map.get(campaign_id, self._default_wrapup)
            camp = self._campaigns[campaign_id] = CampaignRecord(campaign_id, wrapup_s=wrap)
        return camp

    def _agent(self, extension: str, now: float) -> AgentRecord:
        agent = self._agents.get(extension)
        if agent is None:
            agent = self._agents[extension] = AgentRecord(extension, IDLE, now, now)
        return agent

    def _learn(self, campaign_id: int, extension: str) -> None:
        camp = self._campaign(campaign_id)
        if not camp.extensions and extension and extension not in camp.learned:
            camp.learned.append(extension)

    def _to_wrapup(self, agent: AgentRecord, now: float, campaign_id: int | None) -> None:
        wrap = self._campaign(campaign_id).wrapup_s if campaign_id is not None else self._default_wrapup
        agent.pbx_call_id, agent.attempt_id, agent.held = None, None, False
        if wrap > 0:
            agent.state, agent.since = WRAPUP, now
            agent.wrapup_until, agent.wrapup_campaign = now + wrap, campaign_id
        else:
            agent.state, agent.since, agent.idle_since = IDLE, now, now

    def _release(self, extension: str, pbx_call_id: str | None, attempt_id: int | None, now: float) -> None:
        """An agent reserved for a call that never reached them goes back to idle, keeping their idle-since."""
        agent = self._agents.get(extension)
        if agent is None or agent.state != RESERVED:
            return
        if (pbx_call_id and agent.pbx_call_id == pbx_call_id) or (
            attempt_id and agent.attempt_id == attempt_id
        ):
            agent.state, agent.since, agent.held = IDLE, now, False
            agent.pbx_call_id, agent.attempt_id = None, None

    def _finish_wrapup(self, agent: AgentRecord, now: float) -> None:
        if agent.state != WRAPUP or agent.wrapup_until is None:
            return
        end = min(now, agent.wrapup_until)
        if agent.wrapup_campaign is not None:
            done = self._campaign(agent.wrapup_campaign).wrapups_done
            done.append(max(0.0, end - agent.since))
            if len(done) > MAX_UNDRAINED:
                del done[: len(done) - MAX_UNDRAINED]
        agent.state, agent.since, agent.idle_since = IDLE, end, end
        agent.wrapup_until, agent.wrapup_campaign = None, None
