"""An agent's disposition of a call: what it means for the contact (pure), and saving it.

A connected call has already made its contact ``done`` (``transitions.contact_transition``); the disposition of
that call is the one thing that may move the contact on from there: a final success or failure leaves it ``done``
(the attempt records which), a retry makes it due again after the campaign's no-answer delay (or ``exhausted`` at
the attempt cap), a callback schedules one (``dialer.outcomes.callbacks``), and "do not call" puts the number on the
global DNC list at once and ends the contact (and the number's waiting contacts in every campaign).

Invariants: one disposition per attempt, saved only for a call that reached an agent, and, when an agent saves
it, only by the agent the call was routed to. Everything is checked before anything is written: an error leaves
the database as it was. The contact moves only while it is still where that call put it (``done``, and that call
is its latest attempt); otherwise the disposition is recorded on the attempt alone. Retries and callbacks never
come before the contact's legal redial lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Session, col

from dialer.models import Agent, Attempt, Campaign, Contact, DncEntry, EventLog
from dialer.outcomes.agent_states import end_wrapup
from dialer.outcomes.callbacks import legal_lock_until, schedule_callback
from dialer.outcomes.codes import DispositionDef, describe, dispositions_of, find_disposition
from dialer.outcomes.states import AttemptState, ContactState, DispositionMeaning
from dialer.outcomes.transitions import mark_dnc_contacts

MAX_NOTE = 2000
# How far ahead a callback may be scheduled, and how far in the past a time may be (clock skew, a slow form).
MAX_CALLBACK_AHEAD = timedelta(days=366)
PAST_SLACK = timedelta(minutes=5)


class ErrorKind(StrEnum):
    """What kind of refusal: the API maps these to 404, 403, 409 and 422."""

    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    CONFLICT = "conflict"
    INVALID = "invalid"


class DispositionError(ValueError):
    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class DispositionMove:
    """Where the contact goes: its state and next attempt (a callback's first try for ``callback``)."""

    state: ContactState
    next_attempt_at: datetime | None = None


def disposition_move(
    meaning: DispositionMeaning,
    *,
    attempts: int,
    max_attempts: int,
    retry_delay_s: int,
    now: datetime,
    lock_until: datetime | None = None,
    callback_at: datetime | None = None,
) -> DispositionMove:
    """The contact's move for a disposition of ``meaning``, from ``done``. Pure."""
    if meaning in (DispositionMeaning.SUCCESS, DispositionMeaning.FAILURE):
        return DispositionMove(ContactState.DONE)
    if meaning == DispositionMeaning.DNC:
        return DispositionMove(ContactState.DNC)
    if meaning == DispositionMeaning.RETRY:
        if attempts >= max_attempts:
            return DispositionMove(ContactState.EXHAUSTED)
        nxt = now + timedelta(seconds=retry_delay_s)
        return DispositionMove(ContactState.RETRY, max(nxt, lock_until) if lock_until else nxt)
    if callback_at is None:
        raise ValueError("a callback disposition needs its time")
    return DispositionMove(ContactState.CALLBACK, max(callback_at, lock_until) if lock_until else callback_at)


@dataclass(frozen=True)
class DispositionResult:
    attempt_id: int
    code: str
    meaning: DispositionMeaning
    contact_id: int
    contact_state: str
    contact_moved: bool
    callback_id: int | None = None
    callback_next_try_at: datetime | None = None
    dnc_added: bool = False


def check_disposition(
    session: Session,
    attempt_id: int,
    code: str,
    *,
    agent_id: int | None,
    note: str | None,
    callback_at: datetime | None,
    only_me: bool,
    now: datetime,
) -> tuple[Attempt, DispositionDef]:
    """Every check ``save_disposition`` makes, writing nothing; raises DispositionError."""
    attempt = session.get(Attempt, attempt_id)
    if attempt is None:
        raise DispositionError(ErrorKind.NOT_FOUND, f"no call attempt {attempt_id}")
    if agent_id is not None and attempt.agent_id != agent_id:
        raise DispositionError(ErrorKind.FORBIDDEN, f"attempt {attempt_id} was not routed to this agent")
    defs = dispositions_of(session, attempt.campaign_id)
    found = find_disposition(defs, code)
    if found is None:
        raise DispositionError(ErrorKind.INVALID,
                               f"unknown disposition {code!r}; this campaign's are: {describe(defs)}")  # fmt: skip
    if attempt.agent_disposition:
        raise DispositionError(ErrorKind.CONFLICT,
                               f"attempt {attempt_id} already has the disposition {attempt.agent_disposition!r}")  # fmt: skip
    if attempt.state != AttemptState.COMPLETED:
        raise DispositionError(ErrorKind.INVALID, f"attempt {attempt_id} is {attempt.state}: a disposition is "
                               "saved once the call has ended")  # fmt: skip
    if not attempt.connected:
        raise DispositionError(ErrorKind.INVALID, f"attempt {attempt_id} never reached an agent "
                               f"({attempt.disposition or 'no outcome'}): nothing to disposition")  # fmt: skip
    if note is not None and len(note) > MAX_NOTE:
        raise DispositionError(ErrorKind.INVALID, f"the note is {len(note)} characters; at most {MAX_NOTE}")
    if found.meaning == DispositionMeaning.CALLBACK:
        if callback_at is None:
            raise DispositionError(ErrorKind.INVALID, f"{found.code!r} schedules a callback: give its time")
        if callback_at < now - PAST_SLACK:
            raise DispositionError(ErrorKind.INVALID, f"the callback time {callback_at.isoformat()} is in the past")
        if callback_at > now + MAX_CALLBACK_AHEAD:
            raise DispositionError(ErrorKind.INVALID, "the callback time is more than a year ahead")
        if only_me and attempt.agent_id is None:
            raise DispositionError(ErrorKind.INVALID, f"attempt {attempt_id} was routed to no agent session, so "
                                   "it has no agent to keep the callback for (leave out only-me)")  # fmt: skip
    elif callback_at is not None or only_me:
        raise DispositionError(ErrorKind.INVALID, f"{found.code!r} does not schedule a callback: a callback time "
                               "and only-me go with a call-back disposition")  # fmt: skip
    return attempt, found


def save_disposition(
    session: Session,
    attempt_id: int,
    code: str,
    *,
    now: datetime,
    agent_id: int | None = None,
    note: str | None = None,
    callback_at: datetime | None = None,
    only_me: bool = False,
) -> DispositionResult:
    """Record the disposition ``code`` (a code or its hotkey) of a call and move its contact. ``agent_id``: the
    agent saving it (None: a supervisor). Raises DispositionError having written nothing."""
    attempt, found = check_disposition(session, attempt_id, code, agent_id=agent_id, note=note,
                                       callback_at=callback_at, only_me=only_me, now=now)  # fmt: skip
    contact = session.get(Contact, attempt.contact_id)
    campaign = session.get(Campaign, attempt.campaign_id)
    assert contact is not None and campaign is not None  # foreign keys
    attempt.agent_disposition = found.code
    attempt.agent_note = note.strip() if note and note.strip() else None
    attempt.disposition_at = now
    attempt.updated_at = now
    session.add(attempt)
    latest = session.execute(sa.select(sa.func.max(col(Attempt.id))).where(col(Attempt.contact_id) == contact.id)).scalar()
    movable = contact.state == ContactState.DONE and latest == attempt.id
    callback = None
    dnc_added = False
    if found.meaning == DispositionMeaning.DNC:
        dnc_added = _add_dnc(session, contact.phone, attempt, found, now)
    if movable:
        lock = legal_lock_until(session, campaign, contact.id or 0)
        move = disposition_move(found.meaning, attempts=contact.attempts, max_attempts=campaign.max_attempts,
                                retry_delay_s=campaign.retry_no_answer_s, now=now, lock_until=lock,
                                callback_at=callback_at)  # fmt: skip
        if move.state == ContactState.CALLBACK:
            assert callback_at is not None
            callback = schedule_callback(session, contact, campaign, callback_at, now,
                                         agent_id=attempt.agent_id if only_me else None,
                                         from_attempt_id=attempt.id, note=attempt.agent_note)  # fmt: skip
        else:
            contact.state, contact.next_attempt_at = move.state, move.next_attempt_at
            contact.updated_at = now
            session.add(contact)
    end_wrapup(session, attempt.agent_id, attempt.id or 0, now)
    session.flush()
    return DispositionResult(
        attempt_id=attempt.id or 0, code=found.code, meaning=found.meaning, contact_id=contact.id or 0,
        contact_state=contact.state, contact_moved=movable, callback_id=callback.id if callback else None,
        callback_next_try_at=callback.next_try_at if callback else None, dnc_added=dnc_added,
    )  # fmt: skip


def _add_dnc(session: Session, phone: str, attempt: Attempt, found: DispositionDef, now: datetime) -> bool:
    """The number goes on the global DNC list, and its waiting contacts in every campaign leave at once."""
    exists = session.execute(
        sa.select(col(DncEntry.id)).where(col(DncEntry.phone) == phone, col(DncEntry.campaign_id).is_(None))
    ).first()
    if exists is None:
        who = session.get(Agent, attempt.agent_id) if attempt.agent_id is not None else None
        by = f" by agent {who.login}" if who is not None else ""
        session.add(DncEntry(phone=phone, campaign_id=None, created_at=now,
                             reason=f"disposition {found.code!r} of attempt {attempt.id}{by}"))  # fmt: skip
        session.add(EventLog(campaign_id=attempt.campaign_id, kind="dnc_disposition",
                             message=f"{phone} added to the do-not-call list{by}"))  # fmt: skip
    # Campaign by campaign, so each lookup uses the (campaign_id, phone) unique index.
    for campaign_id in session.execute(sa.select(col(Campaign.id))).scalars():
        mark_dnc_contacts(session, int(campaign_id), [phone], now)
    return exists is None
