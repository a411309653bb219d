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

from sqlmodel import Session

from dialer.models import Attempt, Campaign, Contact, EventLog, utcnow

# Zadarma dispositions (statistics say "call failed", webhooks "failed").
ANSWERED = "answered"
BUSY = "busy"
NO_ANSWER = "no answer"
FAILED = "call failed"
UNALLOCATED = "unallocated number"
CANCEL = "cancel"
PERMANENT_DISPOSITIONS = frozenset({UNALLOCATED})
FINAL_CONTACT_STATES = frozenset({"done", "exhausted", "invalid", "dnc"})


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
    state: str
    next_attempt_at: datetime | None
    last_disposition: str


def attempt_completion(attempt: AttemptFacts, outcome: CallOutcome, now: datetime) -> dict[str, Any]:
    """The attempt's columns (name -> value) once ``outcome`` ends it. Pure: nothing is written.

    Facts the outcome does not know (no agent, no cost yet) keep what the attempt already had, so a later,
    poorer source never erases a richer earlier one.
    """
    return {
        "disposition": outcome.disposition,
        "answered": outcome.answered,
        "connected": outcome.connected,
        "abandoned": outcome.abandoned,
        "agent": outcome.agent or attempt.agent,
        "talk_seconds": attempt.talk_seconds if outcome.talk_seconds is None else outcome.talk_seconds,
        "ring_seconds": attempt.ring_seconds if outcome.ring_seconds is None else outcome.ring_seconds,
        "cost": attempt.cost if outcome.cost is None else outcome.cost,
        "pbx_call_id": outcome.pbx_call_id or attempt.pbx_call_id,
        "placed_at": attempt.placed_at if attempt.placed_at is not None else outcome.started_at,
        "finished_at": attempt.finished_at or outcome.finished_at or now,
        "state": "completed",
        "live": False,
        "updated_at": now,
    }


def contact_transition(
    campaign: RetryPolicy,
    state: str,
    attempts: int,
    next_attempt_at: datetime | None,
    outcome: CallOutcome,
    now: datetime,
) -> ContactMove:
    """Where a contact goes when one of its attempts ends with ``outcome`` (the first time it ends). Pure."""
    last = "abandoned" if outcome.abandoned else outcome.disposition
    if state in FINAL_CONTACT_STATES:
        return ContactMove(state, next_attempt_at, last)  # e.g. put on the DNC list while the call was ringing
    if outcome.connected:
        return ContactMove("done", None, last)
    if outcome.disposition in PERMANENT_DISPOSITIONS:
        return ContactMove("invalid", None, last)
    if attempts >= campaign.max_attempts:
        return ContactMove("exhausted", None, last)
    return ContactMove("retry", now + timedelta(seconds=retry_delay_s(campaign, outcome)), last)


def complete_attempt(
    session: Session, attempt: Attempt, outcome: CallOutcome, *, now: datetime | None = None
) -> bool:
    """End ``attempt`` with ``outcome`` and move its contact on. Returns False if nothing changed.

    Idempotent: completing an already-completed attempt only refreshes the facts (statistics may add
    cost and exact talk time after a webhook ended it) and never moves the contact twice.
    """
    now = now or utcnow()
    first_time = attempt.state != "completed"
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


def fail_attempt(
    session: Session, attempt: Attempt, error: str, *, permanent: bool, now: datetime | None = None
) -> None:
    """Zadarma refused the callback: nothing rang. The contact is due again, or invalid for a bad number."""
    now = now or utcnow()
    attempt.state = "failed"
    attempt.live = False
    attempt.error = error[:500]
    attempt.finished_at = now
    attempt.updated_at = now
    session.add(attempt)
    contact = session.get(Contact, attempt.contact_id)
    campaign = session.get(Campaign, attempt.campaign_id)
    if contact is None or campaign is None:  # pragma: no cover
        return
    contact.last_disposition = "rejected"
    if contact.state in FINAL_CONTACT_STATES:
        pass
    elif permanent:
        contact.state = "invalid"
        contact.next_attempt_at = None
    elif contact.attempts >= campaign.max_attempts:
        contact.state = "exhausted"
        contact.next_attempt_at = None
    else:
        contact.state = "retry"
        contact.next_attempt_at = now + timedelta(seconds=campaign.retry_failed_s)
    contact.updated_at = now
    session.add(contact)
    session.add(EventLog(campaign_id=attempt.campaign_id, level="warning", kind="callback_rejected",
                         message=f"{attempt.phone}: {error[:300]}"))


def attempt_not_placed(session: Session, attempt: Attempt, reason: str, *, now: datetime | None = None) -> None:
    """The callback certainly never happened (never sent, or reconciliation found no call): give the
    attempt back so it does not count against the contact's cap, and make the contact due again."""
    now = now or utcnow()
    attempt.state = "not_placed"
    attempt.live = False
    attempt.error = reason[:500]
    attempt.finished_at = now
    attempt.updated_at = now
    session.add(attempt)
    contact = session.get(Contact, attempt.contact_id)
    if contact is None:  # pragma: no cover
        return
    contact.attempts = max(0, contact.attempts - 1)
    if contact.state not in FINAL_CONTACT_STATES:
        contact.state = "retry" if contact.attempts else "pending"
        contact.next_attempt_at = now
    contact.updated_at = now
    session.add(contact)
