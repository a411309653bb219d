"""A campaign report as a standalone SQLite database: tables summary, contacts, attempts, hourly, agents,
dispositions_hourly, disposition_codes, agent_events; ``kpi_*`` views.

Times are text ``YYYY-MM-DD HH:MM:SS+HH:MM`` in the report's timezone (see ``frames.text_frame``), which SQLite's
date functions understand, so the views can compute the 24-hour and 30-day windows themselves. SQLite stores text as
text: no formula guard is needed. The views compute each KPI from the tables with the definitions ``reports`` uses.

``agent_events`` is the timeline the report's agent figures were read from (``agent_report.read_timelines``), one
row per state change, with ``at_us`` (microseconds since 1970: exact) next to the whole-second ``at``;
``kpi_agents`` computes every agent's time in state from it (``figures.agent_time``: each state lasts until the
agent's next event, the last until the report time, clipped to the agents' period from the summary) and their
calls, sales, occupancy and conversion from ``attempts``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from sqlalchemy.engine import Engine

from dialer.db import reader
from dialer.outcomes.states import WORKING_AGENT_STATES, AgentState, DispositionMeaning, sql_list
from dialer.reporting.agent_report import campaign_agents, read_timelines
from dialer.reporting.figures import (
    CALL_STATES_SQL,
    MONEY_DIGITS,
    SECONDS_DIGITS,
    sqlite_window_clause,
    sqlite_window_starts,
)
from dialer.reporting.frames import (
    ATTEMPT_COLUMNS,
    DISPOSITION_CODE_COLUMNS,
    DISPOSITION_HOURLY_COLUMNS,
    HOURLY_COLUMNS,
    Column,
    Progress,
    agent_columns,
    agents_frame,
    contact_columns,
    contact_field_names,
    disposition_codes_frame,
    dispositions_hourly_text,
    hourly_text,
    iter_attempt_frames,
    iter_contact_frames,
    summary_value_text,
    text_frame,
)
from dialer.reporting.reports import Report

_SQL_TYPES = {
    "text": "TEXT",
    "int": "INTEGER",
    "float": "REAL",
    "bool": "INTEGER",
    "datetime": "TEXT",
    "any": "",
}

SQLITE_VIEWS = {
    "kpi_calls": """
        SELECT COUNT(*) AS calls_placed,
               COALESCE(SUM(answered), 0) AS answered,
               COALESCE(SUM(connected), 0) AS connected,
               COALESCE(SUM(abandoned), 0) AS abandoned
        FROM attempts WHERE state IN ({calls})""",
    "kpi_answer_rate": """
        SELECT answered, calls_placed, CAST(answered AS REAL) / NULLIF(calls_placed, 0) AS answer_rate
        FROM kpi_calls""",
    "kpi_abandon_rate": """
        SELECT abandoned, answered, CAST(abandoned AS REAL) / NULLIF(answered, 0) AS abandon_rate
        FROM kpi_calls""",
    "kpi_abandon_rate_windows": """
        WITH report_time AS (SELECT value AS at FROM summary WHERE key = 'generated_at'),
        windows(name, since) AS (
            {window_starts}
        )
        SELECT w.name AS period,
               COALESCE(SUM(a.abandoned), 0) AS abandoned,
               COALESCE(SUM(a.answered), 0) AS answered,
               CAST(SUM(a.abandoned) AS REAL) / NULLIF(SUM(a.answered), 0) AS abandon_rate
        FROM windows AS w
        LEFT JOIN attempts AS a
          ON {in_window}
        GROUP BY w.name""",
    "kpi_contacts": """
        SELECT final_state, COUNT(*) AS contacts FROM contacts GROUP BY final_state""",
    "kpi_list_penetration": """
        SELECT SUM(attempts > 0) AS attempted, COUNT(*) AS contacts,
               CAST(SUM(attempts > 0) AS REAL) / NULLIF(COUNT(*), 0) AS list_penetration
        FROM contacts""",
    "kpi_attempts_per_reached": """
        SELECT (SELECT calls_placed FROM kpi_calls) AS calls_placed,
               (SELECT COUNT(*) FROM contacts WHERE final_state = 'reached') AS reached,
               CAST((SELECT calls_placed FROM kpi_calls) AS REAL)
                   / NULLIF((SELECT COUNT(*) FROM contacts WHERE final_state = 'reached'), 0)
                   AS attempts_per_reached""",
    "kpi_talk": """
        SELECT ROUND(COALESCE(SUM(talk_seconds), 0.0), {seconds}) AS talk_seconds,
               ROUND(AVG(talk_seconds), {seconds}) AS avg_talk_seconds
        FROM attempts WHERE state IN ({calls}) AND connected = 1 AND talk_seconds IS NOT NULL""",
    "kpi_occupancy": """
        SELECT (SELECT talk_seconds FROM kpi_talk) AS talk_seconds,
               (SELECT value FROM summary WHERE key = 'agent_seconds') AS agent_seconds,
               (SELECT talk_seconds FROM kpi_talk)
                   / NULLIF((SELECT value FROM summary WHERE key = 'agent_seconds'), 0) AS occupancy""",
    "kpi_cost": """
        SELECT ROUND(COALESCE(SUM(cost), 0.0), {money}) AS cost FROM attempts""",
    "kpi_summary": """
        SELECT c.calls_placed, c.answered, c.connected, c.abandoned,
               ar.answer_rate, ab.abandon_rate,
               (SELECT abandon_rate FROM kpi_abandon_rate_windows WHERE period = '24h') AS abandon_rate_24h,
               (SELECT abandon_rate FROM kpi_abandon_rate_windows WHERE period = '30d') AS abandon_rate_30d,
               t.talk_seconds, t.avg_talk_seconds, o.occupancy,
               p.attempts_per_reached, lp.list_penetration, k.cost
        FROM kpi_calls AS c, kpi_answer_rate AS ar, kpi_abandon_rate AS ab, kpi_talk AS t, kpi_occupancy AS o,
             kpi_attempts_per_reached AS p, kpi_list_penetration AS lp, kpi_cost AS k""",
}
# The views' definitions (and rounding) come from dialer.reporting.figures, like the report's and the engine's.
SQLITE_VIEWS = {
    name: sql.format(calls=CALL_STATES_SQL, window_starts=sqlite_window_starts(),
                     in_window=sqlite_window_clause("a", "w.since"), seconds=SECONDS_DIGITS, money=MONEY_DIGITS)
    for name, sql in SQLITE_VIEWS.items()
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _shown_span_sql(microseconds: str) -> str:
    """``figures.shown_span`` in SQLite: whole microseconds rounded half up, in integers."""
    unit = 10 ** (6 - SECONDS_DIGITS)
    return f"((COALESCE({microseconds}, 0) + {unit // 2}) / {unit}) / {float(10**SECONDS_DIGITS)}"


AGENT_EVENT_COLUMNS = (
    Column("agent_id", "int"),
    Column("at", "datetime"),
    Column("at_us", "int"),
    Column("state", "text"),
    Column("pause_code", "text"),
    Column("event_id", "int"),
    Column("reason", "text"),
)
_AGENT_VIEW = """
    WITH bounds AS (
        SELECT CAST(strftime('%s', (SELECT value FROM summary WHERE key = 'agents_from')) AS INTEGER) AS lo_s,
               CAST(strftime('%s', (SELECT value FROM summary WHERE key = 'generated_at')) AS INTEGER) AS hi_s
    ),
    bounds_us AS (SELECT lo_s * 1000000 AS lo, hi_s * 1000000 AS hi FROM bounds),
    spans AS (
        -- Whole microseconds, so the sums are exact, as the report's.
        SELECT e.agent_id, e.state,
               MAX(0, MIN(COALESCE(LEAD(e.at_us) OVER (PARTITION BY e.agent_id ORDER BY e.at_us, e.rowid), b.hi),
                          b.hi) - MAX(e.at_us, b.lo)) AS us
        FROM agent_events AS e, bounds_us AS b
    ),
    times AS (
        SELECT agent_id,
               SUM(CASE WHEN state <> {logged_out} THEN us ELSE 0 END) AS logged_in_us,
               SUM(CASE WHEN state IN ({working}) THEN us ELSE 0 END) AS working_us,
               SUM(CASE WHEN state = {talking} THEN us ELSE 0 END) AS talk_us,
               SUM(CASE WHEN state = {wrapup} THEN us ELSE 0 END) AS wrapup_us,
               SUM(CASE WHEN state = {ringing} THEN us ELSE 0 END) AS ringing_us,
               SUM(CASE WHEN state = {ready} THEN us ELSE 0 END) AS ready_us,
               SUM(CASE WHEN state = {paused} THEN us ELSE 0 END) AS paused_us
        FROM spans GROUP BY agent_id
    ),
    handled AS (
        SELECT t.agent_id, COUNT(*) AS calls,
               SUM(t.agent_disposition IN (SELECT code FROM disposition_codes WHERE meaning = {success})) AS sales
        FROM attempts AS t, bounds AS b
        WHERE t.state IN ({calls}) AND t.connected = 1 AND t.agent_id IS NOT NULL
          AND CAST(strftime('%s', t.call_time) AS INTEGER) >= b.lo_s
        GROUP BY t.agent_id
    )
    SELECT a.agent_id, a.login,
           COALESCE(h.calls, 0) AS calls_handled,
           {talk_seconds} AS talk_seconds,
           {wrapup_seconds} AS wrapup_seconds,
           {ringing_seconds} AS ringing_seconds,
           {ready_seconds} AS ready_seconds,
           {paused_seconds} AS paused_seconds,
           {logged_in_seconds} AS logged_in_seconds,
           {working_seconds} AS working_seconds,
           CAST(m.talk_us AS REAL) / NULLIF(m.working_us, 0) AS occupancy,
           COALESCE(h.sales, 0) AS sales,
           CAST(h.sales AS REAL) / NULLIF(h.calls, 0) AS conversion
    FROM agents AS a
    LEFT JOIN times AS m ON m.agent_id = a.agent_id
    LEFT JOIN handled AS h ON h.agent_id = a.agent_id
    ORDER BY a.login, a.agent_id"""
# Time in state and the agents' figures as dialer.reporting.figures defines them (see the module docstring).
SQLITE_VIEWS["kpi_agents"] = _AGENT_VIEW.format(
    logged_out=f"'{AgentState.LOGGED_OUT.value}'", working=sql_list(WORKING_AGENT_STATES),
    talking=f"'{AgentState.TALKING.value}'", wrapup=f"'{AgentState.WRAPUP.value}'",
    ringing=f"'{AgentState.RINGING.value}'", ready=f"'{AgentState.READY.value}'",
    paused=f"'{AgentState.PAUSED.value}'", success=f"'{DispositionMeaning.SUCCESS.value}'",
    calls=CALL_STATES_SQL,
    **{name: _shown_span_sql("m." + name.replace("_seconds", "_us"))
       for name in ("talk_seconds", "wrapup_seconds", "ringing_seconds", "ready_seconds", "paused_seconds",
                    "logged_in_seconds", "working_seconds")},
)  # fmt: skip


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _create_table(db: sqlite3.Connection, name: str, columns: Sequence[Column]) -> str:
    cols = ", ".join(f"{_quote(c.name)} {_SQL_TYPES[c.kind]}".rstrip() for c in columns)
    db.execute(f"CREATE TABLE {_quote(name)} ({cols})")
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {_quote(name)} VALUES ({marks})"


def _insert(db: sqlite3.Connection, sql: str, frame: pd.DataFrame) -> None:
    db.executemany(sql, frame.itertuples(index=False, name=None))


def _agent_events(engine: Engine, report: Report) -> pd.DataFrame:
    """The timeline the report's agents' figures were read from (its agents, its period)."""
    rows = []
    if report.agents and report.agents_from is not None:
        with reader(engine).connect() as conn:
            agents = [a for a in campaign_agents(conn, report.campaign_id)
                      if int(a["id"]) in {r.agent_id for r in report.agents}]  # fmt: skip
            timelines = read_timelines(conn, agents, report.agents_from, report.generated_at)
        rows = [(e.agent_id, e.at, (e.at - _EPOCH) // timedelta(microseconds=1), e.state, e.pause_code, e.event_id,
                 e.reason) for timeline in timelines.values() for e in timeline]  # fmt: skip
    frame = pd.DataFrame(rows, columns=[c.name for c in AGENT_EVENT_COLUMNS])
    frame["at"] = pd.to_datetime(frame["at"], utc=True).dt.floor("s").dt.tz_convert(report.timezone)
    return frame


def _write_agents(db: sqlite3.Connection, engine: Engine, report: Report) -> None:
    columns = agent_columns(report)
    _insert(db, _create_table(db, "agents", columns), text_frame(agents_frame(report, columns), columns))
    hours = [Column("hour", "text"), *DISPOSITION_HOURLY_COLUMNS[1:]]
    _insert(db, _create_table(db, "dispositions_hourly", hours), dispositions_hourly_text(report))
    _insert(db, _create_table(db, "disposition_codes", DISPOSITION_CODE_COLUMNS), disposition_codes_frame(report))
    events = _agent_events(engine, report)
    _insert(db, _create_table(db, "agent_events", AGENT_EVENT_COLUMNS), text_frame(events, AGENT_EVENT_COLUMNS))


def export_sqlite(engine: Engine, report: Report, path: Path, *, progress: Progress | None = None) -> Path:
    """The report as a standalone SQLite database: tables summary, contacts, attempts, hourly, and ``kpi_*``
    views (``kpi_summary`` has every KPI in one row). An existing file is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    db = sqlite3.connect(partial)
    try:
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("CREATE TABLE summary (key TEXT PRIMARY KEY, label TEXT NOT NULL, value)")
        db.executemany(
            "INSERT INTO summary VALUES (?, ?, ?)",
            [(i.key, i.label, summary_value_text(i)) for i in report.summary_items()],
        )
        field_names = contact_field_names(engine, report.campaign_id)
        columns = contact_columns(field_names)
        sql = _create_table(db, "contacts", columns)
        for frame in iter_contact_frames(engine, report, field_names):
            _insert(db, sql, text_frame(frame, columns))
            if progress:
                progress(len(frame))
        sql = _create_table(db, "attempts", ATTEMPT_COLUMNS)
        for frame in iter_attempt_frames(engine, report):
            _insert(db, sql, text_frame(frame, ATTEMPT_COLUMNS))
            if progress:
                progress(len(frame))
        hourly_columns = [Column("hour", "text"), *HOURLY_COLUMNS[1:]]
        _insert(db, _create_table(db, "hourly", hourly_columns), hourly_text(report))
        _write_agents(db, engine, report)
        db.execute("CREATE INDEX ix_attempts_contact ON attempts (contact_id)")
        db.execute("CREATE INDEX ix_attempts_state ON attempts (state)")
        db.execute("CREATE UNIQUE INDEX ix_contacts_id ON contacts (contact_id)")
        for name, body in SQLITE_VIEWS.items():
            db.execute(f"CREATE VIEW {name} AS {body.strip()}")
        db.commit()
    finally:
        db.close()
    partial.replace(path)
    return path
