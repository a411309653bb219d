"""The contact and attempt state machine: what an attempt's outcome means for the contact.

Webhooks (in real time) and reconciliation (the record of truth) both end attempts through
``complete_attempt``; the engine ends attempts that never became calls through ``fail_attempt`` and
``attempt_not_placed``. Keeping every transition here is what makes the two sources agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

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


def retry_delay_s(campaign: Campaign, outcome: CallOutcome) -> int:
    if outcome.abandoned:
        return campaign.retry_abandoned_s
    if outcome.disposition == BUSY:
        return campaign.retry_busy_s
    if outcome.disposition in (FAILED, "no money", "line limit", "no limit", "no day limit"):
        return campaign.retry_failed_s
    return campaign.retry_no_answer_s


def complete_attempt(
    session: Session, attempt: Attempt, outcome: CallOutcome, *, now: datetime | None = None
) -> bool:
    """End ``attempt`` with ``outcome`` and move its contact on. Returns False if nothing changed.

    Idempotent: completing an already-completed attempt only refreshes the facts (statistics may add
    cost and exact talk time after a webhook ended it) and never moves the contact twice.
    """
    now = now or utcnow()
    first_time = attempt.state != "completed"
    attempt.disposition = outcome.disposition
    attempt.answered = outcome.answered
    attempt.connected = outcome.connected
    attempt.abandoned = outcome.abandoned
    attempt.agent = outcome.agent or attempt.agent
    if outcome.talk_seconds is not None:
        attempt.talk_seconds = outcome.talk_seconds
    if outcome.ring_seconds is not None:
        attempt.ring_seconds = outcome.ring_seconds
    if outcome.cost is not None:
        attempt.cost = outcome.cost
    attempt.pbx_call_id = outcome.pbx_call_id or attempt.pbx_call_id
    if attempt.placed_at is None and outcome.started_at is not None:
        attempt.placed_at = outcome.started_at
    attempt.finished_at = attempt.finished_at or outcome.finished_at or now
    attempt.state = "completed"
    attempt.live = False
    attempt.updated_at = now
    session.add(attempt)
    if not first_time:
        return False
    contact = session.get(Contact, attempt.contact_id)
    campaign = session.get(Campaign, attempt.campaign_id)
    if contact is None or campaign is None:  # pragma: no cover - foreign keys prevent it
        return True
    contact.last_disposition = "abandoned" if outcome.abandoned else outcome.disposition
    if contact.state in FINAL_CONTACT_STATES:
        pass  # e.g. put on the DNC list while the call was ringing: it stays there
    elif outcome.connected:
        contact.state = "done"
        contact.next_attempt_at = None
    elif outcome.disposition in PERMANENT_DISPOSITIONS:
        contact.state = "invalid"
        contact.next_attempt_at = None
    elif contact.attempts >= campaign.max_attempts:
        contact.state = "exhausted"
        contact.next_attempt_at = None
    else:
        contact.state = "retry"
        contact.next_attempt_at = now + timedelta(seconds=retry_delay_s(campaign, outcome))
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
