"""Where an answered customer goes: the JSON answer to NOTIFY_START (``redirect``, ``caller_name``, abandon action).

Invariant: an answer names an agent only after ``LiveState.route`` reserved that agent for this call, so two
customers are never sent to one agent; for a campaign with agent sessions, only an agent whose session is ready
(read from the database at that moment, ``agent_states.ready_extensions``) is ever named, and their session moves
to ``ringing`` for this call in the same transaction. A caller who is none of our live calls is only ever sent to the blacklist (a
DNC number) or left to the PBX's own routing (``{}``); our customer nobody can take gets the campaign's abandon
action (``abandon_answer``), and the caller (``dialer.outcomes.events``) ends that attempt as abandoned.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from dialer.dialing.live import LiveState
from dialer.logs import log_event
from dialer.models import Contact, DncEntry
from dialer.outcomes.agent_states import CallStep, agent_call_step, ready_extensions

log = logging.getLogger("dialer.webhooks")

_CONTACT: sa.Table = Contact.__table__  # type: ignore[attr-defined]
_DNC: sa.Table = DncEntry.__table__  # type: ignore[attr-defined]
# Statements built once: building a statement per event costs more than running it.
_CONTACT_NAME = sa.select(_CONTACT.c.name).where(_CONTACT.c.id == sa.bindparam("cid"))
_ON_DNC = sa.select(_DNC.c.id).where(_DNC.c.phone == sa.bindparam("phone")).limit(1)


def abandon_answer(action: str | None) -> dict[str, Any]:
    """The NOTIFY_START answer for a customer nobody can take: ``hangup`` or ``ivr_play:<file id>``."""
    text = (action or "hangup").strip()
    if text.startswith("ivr_play:") and text[len("ivr_play:") :].strip():
        return {"ivr_play": text[len("ivr_play:") :].strip()}
    return {"hangup": 1}


def caller_answer(session: Session, phone: str | None) -> dict[str, Any]:
    """The answer for a caller who is none of our live calls: a DNC number to the blacklist, anyone else to the
    PBX's own routing."""
    if phone and session.connection().execute(_ON_DNC, {"phone": phone}).first() is not None:
        log_event(log, logging.INFO, "DNC number calling in: blacklisted", phone=phone)
        return {"redirect": "blacklist"}
    return {}


def route_customer(
    session: Session,
    live: LiveState,
    *,
    campaign_id: int,
    attempt_id: int,
    contact_id: int,
    pbx_call_id: str | None,
    now: float,
) -> dict[str, Any] | None:
    """Our customer answered: the call now waits, and the agent held for it ("only me") or else the longest-idle
    free agent is reserved for it.

    The answer redirects to that agent (with the contact's name as ``caller_name``), or only names the caller when
    agents are free but not known by extension (the PBX picks one); None when nobody is free.
    """
    live.customer_answered(attempt_id, now)
    name = session.connection().execute(_CONTACT_NAME, {"cid": contact_id}).scalar()
    at = datetime.fromtimestamp(now, UTC)
    allowed = ready_extensions(session, campaign_id, at)
    kind, extension = live.route(campaign_id, attempt_id, pbx_call_id, now, allowed=allowed)
    if kind == "agent" and extension:
        if allowed is not None:
            agent_call_step(session, CallStep.ROUTED, at, extension=extension, attempt_id=attempt_id,
                            campaign_id=campaign_id)  # fmt: skip
        return {"redirect": extension, **({"caller_name": name} if name else {})}
    if kind == "pbx":
        return {"caller_name": name} if name else {}
    return None
