"""What an agent sees: their state, their campaigns with codes, their callbacks, and the record of a call routed to
them (the screen-pop: the contact's row, earlier calls and dispositions, the local time, the campaign's script).

Reading only: every function here takes an open session and writes nothing. Invariants: a wrap-up whose limit has
passed reads as ``ready`` from its limit (as everywhere else), and a call's record is shown only to the agent the
call was routed to (``call_for_agent`` raises ``ViewError`` FORBIDDEN for another's, NOT_FOUND for no such call).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, col, select

from dialer.agents.accounts import campaign_ids_of
from dialer.agents.api_models import (
    AgentOut,
    CallbackOut,
    CallRecord,
    CampaignOut,
    CodeOut,
    ContactOut,
    DispositionCodeOut,
    HistoryOut,
    StateOut,
)
from dialer.agents.callbacks import CallbackInfo, contact_zone, list_callbacks
from dialer.models import Agent, Attempt, Campaign, Contact
from dialer.outcomes.agent_states import is_ready
from dialer.outcomes.codes import dispositions_of, pause_codes_of
from dialer.outcomes.dispositions import DispositionError, ErrorKind
from dialer.outcomes.states import AgentState, CallbackState

HISTORY = 20  # earlier calls shown with a record
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_ .-]{0,63})\}")
_CALL_STATES = (AgentState.RINGING, AgentState.TALKING, AgentState.WRAPUP)


def agent_out(agent: Agent) -> AgentOut:
    return AgentOut(id=agent.id or 0, login=agent.login, name=agent.name, extension=agent.extension)


def state_out(agent: Agent, now: datetime) -> StateOut:
    """The agent's session now (a wrap-up past its limit reads as ready from its limit)."""
    state, since, until = agent.state, agent.state_since, agent.wrapup_until
    if state == AgentState.WRAPUP and until is not None and is_ready(state, until, now):
        state, since, until = AgentState.READY, until, None
    pending = agent.pending_state + (f":{agent.pending_code}" if agent.pending_code else "") \
        if agent.pending_state else None  # fmt: skip
    return StateOut(state=state, pause_code=agent.pause_code if state == AgentState.PAUSED else None, since=since,
                    pending_change=pending, wrapup_until=until if state == AgentState.WRAPUP else None,
                    attempt_id=agent.attempt_id)  # fmt: skip


def dispositions_out(session: Session, campaign_id: int) -> list[DispositionCodeOut]:
    return [DispositionCodeOut(code=d.code, label=d.label, hotkey=d.hotkey, meaning=d.meaning.value)
            for d in dispositions_of(session, campaign_id)]  # fmt: skip


def campaigns_out(session: Session, agent: Agent) -> list[CampaignOut]:
    ids = campaign_ids_of(session, agent.id or 0)
    rows = session.exec(select(Campaign).where(col(Campaign.id).in_(ids)).order_by(col(Campaign.name))).all()
    return [CampaignOut(id=c.id or 0, name=c.name, state=c.state, wrapup_s=c.wrapup_s,
                        pause_codes=[CodeOut(code=p.code, label=p.label) for p in pause_codes_of(session, c.id or 0)],
                        dispositions=dispositions_out(session, c.id or 0)) for c in rows]  # fmt: skip


def callback_out(info: CallbackInfo, now: datetime) -> CallbackOut:
    return CallbackOut.model_validate({**info.as_dict(),
                                       "due": info.state == CallbackState.SCHEDULED and info.next_try_at <= now})


def my_callbacks(session: Session, agent: Agent, now: datetime, limit: int) -> list[CallbackOut]:
    """The agent's scheduled callbacks (kept for them, or scheduled from their calls), earliest first."""
    rows = list_callbacks(session, states=[CallbackState.SCHEDULED], agent_id=agent.id or 0, limit=limit)
    return [callback_out(r, now) for r in rows]


# --- the call record ---------------------------------------------------------------------------------------------


def current_attempt(agent: Agent, now: datetime) -> int | None:
    """The call routed to the agent now: ringing, talking, or in its wrap-up (until the limit)."""
    if agent.attempt_id is None or agent.state not in _CALL_STATES:
        return None
    if agent.state == AgentState.WRAPUP and is_ready(agent.state, agent.wrapup_until, now):
        return None
    return agent.attempt_id


def call_for_agent(session: Session, agent: Agent, attempt_id: int, now: datetime) -> CallRecord:
    """The record of ``attempt_id``, which must have been routed to ``agent``."""
    attempt = session.get(Attempt, attempt_id)
    if attempt is None:
        raise DispositionError(ErrorKind.NOT_FOUND, f"no call attempt {attempt_id}")
    if attempt.agent_id != agent.id and not (agent.attempt_id == attempt_id and agent.state in _CALL_STATES):
        raise DispositionError(ErrorKind.FORBIDDEN, f"call attempt {attempt_id} was not routed to you")
    return call_record(session, attempt, agent, now)


def call_record(session: Session, attempt: Attempt, agent: Agent, now: datetime) -> CallRecord:
    contact = session.get(Contact, attempt.contact_id)
    campaign = session.get(Campaign, attempt.campaign_id)
    assert contact is not None and campaign is not None  # foreign keys
    zone = contact_zone(contact, campaign)
    try:
        local = now.astimezone(ZoneInfo(zone))
    except Exception:  # a zone this system's tz database lacks: tell the time in UTC rather than fail the pop
        zone, local = "UTC", now
    placed = list_callbacks(session, placed_by=attempt.id or 0, limit=1)
    callback = callback_out(placed[0], now) if placed else None
    state = state_out(agent, now)
    return CallRecord(
        attempt_id=attempt.id or 0, attempt_state=attempt.state, agent_state=state.state, campaign=campaign.name,
        campaign_id=campaign.id or 0, script=render_script(campaign.script, contact),
        contact=ContactOut(id=contact.id or 0, name=contact.name, phone=contact.phone, fields=dict(contact.fields or {}),
                           zone=zone, local_time=local, state=contact.state, attempts=contact.attempts),
        history=history(session, contact.id or 0, attempt.id or 0), callback=callback,
        dispositions=dispositions_out(session, campaign.id or 0), disposition=attempt.agent_disposition,
        note=attempt.agent_note,
        wrapup_until=state.wrapup_until if agent.attempt_id == attempt.id else None,
    )  # fmt: skip


def history(session: Session, contact_id: int, current_id: int) -> list[HistoryOut]:
    """The contact's calls, newest first, with who took each and what they said."""
    rows = session.exec(
        select(Attempt).where(col(Attempt.contact_id) == contact_id)
        .order_by(col(Attempt.created_at).desc(), col(Attempt.id).desc()).limit(HISTORY)
    ).all()  # fmt: skip
    ids = {a.agent_id for a in rows if a.agent_id is not None}
    q = sa.select(col(Agent.id), col(Agent.login)).where(col(Agent.id).in_(ids))
    logins = {agent_id: login for agent_id, login in session.execute(q)} if ids else {}
    return [HistoryOut(attempt_id=a.id or 0, at=a.placed_at or a.sent_at or a.created_at, finished_at=a.finished_at,
                       outcome=a.disposition, connected=a.connected, abandoned=a.abandoned,
                       agent=logins.get(a.agent_id) if a.agent_id is not None else None,
                       disposition=a.agent_disposition, note=a.agent_note, talk_seconds=a.talk_seconds,
                       current=a.id == current_id) for a in rows]  # fmt: skip


def render_script(script: str | None, contact: Contact) -> str | None:
    """The campaign's script with ``{name}``, ``{phone}`` and the list's columns (``{account}``) filled in; a
    placeholder the contact has no value for stays as written, so a typo shows instead of vanishing."""
    if not script:
        return None
    values: dict[str, Any] = {str(k).strip().lower(): v for k, v in (contact.fields or {}).items()}
    values.update({"name": contact.name or "", "phone": contact.phone})

    def fill(match: re.Match[str]) -> str:
        value = values.get(match.group(1).strip().lower())
        return match.group(0) if value is None else str(value)

    return _PLACEHOLDER.sub(fill, script)
