"""Agents' sessions as people drive them: log in, pause with a code, ready, log out (by login name).

The moves and their event rows are ``dialer.outcomes.agent_states``; this module checks what only the account
knows first. Invariants: an agent logs in only with at least one campaign and at an extension no other logged-in
agent holds (routing and the webhooks find an agent by extension); a pause code must be one of the agent's
campaigns' codes. A pause or logout during a call is accepted and waits for the call's end (``deferred``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from dialer.agents.accounts import AgentError, campaign_ids_of, get_agent
from dialer.models import Agent
from dialer.outcomes.agent_states import AgentMove, AgentStateError, change_presence
from dialer.outcomes.codes import pause_codes_of
from dialer.outcomes.dispositions import ErrorKind
from dialer.outcomes.states import AgentState, Presence


@dataclass(frozen=True)
class PresenceResult:
    login: str
    state: AgentState
    pause_code: str | None
    deferred: bool
    # The pause (``paused:lunch``) or logout waiting for the end of the agent's call.
    pending_change: str | None

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "state": self.state.value}


def pause_codes_for(session: Session, agent: Agent) -> list[str]:
    """Every pause code of the agent's campaigns, in order, once each."""
    codes: dict[str, None] = {}
    for cid in campaign_ids_of(session, agent.id or 0):
        codes.update(dict.fromkeys(p.code for p in pause_codes_of(session, cid)))
    return list(codes)


def set_presence(session: Session, login: str, request: Presence, now: datetime,
                 code: str | None = None) -> PresenceResult:
    """Log in, ready, pause (with ``code``) or log out the agent ``login``; raises AgentError, writing nothing."""
    agent = get_agent(session, login)
    if request == Presence.LOGIN:
        _check_can_log_in(session, agent)
    if request == Presence.PAUSE:
        code = (code or "").strip().lower()
        allowed = pause_codes_for(session, agent)
        if code not in allowed:
            raise AgentError(ErrorKind.INVALID, f"unknown pause code {code!r}; {agent.login}'s campaigns have: "
                             f"{', '.join(allowed) or 'none (the agent works no campaign)'}")  # fmt: skip
    try:
        move: AgentMove = change_presence(session, agent, request, now, code)
    except AgentStateError as exc:
        raise AgentError(ErrorKind.CONFLICT, f"agent {agent.login!r}: {exc}") from None
    session.flush()
    pending = move.pending_state + (f":{move.pending_code}" if move.pending_code else "") if move.pending_state else None
    return PresenceResult(agent.login, move.state, move.pause_code, move.deferred, pending)


def _check_can_log_in(session: Session, agent: Agent) -> None:
    if not campaign_ids_of(session, agent.id or 0):
        raise AgentError(ErrorKind.CONFLICT, f"agent {agent.login!r} works no campaign: add one first "
                         f"(dialer agent set {agent.login} --add-campaign NAME)")  # fmt: skip
    other = session.exec(
        select(Agent).where(col(Agent.extension) == agent.extension, col(Agent.id) != agent.id,
                            col(Agent.removed_at).is_(None), col(Agent.state) != AgentState.LOGGED_OUT)
    ).first()  # fmt: skip
    if other is not None:
        raise AgentError(ErrorKind.CONFLICT, f"extension {agent.extension} is in use by agent {other.login!r}, "
                         "who is logged in")  # fmt: skip
