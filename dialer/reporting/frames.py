"""A campaign report's tables as pandas DataFrames read from the database, and their text form.

Every export format holds the same tables: summary (the report's KPIs, from ``Report.summary_items``),
contacts (one row per contact, its input fields as columns, its final disposition and callback), attempts, hourly,
agents (one row per agent, a column per pause code and per disposition code) and dispositions by hour. Their
columns are declared here (``Column``) and every writer follows them. Contacts and attempts are streamed from the
database in chunks (``iter_contact_frames``, ``iter_attempt_frames``), so a large campaign never sits in memory at
once; the agents' tables come from the ``Report`` as it is.

Times in the frames are aware datetimes in the report's timezone (the campaign's, or the one asked for), cut to the
whole second like the report's own time, so no row shows a time after the report's in any format. Ring and talk
seconds are rounded as ``dialer.reporting.figures.SECONDS_DIGITS`` says; a call's cost is left as billed. Their text
form (``text_frame``, shared by CSV and SQLite) is ``YYYY-MM-DD HH:MM:SS+HH:MM`` (local time with its UTC offset,
whole seconds), which SQLite's date functions understand; the hourly table's ``hour`` is the local hour
``YYYY-MM-DD HH:MM``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dialer.db import reader
from dialer.models import Callback
from dialer.outcomes.states import RESULT_OF_STATE, CallbackState, ContactResult
from dialer.reporting.figures import SECONDS_DIGITS
from dialer.reporting.reports import (
    Report,
    SummaryItem,
    attempt_time_utc,
    flag_series,
    raw,
    table,
    utc_series,
)

CHUNK_ROWS = 20_000

Progress = Callable[[int], None]
"""Called with the number of rows just written (for a progress bar)."""

Guard = Callable[[list[Any]], list[Any]]
"""Rewrites a text column's cell values (the CSV formula guard)."""

_RESULT_TEXT = {state: result.value for state, result in RESULT_OF_STATE.items()}


@dataclass(frozen=True)
class Column:
    """A table column; its kind decides the cell type each format writes."""

    name: str
    kind: str  # "text" | "int" | "float" | "bool" | "datetime" | "any"


CONTACT_COLUMNS = (
    Column("contact_id", "int"),
    Column("phone", "text"),
    Column("name", "text"),
)
CONTACT_TAIL_COLUMNS = (
    Column("final_state", "text"),
    Column("state", "text"),
    Column("attempts", "int"),
    Column("last_outcome", "text"),
    # The agent's verdict on the contact's latest dispositioned call, and the callback it asked for (if any, and
    # not cancelled since).
    Column("disposition", "text"),
    Column("disposition_note", "text"),
    Column("disposition_agent", "text"),
    Column("callback_at", "datetime"),
    Column("priority", "int"),
    Column("next_attempt_at", "datetime"),
    Column("source_line", "int"),
    Column("created_at", "datetime"),
)
ATTEMPT_COLUMNS = (
    Column("attempt_id", "int"),
    Column("contact_id", "int"),
    Column("phone", "text"),
    Column("call_time", "datetime"),
    Column("state", "text"),
    Column("disposition", "text"),
    Column("answered", "bool"),
    Column("connected", "bool"),
    Column("abandoned", "bool"),
    Column("agent", "text"),
    Column("ring_seconds", "float"),
    Column("talk_seconds", "float"),
    Column("cost", "float"),
    Column("finished_at", "datetime"),
    Column("pbx_call_id", "text"),
    Column("recording", "text"),
    Column("error", "text"),
    Column("agent_id", "int"),
    Column("agent_disposition", "text"),
    Column("agent_note", "text"),
    Column("disposition_at", "datetime"),
)
HOURLY_COLUMNS = (
    Column("hour", "datetime"),
    Column("calls_placed", "int"),
    Column("answered", "int"),
    Column("connected", "int"),
    Column("abandoned", "int"),
    Column("abandon_rate", "float"),
    Column("talk_seconds", "float"),
)
# Then a ``pause_<code>_seconds`` column per pause code and a ``disposition_<code>`` one per disposition code.
AGENT_COLUMNS = (
    Column("agent_id", "int"),
    Column("login", "text"),
    Column("name", "text"),
    Column("extension", "text"),
    Column("calls_handled", "int"),
    Column("talk_seconds", "float"),
    Column("wrapup_seconds", "float"),
    Column("ringing_seconds", "float"),
    Column("ready_seconds", "float"),
    Column("paused_seconds", "float"),
    Column("logged_in_seconds", "float"),
    Column("working_seconds", "float"),
    Column("occupancy", "float"),
    Column("sales", "int"),
    Column("conversion", "float"),
    Column("undisposed", "int"),
)
DISPOSITION_HOURLY_COLUMNS = (
    Column("hour", "datetime"),
    Column("code", "text"),
    Column("meaning", "text"),
    Column("calls", "int"),
)
DISPOSITION_CODE_COLUMNS = (
    Column("code", "text"),
    Column("label", "text"),
    Column("hotkey", "int"),
    Column("meaning", "text"),
)


# --- tables as DataFrames -----------------------------------------------------------------------------------


def _parse_fields(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def contact_field_names(engine: Engine, campaign_id: int) -> list[str]:
    """The keys of the campaign's ``Contact.fields``, in order of first appearance, at most ``MAX_FIELD_COLUMNS``:
    every export row has every column, so a campaign whose loads brought many different columns must not make
    each of a million rows that wide (a load keeps at most 200 columns; the fields stay in the database)."""
    c = table("contact")
    seen: dict[str, None] = {}
    stmt = sa.select(raw(c.c.fields)).where(c.c.campaign_id == campaign_id).order_by(c.c.id)
    with reader(engine).connect() as conn:
        for (value,) in conn.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(stmt):
            for key in _parse_fields(value):
                if len(seen) < MAX_FIELD_COLUMNS:
                    seen.setdefault(str(key), None)
    return list(seen)


MAX_FIELD_COLUMNS = 400


def contact_columns(field_names: Sequence[str]) -> list[Column]:
    """The contacts table's columns; an input field named like a fixed column becomes "<name> (input)"."""
    fixed = {c.name for c in (*CONTACT_COLUMNS, *CONTACT_TAIL_COLUMNS)}
    fields = [Column(f"{n} (input)" if n in fixed else n, "any") for n in field_names]
    return [*CONTACT_COLUMNS, *fields, *CONTACT_TAIL_COLUMNS]


def _local(values: pd.Series, tz: str) -> pd.Series:
    return _whole_seconds(utc_series(values)).dt.tz_convert(tz)


def _whole_seconds(utc: pd.Series) -> pd.Series:
    # Cut (not rounded) like ``figures.report_instant``: a call that ended during the report's second is not after it.
    return utc.dt.floor("s")


def _field_value(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return json.dumps(value, ensure_ascii=False)


def _final_disposition_joins(c: sa.Table) -> tuple[Any, Any, Any, sa.Table]:
    """Contacts ``c`` outer-joined to their latest dispositioned attempt, the agent of that attempt and the
    callback that disposition asked for (unless cancelled since); and those three.

    Each "latest" is a correlated lookup on the contact's own index (attempts and callbacks by ``contact_id``), so
    the join costs a few index probes a contact: a join on grouped subqueries makes SQLite scan them per contact.
    """
    a = table("attempt")
    cb = table(str(Callback.__tablename__))  # by the model: the table's name reads as a contact state
    inner_a, inner_cb = a.alias("a_latest"), cb.alias("cb_latest")
    disposed, callback, agent = a.alias("disposed"), cb.alias("callback_asked"), table("agent")
    latest_disposed = (
        sa.select(sa.func.max(inner_a.c.id))
        .where(inner_a.c.contact_id == c.c.id, inner_a.c.agent_disposition.is_not(None))
        .scalar_subquery()
    )
    latest_callback = (
        sa.select(sa.func.max(inner_cb.c.id))
        .where(
            inner_cb.c.contact_id == c.c.id,
            inner_cb.c.from_attempt_id == disposed.c.id,
            inner_cb.c.state != CallbackState.CANCELLED,
        )
        .scalar_subquery()
    )
    joined = (
        c.outerjoin(disposed, disposed.c.id == latest_disposed)
        .outerjoin(agent, agent.c.id == disposed.c.agent_id)
        .outerjoin(callback, callback.c.id == latest_callback)
    )
    return joined, disposed, callback, agent


def count_rows(engine: Engine, table_name: str, campaign_id: int) -> int:
    """How many rows of ``contact`` or ``attempt`` belong to the campaign."""
    t = table(table_name)
    with reader(engine).connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).where(t.c.campaign_id == campaign_id)).scalar_one()
        )


def iter_contact_frames(
    engine: Engine,
    report: Report,
    field_names: Sequence[str],
    *,
    chunk_rows: int = CHUNK_ROWS,
    limit: int | None = None,
) -> Iterator[pd.DataFrame]:
    """The contacts table in chunks, columns as ``contact_columns(field_names)``; at most ``limit`` rows."""
    c = table("contact")
    joined, disposed, callback, agent = _final_disposition_joins(c)
    stmt = (
        sa.select(
            c.c.id,
            c.c.phone,
            c.c.name,
            raw(c.c.fields).label("fields"),
            c.c.state,
            c.c.attempts,
            c.c.last_disposition,
            c.c.priority,
            raw(c.c.next_attempt_at).label("next_attempt_at"),
            c.c.source_line,
            raw(c.c.created_at).label("created_at"),
            disposed.c.agent_disposition,
            disposed.c.agent_note,
            agent.c.login.label("disposition_agent"),
            raw(callback.c.due_at).label("callback_at"),
        )
        .select_from(joined)
        .where(c.c.campaign_id == report.campaign_id)
        .order_by(c.c.id)
        .limit(limit)
    )
    names = [col.name for col in contact_columns(field_names)]
    with reader(engine).connect() as conn:
        chunks = pd.read_sql(stmt, conn.execution_options(stream_results=True), chunksize=chunk_rows)
        for chunk in chunks:
            fields = [_parse_fields(v) for v in chunk["fields"].tolist()]
            data: dict[str, Any] = {
                "contact_id": chunk["id"],
                "phone": chunk["phone"],
                "name": chunk["name"],
            }
            for key, name in zip(
                field_names,
                names[len(CONTACT_COLUMNS) : len(CONTACT_COLUMNS) + len(field_names)],
                strict=True,
            ):
                data[name] = pd.Series(
                    [_field_value(f.get(key)) for f in fields], index=chunk.index, dtype=object
                )
            data["final_state"] = chunk["state"].map(_RESULT_TEXT).fillna(ContactResult.PENDING.value)
            data["state"] = chunk["state"]
            data["attempts"] = chunk["attempts"]
            data["last_outcome"] = chunk["last_disposition"]
            data["disposition"] = chunk["agent_disposition"]
            data["disposition_note"] = chunk["agent_note"]
            data["disposition_agent"] = chunk["disposition_agent"]
            data["callback_at"] = _local(chunk["callback_at"], report.timezone)
            data["priority"] = chunk["priority"]
            data["next_attempt_at"] = _local(chunk["next_attempt_at"], report.timezone)
            data["source_line"] = chunk["source_line"]
            data["created_at"] = _local(chunk["created_at"], report.timezone)
            yield pd.DataFrame(data, columns=names)


def iter_attempt_frames(
    engine: Engine, report: Report, *, chunk_rows: int = CHUNK_ROWS, limit: int | None = None
) -> Iterator[pd.DataFrame]:
    """The attempts table in chunks (columns ``ATTEMPT_COLUMNS``; ``call_time`` as in the report); at most
    ``limit`` rows."""
    a = table("attempt")
    stmt = (
        sa.select(
            a.c.id,
            a.c.contact_id,
            a.c.phone,
            raw(a.c.placed_at).label("placed_at"),
            raw(a.c.sent_at).label("sent_at"),
            raw(a.c.created_at).label("created_at"),
            a.c.state,
            a.c.disposition,
            raw(a.c.answered).label("answered"),
            raw(a.c.connected).label("connected"),
            raw(a.c.abandoned).label("abandoned"),
            a.c.agent,
            a.c.ring_seconds,
            a.c.talk_seconds,
            a.c.cost,
            raw(a.c.finished_at).label("finished_at"),
            a.c.pbx_call_id,
            a.c.recording,
            a.c.error,
            a.c.agent_id,
            a.c.agent_disposition,
            a.c.agent_note,
            raw(a.c.disposition_at).label("disposition_at"),
        )
        .where(a.c.campaign_id == report.campaign_id)
        .order_by(a.c.id)
        .limit(limit)
    )
    names = [col.name for col in ATTEMPT_COLUMNS]
    with reader(engine).connect() as conn:
        chunks = pd.read_sql(stmt, conn.execution_options(stream_results=True), chunksize=chunk_rows)
        for chunk in chunks:
            data: dict[str, Any] = {
                "attempt_id": chunk["id"],
                "contact_id": chunk["contact_id"],
                "phone": chunk["phone"],
                "call_time": _whole_seconds(attempt_time_utc(chunk)).dt.tz_convert(report.timezone),
                "state": chunk["state"],
                "disposition": chunk["disposition"],
            }
            for flag in ("answered", "connected", "abandoned"):
                data[flag] = flag_series(chunk[flag]).map({1.0: True, 0.0: False})
            data["agent"] = chunk["agent"]
            for col in ("ring_seconds", "talk_seconds"):
                data[col] = pd.to_numeric(chunk[col], errors="coerce").round(SECONDS_DIGITS)
            data["cost"] = chunk["cost"]
            data["finished_at"] = _local(chunk["finished_at"], report.timezone)
            data["pbx_call_id"] = chunk["pbx_call_id"]
            data["recording"] = chunk["recording"]
            data["error"] = chunk["error"]
            data["agent_id"] = chunk["agent_id"]
            data["agent_disposition"] = chunk["agent_disposition"]
            data["agent_note"] = chunk["agent_note"]
            data["disposition_at"] = _local(chunk["disposition_at"], report.timezone)
            yield pd.DataFrame(data, columns=names)


# --- cell values --------------------------------------------------------------------------------------------


def cell_values(values: pd.Series) -> list[Any]:
    """A column as Python values (int, float, str, bool...) with None for every kind of missing."""
    return values.astype(object).where(values.notna(), None).tolist()


def _offset_text(values: pd.Series) -> pd.Series:
    """Aware datetimes as ``YYYY-MM-DD HH:MM:SS+HH:MM`` text (None where missing)."""
    if values.isna().all():
        return pd.Series([None] * len(values), index=values.index, dtype=object)
    # strftime costs microseconds a value; numpy's ISO text and a lookup of the few distinct offsets do not.
    local = values.dt.tz_localize(None)
    base = local.to_numpy().astype("datetime64[s]").astype(str)
    minutes = (local - values.dt.tz_convert("UTC").dt.tz_localize(None)) / pd.Timedelta(minutes=1)
    offsets = {m: _offset(m) for m in minutes.dropna().unique()}
    text = [
        None if m != m else f"{b[:10]} {b[11:]}{offsets[m]}"
        for b, m in zip(base, minutes.tolist(), strict=True)
    ]
    return pd.Series(text, index=values.index, dtype=object)


def _offset(minutes: float) -> str:
    sign = "-" if minutes < 0 else "+"
    h, m = divmod(abs(int(minutes)), 60)
    return f"{sign}{h:02d}:{m:02d}"


def text_frame(frame: pd.DataFrame, columns: Sequence[Column], *, guard: Guard | None = None) -> pd.DataFrame:
    """``frame`` for CSV / SQLite: times as offset text, booleans as 1/0, text cells through ``guard`` if given."""
    out: dict[str, pd.Series] = {}
    for col in columns:
        values = frame[col.name]
        if col.kind == "datetime":
            cells = _offset_text(values).tolist()
        elif col.kind in ("bool", "int"):
            cells = [None if v is None else int(v) for v in cell_values(values)]
        elif col.kind in ("text", "any") and guard is not None:
            cells = guard(cell_values(values))
        else:
            cells = cell_values(values)
        # object dtype: an int column with gaps must not turn into floats.
        out[col.name] = pd.Series(cells, index=frame.index, dtype=object)
    return pd.DataFrame(out, columns=[c.name for c in columns])


def summary_value_text(item: SummaryItem) -> Any:
    """A summary value for CSV / SQLite: a time as offset text, anything else as it is."""
    if isinstance(item.value, datetime):
        return _offset_text(pd.Series([pd.Timestamp(item.value)])).iloc[0]
    return item.value


def hourly_text(report: Report) -> pd.DataFrame:
    """The hourly table for CSV / SQLite: ``hour`` as local ``YYYY-MM-DD HH:MM`` text."""
    frame = report.hourly_frame()
    frame["hour"] = [h.strftime("%Y-%m-%d %H:%M") for h in frame["hour"]]
    frame["abandon_rate"] = cell_values(frame["abandon_rate"])
    return frame


# --- the agents' tables -------------------------------------------------------------------------------------


def pause_column(code: str) -> str:
    return f"pause_{code}_seconds"


def disposition_column(code: str) -> str:
    return f"disposition_{code}"


def agent_columns(report: Report) -> list[Column]:
    """The agents table's columns: ``AGENT_COLUMNS``, then one per pause code and one per disposition code (the
    campaign's, then any other the agents' rows carry)."""
    pauses: dict[str, None] = {}
    dispositions: dict[str, None] = {}
    for row in report.agents:
        pauses.update(dict.fromkeys(row.pause_seconds))
        dispositions.update(dict.fromkeys(row.dispositions))
    return [
        *AGENT_COLUMNS,
        *(Column(pause_column(code), "float") for code in pauses),
        *(Column(disposition_column(code), "int") for code in dispositions),
    ]


def agents_frame(report: Report, columns: Sequence[Column]) -> pd.DataFrame:
    """The agents table (``columns`` from ``agent_columns``): a code an agent has no row for counts zero."""
    fixed = [c.name for c in AGENT_COLUMNS]
    zero = {c.name: (0.0 if c.kind == "float" else 0) for c in columns[len(fixed):]}
    records = []
    for row in report.agents:
        record: dict[str, Any] = {name: getattr(row, name) for name in fixed}
        record.update(zero)
        record.update({pause_column(k): v for k, v in row.pause_seconds.items()})
        record.update({disposition_column(k): v for k, v in row.dispositions.items()})
        records.append(record)
    return pd.DataFrame(records, columns=[c.name for c in columns])


def dispositions_hourly_text(report: Report) -> pd.DataFrame:
    """The dispositions-by-hour table for CSV / SQLite: ``hour`` as local ``YYYY-MM-DD HH:MM`` text."""
    return pd.DataFrame(
        [(r.hour.strftime("%Y-%m-%d %H:%M"), r.code, r.meaning, r.calls) for r in report.dispositions_hourly],
        columns=[c.name for c in DISPOSITION_HOURLY_COLUMNS],
    )


def disposition_codes_frame(report: Report) -> pd.DataFrame:
    return pd.DataFrame(
        [(d.code, d.label, d.hotkey, d.meaning) for d in report.disposition_codes],
        columns=[c.name for c in DISPOSITION_CODE_COLUMNS],
    )
