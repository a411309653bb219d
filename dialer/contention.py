"""Writers that meet on PostgreSQL: row locks taken in one order, and a whole unit of work retried on a deadlock.

SQLite serialises writers (``BEGIN IMMEDIATE``), so none of this happens there. On PostgreSQL the pacing tick
(``dialing.engine``), the reconciler (``outcomes.reconcile``) and webhook folding (``outcomes.events``) write the
same attempt and contact rows at once. Two transactions deadlock when each holds a row the other wants next, so
every transaction that writes several of them first locks them with :func:`lock_rows`: attempts before
contacts, each by ascending id. A transaction holding one attempt and its contact (a webhook) can then wait, but
never in a cycle. What still conflicts (a serialisation failure, a deadlock through a path not ordered here) is
rolled back by PostgreSQL and run again as a whole by :func:`retry_conflicts`, never half applied; so is a unit
whose connection was lost (a server restart), on a fresh connection from the pool.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, PendingRollbackError
from sqlmodel import Session

from dialer.logs import log_event

log = logging.getLogger("dialer.db")

T = TypeVar("T")

# deadlock_detected, serialization_failure, lock_not_available (``lock_timeout``): the transaction failed whole;
# running it again is safe.
CONFLICT_SQLSTATES = frozenset({"40P01", "40001", "55P03"})
RETRIES = 6
_CHUNK = 1_000


def is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is a deadlock or serialisation failure (the transaction was rolled back whole)."""
    orig = getattr(exc, "orig", None) if isinstance(exc, DBAPIError) else exc
    return getattr(orig, "sqlstate", None) in CONFLICT_SQLSTATES


def is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` is a lost database connection (a server restart, ``pg_terminate_backend``, the network):
    the transaction is gone with it, and the pool has dropped the connection."""
    seen: BaseException | None = exc
    for _ in range(8):  # the loss may surface as a later error (a savepoint's rollback, a pending rollback)
        if seen is None:
            return False
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def retry_conflicts(unit: Callable[[], T], *, what: str, retries: int = RETRIES,
                    sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``unit`` (one whole transaction: it opens and commits its own session) until it does not conflict.

    Bounded, with jittered backoff so the two sides do not collide again in step (a lost connection waits
    longer: the server may be restarting); one warning per unit of work that had to be run again. The last
    error is raised."""
    for attempt in range(retries + 1):
        try:
            return unit()
        except (DBAPIError, PendingRollbackError) as exc:
            lost = is_disconnect(exc)
            if not (lost or is_conflict(exc)) or attempt == retries:
                raise
            if attempt == 0:
                what_happened = "database connection lost" if lost else "database conflict"
                log_event(log, logging.WARNING, f"{what_happened}; running the unit of work again", unit=what,
                          error=type(getattr(exc, "orig", exc)).__name__)
            sleep(random.uniform(0.005, 0.03) * (2**attempt) * (10 if lost else 1))
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
