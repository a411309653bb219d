"""The one definition of every call-centre figure, used by the report, the SQLite export's views, the engine
and ``/metrics``.

- A **call** is a completed attempt (``AttemptState.COMPLETED``): the only attempts that became real calls.
- A call's **time** is when Zadarma placed it, else when we sent it, else when we wrote it (``call_time``).
- A **window** ("24h", "30d") ends at ``now`` cut to the whole second and holds the calls with ``call_time >=``
  its start: the exports write whole-second times, so this cut makes every reader draw the same edge.
- **answer rate** = answered / calls; **abandon rate** = abandoned / answered; **talk** = ``talk_seconds`` of
  connected calls (an abandoned customer talked to nobody); **occupancy** = talk / working agent seconds, where
  working means logged in and not paused (``WORKING_AGENT_STATES``): the team the daemon paces for and counts in
  ``agent_seconds_key`` (a campaign without agent logins counts its configured agents as working).

Agents (``dialer.reporting.agent_report`` applies these; ``kpi_agents`` of the SQLite export repeats them in SQL):
- An agent's **time in a state** comes from their ``agent_event`` rows alone: each state lasts from its event to
  the agent's next event (in the order of ``at``, then ``id``); the last one is still open and is cut at the report
  time; before the first event the agent is logged out; only the part inside the period counts (``agent_time``).
  One exception keeps the figures stable: a wrap-up still open past its limit ends at that limit, as the event
  written for it later will say (``dialer.outcomes.agent_states.expire_wrapup``).
- **logged-in** time = every state but logged out; **working** = logged in and not paused; **talk**, **wrap-up**,
  **ringing**, **ready** and **paused** (in total and by pause code) = time in that state. Time in state is the
  agent's, whatever campaign they worked: an agent of two campaigns shows the same times in both reports.
- An agent's **occupancy** = talk / working time (the campaign's definition, for one agent).
- **calls handled** = the campaign's calls (completed attempts) that connected and were routed to the agent
  (``Attempt.agent_id``), from the period's start (``call_time``, as the windows); **dispositions** count their
  ``agent_disposition`` codes; **sales** = those whose code means success in the campaign's list (its own, else
  the defaults); **conversion** = sales / calls handled.
- The agents' **period** runs from the campaign's start (its creation, or its first call if earlier) or a later
  time asked for, cut to the whole second, to the report time.

The engine's pacing window (legal abandon rate), ``build_report`` and the ``kpi_*`` views of the SQLite export
all take their windows, time basis and ratios from here; ``tests/test_figures.py`` computes each figure all three
ways on the same data, at a window's edge too.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import col

from dialer.models import Attempt, Campaign
from dialer.outcomes.states import WORKING_AGENT_STATES, AgentState, AttemptState, sql_list

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
    """Talk over working agent seconds (a campaign's, or one agent's); unknown without working time."""
    return ratio(talk_seconds, agent_seconds) if agent_seconds else None


def conversion(sales: int, handled: int) -> float | None:
    return ratio(sales, handled)


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


# --- agents -----------------------------------------------------------------------------------------------------

# A pause whose event carries no code (none should: a pause needs one) is reported under this name.
NO_PAUSE_CODE = "uncoded"


class StateChange(Protocol):
    """One agent event as the time figures read it: from ``at`` on the agent is in ``state`` (``pause_code`` for
    paused)."""

    @property
    def at(self) -> datetime: ...

    @property
    def state(self) -> str: ...

    @property
    def pause_code(self) -> str | None: ...


@dataclass(frozen=True)
class AgentTime:
    """The time one agent spent in each state over a period (``agent_time``), as timedeltas (whole microseconds),
    so that sums of states are exact."""

    by_state: dict[str, timedelta] = field(default_factory=dict)
    by_pause_code: dict[str, timedelta] = field(default_factory=dict)

    def span(self, *states: str) -> timedelta:
        return sum((v for k, v in self.by_state.items() if k in states), timedelta(0))

    @property
    def logged_in(self) -> timedelta:
        return self.span(*(s for s in AgentState if s != AgentState.LOGGED_OUT))

    @property
    def working(self) -> timedelta:
        return self.span(*WORKING_AGENT_STATES)


def shown_span(span: timedelta) -> float:
    """A duration known to the microsecond in seconds, rounded half up to ``SECONDS_DIGITS`` on its exact value
    (integer arithmetic the SQLite views repeat; a float's ``round`` would turn on its binary error at a half)."""
    unit = 10 ** (6 - SECONDS_DIGITS)
    return ((span // timedelta(microseconds=1) + unit // 2) // unit) / 10**SECONDS_DIGITS


def agents_period_start(
    created_at: datetime, first_call: datetime | None, end: datetime, since: datetime | None = None
) -> datetime:
    """Where the agents' period starts: the campaign's start (its creation, or its first call if earlier), or
    ``since`` if later; whole seconds, never after ``end``."""
    start = min(created_at, first_call) if first_call is not None else created_at
    if since is not None:
        start = max(start, since)
    return min(report_instant(start), end)


def agent_time(changes: Sequence[StateChange], start: datetime, end: datetime) -> AgentTime:
    """Time in each state of one agent inside ``[start, end]``: each state lasts from its change to the next one
    (``changes`` in the order they happened), the last to ``end``; the agent is logged out before the first."""
    by_state: dict[str, timedelta] = {}
    by_code: dict[str, timedelta] = {}
    for i, change in enumerate(changes):
        until = changes[i + 1].at if i + 1 < len(changes) else end
        span = min(until, end) - max(change.at, start)
        if span <= timedelta(0):
            continue
        by_state[change.state] = by_state.get(change.state, timedelta(0)) + span
        if change.state == AgentState.PAUSED:
            code = change.pause_code or NO_PAUSE_CODE
            by_code[code] = by_code.get(code, timedelta(0)) + span
    return AgentTime(by_state, by_code)


def handled_calls(
    conn: Connection | Any, campaign_id: int, since: datetime | None, agent_ids: Collection[int] | None = None
) -> dict[int, dict[str | None, int]]:
    """The campaign's calls handled by each agent from ``since`` on: agent id -> {disposition code (None: none
    yet): calls}."""
    stmt = (
        sa.select(col(Attempt.agent_id), col(Attempt.agent_disposition), sa.func.count())
        .where(col(Attempt.campaign_id) == campaign_id, col(Attempt.state) == AttemptState.COMPLETED,
               col(Attempt.connected).is_(True), col(Attempt.agent_id).is_not(None))
        .group_by(col(Attempt.agent_id), col(Attempt.agent_disposition))
    )  # fmt: skip
    if since is not None:
        stmt = stmt.where(call_time_sql() >= since)
    if agent_ids is not None:
        stmt = stmt.where(col(Attempt.agent_id).in_(list(agent_ids)))
    out: dict[int, dict[str | None, int]] = {}
    for agent_id, code, n in conn.execute(stmt):
        out.setdefault(int(cast(int, agent_id)), {})[code] = int(n)
    return out
