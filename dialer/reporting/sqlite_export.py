"""A campaign report as a standalone SQLite database: tables summary, contacts, attempts, hourly; ``kpi_*`` views.

Times are text ``YYYY-MM-DD HH:MM:SS+HH:MM`` in the report's timezone (see ``frames.text_frame``), which SQLite's
date functions understand, so the views can compute the 24-hour and 30-day windows themselves. SQLite stores text as
text: no formula guard is needed. The views compute each KPI from the tables with the definitions ``reports`` uses.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from sqlalchemy.engine import Engine

from dialer.reporting.figures import (
    CALL_STATES_SQL,
    MONEY_DIGITS,
    SECONDS_DIGITS,
    sqlite_window_clause,
    sqlite_window_starts,
)
from dialer.reporting.frames import (
    ATTEMPT_COLUMNS,
    HOURLY_COLUMNS,
    Column,
    Progress,
    contact_columns,
    contact_field_names,
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


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _create_table(db: sqlite3.Connection, name: str, columns: Sequence[Column]) -> str:
    cols = ", ".join(f"{_quote(c.name)} {_SQL_TYPES[c.kind]}".rstrip() for c in columns)
    db.execute(f"CREATE TABLE {_quote(name)} ({cols})")
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {_quote(name)} VALUES ({marks})"


def _insert(db: sqlite3.Connection, sql: str, frame: pd.DataFrame) -> None:
    db.executemany(sql, frame.itertuples(index=False, name=None))


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
