"""Events whose folding failed when they arrived are folded again, in arrival order, exactly once.

``dialer.outcomes.events`` stores every event before folding it; when folding fails (a bug, a lost database
connection), the event stays stored with ``fold_error`` set. The daemon's heartbeat calls :func:`refold_pending`:
each such event is folded again in its own savepoint with its receive time as the clock. A success clears the
mark (folded once: the failed attempt's writes were rolled back with its savepoint); a failure counts a try and
stops the pass, so a later event of the same call never folds before an earlier one. After ``MAX_TRIES`` an event
is given up, logged once: the statistics (``dialer.outcomes.reconcile``) then decide its call, as they decide
every call whose events never came.
"""

from __future__ import annotations

import logging
from datetime import UTC
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlmodel import Session, col, select

from dialer.contention import is_conflict, is_disconnect, retry_conflicts
from dialer.logs import log_event
from dialer.models import WebhookEvent

if TYPE_CHECKING:
    from dialer.outcomes.events import WebhookProcessor

log = logging.getLogger("dialer.webhooks")

MAX_TRIES = 20


def refold_pending(processor: WebhookProcessor, *, limit: int = 200) -> int:
    """Fold again the stored events whose folding failed; returns how many are folded now."""
    with processor.lock:
        folded, notify = retry_conflicts(lambda: _pass(processor, limit), what="folding stored webhook events")
    if notify:
        processor.live.notify(sorted(set(notify)))
    return folded


def _pass(processor: WebhookProcessor, limit: int) -> tuple[int, list[int]]:
    folded = 0
    notify: list[int] = []
    with Session(processor.engine, expire_on_commit=False) as session:
        pending = session.exec(
            select(WebhookEvent)
            .where(col(WebhookEvent.fold_error).is_not(None), col(WebhookEvent.fold_tries) < MAX_TRIES)
            .order_by(col(WebhookEvent.id))
            .limit(limit)
        ).all()
        for ev in pending:
            received_at = ev.received_at if ev.received_at.tzinfo else ev.received_at.replace(tzinfo=UTC)
            fields = {str(k): str(v) for k, v in (ev.payload or {}).items()}
            try:
                with session.begin_nested():
                    notify += processor.fold_late(session, fields, received_at)
                    _mark(session, ev.id, None, ev.fold_tries)
                folded += 1
            except Exception as exc:
                if is_conflict(exc) or is_disconnect(exc):
                    raise
                processor.forget_refs()
                tries = ev.fold_tries + 1
                _mark(session, ev.id, f"{type(exc).__name__}: {exc}"[:500], tries)
                if tries >= MAX_TRIES:
                    log_event(log, logging.ERROR, "webhook event given up after repeated folding failures; "
                              "reconciliation decides its call", event_id=ev.id, event=ev.event,
                              pbx_call_id=ev.pbx_call_id or "", error=f"{type(exc).__name__}: {exc}")
                break  # in order: nothing later folds before this one
        session.commit()
    if folded:
        log_event(log, logging.INFO, "webhook events folded late", events=folded)
    return folded, notify


def _mark(session: Session, event_id: int | None, error: str | None, tries: int) -> None:
    session.execute(sa.update(WebhookEvent).where(col(WebhookEvent.id) == event_id)
                    .values(fold_error=error, fold_tries=tries))
