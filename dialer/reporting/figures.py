"""The one definition of every call-centre figure, used by the report, the SQLite export's views, the engine
and ``/metrics``.

- A **call** is a completed attempt (``AttemptState.COMPLETED``): the only attempts that became real calls.
- A call's **time** is when Zadarma placed it, else when we sent it, else when we wrote it (``call_time``).
- A **window** ("24h", "30d") ends at ``now`` cut to the whole second and holds the calls with ``call_time >=``
  its start: the exports write whole-second times, so this cut makes every reader draw the same edge.
- **answer rate** = answered / calls; **abandon rate** = abandoned / answered; **talk** = ``talk_seconds`` of
  connected calls (an abandoned customer talked to nobody); **occupancy** = talk / logged-in agent seconds.

The engine's pacing window (legal abandon rate), ``build_report`` and the ``kpi_*`` views of the SQLite export
all take their windows, time basis and ratios from here; ``tests/test_figures.py`` computes each figure all three
ways on the same data, at a window's edge too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import col

from dialer.models import Attempt, Campaign
from dialer.outcomes.states import AttemptState, sql_list

ABANDON_WINDOWS: dict[str, timedelta] = {"24h": timedelta(hours=24), "30d": timedelta(days=30)}
# How the report and every export round, applied to the figures and the tables before any writer sees them:
# durations to a tenth of a second, money totals to the cent. Rates stay exact (a rounded abandon rate could hide
# one over target), and a single call's cost stays as billed (often under a cent; the column sums to the total).
SECONDS_DIGITS = 1
MONEY_DIGITS = 2
# SQL, over the export's ``attempts`` table (``call_time`` already computed by ``call_time_sql``'s rule).
CALL_STATES_SQL = sql_list((AttemptState.COMPLETED,))


def report_instant(now: datetime) -> datetime:
    """``now`` as the figures see it: aware UTC, cut to the whole second."""
    return now.astimezone(UTC).replace(microsecond=0)


def window_start(now: datetime, window: str) -> datetime:
    """Start of the legal ``window`` ("24h" or "30d") that ends at ``now``."""
    return report_instant(now) - ABANDON_WINDOWS[window]


def shown_seconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, SECONDS_DIGITS)


def shown_money(amount: float) -> float:
    return round(amount, MONEY_DIGITS)


def ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def abandon_rate(abandoned: int, answered: int) -> float | None:
    return ratio(abandoned, answered)


def answer_rate(answered: int, calls: int) -> float | None:
    return ratio(answered, calls)


def occupancy(talk_seconds: float, agent_seconds: float | None) -> float | None:
    return ratio(talk_seconds, agent_seconds) if agent_seconds else None


def agent_seconds_key(campaign_id: int) -> str:
    """KeyValue key of a campaign's logged-in agent seconds (occupancy's denominator), kept by the daemon."""
    return f"campaign:{campaign_id}:agent_seconds"


def call_time_sql() -> Any:
    """``call_time`` of an attempt row as a SQL expression."""
    return sa.func.coalesce(col(Attempt.placed_at), col(Attempt.sent_at), col(Attempt.created_at))


@dataclass(frozen=True)
class CallCounts:
    calls: int
    answered: int
    connected: int
    abandoned: int
    talk_seconds: float

    @property
    def abandon_rate(self) -> float | None:
        return abandon_rate(self.abandoned, self.answered)


def _flag(column: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(sa.case((column.is_(True), 1), else_=0)), 0)


def _count_columns() -> tuple[Any, ...]:
    """calls, answered, connected, abandoned, talk over the completed attempts a query selects."""
    return (
        sa.func.count(col(Attempt.id)),
        _flag(col(Attempt.answered)),
        _flag(col(Attempt.connected)),
        _flag(col(Attempt.abandoned)),
        sa.func.coalesce(
            sa.func.sum(sa.case((col(Attempt.connected).is_(True), col(Attempt.talk_seconds)), else_=0.0)), 0.0
        ),
    )


def _counts(row: Any) -> CallCounts:
    return CallCounts(int(row[0]), int(row[1]), int(row[2]), int(row[3]), float(row[4] or 0.0))


def call_counts(conn: Connection | Any, campaign_id: int, since: datetime | None = None) -> CallCounts:
    """The calls of a campaign from ``since`` on (all of them for None), counted in the database."""
    stmt = sa.select(*_count_columns()).where(
        col(Attempt.campaign_id) == campaign_id, col(Attempt.state) == AttemptState.COMPLETED
    )
    if since is not None:
        stmt = stmt.where(call_time_sql() >= since)
    return _counts(conn.execute(stmt).one())


def call_counts_by_campaign(conn: Connection | Any) -> dict[int, tuple[str, CallCounts]]:
    """Every campaign's calls (id -> (name, counts)), one query; a campaign without calls counts zeros."""
    stmt = (
        sa.select(col(Campaign.id), col(Campaign.name), *_count_columns())
        .select_from(Campaign)
        .outerjoin(
            Attempt,
            sa.and_(col(Attempt.campaign_id) == col(Campaign.id), col(Attempt.state) == AttemptState.COMPLETED),
        )
        .group_by(col(Campaign.id), col(Campaign.name))
        .order_by(col(Campaign.id))
    )
    return {int(row[0]): (str(row[1]), _counts(row[2:])) for row in conn.execute(stmt)}


def sqlite_window_clause(table_alias: str, since_sql: str) -> str:
    """The SQLite form of "a call inside the window" for the export's views (``call_time`` is local text)."""
    return (
        f"{table_alias}.state IN ({CALL_STATES_SQL}) "
        f"AND ({since_sql} IS NULL OR julianday({table_alias}.call_time) >= {since_sql})"
    )


def sqlite_window_starts() -> str:
    """``windows(name, since)`` rows for the export's views, one per legal window, from the report time."""
    rows = ["SELECT 'campaign', NULL"]
    for name, span in ABANDON_WINDOWS.items():
        rows.append(
            f"SELECT '{name}', julianday((SELECT at FROM report_time), '-{int(span.total_seconds())} seconds')"
        )
    return "\n            UNION ALL ".join(rows)
