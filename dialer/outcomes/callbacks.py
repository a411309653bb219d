"""Scheduled callbacks: the moves of a callback row. Scheduling one (a "call back" disposition) puts its contact in
``callback``; the claim places it (``placed``); a callback attempt that was never sent gives it back (``scheduled``
again, and the contact back to ``callback``); the DNC list or a newer callback for the contact cancels it.

Invariants: a contact has at most one ``scheduled`` callback, and a contact in state ``callback`` has exactly one
(``scheduled``, or ``placed`` while its attempt is live). ``next_try_at`` is never before ``due_at`` nor before the
contact's legal redial lock (the ``retry_abandoned`` delay after its last abandoned call). An "only me" callback
whose agent leaves the campaign (or is removed) becomes anyone's, so it never waits for someone who is gone.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from dialer.models import Attempt, Callback, Campaign, Contact
from dialer.outcomes.states import CallbackState, ContactState


def legal_lock_until(session: Session, campaign: Campaign, contact_id: int) -> datetime | None:
    """The end of the contact's legal redial lock: ``retry_abandoned`` after its last abandoned call (None: no
    abandoned call)."""
    last = session.execute(
        sa.select(sa.func.max(sa.func.coalesce(col(Attempt.finished_at), col(Attempt.updated_at))))
        .where(col(Attempt.contact_id) == contact_id, col(Attempt.abandoned).is_(True))
    ).scalar()
    if last is None:
        return None
    if isinstance(last, str):  # SQLite hands an aggregate back as text
        last = datetime.fromisoformat(last)
    if last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    return last + timedelta(seconds=campaign.retry_abandoned_s)


def first_try(due_at: datetime, lock: datetime | None) -> datetime:
    """When a callback asked for ``due_at`` may first be placed. Pure."""
    return max(due_at, lock) if lock is not None else due_at


def schedule_callback(
    session: Session,
    contact: Contact,
    campaign: Campaign,
    due_at: datetime,
    now: datetime,
    *,
    agent_id: int | None = None,
    from_attempt_id: int | None = None,
    note: str | None = None,
) -> Callback:
    """The contact is to be called back at ``due_at`` (by ``agent_id`` only, when given): any callback it still
    had scheduled is cancelled, and the contact waits in ``callback``."""
    cancel_callbacks(session, [contact.id or 0], now)
    lock = legal_lock_until(session, campaign, contact.id or 0)
    callback = Callback(campaign_id=campaign.id or 0, contact_id=contact.id or 0, due_at=due_at,
                        next_try_at=first_try(due_at, lock), agent_id=agent_id, from_attempt_id=from_attempt_id,
                        note=note, state=CallbackState.SCHEDULED, created_at=now, updated_at=now)  # fmt: skip
    session.add(callback)
    contact.state = ContactState.CALLBACK
    contact.next_attempt_at = callback.next_try_at
    contact.updated_at = now
    session.add(contact)
    session.flush()
    return callback


def callback_claimed(callback: Callback, attempt: Attempt, now: datetime) -> None:
    """The claim placed the callback with ``attempt`` (already flushed: it has an id)."""
    callback.state = CallbackState.PLACED
    callback.attempt_id = attempt.id
    callback.updated_at = now


def postpone_callback(callback: Callback, contact: Contact, until: datetime, now: datetime) -> None:
    """Outside the contact's calling window: wait for its next opening."""
    callback.next_try_at = until
    callback.updated_at = now
    contact.next_attempt_at = until
    contact.updated_at = now


def callback_given_back(session: Session, attempt: Attempt, now: datetime) -> Callback | None:
    """The callback ``attempt`` placed was never sent: it is scheduled again (the caller puts the contact back in
    ``callback``). None when the attempt placed no callback."""
    callback = session.exec(
        select(Callback).where(col(Callback.attempt_id) == attempt.id, col(Callback.state) == CallbackState.PLACED)
    ).first()
    if callback is None:
        return None
    callback.state = CallbackState.SCHEDULED
    callback.attempt_id = None
    callback.updated_at = now
    session.add(callback)
    return callback


def cancel_callbacks(session: Session, contact_ids: Collection[int], now: datetime) -> int:
    """Scheduled callbacks of these contacts will not be placed (the contact ended, or has a newer one)."""
    if not contact_ids:
        return 0
    upd = (
        sa.update(Callback)
        .where(col(Callback.contact_id).in_(list(contact_ids)), col(Callback.state) == CallbackState.SCHEDULED)
        .values(state=CallbackState.CANCELLED, updated_at=now)
        .execution_options(synchronize_session="fetch")
    )
    return int(getattr(session.execute(upd), "rowcount", 0) or 0)


def release_agent_callbacks(session: Session, agent_id: int, now: datetime, *,
                            keep_campaigns: Collection[int] = ()) -> int:
    """"Only me" callbacks of an agent who no longer works their campaign become anyone's (all of them when the
    agent is removed: ``keep_campaigns`` empty)."""
    upd = (
        sa.update(Callback)
        .where(col(Callback.agent_id) == agent_id, col(Callback.state) == CallbackState.SCHEDULED)
        .values(agent_id=None, updated_at=now)
        .execution_options(synchronize_session="fetch")
    )
    if keep_campaigns:
        upd = upd.where(col(Callback.campaign_id).not_in(list(keep_campaigns)))
    return int(getattr(session.execute(upd), "rowcount", 0) or 0)
