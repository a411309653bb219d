"""Scheduled callbacks as the claim and people read them: which are due now, the list, and reading a callback time.

The moves of a callback row are ``dialer.outcomes.callbacks``. Invariant of ``due_callbacks`` (the claim reads it
before fresh contacts): a callback is due when its ``next_try_at`` has come, its contact still waits for it, its
number is on no DNC list and in no live call anywhere, and, when it is "only me", that agent is ready and not
already held for another of their callbacks. The calling window is the claim's to check (as for contacts).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from dialer.models import LIVE_ATTEMPT_SQL, Agent, Attempt, Callback, Campaign, Contact, DncEntry
from dialer.outcomes.dispositions import DispositionError, ErrorKind
from dialer.outcomes.states import LIVE_ATTEMPT_STATES, CallbackState, ContactState

_RELATIVE = re.compile(r"(?:in\s+|\+)\s*(\d+)\s*([mhd])", re.IGNORECASE)
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")


class CallbackTimeError(ValueError):
    """A callback time that cannot be read; the message says what is accepted."""


def contact_zone(contact: Contact, campaign: Campaign) -> str:
    """The zone a contact's times are told in: its number's (the first, for a number spanning several), else the
    campaign's."""
    return (contact.timezones or [campaign.timezone or "UTC"])[0]


def parse_callback_at(text: str, zone: str, now: datetime) -> datetime:
    """A callback time as people give it, in the contact's ``zone``: ``2026-12-01 14:30`` (or with a ``T``,
    seconds, or an explicit offset such as ``+01:00``/``Z``, which then wins), ``14:30`` (its next occurrence),
    or ``+90m`` / ``in 2h`` / ``+1d`` from now. Returns aware UTC."""
    try:
        return _parse_callback_at(text, zone, now)
    except (OverflowError, OSError):  # "+99999999999d", or a date at the very edge of the calendar
        raise CallbackTimeError(f"callback time {text!r} is out of range") from None


def _parse_callback_at(text: str, zone: str, now: datetime) -> datetime:
    value = (text or "").strip()
    tz = ZoneInfo(zone)
    rel = _RELATIVE.fullmatch(value)
    if rel:
        size = {"m": 60, "h": 3600, "d": 86400}[rel.group(2).lower()]
        return now.astimezone(UTC) + timedelta(seconds=int(rel.group(1)) * size)
    clock = _CLOCK.fullmatch(value)
    if clock:
        hour, minute = int(clock.group(1)), int(clock.group(2))
        if hour > 23 or minute > 59:
            raise CallbackTimeError(f"callback time {text!r}: {hour:02d}:{minute:02d} is not a time of day")
        local = now.astimezone(tz).replace(hour=hour, minute=minute, second=0, microsecond=0)
        if local <= now:
            local = (local + timedelta(days=1)).replace(hour=hour, minute=minute)
        return local.astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CallbackTimeError(f"callback time {text!r}: use e.g. '2026-12-01 14:30' (the contact's local time), "
                                "'14:30', or '+2h'") from None  # fmt: skip
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)


def callback_time_for(session: Session, attempt_id: int, text: str, now: datetime) -> datetime:
    """``parse_callback_at`` in the zone of the contact of call attempt ``attempt_id``."""
    attempt = session.get(Attempt, attempt_id)
    if attempt is None:
        raise DispositionError(ErrorKind.NOT_FOUND, f"no call attempt {attempt_id}")
    contact = session.get(Contact, attempt.contact_id)
    campaign = session.get(Campaign, attempt.campaign_id)
    assert contact is not None and campaign is not None  # foreign keys
    return parse_callback_at(text, contact_zone(contact, campaign), now)


def due_callbacks(
    session: Session, campaign_id: int, now: datetime, limit: int, ready_agent_ids: Collection[int]
) -> list[tuple[Callback, Contact]]:
    """The campaign's callbacks to place now, earliest first (see the module docstring)."""
    if limit <= 0:
        return []
    dnc = (
        sa.select(sa.literal(1))
        .where(col(DncEntry.phone) == col(Contact.phone))
        .where(sa.or_(col(DncEntry.campaign_id).is_(None), col(DncEntry.campaign_id) == campaign_id))
    )
    in_call = (
        sa.select(sa.literal(1)).select_from(Attempt)
        .where(col(Attempt.phone) == col(Contact.phone)).where(sa.text(LIVE_ATTEMPT_SQL))
    )  # fmt: skip
    other = aliased(Callback)
    held = (
        sa.select(sa.literal(1)).select_from(other)
        .join(Attempt, col(Attempt.id) == col(other.attempt_id))
        .where(col(other.agent_id) == col(Callback.agent_id), col(other.state) == CallbackState.PLACED,
               col(Attempt.state).in_(LIVE_ATTEMPT_STATES))
    )  # fmt: skip
    whose = sa.or_(
        col(Callback.agent_id).is_(None),
        sa.and_(col(Callback.agent_id).in_(list(ready_agent_ids)), ~held.exists()),
    )
    stmt = (
        select(Callback, Contact)
        .join(Contact, col(Contact.id) == col(Callback.contact_id))
        .where(col(Callback.campaign_id) == campaign_id, col(Callback.state) == CallbackState.SCHEDULED,
               col(Callback.next_try_at) <= now, col(Contact.state) == ContactState.CALLBACK)
        .where(whose, ~dnc.exists(), ~in_call.exists())
        .order_by(col(Callback.next_try_at), col(Callback.id))
        .limit(limit)
    )  # fmt: skip
    return [(cb, contact) for cb, contact in session.exec(stmt).all()]


@dataclass(frozen=True)
class CallbackInfo:
    id: int
    campaign: str
    contact_id: int
    phone: str
    name: str | None
    zone: str
    due_at: datetime
    due_local: str
    next_try_at: datetime
    only_agent: str | None
    state: str
    from_attempt_id: int | None
    attempt_id: int | None
    note: str | None

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["due_at"], d["next_try_at"] = self.due_at.isoformat(), self.next_try_at.isoformat()
        return d


def list_callbacks(
    session: Session, *, campaign_id: int | None = None, states: Collection[str] | None = None,
    agent_id: int | None = None, placed_by: int | None = None, ids: Collection[int] | None = None,
    limit: int | None = None,
) -> list[CallbackInfo]:
    """Callbacks by next try (scheduled first), with the due time in the contact's zone. ``agent_id``: only an
    agent's own (kept for them, or scheduled from a call they took); ``placed_by``: the one an attempt placed;
    ``ids``: these."""
    stmt = (
        select(Callback, Contact, Campaign)
        .join(Contact, col(Contact.id) == col(Callback.contact_id))
        .join(Campaign, col(Campaign.id) == col(Callback.campaign_id))
        .order_by(col(Callback.state) != CallbackState.SCHEDULED, col(Callback.next_try_at), col(Callback.id))
    )
    if campaign_id is not None:
        stmt = stmt.where(col(Callback.campaign_id) == campaign_id)
    if states:
        stmt = stmt.where(col(Callback.state).in_(list(states)))
    if agent_id is not None:
        theirs = sa.select(col(Attempt.id)).where(col(Attempt.agent_id) == agent_id)
        stmt = stmt.where(sa.or_(col(Callback.agent_id) == agent_id, col(Callback.from_attempt_id).in_(theirs)))
    if placed_by is not None:
        stmt = stmt.where(col(Callback.attempt_id) == placed_by)
    if ids is not None:
        stmt = stmt.where(col(Callback.id).in_(list(ids)))
    if limit is not None:
        stmt = stmt.limit(limit)
    logins = {agent_id: login for agent_id, login in session.execute(sa.select(col(Agent.id), col(Agent.login)))}
    out = []
    for cb, contact, campaign in session.exec(stmt).all():
        zone = contact_zone(contact, campaign)
        local = cb.due_at.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")
        out.append(CallbackInfo(cb.id or 0, campaign.name, contact.id or 0, contact.phone, contact.name, zone,
                                cb.due_at, local, cb.next_try_at,
                                logins.get(cb.agent_id) if cb.agent_id is not None else None, cb.state,
                                cb.from_attempt_id, cb.attempt_id, cb.note))  # fmt: skip
    return out
