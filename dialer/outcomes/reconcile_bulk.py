"""Reconciliation's bulk reads and writes, and the ending of the attempts it matched.

One reconciliation run may read and write 100,000 attempts and statistics rows; ORM objects for that many cost
most of a minute. So rows are read here as plain tuples (``AttemptRecord``, ``StatRecord``) and written back
with one driver-level executemany per table (per group of shared values for attempts). The invariant: this
changes how rows are written, never what is written. What an ended attempt and its contact become still comes
from ``dialer.outcomes.transitions`` (``attempt_completion``, ``contact_transition``, ``attempt_not_placed``),
the state machine the webhooks drive through ``complete_attempt``, and every value is converted by the bind
processor SQLAlchemy itself would apply.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Container, Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlmodel import Session

from dialer.contention import lock_rows
from dialer.models import Attempt, Campaign, Contact, EventLog, StatRow
from dialer.outcomes.coverage import Coverage
from dialer.outcomes.states import LIVE_ATTEMPT_STATES, AttemptState
from dialer.outcomes.transitions import (
    CallOutcome,
    attempt_completion,
    attempt_not_placed,
    contact_transition,
)

_ATT: sa.Table = Attempt.__table__  # type: ignore[attr-defined]
_STAT: sa.Table = StatRow.__table__  # type: ignore[attr-defined]
_CONTACT: sa.Table = Contact.__table__  # type: ignore[attr-defined]
_CAMPAIGN: sa.Table = Campaign.__table__  # type: ignore[attr-defined]

# Columns ``attempt_completion`` sets to the same values for every attempt of one run.
_SHARED = ("state", "live", "updated_at")


class AttemptRecord(NamedTuple):
    """The attempt columns matching reads (names are the ``attempt`` table's)."""

    id: int
    campaign_id: int
    contact_id: int
    phone: str
    state: str
    created_at: datetime
    sent_at: datetime | None
    placed_at: datetime | None
    finished_at: datetime | None
    disposition: str | None
    answered: bool | None
    connected: bool | None
    abandoned: bool | None
    agent: str | None
    talk_seconds: float | None
    ring_seconds: float | None
    cost: float | None
    pbx_call_id: str | None


class StatRecord(NamedTuple):
    """The ``stat_row`` columns matching reads."""

    id: int
    callstart: datetime | None
    pbx_call_id: str | None
    clid: str | None
    destination: str | None
    disposition: str | None
    seconds: int | None
    attempt_id: int | None
    fetched_at: datetime


class _Policy(NamedTuple):
    """A campaign's retry settings (``dialer.outcomes.transitions.RetryPolicy``)."""

    max_attempts: int
    retry_busy_s: int
    retry_no_answer_s: int
    retry_failed_s: int
    retry_abandoned_s: int


# -- reading --------------------------------------------------------------------------------------------


def read_attempts(s: Session, since: datetime) -> list[AttemptRecord]:
    """Attempts made since ``since`` that statistics may explain: sent, uncertain or already completed."""
    return _read(
        s, AttemptRecord, _ATT,
        _ATT.c.created_at >= since,
        _ATT.c.state.in_((*LIVE_ATTEMPT_STATES, AttemptState.COMPLETED)),
    )


def read_pbx_rows(s: Session, since: datetime) -> list[StatRecord]:
    """PBX statistics rows that started since ``since``, and those whose start could not be read."""
    return _read(
        s, StatRecord, _STAT,
        _STAT.c.source == "pbx",
        sa.or_(_STAT.c.callstart >= since, _STAT.c.callstart.is_(None)),
    )


def read_costed(s: Session, since: datetime) -> set[int]:
    """The attempts a cost row (``/v1/statistics/``) that started since ``since`` is already linked to."""
    return {
        aid for (aid,) in s.execute(
            sa.select(_STAT.c.attempt_id).where(
                _STAT.c.source == "calls", _STAT.c.attempt_id.is_not(None),
                _STAT.c.callstart >= since,
            )
        )
    }


def read_unlinked_costs(
    s: Session, since: datetime
) -> Iterable[tuple[int, datetime | None, str | None, float | None]]:
    """Cost rows that started since ``since`` and are linked to no attempt: (id, callstart, destination, cost)."""
    return s.execute(
        sa.select(_STAT.c.id, _STAT.c.callstart, _STAT.c.destination, _STAT.c.cost).where(
            _STAT.c.source == "calls", _STAT.c.attempt_id.is_(None), _STAT.c.callstart >= since,
        )
    )


_Rec = TypeVar("_Rec", AttemptRecord, StatRecord)


def _read(s: Session, record: type[_Rec], table: sa.Table, *where: Any) -> list[_Rec]:
    """``record``'s columns of the rows of ``table`` matching ``where``, as plain tuples."""
    query = sa.select(*[table.c[name] for name in record._fields]).where(*where)
    return [record(*row) for row in s.execute(query)]


# -- ending matched attempts ----------------------------------------------------------------------------


def complete_matched(
    s: Session,
    by_id: dict[int, AttemptRecord],
    outcomes: Iterable[tuple[int, CallOutcome | None]],
    new_cost: dict[int, float],
    row_links: list[dict[str, Any]],
    now: datetime,
) -> tuple[int, int]:
    """End matched attempts, move their contacts and link the matched rows to their attempts.

    ``outcomes`` holds each matched attempt's outcome (None: not known yet) in the order the attempts were
    made, so a contact ends where its latest call puts it. An attempt already completed with the same outcome
    only takes a new cost. ``row_links`` are ``{"b_id": <stat row id>, "attempt_id": ...}``. Returns how many
    attempts ended for the first time and how many of those were uncertain.
    """
    completed = resolved_uncertain = 0
    # Grouped by the values every attempt of a group shares (state, live, updated_at): one statement per
    # group binds them once.
    attempt_updates: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    cost_updates: list[dict[str, Any]] = []
    firsts: list[tuple[AttemptRecord, CallOutcome]] = []
    for aid, outcome in outcomes:
        attempt = by_id[aid]
        if aid in new_cost:
            attempt = attempt._replace(cost=new_cost[aid])
        if outcome is None or (attempt.state == AttemptState.COMPLETED and _same(attempt, outcome)):
            if aid in new_cost:
                cost_updates.append({"b_id": aid, "cost": new_cost[aid]})
            continue
        fields = attempt_completion(attempt, outcome, now)
        shared = tuple(fields.pop(name) for name in _SHARED)
        attempt_updates[shared].append({"b_id": aid, **fields})
        if attempt.state != AttemptState.COMPLETED:
            firsts.append((attempt, outcome))
            completed += 1
            if attempt.state == AttemptState.UNCERTAIN:
                resolved_uncertain += 1
    # Attempts, then contacts, each by id: the order every writer of several rows locks them in.
    lock_rows(s, _ATT, [u["b_id"] for group in attempt_updates.values() for u in group])
    lock_rows(s, _CONTACT, [a.contact_id for a, _ in firsts])
    contact_updates = _move_contacts(s, firsts, now)

    _update_many(s, _STAT, row_links)
    for shared, group in attempt_updates.items():
        _update_many(s, _ATT, group, **dict(zip(_SHARED, shared, strict=True)))
    _update_many(s, _ATT, cost_updates, updated_at=now)
    _update_many(s, _CONTACT, contact_updates, updated_at=now)
    return completed, resolved_uncertain


def resolve_uncertain(
    s: Session, attempts: Sequence[AttemptRecord], matched: Container[int], coverage: Coverage, now: datetime
) -> int:
    """End uncertain attempts with no customer leg (not in ``matched``) once the statistics cover their time.

    Such a callback did not happen (``dialer.outcomes.coverage`` holds the rule; until it holds the attempt stays
    uncertain and its contact is not dialled). Rare, so the ORM state machine handles them one by one. Returns
    how many were ended.
    """
    # Our own latest call that reached Zadarma: until its row shows up, an earlier callback waits for it.
    placed = [ref_time(a) for a in attempts if a.state in (AttemptState.PLACED, AttemptState.COMPLETED)]
    last_placed = max(placed, default=None)
    ended = 0
    due = [a for a in attempts if a.state == AttemptState.UNCERTAIN and a.id not in matched
           and coverage.covers(a.sent_at or a.created_at,
                               later_call_pending=last_placed is not None and last_placed > (a.sent_at or a.created_at))]
    lock_rows(s, _ATT, [a.id for a in due])
    lock_rows(s, _CONTACT, [a.contact_id for a in due])
    for a in due:
        orm_attempt = s.get(Attempt, a.id)
        if orm_attempt is None or orm_attempt.state != AttemptState.UNCERTAIN:  # pragma: no cover - raced
            continue
        attempt_not_placed(s, orm_attempt, "no call in Zadarma's statistics: the callback did not happen", now=now)
        s.add(EventLog(campaign_id=a.campaign_id, level="info", kind="uncertain_resolved",
                       message=f"attempt {a.id} to {a.phone}: no call found, contact due again "
                               f"({coverage.describe()})"))
        ended += 1
    return ended


def ref_time(a: AttemptRecord) -> datetime:
    """When the call began as far as we know: Zadarma's answer, else when we sent it, else when we claimed it."""
    return a.placed_at or a.sent_at or a.created_at


def _move_contacts(
    s: Session, firsts: list[tuple[AttemptRecord, CallOutcome]], now: datetime
) -> list[dict[str, Any]]:
    """The contacts' new (state, next_attempt_at, last_disposition) rows for attempts ended the first time."""
    if not firsts:
        return []
    policies = {
        r.id: _Policy(*r[1:]) for r in s.execute(
            sa.select(_CAMPAIGN.c.id, *[_CAMPAIGN.c[name] for name in _Policy._fields]).where(
                _CAMPAIGN.c.id.in_({a.campaign_id for a, _ in firsts}))
        )
    }
    contacts: dict[int, tuple[str, int, datetime | None]] = {}
    ids = sorted({a.contact_id for a, _ in firsts})
    for chunk in _chunks(ids, 900):
        for cid, state, attempts, next_at in s.execute(
            sa.select(_CONTACT.c.id, _CONTACT.c.state, _CONTACT.c.attempts, _CONTACT.c.next_attempt_at).where(
                _CONTACT.c.id.in_(chunk))
        ):
            contacts[cid] = (state, attempts, next_at)
    moved: dict[int, dict[str, Any]] = {}
    for attempt, outcome in firsts:
        current = contacts.get(attempt.contact_id)
        policy = policies.get(attempt.campaign_id)
        if current is None or policy is None:  # pragma: no cover - foreign keys prevent it
            continue
        state, count, next_at = current
        move = contact_transition(policy, state, count, next_at, outcome, now)
        contacts[attempt.contact_id] = (move.state, count, move.next_attempt_at)
        moved[attempt.contact_id] = {
            "b_id": attempt.contact_id, "state": move.state, "next_attempt_at": move.next_attempt_at,
            "last_disposition": move.last_disposition,
        }
    return list(moved.values())


def _same(a: AttemptRecord, o: CallOutcome) -> bool:
    return (
        a.disposition == o.disposition
        and bool(a.answered) == o.answered
        and bool(a.connected) == o.connected
        and bool(a.abandoned) == o.abandoned
        and (o.talk_seconds is None or a.talk_seconds == o.talk_seconds)
        and (o.agent is None or a.agent == o.agent)
        and (o.pbx_call_id is None or a.pbx_call_id == o.pbx_call_id)
    )


# -- driver-level executemany ---------------------------------------------------------------------------


def insert_stat_rows(s: Session, rows: list[dict[str, Any]], **same: Any) -> int:
    """Insert stat rows whose (source, row_key) is new; returns how many were.

    ON CONFLICT DO NOTHING: another reconciler (the CLI next to the daemon) may store the same rows at the
    same time; the driver's row count says how many this call added.
    """
    if not rows:
        return 0
    names = [*rows[0], *same]
    stmt = _insert_ignoring_duplicates(
        s.get_bind().dialect.name, {name: sa.bindparam(name, type_=_STAT.c[name].type) for name in names}
    )
    return _execute_many(s, stmt, _STAT, rows, same)


def _insert_ignoring_duplicates(dialect: str, values: dict[str, Any]) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(_STAT).values(values).on_conflict_do_nothing(index_elements=["source", "row_key"])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(_STAT).values(values).on_conflict_do_nothing(index_elements=["source", "row_key"])


def _update_many(s: Session, table: sa.Table, rows: list[dict[str, Any]], **same: Any) -> None:
    """``UPDATE table SET <the rows' other keys and same's> WHERE id = :b_id``."""
    if not rows:
        return
    names = [*(k for k in rows[0] if k != "b_id"), *same]
    stmt = sa.update(table).where(table.c.id == sa.bindparam("b_id")).values(
        {name: sa.bindparam(name, type_=table.c[name].type) for name in names}
    )
    _execute_many(s, stmt, table, rows, same)


def _execute_many(s: Session, stmt: Any, table: sa.Table, rows: list[dict[str, Any]], same: dict[str, Any]) -> int:
    """Run ``stmt`` once per row as a driver-level executemany; returns the rows the database changed.

    SQLAlchemy's own executemany builds and type-converts every parameter set through its compiler, which
    costs more than the database's work for 100,000 rows. Here each column's bind processor (the conversion
    SQLAlchemy would apply: ``UTCDateTime``, JSON, booleans) runs once per value, and values every row shares
    (``same``, e.g. ``updated_at``) are converted once.
    """
    conn = s.connection()
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect)
    sql = str(compiled)
    names = list(compiled.positiontup or []) if compiled.positional else list(compiled.binds)

    def processor(name: str) -> Callable[[Any], Any] | None:
        # dialect_impl: the type as this dialect runs it (on SQLite, UTCDateTime's text format), as SQLAlchemy
        # does itself.
        column = table.c[name]
        return column.type.dialect_impl(dialect).bind_processor(dialect)

    fixed: dict[str, Any] = {}
    for name, value in same.items():
        proc = processor(name)
        fixed[name] = proc(value) if proc is not None and value is not None else value
    procs = {name: processor(name) for name in names if name not in fixed and name != "b_id"}
    changed = 0
    for chunk in _chunks(rows, 10_000):
        # Column by column: one comprehension per column is several times cheaper than one dict per row.
        columns: list[Iterable[Any]] = []
        for name in names:
            if name in fixed:
                columns.append(itertools.repeat(fixed[name], len(chunk)))
                continue
            proc = procs.get(name)
            if proc is None:
                columns.append([r[name] for r in chunk])
            else:
                columns.append([None if r[name] is None else proc(r[name]) for r in chunk])
        params: list[Any] = list(zip(*columns, strict=False))
        if not compiled.positional:
            params = [dict(zip(names, p, strict=True)) for p in params]
        changed += max(0, conn.exec_driver_sql(sql, params).rowcount)
    return changed


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
