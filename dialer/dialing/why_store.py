"""The database side of "why not dialling": the contact facts a verdict needs, and keeping the verdict.

``Explainer`` lives in the engine's runtime of each campaign: after every tick it builds the facts, asks the pure
``dialer.dialing.why.decide`` and, when the verdict changed, stores it on the campaign row and logs it.

Invariant: the stored reason and the log change only when the verdict differs from the one stored on the campaign
row (``Verdict.same_as``: another reason or another end time), so a campaign waiting all weekend writes and logs
once, and a daemon restarted on the same verdict neither; ``dial_reason_since`` moves only when the reason code
changes. (Pausing or stopping a campaign clears the stored verdict: ``campaigns.change_state``.) The contact facts (a scan of the campaign's open contacts) are read only on ticks
that placed nothing, at most once per ``refresh_s``, or at once when the claim just found contacts out of window.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine as DbEngine
from sqlmodel import Session, col

from dialer.db import session_scope
from dialer.dialing.why import ContactFacts, TickFacts, Verdict, WaitKind, decide, stored
from dialer.ingest import phones
from dialer.ingest.campaigns import next_due_contacts
from dialer.ingest.replan import last_calls
from dialer.logs import log_event
from dialer.models import Callback, Campaign, Contact, UTCDateTime
from dialer.outcomes.states import DUE_CONTACT_STATES, OPEN_CONTACT_STATES, CallbackState, ContactState
from dialer.pacing.observation import Observation

log = logging.getLogger("dialer.engine")

# A contact's next attempt within this of its retry lock's end waits for the lock, not for a window.
_LOCK_SLACK = timedelta(seconds=1)


def contact_facts(s: Session, campaign: Campaign, now: datetime, *, sample: int = 20) -> ContactFacts:
    """Due now, waiting (and the earliest wait, with its kind), in a call; and the first ``sample`` due
    contacts checked against their calling windows."""
    cid = campaign.id
    assert cid is not None
    dialable = sa.and_(
        col(Contact.state).in_(DUE_CONTACT_STATES), col(Contact.attempts) < campaign.max_attempts
    )
    due = sa.or_(col(Contact.next_attempt_at).is_(None), col(Contact.next_attempt_at) <= now)
    later = col(Contact.next_attempt_at) > now
    row = s.execute(
        sa.select(
            sa.func.sum(sa.case((sa.and_(dialable, due), 1), else_=0)),
            sa.func.sum(sa.case((sa.and_(dialable, later), 1), else_=0)),
            sa.func.min(sa.case((sa.and_(dialable, later), col(Contact.next_attempt_at)))),
            sa.func.sum(sa.case((col(Contact.state) == ContactState.DIALING, 1), else_=0)),
        ).where(col(Contact.campaign_id) == cid, col(Contact.state).in_(OPEN_CONTACT_STATES))
    ).one()
    due_now, waiting, next_at, in_call = int(row[0] or 0), int(row[1] or 0), _aware(row[2]), int(row[3] or 0)
    kind = _wait_kind(s, campaign, next_at, dialable) if next_at is not None else None
    cb = s.execute(
        sa.select(
            sa.func.sum(sa.case((col(Callback.next_try_at) <= now, 1), else_=0)),
            sa.func.sum(sa.case((col(Callback.next_try_at) > now, 1), else_=0)),
            sa.func.min(sa.case((col(Callback.next_try_at) > now, col(Callback.next_try_at)))),
        ).where(col(Callback.campaign_id) == cid, col(Callback.state) == CallbackState.SCHEDULED)
    ).one()
    callbacks_due, callbacks_later, callback_at = int(cb[0] or 0), int(cb[1] or 0), _aware(cb[2])
    due_now, waiting = due_now + callbacks_due, waiting + callbacks_later
    if callback_at is not None and (next_at is None or callback_at < next_at):
        next_at, kind = callback_at, WaitKind.CALLBACK
    sampled = in_window = 0
    next_window: datetime | None = None
    if due_now > callbacks_due:
        for contact in next_due_contacts(s, cid, now, sample, max_attempts=campaign.max_attempts):
            sampled += 1
            args = (contact.timezones, now, campaign.window_start, campaign.window_end, campaign.weekdays,
                    campaign.holidays)  # fmt: skip
            if phones.callable_now(*args, fallback_zone=campaign.timezone):
                in_window += 1
                continue
            opening = phones.next_window_start(*args, fallback_zone=campaign.timezone)
            if opening is not None:
                next_window = opening if next_window is None else min(next_window, opening)
    return ContactFacts(due_now=due_now, waiting=waiting, next_at=next_at, next_kind=kind, in_call=in_call,
                        due_sampled=sampled, due_in_window=in_window, due_next_window=next_window,
                        callbacks_due=callbacks_due)  # fmt: skip


def _wait_kind(
    s: Session, campaign: Campaign, next_at: datetime, dialable: sa.ColumnElement[bool]
) -> WaitKind:
    """Why the earliest waiting contact waits: its retry delay, the legal lock, or (neither covers the wait)
    its calling window."""
    assert campaign.id is not None
    first = s.execute(
        sa.select(col(Contact.id), col(Contact.attempts))
        .where(col(Contact.campaign_id) == campaign.id, dialable, col(Contact.next_attempt_at) == next_at)
        .limit(1)
    ).first()
    if first is None or not first[1]:
        return WaitKind.WINDOW  # never dialled: only a window moves it into the future
    facts = last_calls(s, campaign.id, first[0]).get(first[0])
    if facts is None:
        return WaitKind.WINDOW
    legal = facts.lock_until(campaign, legal_only=True)
    if legal is not None and next_at <= legal + _LOCK_SLACK:
        return WaitKind.LOCK
    lock = facts.lock_until(campaign)
    if lock is not None and next_at <= lock + _LOCK_SLACK:
        return WaitKind.RETRY
    return WaitKind.WINDOW


def record(db: DbEngine, campaign_id: int, verdict: Verdict, now: datetime) -> None:
    """Store ``verdict`` on the campaign row, touching nothing else (the CLI may be changing its settings)."""
    since = sa.case(
        (sa.and_(col(Campaign.dial_reason) == verdict.reason.value, col(Campaign.dial_reason_since).is_not(None)),
         col(Campaign.dial_reason_since)),
        else_=sa.literal(now, UTCDateTime()),
    )  # fmt: skip
    with session_scope(db) as s:
        s.execute(
            sa.update(Campaign)
            .where(col(Campaign.id) == campaign_id)
            .values(
                dial_reason=verdict.reason.value,
                dial_reason_detail=verdict.detail[:500] or None,
                dial_reason_until=verdict.until,
                dial_reason_since=since,
            )
            .execution_options(synchronize_session=False)
        )


@dataclass
class Explainer:
    """One campaign's verdict, kept between ticks (the engine's ``CampaignRuntime.why``)."""

    refresh_s: float = 5.0
    facts: ContactFacts | None = None
    facts_at: float = -math.inf
    last_call_at: float | None = None

    def update(
        self,
        db: DbEngine,
        campaign: Campaign,
        now: float,
        obs: Observation,
        *,
        decided: int,
        claimed: int,
        skipped_window: int,
        policy_reason: str = "",
        budget_reset_in: float | None = None,
        team: str | None = None,
    ) -> Verdict:
        """Decide this tick's verdict; store and log it if it changed."""
        assert campaign.id is not None
        now_dt = datetime.fromtimestamp(now, UTC)
        if claimed:
            self.last_call_at = now
        elif skipped_window or now - self.facts_at >= self.refresh_s:
            with session_scope(db, write=False) as s:
                self.facts = contact_facts(s, campaign, now_dt)
            self.facts_at = now
        facts = TickFacts(
            now=now_dt,
            decided=decided,
            claimed=claimed,
            skipped_window=skipped_window,
            agents_logged_in=obs.agents_logged_in,
            agents_idle=obs.idle,
            live=obs.live,
            in_progress=obs.in_progress,
            budget=obs.budget,
            budget_reset_at=now_dt + timedelta(seconds=budget_reset_in)
            if budget_reset_in is not None
            else None,
            policy_reason=policy_reason,
            since_last_call_s=None if self.last_call_at is None else now - self.last_call_at,
            contacts=None if claimed else self.facts,
            team=team,
        )
        verdict = decide(facts)
        if not verdict.same_as(stored(campaign.dial_reason, campaign.dial_reason_detail, campaign.dial_reason_until)):
            record(db, campaign.id, verdict, now_dt)
            log_event(log, logging.INFO, "dialling reason", campaign=campaign.name, reason=verdict.reason.value,
                      detail=verdict.detail or None,
                      until=verdict.until.isoformat(timespec="seconds") if verdict.until else None)  # fmt: skip
        return verdict


def _aware(value: object) -> datetime | None:
    """An aggregate's datetime: SQLite may hand back text or a naive value (always UTC here)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
