"""The agents' part of a campaign report: one row per agent (time in each state, calls handled, dispositions,
occupancy, conversion), the dispositions by local hour, and the campaign's disposition codes.

Every figure is the one ``dialer.reporting.figures`` defines: time in state from ``agent_event`` rows alone
(``agent_time`` over ``read_timelines``), calls from the attempts (``handled_calls``). The agents of a campaign are
those who work it (``agent_campaign``) and anyone its calls were routed to; a removed agent is left out unless they
were logged in or handled a call in the period. Invariants: reading never writes; the report and the SQLite
export's ``agent_events`` table read the same timeline (``read_timelines``), so its ``kpi_agents`` view sees the
events the report saw; durations are rounded once, here (``figures.SECONDS_DIGITS``), rates from exact values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session, SQLModel

from dialer.outcomes.codes import dispositions_of, pause_codes_of
from dialer.outcomes.states import AgentState, AttemptState, DispositionMeaning
from dialer.reporting.figures import (
    agent_time,
    call_time_sql,
    conversion,
    handled_calls,
    occupancy,
    shown_span,
)

# The reason a timeline gives the end of a wrap-up past its limit that no event records yet.
WRAPUP_LIMIT_PENDING = "wrap-up limit (not yet recorded)"


@dataclass(frozen=True)
class AgentRow:
    """One agent over the report's period. Seconds rounded; ``pause_seconds`` and ``dispositions`` hold every
    code of the campaign's lists (zero if unused) and then any other code the agent's rows carry."""

    agent_id: int
    login: str
    name: str
    extension: str
    calls_handled: int
    talk_seconds: float
    wrapup_seconds: float
    ringing_seconds: float
    ready_seconds: float
    paused_seconds: float
    logged_in_seconds: float
    working_seconds: float
    occupancy: float | None
    sales: int
    conversion: float | None
    undisposed: int  # calls handled without a disposition yet
    pause_seconds: dict[str, float]
    dispositions: dict[str, int]


@dataclass(frozen=True)
class DispositionHourRow:
    hour: datetime  # start of the local hour, timezone-naive (as ``HourlyRow.hour``)
    code: str
    meaning: str | None  # None: a code no longer in the campaign's list
    calls: int


@dataclass(frozen=True)
class DispositionCodeRow:
    code: str
    label: str
    hotkey: int
    meaning: str


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One change of an agent's state as the figures read it. ``event_id`` None: the end of a wrap-up past its
    limit, which no event records yet (it will be stamped at the limit)."""

    agent_id: int
    at: datetime
    state: str
    pause_code: str | None
    event_id: int | None
    reason: str


@dataclass(frozen=True)
class AgentsPart:
    agents: list[AgentRow]
    dispositions_hourly: list[DispositionHourRow]
    disposition_codes: list[DispositionCodeRow]


def _table(name: str) -> sa.Table:
    return SQLModel.metadata.tables[name]


def _utc(value: Any) -> datetime:
    """A stored time read without SQLAlchemy's per-row processing (a month of a team's events is 100,000s of
    rows): naive-UTC text on SQLite, a datetime on PostgreSQL; as ``models.UTCDateTime`` hands it back."""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def campaign_agents(conn: Connection, campaign_id: int) -> list[dict[str, Any]]:
    """The agents who work the campaign or took its calls, by login (then id)."""
    ag, ac, a = _table("agent"), _table("agent_campaign"), _table("attempt")
    ids = sa.union(
        sa.select(ac.c.agent_id).where(ac.c.campaign_id == campaign_id),
        sa.select(a.c.agent_id).where(a.c.campaign_id == campaign_id, a.c.agent_id.is_not(None)),
    ).subquery()
    stmt = (
        sa.select(ag.c.id, ag.c.login, ag.c.name, ag.c.extension, ag.c.state, ag.c.state_since,
                  ag.c.wrapup_until, ag.c.removed_at)
        .where(ag.c.id.in_(sa.select(ids.c.agent_id)))
        .order_by(ag.c.login, ag.c.id)
    )  # fmt: skip
    return [dict(row) for row in conn.execute(stmt).mappings()]


def read_timelines(
    conn: Connection, agents: Sequence[Mapping[str, Any]], start: datetime, end: datetime
) -> dict[int, list[TimelineEvent]]:
    """Each agent's state changes that decide their time in ``[start, end]``: the last one before ``start`` (the
    state they were in at the start), then every one up to ``end``, in order; plus the end of a wrap-up still
    open past its limit (``figures``: stamped at the limit)."""
    e = _table("agent_event")
    cols = (e.c.id, e.c.agent_id, sa.type_coerce(e.c.at, sa.types.NullType()).label("at"), e.c.to_state,
            e.c.pause_code, e.c.reason)  # fmt: skip
    out: dict[int, list[TimelineEvent]] = {int(a["id"]): [] for a in agents}
    if not out:
        return out

    def event(row: Any) -> TimelineEvent:
        return TimelineEvent(row.agent_id, _utc(row.at), row.to_state, row.pause_code, row.id, row.reason)

    for agent_id in out:
        before = conn.execute(
            sa.select(*cols).where(e.c.agent_id == agent_id, e.c.at < start)
            .order_by(e.c.at.desc(), e.c.id.desc()).limit(1)
        ).first()  # fmt: skip
        if before is not None:
            out[agent_id].append(event(before))
    rows = conn.execute(
        sa.select(*cols).where(e.c.agent_id.in_(list(out)), e.c.at >= start, e.c.at <= end)
        .order_by(e.c.agent_id, e.c.at, e.c.id)
    )  # fmt: skip
    for row in rows:
        out[int(row.agent_id)].append(event(row))
    for a in agents:
        timeline = out[int(a["id"])]
        until = a["wrapup_until"]
        # Still the agent's current wrap-up (its event is the newest) and its limit has passed by ``end``.
        if (a["state"] == AgentState.WRAPUP and until is not None and timeline
                and timeline[-1].state == AgentState.WRAPUP and timeline[-1].at == a["state_since"]
                and timeline[-1].at <= until <= end):  # fmt: skip
            timeline.append(TimelineEvent(int(a["id"]), until, AgentState.READY, None, None, WRAPUP_LIMIT_PENDING))
    return out


def disposition_codes(conn: Connection, campaign_id: int) -> list[DispositionCodeRow]:
    with Session(bind=conn) as session:
        defs = dispositions_of(session, campaign_id)
    return [DispositionCodeRow(d.code, d.label, d.hotkey, d.meaning.value) for d in defs]


def _pause_codes(conn: Connection, campaign_id: int) -> list[str]:
    with Session(bind=conn) as session:
        return [d.code for d in pause_codes_of(session, campaign_id)]


def dispositions_by_hour(
    conn: Connection, campaign_id: int, tz: str, codes: Sequence[DispositionCodeRow]
) -> list[DispositionHourRow]:
    """The campaign's dispositioned calls by the local hour they were placed in (the hourly table's hours) and
    code, in hour order and then the campaign's code order."""
    a = _table("attempt")
    stmt = sa.select(call_time_sql(), a.c.agent_disposition).where(
        a.c.campaign_id == campaign_id, a.c.state == AttemptState.COMPLETED, a.c.agent_disposition.is_not(None)
    )
    zone = ZoneInfo(tz)
    counts: dict[tuple[datetime, str], int] = {}
    for when, code in conn.execute(stmt):
        # Floored in local wall time, as the hourly table (the repeated autumn hour is one row).
        hour = when.astimezone(zone).replace(minute=0, second=0, microsecond=0, tzinfo=None)
        counts[(hour, code)] = counts.get((hour, code), 0) + 1
    meaning = {c.code: c.meaning for c in codes}
    order = {c.code: i for i, c in enumerate(codes)}
    keys = sorted(counts, key=lambda k: (k[0], order.get(k[1], len(order)), k[1]))
    return [DispositionHourRow(hour, code, meaning.get(code), counts[(hour, code)]) for hour, code in keys]


def _with_all(keys: Sequence[str], values: Mapping[str, Any], zero: Any) -> dict[str, Any]:
    out = {k: values.get(k, zero) for k in keys}
    out.update({k: v for k, v in sorted(values.items()) if k not in out})
    return out


def agents_part(conn: Connection, campaign_id: int, *, start: datetime, end: datetime, tz: str) -> AgentsPart:
    """The agents' tables of a campaign report over ``[start, end]`` (hours in ``tz``)."""
    codes = disposition_codes(conn, campaign_id)
    hourly = dispositions_by_hour(conn, campaign_id, tz, codes)
    agents = campaign_agents(conn, campaign_id)
    if not agents:
        return AgentsPart([], hourly, codes)
    timelines = read_timelines(conn, agents, start, end)
    calls = handled_calls(conn, campaign_id, start, list(timelines))
    pause_codes = _pause_codes(conn, campaign_id)
    success = {c.code for c in codes if c.meaning == DispositionMeaning.SUCCESS}
    rows = []
    for a in agents:
        aid = int(a["id"])
        times = agent_time(timelines[aid], start, end)
        by_code = calls.get(aid, {})
        handled = sum(by_code.values())
        if a["removed_at"] is not None and not handled and not times.logged_in:
            continue
        given = {code: n for code, n in by_code.items() if code is not None}
        sales = sum(n for code, n in given.items() if code in success)
        talk = times.span(AgentState.TALKING)
        pauses = {k: shown_span(v) for k, v in times.by_pause_code.items()}
        rows.append(AgentRow(
            agent_id=aid, login=str(a["login"]), name=str(a["name"]), extension=str(a["extension"]),
            calls_handled=handled,
            talk_seconds=shown_span(talk),
            wrapup_seconds=shown_span(times.span(AgentState.WRAPUP)),
            ringing_seconds=shown_span(times.span(AgentState.RINGING)),
            ready_seconds=shown_span(times.span(AgentState.READY)),
            paused_seconds=shown_span(times.span(AgentState.PAUSED)),
            logged_in_seconds=shown_span(times.logged_in),
            working_seconds=shown_span(times.working),
            occupancy=occupancy(talk.total_seconds(), times.working.total_seconds()),
            sales=sales,
            conversion=conversion(sales, handled),
            undisposed=by_code.get(None, 0),
            pause_seconds=_with_all(pause_codes, pauses, 0.0),
            dispositions=_with_all([c.code for c in codes], given, 0),
        ))  # fmt: skip
    return AgentsPart(rows, hourly, codes)
