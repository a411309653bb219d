"""The tick's claim: pick up to ``n`` due calls and commit an attempt in ``placing`` for each.

Due scheduled callbacks come first (``dialer.agents.callbacks.due_callbacks``: earliest first, "only me" ones only
while their agent is ready, and at most one per agent at a time), then fresh contacts
(``dialer.ingest.campaigns.next_due_contacts``). Both are checked against the contact's calling window here: one
outside it waits for its next opening (a callback keeps the time it was asked for in ``due_at``).

One person, one live call: the due queries skip numbers already in a live call in any campaign, and the unique index
on live attempts' numbers refuses a claim that raced past them (another campaign's tick, or another daemon on
PostgreSQL, claimed the same number since the query read). Each claim is written in its own SAVEPOINT, so a lost race
costs that one contact (it stays due), never the rest of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine as DbEngine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from dialer.agents.callbacks import due_callbacks
from dialer.agents.presence import team_presence
from dialer.db import session_scope
from dialer.ingest.campaigns import next_due_contacts
from dialer.ingest.phones import callable_now, next_window_start
from dialer.models import Attempt, Callback, Campaign, Contact
from dialer.outcomes.callbacks import callback_claimed, postpone_callback
from dialer.outcomes.transitions import claim_contact


@dataclass
class Claim:
    attempts: list[Attempt] = field(default_factory=list)
    # Attempt id -> the extension of the agent its "only me" callback is for (the live state holds them).
    holds: dict[int, str] = field(default_factory=dict)
    callbacks: int = 0
    skipped_window: int = 0
    lost: int = 0


def claim(db: DbEngine, campaign: Campaign, n: int, now: datetime, *, overfetch: int) -> Claim:
    """Claim up to ``n`` calls (see the module docstring). Raises IntegrityError only for a fault that is not a
    number race (nothing is then committed)."""
    assert campaign.id is not None
    out = Claim()
    with session_scope(db) as s:
        team = team_presence(s, campaign.id, now)
        extensions = {a.id: a.extension for a in team.agents} if team is not None else {}
        held: set[int] = set()
        due = due_callbacks(s, campaign.id, now, n * overfetch + 8, team.ready_ids if team is not None else ())
        for callback, contact in due:
            if len(out.attempts) >= n:
                break
            if callback.agent_id is not None and callback.agent_id in held:
                continue  # one "only me" callback per agent at a time
            wait = window_wait(campaign, contact, now)
            if wait is not None:
                postpone_callback(callback, contact, wait, now)
                s.add(callback)
                s.add(contact)
                out.skipped_window += 1
                continue
            attempt = _claim_one(s, contact, campaign.id, now, callback)
            if attempt is None:
                out.lost += 1
                continue
            out.attempts.append(attempt)
            out.callbacks += 1
            if callback.agent_id is not None:
                held.add(callback.agent_id)
                if callback.agent_id in extensions:
                    out.holds[attempt.id or 0] = extensions[callback.agent_id]
        left = n - len(out.attempts)
        if left <= 0:
            return out
        candidates = next_due_contacts(s, campaign.id, now, left * overfetch + 8,
                                       max_attempts=campaign.max_attempts, lock=True)  # fmt: skip
        for contact in candidates:
            if len(out.attempts) >= n:
                break
            wait = window_wait(campaign, contact, now)
            if wait is not None:
                contact.next_attempt_at = wait
                contact.updated_at = now
                s.add(contact)
                out.skipped_window += 1
                continue
            attempt = _claim_one(s, contact, campaign.id, now)
            if attempt is None:
                out.lost += 1
            else:
                out.attempts.append(attempt)
    return out


def window_wait(campaign: Campaign, contact: Contact, now: datetime) -> datetime | None:
    """None when the contact may be called now; else when its calling window next opens (a day on when no window
    opens within a month: every day excluded)."""
    args = (contact.timezones, now, campaign.window_start, campaign.window_end, campaign.weekdays,
            campaign.holidays)  # fmt: skip
    if callable_now(*args, fallback_zone=campaign.timezone):
        return None
    return next_window_start(*args, fallback_zone=campaign.timezone) or (now + timedelta(days=1))


def _claim_one(s: Session, contact: Contact, campaign_id: int, now: datetime,
               callback: Callback | None = None) -> Attempt | None:
    """Claim one contact inside a SAVEPOINT; None if the live-call index refused it (its number is in a call).

    ``begin_nested`` flushes earlier work first, so a rollback here undoes only this contact's claim (the ORM
    expires the contact, which reloads as it was) and the batch's other claims stand."""
    try:
        with s.begin_nested():
            attempt = claim_contact(contact, campaign_id, now)
            s.add(contact)
            s.add(attempt)
            if callback is not None:
                s.flush()
                callback_claimed(callback, attempt, now)
                s.add(callback)
    except IntegrityError:
        return None
    return attempt
