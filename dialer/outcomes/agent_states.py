"""An agent's session: the pure moves between agent states, and the one writer of agent rows and their events.

Presence is the agent's (or a supervisor's) choice: ``login``, ``ready``, ``pause`` with a code, ``logout``. Calls
come from the webhooks: routed or rung (``ringing``), answered (``talking``), ended (``wrapup`` for
``Campaign.wrapup_s``, or straight back to ``ready`` when the agent never talked). Wrap-up ends with the agent's
disposition (``dialer.outcomes.dispositions``) or when its limit runs out.

Invariants: every change of an agent's state or pause code writes exactly one ``AgentEvent`` (from, to, at, code,
campaign and attempt of the call), stamped with the moment it happened (a wrap-up that ran out ends at its limit,
not when someone noticed), never before the previous one, so the time in each state is the sum of the gaps
between events. A pause or logout asked for while the agent is in a call (ringing or talking) does not cut the
call: it is kept as the pending change and takes the place of wrap-up when the call ends.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Session, col, select

from dialer.models import Agent, AgentCampaign, AgentEvent, Attempt, Campaign
from dialer.outcomes.states import IN_CALL_AGENT_STATES, AgentState, Presence

# ``session.info`` key: the ids of the agents whose session a transaction changed, so whoever commits it can tell
# listeners (the agents' event streams) after the commit.
CHANGED_AGENTS = "dialer.changed_agents"


def changed_agents(session: Session) -> set[int]:
    """The agents whose session this transaction changed (and forget them)."""
    return set(session.info.pop(CHANGED_AGENTS, ()))


class AgentStateError(ValueError):
    """A presence change that is not possible from the agent's state; the message says why."""


class CallStep(StrEnum):
    """What the webhooks say about an agent's call."""

    ROUTED = "routed"  # our redirect named the agent, or the PBX rings them
    ANSWERED = "answered"
    ENDED = "ended"


@dataclass(frozen=True)
class AgentNow:
    """The session columns the moves read (an ``Agent`` row's, or a test's)."""

    state: AgentState
    pause_code: str | None = None
    pending_state: AgentState | None = None
    pending_code: str | None = None


@dataclass(frozen=True)
class AgentMove:
    """Where the session goes. ``deferred``: the request waits for the end of the call."""

    state: AgentState
    pause_code: str | None = None
    pending_state: AgentState | None = None
    pending_code: str | None = None
    deferred: bool = False


def _stay(now: AgentNow) -> AgentMove:
    return AgentMove(now.state, now.pause_code, now.pending_state, now.pending_code)


def presence_move(now: AgentNow, request: Presence, code: str | None = None) -> AgentMove:
    """The move ``request`` makes from ``now``. Pure; raises AgentStateError with a message for people."""
    state = now.state
    in_call = state in IN_CALL_AGENT_STATES
    if request == Presence.LOGIN:
        if state != AgentState.LOGGED_OUT:
            raise AgentStateError(f"already logged in ({state})")
        return AgentMove(AgentState.READY)
    if state == AgentState.LOGGED_OUT:
        raise AgentStateError("not logged in (log in first)")
    if request == Presence.LOGOUT:
        if in_call:
            return replace(_stay(now), pending_state=AgentState.LOGGED_OUT, pending_code=None, deferred=True)
        return AgentMove(AgentState.LOGGED_OUT)
    if request == Presence.PAUSE:
        if not code:
            raise AgentStateError("a pause needs a pause code")
        if in_call:
            return replace(_stay(now), pending_state=AgentState.PAUSED, pending_code=code, deferred=True)
        return AgentMove(AgentState.PAUSED, code)
    # READY: in a call it only takes back a pause or logout asked for during the call.
    if in_call:
        return replace(_stay(now), pending_state=None, pending_code=None)
    return AgentMove(AgentState.READY)


def call_move(now: AgentNow, step: CallStep, *, talked: bool = False, wrapup: bool = True) -> AgentMove:
    """The move a call event makes. Pure. A logged-out agent is not followed; an agent the PBX rings during a
    pause goes back to that pause after the call. ``talked``: the agent answered (ENDED); ``wrapup``: the
    campaign has a wrap-up time."""
    state = now.state
    if state == AgentState.LOGGED_OUT:
        return _stay(now)
    if step == CallStep.ENDED:
        if state not in IN_CALL_AGENT_STATES:
            return _stay(now)
        if now.pending_state is not None:
            return AgentMove(now.pending_state, now.pending_code)
        if talked and wrapup:
            return AgentMove(AgentState.WRAPUP)
        return AgentMove(AgentState.READY)
    target = AgentState.RINGING if step == CallStep.ROUTED else AgentState.TALKING
    if state == target or (state == AgentState.TALKING and step == CallStep.ROUTED):
        return _stay(now)
    if state == AgentState.PAUSED:
        return AgentMove(target, None, AgentState.PAUSED, now.pause_code)
    return AgentMove(target, None, now.pending_state, now.pending_code)


def wrapup_ended(now: AgentNow) -> AgentMove:
    """A disposition was saved or the wrap-up limit ran out."""
    if now.state != AgentState.WRAPUP:
        return _stay(now)
    return AgentMove(AgentState.READY)


def snapshot(agent: Agent) -> AgentNow:
    pending = AgentState(agent.pending_state) if agent.pending_state else None
    return AgentNow(AgentState(agent.state), agent.pause_code, pending, agent.pending_code)


# --- writing ------------------------------------------------------------------------------------------------


def apply(
    session: Session,
    agent: Agent,
    move: AgentMove,
    at: datetime,
    *,
    reason: str,
    campaign_id: int | None = None,
    attempt_id: int | None = None,
    wrapup_s: int = 0,
) -> bool:
    """Write ``move`` on ``agent`` at ``at``, with its event row when the state or pause code changes. Returns
    whether it changed."""
    at = max(at, agent.state_since)
    changed = move.state != agent.state or move.pause_code != agent.pause_code
    # The call the agent is on: set when a call starts holding them, never by an event of another call meanwhile.
    if move.state in (AgentState.RINGING, AgentState.TALKING) and (changed or agent.attempt_id is None):
        agent.campaign_id = campaign_id if campaign_id is not None else agent.campaign_id
        agent.attempt_id = attempt_id if attempt_id is not None else agent.attempt_id
    if changed:
        session.add(AgentEvent(agent_id=agent.id or 0, at=at, from_state=agent.state, to_state=move.state,
                               pause_code=move.pause_code, campaign_id=campaign_id, attempt_id=attempt_id,
                               reason=reason[:200]))  # fmt: skip
        agent.state_since = at
    agent.state = move.state
    agent.pause_code = move.pause_code
    agent.pending_state = move.pending_state
    agent.pending_code = move.pending_code
    agent.wrapup_until = at + timedelta(seconds=wrapup_s) if move.state == AgentState.WRAPUP else None
    agent.updated_at = at
    session.add(agent)
    if agent.id is not None:
        session.info.setdefault(CHANGED_AGENTS, set()).add(agent.id)
    return changed


def expire_wrapup(session: Session, agent: Agent, now: datetime) -> bool:
    """A wrap-up whose limit has passed ends, stamped at its limit."""
    if agent.state != AgentState.WRAPUP or agent.wrapup_until is None or agent.wrapup_until > now:
        return False
    return apply(session, agent, wrapup_ended(snapshot(agent)), agent.wrapup_until, reason="wrap-up limit",
                 campaign_id=agent.campaign_id, attempt_id=agent.attempt_id)


def change_presence(session: Session, agent: Agent, request: Presence, now: datetime,
                    code: str | None = None) -> AgentMove:
    """Log in, ready, pause (with ``code``) or log out ``agent``; raises AgentStateError (nothing written)."""
    expire_wrapup(session, agent, now)
    move = presence_move(snapshot(agent), request, code)
    apply(session, agent, move, now, reason=str(request))
    return move


def end_wrapup(session: Session, agent_id: int | None, attempt_id: int, now: datetime) -> bool:
    """The disposition of ``attempt_id`` was saved: its agent's wrap-up for that call ends."""
    agent = session.get(Agent, agent_id) if agent_id is not None else None
    if agent is None or agent.state != AgentState.WRAPUP or agent.attempt_id != attempt_id:
        return False
    if expire_wrapup(session, agent, now):
        return True
    return apply(session, agent, wrapup_ended(snapshot(agent)), now, reason="disposition",
                 campaign_id=agent.campaign_id, attempt_id=attempt_id)


# --- the webhooks' side -------------------------------------------------------------------------------------


def _at_extension(session: Session, extension: str) -> Agent | None:
    """The agent logged in at ``extension`` (at most one: logging in refuses an extension in use)."""
    return session.exec(
        select(Agent).where(col(Agent.extension) == extension, col(Agent.removed_at).is_(None),
                            col(Agent.state) != AgentState.LOGGED_OUT).limit(1)
    ).first()  # fmt: skip


def _on_call(session: Session, attempt_id: int) -> Agent | None:
    return session.exec(
        select(Agent).where(col(Agent.attempt_id) == attempt_id, col(Agent.state).in_(IN_CALL_AGENT_STATES),
                            col(Agent.removed_at).is_(None)).limit(1)
    ).first()  # fmt: skip


def agent_call_step(
    session: Session,
    step: CallStep,
    at: datetime,
    *,
    extension: str | None,
    attempt_id: int | None,
    campaign_id: int | None,
    talked: bool = False,
) -> Agent | None:
    """Follow a call event into the session of the agent it concerns (the one on this attempt's call, else the
    one logged in at ``extension``); the attempt learns which agent session took it. Returns that agent."""
    agent = _on_call(session, attempt_id) if attempt_id is not None else None
    if agent is None and extension:
        agent = _at_extension(session, extension)
    if agent is None:
        return None
    expire_wrapup(session, agent, at)
    if step == CallStep.ENDED and attempt_id is not None and agent.attempt_id not in (None, attempt_id):
        return agent  # the end of another call than the one the agent is on
    wrapup_s = 0
    if step == CallStep.ENDED and campaign_id is not None:
        campaign = session.get(Campaign, campaign_id)
        wrapup_s = campaign.wrapup_s if campaign is not None else 0
    before = snapshot(agent)
    move = call_move(before, step, talked=talked, wrapup=wrapup_s > 0)
    reason = str(step)
    if step == CallStep.ENDED and before.pending_state is not None:
        reason = f"call ended; {before.pending_state} asked for during the call"
    apply(session, agent, move, at, reason=reason, campaign_id=campaign_id, attempt_id=attempt_id,
          wrapup_s=wrapup_s)  # fmt: skip
    if attempt_id is not None and step != CallStep.ENDED and agent.attempt_id == attempt_id:
        session.execute(sa.update(Attempt).where(col(Attempt.id) == attempt_id, col(Attempt.agent_id).is_(None))
                        .values(agent_id=agent.id).execution_options(synchronize_session=False))  # fmt: skip
    return agent


def ready_extensions(session: Session, campaign_id: int, now: datetime) -> frozenset[str] | None:
    """The extensions of the campaign's agents who may take a customer now (ready, or in a wrap-up that has run
    out); None when the campaign has no agents (the live state's own view routes, as before agents existed)."""
    rows = session.execute(
        sa.select(col(Agent.extension), col(Agent.state), col(Agent.wrapup_until))
        .join(AgentCampaign, col(AgentCampaign.agent_id) == col(Agent.id))
        .where(col(AgentCampaign.campaign_id) == campaign_id, col(Agent.removed_at).is_(None))
    ).all()
    if not rows:
        return None
    return frozenset(ext for ext, state, until in rows if is_ready(state, until, now))


def is_ready(state: str, wrapup_until: datetime | None, now: datetime) -> bool:
    """Ready, or in a wrap-up whose limit has passed (not yet written back)."""
    if state == AgentState.READY:
        return True
    return state == AgentState.WRAPUP and wrapup_until is not None and wrapup_until <= now
