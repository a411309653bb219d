"""Writers that meet on PostgreSQL: row locks taken in one order, and a whole unit of work retried on a deadlock.

SQLite serialises writers (``BEGIN IMMEDIATE``), so none of this happens there. On PostgreSQL the pacing tick
(``dialing.engine``), the reconciler (``outcomes.reconcile``) and webhook folding (``outcomes.events``) write the
same attempt and contact rows at once. Two transactions deadlock when each holds a row the other wants next, so
every transaction that writes several of them first locks them with :func:`lock_rows`: attempts before
contacts, each by ascending id. A transaction holding one attempt and its contact (a webhook) can then wait, but
never in a cycle. What still conflicts (a serialisation failure, a deadlock through a path not ordered here) is
rolled back by PostgreSQL and run again as a whole by :func:`retry_conflicts`, never half applied.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from dialer.logs import log_event

log = logging.getLogger("dialer.db")

T = TypeVar("T")

# deadlock_detected, serialization_failure: PostgreSQL has rolled the transaction back; running it again is safe.
CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})
RETRIES = 6
_CHUNK = 1_000


def is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is a deadlock or serialisation failure (the transaction was rolled back whole)."""
    orig = getattr(exc, "orig", None) if isinstance(exc, DBAPIError) else exc
    return getattr(orig, "sqlstate", None) in CONFLICT_SQLSTATES


def retry_conflicts(unit: Callable[[], T], *, what: str, retries: int = RETRIES,
                    sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``unit`` (one whole transaction: it opens and commits its own session) until it does not conflict.

    Bounded, with jittered backoff so the two sides do not collide again in step; one warning per unit of work
    that had to be run again. The last conflict is raised."""
    for attempt in range(retries + 1):
        try:
            return unit()
        except DBAPIError as exc:
            if not is_conflict(exc) or attempt == retries:
                raise
            if attempt == 0:
                log_event(log, logging.WARNING, "database conflict; running the unit of work again", unit=what,
                          error=type(getattr(exc, "orig", exc)).__name__)
            sleep(random.uniform(0.005, 0.03) * (2**attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def lock_rows(s: Session, table: sa.Table, ids: Iterable[int]) -> None:
    """PostgreSQL: lock these rows of ``table`` now, by ascending id (see the module docstring for the order of
    tables). SQLite: nothing (its writers never overlap)."""
    if s.get_bind().dialect.name != "postgresql":
        return
    keys = sorted({i for i in ids if i is not None})
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        s.execute(sa.select(table.c.id).where(table.c.id.in_(chunk)).order_by(table.c.id).with_for_update())
