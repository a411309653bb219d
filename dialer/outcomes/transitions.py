"""The contact and attempt state machine: what an attempt's outcome means for the contact.

Webhooks (in real time) end attempts through ``complete_attempt``; reconciliation (the record of truth) ends
thousands at once with bulk writes but takes every decision from the same two pure functions
``complete_attempt`` applies, ``attempt_completion`` and ``contact_transition``. The engine ends attempts that
never became calls through ``fail_attempt`` and ``attempt_not_placed``. Keeping every transition here is what
makes the two sources agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

import sqlalchemy as sa
from sqlmodel import Session, col, select

from dialer.models import Attempt, Campaign, Contact, EventLog, utcnow
from dialer.outcomes.callbacks import callback_given_back, cancel_callbacks
from dialer.outcomes.states import (
    DUE_CONTACT_STATES,
    FINAL_CONTACT_STATES,
    LIVE_ATTEMPT_STATES,
    WAITING_CONTACT_STATES,
    AttemptState,
    ContactState,
)

# Zadarma dispositions (statistics say "call failed", webhooks "failed").
ANSWERED = "answered"
BUSY = "busy"
NO_ANSWER = "no answer"
FAILED = "call failed"
UNALLOCATED = "unallocated number"
CANCEL = "cancel"
PERMANENT_DISPOSITIONS = frozenset({UNALLOCATED})
# A contact's last_disposition besides the dispositions above.
REJECTED = "rejected"  # fail_attempt: Zadarma refused the callback
ABANDONED = "abandoned"  # contact_transition: answered, and no agent took it


def normalise_disposition(value: str | None) -> str:
    text = (value or "").strip().lower().replace("_", " ")
    if text in ("failed", "call failed"):
        return FAILED
    if text in ("noanswer", "no answer"):
        return NO_ANSWER
    return text


@dataclass(frozen=True)
class CallOutcome:
    """What happened to one callback, from whichever source saw it."""

    disposition: str
    answered: bool
    connected: bool
    abandoned: bool
    agent: str | None = None
    talk_seconds: float | None = None
    ring_seconds: float | None = None
    cost: float | None = None
    pbx_call_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    source: str = "statistics"


def retry_delay_s(campaign: RetryPolicy, outcome: CallOutcome) -> int:
    if outcome.abandoned:
        return campaign.retry_abandoned_s
    if outcome.disposition == BUSY:
        return campaign.retry_busy_s
    if outcome.disposition in (FAILED, "no money", "line limit", "no limit", "no day limit"):
        return campaign.retry_failed_s
    return campaign.retry_no_answer_s


class AttemptFacts(Protocol):
    """The attempt columns ``attempt_completion`` reads: an ``Attempt`` or a plain record."""

    @property
    def agent(self) -> str | None: ...

    @property
    def talk_seconds(self) -> float | None: ...

    @property
    def ring_seconds(self) -> float | None: ...

    @property
    def cost(self) -> float | None: ...

    @property
    def pbx_call_id(self) -> str | None: ...

    @property
    def placed_at(self) -> datetime | None: ...

    @property
    def finished_at(self) -> datetime | None: ...


class RetryPolicy(Protocol):
    """The campaign settings ``contact_transition`` reads: a ``Campaign`` or a plain record."""

    @property
    def max_attempts(self) -> int: ...

    @property
    def retry_busy_s(self) -> int: ...

    @property
    def retry_no_answer_s(self) -> int: ...

    @property
    def retry_failed_s(self) -> int: ...

    @property
    def retry_abandoned_s(self) -> int: ...


class ContactMove(NamedTuple):
    state: ContactState
    next_attempt_at: datetime | None
    last_disposition: str


def attempt_completion(attempt: AttemptFacts, outcome: CallOutcome, now: datetime) -> dict[str, Any]:
    """The attempt's columns (name -> value) once ``outcome`` ends it. Pure: nothing is written.

    Facts the outcome does not know (no agent, no cost yet) keep what the attempt already had, so a later,
    poorer source never erases a richer earlier one. Ring time is measured finer by webhooks (receive times)
    than by statistics (whole-second timestamps): a statistics ring time only fills a blank.
    """
    return {
        "disposition": outcome.disposition,
        "answered": outcome.answered,
        "connected": outcome.connected,
        "abandoned": outcome.abandoned,
        "agent": outcome.agent or attempt.agent,
        "talk_seconds": attempt.talk_seconds if outcome.talk_seconds is None else outcome.talk_seconds,
        "ring_seconds": _ring_seconds(attempt, outcome),
        "cost": attempt.cost if outcome.cost is None else outcome.cost,
        "pbx_call_id": outcome.pbx_call_id or attempt.pbx_call_id,
        "placed_at": attempt.placed_at if attempt.placed_at is not None else outcome.started_at,
        "finished_at": attempt.finished_at or outcome.finished_at or now,
        "state": AttemptState.COMPLETED,
        "live": False,
        "updated_at": now,
    }


def _ring_seconds(attempt: AttemptFacts, outcome: CallOutcome) -> float | None:
    if outcome.ring_seconds is None:
        return attempt.ring_seconds
    if outcome.source != "webhook" and attempt.ring_seconds is not None:
        return attempt.ring_seconds
    return outcome.ring_seconds


def contact_transition(
    campaign: RetryPolicy,
    state: str,
    attempts: int,
    next_attempt_at: datetime | None,
    outcome: CallOutcome,
    now: datetime,
) -> ContactMove:
    """Where a contact goes when one of its attempts ends with ``outcome`` (the first time it ends). Pure."""
    last = ABANDONED if outcome.abandoned else outcome.disposition
    if state in FINAL_CONTACT_STATES:
        return ContactMove(ContactState(state), next_attempt_at, last)  # e.g. put on the DNC list while the call was ringing
    if outcome.connected:
        return ContactMove(ContactState.DONE, None, last)
    if outcome.disposition in PERMANENT_DISPOSITIONS:
        return ContactMove(ContactState.INVALID, None, last)
    if attempts >= campaign.max_attempts:
        return ContactMove(ContactState.EXHAUSTED, None, last)
    return ContactMove(ContactState.RETRY, now + timedelta(seconds=retry_delay_s(campaign, outcome)), last)


def complete_attempt(
    session: Session, attempt: Attempt, outcome: CallOutcome, *, now: datetime | None = None
) -> bool:
    """End ``attempt`` with ``outcome`` and move its contact on. Returns False if nothing changed.

    Idempotent: completing an already-completed attempt only refreshes the facts (statistics may add
    cost and exact talk time after a webhook ended it) and never moves the contact twice.
    """
    now = now or utcnow()
    first_time = attempt.state != AttemptState.COMPLETED
    for name, value in attempt_completion(attempt, outcome, now).items():
        setattr(attempt, name, value)
    session.add(attempt)
    if not first_time:
        return False
    contact = session.get(Contact, attempt.contact_id)
    campaign = session.get(Campaign, attempt.campaign_id)
    if contact is None or campaign is None:  # pragma: no cover - foreign keys prevent it
        return True
    move = contact_transition(campaign, contact.state, contact.attempts, contact.next_attempt_at, outcome, now)
    contact.state, contact.next_attempt_at, contact.last_disposition = move
    contact.updated_at = now
    session.add(contact)
    return True


def fail_attempt(session: Session, attempt: Attempt, error: str, *, now: datetime | None = None) -> None:
    """Zadarma refused the callback because of the number itself (invalid, unallocated): nothing rang, and the
    contact is invalid. A refusal any number would get is not the contact's failure: ``attempt_not_placed``."""
    now = now or utcnow()
    attempt.state = AttemptState.FAILED
    attempt.live = False
    attempt.error = error[:500]
    attempt.finished_at = now
    attempt.updated_at = now
    session.add(attempt)
    contact = session.get(Contact, attempt.contact_id)
    if contact is None:  # pragma: no cover
        return
    contact.last_disposition = REJECTED
    if contact.state not in FINAL_CONTACT_STATES:
        contact.state = ContactState.INVALID
        contact.next_attempt_at = None
    contact.updated_at = now
    session.add(contact)
    session.add(EventLog(campaign_id=attempt.campaign_id, level="warning", kind="callback_rejected",
                         message=f"{attempt.phone}: {error[:300]}"))


def attempt_not_placed(
    session: Session, attempt: Attempt, reason: str, *, now: datetime | None = None, due_at: datetime | None = None
) -> None:
    """The callback certainly never happened (never sent, refused for a reason that was not the number, or
    reconciliation found no call): give the attempt back so it does not count against the contact's cap, and
    make the contact due again, at ``due_at`` if given (Zadarma asked to try later), else now."""
    now = now or utcnow()
    attempt.state = AttemptState.NOT_PLACED
    attempt.live = False
    attempt.error = reason[:500]
    attempt.finished_at = now
    attempt.updated_at = now
    session.add(attempt)
    contact = session.get(Contact, attempt.contact_id)
    if contact is None:  # pragma: no cover
        return
    contact.attempts = max(0, contact.attempts - 1)
    callback = callback_given_back(session, attempt, now)
    if contact.state not in FINAL_CONTACT_STATES:
        if callback is not None:
            contact.state = ContactState.CALLBACK
            callback.next_try_at = max(callback.next_try_at, due_at or now)
            contact.next_attempt_at = callback.next_try_at
        else:
            contact.state = ContactState.RETRY if contact.attempts else ContactState.PENDING
            contact.next_attempt_at = due_at or now
    contact.updated_at = now
    session.add(contact)


def claim_contact(contact: Contact, campaign_id: int, now: datetime) -> Attempt:
    """The contact is being dialled: count the attempt and return its write-ahead row (``placing``).

    The caller commits the row before sending the callback; the partial unique index on live attempts makes a
    second live attempt for the same number fail at that commit.
    """
    contact.state = ContactState.DIALING
    contact.attempts += 1
    contact.updated_at = now
    return Attempt(campaign_id=campaign_id, contact_id=contact.id or 0, phone=contact.phone,
                   state=AttemptState.PLACING, created_at=now, updated_at=now)


def attempt_placed(attempt: Attempt, placed_at: datetime | None, now: datetime) -> None:
    """Zadarma accepted the callback: a call exists (its outcome comes from webhooks or statistics)."""
    attempt.state = AttemptState.PLACED
    attempt.placed_at = placed_at
    attempt.updated_at = now


def attempt_uncertain(attempt: Attempt, reason: str, now: datetime) -> None:
    """The request may or may not have reached Zadarma: only reconciliation may decide; never re-send it."""
    attempt.state = AttemptState.UNCERTAIN
    attempt.sent_at = attempt.sent_at or attempt.created_at
    attempt.error = reason[:500]
    attempt.updated_at = now


def attempts_in_flight_uncertain(session: Session, attempt_ids: set[int], reason: str, now: datetime) -> None:
    """Bulk form of ``attempt_uncertain`` for requests still in flight when the daemon stops."""
    session.exec(
        sa.update(Attempt)
        .where(col(Attempt.id).in_(attempt_ids), col(Attempt.state) == AttemptState.PLACING)
        .values(state=AttemptState.UNCERTAIN, error=reason[:500], updated_at=now)
    )


def placing_attempts(session: Session) -> list[Attempt]:
    """Write-ahead rows whose request may or may not have left (a crash, or a stop before sending)."""
    return list(session.exec(select(Attempt).where(col(Attempt.state) == AttemptState.PLACING)).all())


def mark_dnc_contacts(session: Session, campaign_id: int, phones: list[str], now: datetime) -> int:
    """Contacts not yet dialled, waiting for a retry or for a scheduled callback leave the campaign for good: their
    number is on the DNC list (and their callbacks are cancelled). A contact in a call stays until the call ends
    (``contact_transition`` then keeps any final state)."""
    waiting = (
        sa.select(col(Contact.id))
        .where(col(Contact.campaign_id) == campaign_id)
        .where(col(Contact.phone).in_(phones))
        .where(col(Contact.state).in_(WAITING_CONTACT_STATES))
    )
    ids = [int(i) for i in session.execute(waiting).scalars()]
    if not ids:
        return 0
    cancel_callbacks(session, ids, now)
    upd = (
        sa.update(Contact)
        .where(col(Contact.id).in_(ids), col(Contact.state).in_(WAITING_CONTACT_STATES))
        .values(state=ContactState.DNC, updated_at=now)
    )
    return int(getattr(session.execute(upd), "rowcount", 0) or 0)


# --- re-planning (settings changed, or `dialer campaign reschedule`) -----------------------------------------


def retry_delay_after(campaign: RetryPolicy, disposition: str | None, abandoned: bool) -> int:
    """``retry_delay_s`` for a call known only by its stored disposition (an attempt's or a contact's)."""
    if disposition == REJECTED:
        return campaign.retry_failed_s
    abandoned = abandoned or disposition == ABANDONED
    outcome = CallOutcome(disposition=normalise_disposition(disposition), answered=abandoned, connected=False,
                          abandoned=abandoned)
    return retry_delay_s(campaign, outcome)


def retry_lock_until(
    campaign: RetryPolicy,
    *,
    last_end: datetime | None,
    last_disposition: str | None,
    last_abandoned: bool,
    last_abandon_end: datetime | None,
    legal_only: bool = False,
) -> datetime | None:
    """The earliest time a contact may be dialled again after its calls (None: no lock). Pure.

    The retry delay runs from the end of its last call and depends on that call's outcome; the legal lock (the
    ``retry_abandoned`` delay) runs from its last abandoned call, whatever came after. ``legal_only`` (an explicit
    `reschedule --now`) drops the retry delay and keeps the legal lock.
    """
    times = []
    if last_abandon_end is not None:
        times.append(last_abandon_end + timedelta(seconds=campaign.retry_abandoned_s))
    if not legal_only and last_end is not None:
        delay = retry_delay_after(campaign, last_disposition, last_abandoned)
        times.append(last_end + timedelta(seconds=delay))
    return max(times) if times else None


def reschedule_contacts(session: Session, contact_ids: list[int], next_attempt_at: datetime, now: datetime) -> int:
    """Move due contacts' next attempt; a contact that has meanwhile gone into a call (or out of the due states)
    is left alone, so a re-plan never touches a live attempt."""
    live = (
        sa.select(sa.literal(1))
        .select_from(Attempt)
        .where(col(Attempt.contact_id) == col(Contact.id), col(Attempt.state).in_(LIVE_ATTEMPT_STATES))
    )
    upd = (
        sa.update(Contact)
        .where(col(Contact.id).in_(contact_ids), col(Contact.state).in_(DUE_CONTACT_STATES), ~live.exists())
        .values(next_attempt_at=next_attempt_at, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(session.execute(upd), "rowcount", 0) or 0)


def exhaust_over_cap(session: Session, campaign_id: int, max_attempts: int, now: datetime) -> int:
    """The attempt cap was lowered: contacts waiting to be dialled that already used it up are exhausted (left
    due, the claim would skip them for ever and the campaign would never finish). Exhausted contacts stay so
    when the cap is raised again: a final state is final."""
    upd = (
        sa.update(Contact)
        .where(col(Contact.campaign_id) == campaign_id, col(Contact.state).in_(DUE_CONTACT_STATES),
               col(Contact.attempts) >= max_attempts)
        .values(state=ContactState.EXHAUSTED, next_attempt_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(session.execute(upd), "rowcount", 0) or 0)
