"""A campaign report as files: a CSV directory, an XLSX workbook, a standalone SQLite database.

Every format holds the same four tables: summary (the report's KPIs), contacts (one row per contact, its input
fields as columns), attempts, hourly. Contacts and attempts are streamed from the database in chunks, so a large
campaign never sits in memory at once.

Times are in the report's timezone (the campaign's, or the one asked for):
- XLSX: real Excel datetimes, timezone-naive local times; the zone is named in the column headers and in the
  Summary sheet.
- CSV and SQLite: text ``YYYY-MM-DD HH:MM:SS+HH:MM`` (local time with its UTC offset, whole seconds), which SQLite's
  date functions understand; the hourly table's ``hour`` is the local hour ``YYYY-MM-DD HH:MM``.

Text from the input file (names, fields) is data, never a formula or a link:
- XLSX: every text cell is a string cell (xlsxwriter's ``write_string``, with the workbook refusing to turn strings
  into formulas, URLs or numbers; the contacts and attempts rows as inline-string cells), so
  ``=HYPERLINK("http://x","y")`` is stored and shown as that text.
- CSV has no cell types, and spreadsheet programs run a cell starting with ``=``, ``+``, ``-``, ``@``, tab or carriage
  return as a formula. Following OWASP ("CSV injection"), such text cells get a leading single quote (``'=1+2``).
  Text that is only a number (``+442037691880``, ``-3.5``) is left alone: it cannot run anything, and phone numbers
  stay as they are. SQLite stores text as text and needs no guard.

An XLSX sheet holds at most 1,048,576 rows including its header; longer tables continue on further sheets named
"Contacts (2)", "Contacts (3)", ...
"""

from __future__ import annotations

import csv
import json
import math
import re
import sqlite3
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from xlsxwriter.utility import xl_col_to_name

from dialer.db import reader
from dialer.reporting.reports import (
    FINAL_STATE_OF,
    Report,
    SummaryItem,
    attempt_time_utc,
    flag_series,
    raw,
    table,
    utc_series,
)

EXCEL_MAX_ROWS = 1_048_576
CHUNK_ROWS = 20_000
EXCEL_EPOCH = pd.Timestamp("1899-12-30")
XLSX_OPTIONS = {
    "strings_to_formulas": False,
    "strings_to_urls": False,
    "strings_to_numbers": False,
}
CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_CSV_FIRST = frozenset(CSV_FORMULA_START)
_PLAIN_NUMBER = re.compile(r"[+-]?\d[\d ]*(?:[.,]\d+)?")

Progress = Callable[[int], None]
"""Called with the number of rows just written (for a progress bar)."""


@dataclass(frozen=True)
class Column:
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
    Column("error", "text"),
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


# --- tables as DataFrames -----------------------------------------------------------------------------------


def _parse_fields(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def contact_field_names(engine: Engine, campaign_id: int) -> list[str]:
    """Every key of the campaign's ``Contact.fields``, in order of first appearance."""
    c = table("contact")
    seen: dict[str, None] = {}
    stmt = sa.select(raw(c.c.fields)).where(c.c.campaign_id == campaign_id).order_by(c.c.id)
    with reader(engine).connect() as conn:
        for (value,) in conn.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(stmt):
            for key in _parse_fields(value):
                seen.setdefault(str(key), None)
    return list(seen)


def contact_columns(field_names: Sequence[str]) -> list[Column]:
    """The contacts table's columns; an input field named like a fixed column becomes "<name> (input)"."""
    fixed = {c.name for c in (*CONTACT_COLUMNS, *CONTACT_TAIL_COLUMNS)}
    fields = [Column(f"{n} (input)" if n in fixed else n, "any") for n in field_names]
    return [*CONTACT_COLUMNS, *fields, *CONTACT_TAIL_COLUMNS]


def _local(values: pd.Series, tz: str) -> pd.Series:
    return utc_series(values).dt.tz_convert(tz)


def _field_value(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return json.dumps(value, ensure_ascii=False)


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
        )
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
            data["final_state"] = chunk["state"].map(FINAL_STATE_OF)
            data["state"] = chunk["state"]
            data["attempts"] = chunk["attempts"]
            data["last_outcome"] = chunk["last_disposition"]
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
            a.c.error,
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
                "call_time": attempt_time_utc(chunk).dt.tz_convert(report.timezone),
                "state": chunk["state"],
                "disposition": chunk["disposition"],
            }
            for flag in ("answered", "connected", "abandoned"):
                data[flag] = flag_series(chunk[flag]).map({1.0: True, 0.0: False})
            for col in ("agent", "ring_seconds", "talk_seconds", "cost"):
                data[col] = chunk[col]
            data["finished_at"] = _local(chunk["finished_at"], report.timezone)
            data["pbx_call_id"] = chunk["pbx_call_id"]
            data["error"] = chunk["error"]
            yield pd.DataFrame(data, columns=names)


def summary_frame(report: Report) -> pd.DataFrame:
    """key, label, value (object column: numbers, text, aware local datetimes, None)."""
    items = report.summary_items()
    return pd.DataFrame(
        {
            "key": [i.key for i in items],
            "label": [i.label for i in items],
            "value": pd.Series([i.value for i in items], dtype=object),
        }
    )


# --- cell values --------------------------------------------------------------------------------------------


def _cells(values: pd.Series) -> list[Any]:
    """A column as Python values (int, float, str, bool...) with None for every kind of missing."""
    return values.astype(object).where(values.notna(), None).tolist()


def csv_safe(value: Any) -> Any:
    """``value`` for a CSV cell: text a spreadsheet would run as a formula gets a leading ``'``."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


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


def _text_frame(frame: pd.DataFrame, columns: Sequence[Column], *, guard: bool) -> pd.DataFrame:
    """``frame`` for CSV / SQLite: times as offset text, booleans as 1/0, text optionally formula-guarded."""
    out: dict[str, pd.Series] = {}
    for col in columns:
        values = frame[col.name]
        if col.kind == "datetime":
            cells = _offset_text(values).tolist()
        elif col.kind in ("bool", "int"):
            cells = [None if v is None else int(v) for v in _cells(values)]
        elif col.kind in ("text", "any") and guard:
            # The cheap first-character test first: csv_safe only sees the few cells that may need a quote.
            cells = [csv_safe(v) if isinstance(v, str) and v[:1] in _CSV_FIRST else v for v in _cells(values)]
        else:
            cells = _cells(values)
        # object dtype: an int column with gaps must not turn into floats.
        out[col.name] = pd.Series(cells, index=frame.index, dtype=object)
    return pd.DataFrame(out, columns=[c.name for c in columns])


def _summary_value_text(item: SummaryItem) -> Any:
    if isinstance(item.value, datetime):
        return _offset_text(pd.Series([pd.Timestamp(item.value)])).iloc[0]
    return item.value


def _hourly_text(report: Report) -> pd.DataFrame:
    frame = report.hourly_frame()
    frame["hour"] = [h.strftime("%Y-%m-%d %H:%M") for h in frame["hour"]]
    frame["abandon_rate"] = _cells(frame["abandon_rate"])
    return frame


# --- CSV ------------------------------------------------------------------------------------------------------


def export_csv(
    engine: Engine, report: Report, directory: Path, *, progress: Progress | None = None
) -> list[Path]:
    """summary.csv, contacts.csv, attempts.csv, hourly.csv in ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{name}.csv" for name in ("summary", "contacts", "attempts", "hourly")]
    summary = pd.DataFrame(
        {
            "key": [i.key for i in report.summary_items()],
            "label": [i.label for i in report.summary_items()],
            "value": [csv_safe(_summary_value_text(i)) for i in report.summary_items()],
        }
    )
    summary.to_csv(paths[0], index=False, quoting=csv.QUOTE_MINIMAL)

    field_names = contact_field_names(engine, report.campaign_id)
    columns = contact_columns(field_names)
    _stream_csv(paths[1], columns, iter_contact_frames(engine, report, field_names), progress)
    _stream_csv(paths[2], list(ATTEMPT_COLUMNS), iter_attempt_frames(engine, report), progress)
    _hourly_text(report).to_csv(paths[3], index=False)
    return paths


def _stream_csv(
    path: Path, columns: Sequence[Column], frames: Iterator[pd.DataFrame], progress: Progress | None
) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        pd.DataFrame(columns=[c.name for c in columns]).to_csv(handle, index=False)
        for frame in frames:
            _text_frame(frame, columns, guard=True).to_csv(handle, index=False, header=False)
            if progress:
                progress(len(frame))


# --- XLSX -----------------------------------------------------------------------------------------------------


class _Formats:
    def __init__(self, book: Any) -> None:
        self.header = book.add_format({"bold": True, "bottom": 1, "text_wrap": True, "valign": "top"})
        self.datetime = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        self.hour = book.add_format({"num_format": "yyyy-mm-dd hh:mm"})
        self.count = book.add_format({"num_format": "#,##0"})
        self.number = book.add_format({"num_format": "#,##0.00"})
        self.rate = book.add_format({"num_format": "0.0%"})
        self.seconds = book.add_format({"num_format": "#,##0"})


def _excel_serials(values: pd.Series) -> list[float | None]:
    """Aware datetimes as Excel serial day numbers of their local wall time (what Excel stores for a date)."""
    if values.isna().all():
        return [None] * len(values)
    naive = values.dt.tz_localize(None)
    serial = (naive - EXCEL_EPOCH) / pd.Timedelta(days=1)
    return _cells(serial)


def _write_summary(book: Any, report: Report, formats: _Formats) -> Any:
    sheet = book.add_worksheet("Summary")
    sheet.set_column(0, 0, 30)
    sheet.set_column(1, 1, 24)
    sheet.set_column(2, 2, 24)
    for i, header in enumerate(("Metric", "Value", "Key")):
        sheet.write_string(0, i, header, formats.header)
    kinds = {
        "count": formats.count,
        "rate": formats.rate,
        "seconds": formats.seconds,
        "money": formats.number,
        "number": formats.number,
    }
    for r, item in enumerate(report.summary_items(), start=1):
        label = f"{item.label} ({report.timezone})" if item.kind == "datetime" else item.label
        sheet.write_string(r, 0, label)
        value = item.value
        if value is None:
            sheet.write_string(r, 1, "unknown" if item.key in ("occupancy", "agent_seconds") else "")
        elif item.kind == "datetime":
            sheet.write_number(r, 1, _excel_serials(pd.Series([pd.Timestamp(value)]))[0], formats.datetime)
        elif item.kind == "text":
            sheet.write_string(r, 1, str(value))
        else:
            sheet.write_number(r, 1, value, kinds[item.kind])
        sheet.write_string(r, 2, item.key)
    return sheet


def _write_hourly(book: Any, report: Report, formats: _Formats) -> None:
    """The hourly table and its chart. One sheet always suffices: a million rows would be 114 years of hours."""
    sheet = book.add_worksheet("Hourly")
    sheet.freeze_panes(1, 0)
    sheet.set_column(0, 0, 22)
    sheet.set_column(1, len(HOURLY_COLUMNS) - 1, 14)
    for i, col in enumerate(HOURLY_COLUMNS):
        header = f"{col.name} ({report.timezone})" if col.kind == "datetime" else col.name
        sheet.write_string(0, i, header, formats.header)
    for r, h in enumerate(report.hourly, start=1):
        sheet.write_datetime(r, 0, h.hour, formats.hour)  # the local wall time, as it is
        for c, value in enumerate((h.calls_placed, h.answered, h.connected, h.abandoned), start=1):
            sheet.write_number(r, c, value, formats.count)
        if h.abandon_rate is not None:
            sheet.write_number(r, 5, h.abandon_rate, formats.rate)
        sheet.write_number(r, 6, h.talk_seconds, formats.count)
    n = len(report.hourly)
    if n == 0:
        return
    chart = book.add_chart({"type": "column"})
    name = "Hourly"
    col_of = {c.name: i for i, c in enumerate(HOURLY_COLUMNS)}
    for series, colour in (("answered", "#4472C4"), ("abandoned", "#C00000")):
        chart.add_series(
            {
                "name": [name, 0, col_of[series]],
                "categories": [name, 1, 0, n, 0],
                "values": [name, 1, col_of[series], n, col_of[series]],
                "fill": {"color": colour},
            }
        )
    chart.set_title({"name": f"Answers and abandons by hour ({report.timezone})"})
    # A text axis keeps one bar per hour; a date axis would merge the hours of a day.
    chart.set_x_axis({"text_axis": True, "num_format": "dd mmm hh:mm", "num_font": {"rotation": -45}})
    chart.set_y_axis({"name": "calls"})
    chart.set_size({"width": 900, "height": 420})
    sheet.insert_chart(1, len(HOURLY_COLUMNS) + 1, chart)


def _parts(total: int, per_sheet: int) -> list[int]:
    """Row counts of the sheets a table of ``total`` rows needs (always at least one sheet)."""
    if total <= 0:
        return [0]
    full, rest = divmod(total, per_sheet)
    return [per_sheet] * full + ([rest] if rest else [])


def _header_sheets(
    book: Any,
    name: str,
    columns: Sequence[Column],
    parts: Sequence[int],
    formats: _Formats,
    tz: str,
    widths: dict[str, float],
) -> list[str]:
    """Sheets holding only the header row; their rows are streamed in afterwards (``_fill_sheets``)."""
    names = []
    for n in range(1, len(parts) + 1):
        sheet_name = name if n == 1 else f"{name} ({n})"
        sheet = book.add_worksheet(sheet_name)
        for i, col in enumerate(columns):
            default = 20.0 if col.kind == "datetime" else max(10.0, min(40.0, len(col.name) + 2.0))
            sheet.set_column(
                i, i, widths.get(col.name, default), formats.datetime if col.kind == "datetime" else None
            )
            header = f"{col.name} ({tz})" if col.kind == "datetime" else col.name
            sheet.write_string(0, i, header, formats.header)
        sheet.freeze_panes(1, 0)
        names.append(sheet_name)
    return names


_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
EXCEL_MAX_TEXT = 32_767


def _xml_text(value: str) -> str:
    """Cell text escaped for XML; control characters as Excel's ``_xHHHH_`` (as xlsxwriter writes them)."""
    text = value[:EXCEL_MAX_TEXT].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if _CONTROL_CHARS.search(text):
        text = _CONTROL_CHARS.sub(lambda m: f"_x{ord(m.group()):04X}_", text)
    return text


_NEEDS_ESCAPE = re.compile(r"[&<>\x00-\x08\x0b\x0c\x0e-\x1f]")


def _text_cell(ref: str, value: str) -> str:
    # An inline string is text by type: Excel never evaluates it, whatever it starts with.
    if len(value) > EXCEL_MAX_TEXT or _NEEDS_ESCAPE.search(value):
        value = _xml_text(value)
    return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{value}</t></is></c>'


def _any_cell(ref: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return f'<c r="{ref}" t="b"><v>{int(value)}</v></c>'
    if isinstance(value, int | float) and math.isfinite(value):
        return f'<c r="{ref}"><v>{value}</v></c>'
    return _text_cell(ref, str(value))


def _rows_xml(frame: pd.DataFrame, columns: Sequence[Column], first_row: int, datetime_style: int) -> str:
    """``frame`` as worksheet ``<row>`` XML, rows numbered from ``first_row`` (1-based).

    xlsxwriter's cell API costs microseconds a cell; a 100,000-contact campaign has millions of cells, so the two
    large sheets are written here, column by column, with the same cell encodings xlsxwriter uses.
    """
    rows = [str(r) for r in range(first_row, first_row + len(frame))]
    cells: list[list[str]] = []
    for i, col in enumerate(columns):
        letter = xl_col_to_name(i)
        values = frame[col.name]
        if col.kind == "datetime":
            serials = _excel_serials(values)
            cells.append(
                [
                    "" if v is None else f'<c r="{letter}{r}" s="{datetime_style}"><v>{v}</v></c>'
                    for r, v in zip(rows, serials, strict=True)
                ]
            )
        elif col.kind == "bool":
            cells.append(
                [
                    "" if v is None else f'<c r="{letter}{r}" t="b"><v>{int(v)}</v></c>'
                    for r, v in zip(rows, _cells(values), strict=True)
                ]
            )
        elif col.kind == "text":
            cells.append(
                [
                    "" if v is None else _text_cell(f"{letter}{r}", str(v))
                    for r, v in zip(rows, _cells(values), strict=True)
                ]
            )
        elif col.kind == "any":
            cells.append([_any_cell(f"{letter}{r}", v) for r, v in zip(rows, _cells(values), strict=True)])
        else:
            numbers = [
                None if v is None else (int(v) if col.kind == "int" else float(v)) for v in _cells(values)
            ]
            cells.append(
                [
                    "" if v is None or not math.isfinite(v) else f'<c r="{letter}{r}"><v>{v}</v></c>'
                    for r, v in zip(rows, numbers, strict=True)
                ]
            )
    return "".join(f'<row r="{r}">' + "".join(row) + "</row>" for r, *row in zip(rows, *cells, strict=True))


class _TableFeed:
    """Streams one table's frames into its sheets in order, cutting the frames at sheet boundaries."""

    def __init__(self, frames: Iterator[pd.DataFrame], columns: Sequence[Column], progress: Progress | None):
        self.frames, self.columns, self.progress = frames, columns, progress
        self.pending: pd.DataFrame | None = None

    def _next(self) -> pd.DataFrame | None:
        if self.pending is not None and len(self.pending):
            frame, self.pending = self.pending, None
            return frame
        return next(self.frames, None)

    def sheet_rows(self, rows: int, datetime_style: int) -> Iterator[bytes]:
        done = 0
        while done < rows:
            frame = self._next()
            if frame is None:
                return  # the table shrank since it was counted
            take = min(len(frame), rows - done)
            if take < len(frame):
                self.pending = frame.iloc[take:]
                frame = frame.iloc[:take]
            yield _rows_xml(frame, self.columns, done + 2, datetime_style).encode("utf-8")
            done += take
            if self.progress:
                self.progress(take)


def _sheet_files(z: zipfile.ZipFile) -> dict[str, str]:
    """Sheet name -> its XML part in the package (read from the workbook, not guessed)."""
    ns = {
        "m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
        "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
        "p": "http://schemas.openxmlformats.org/package/2006/relationships",
    }
    rels = ElementTree.fromstring(z.read("xl/_rels/workbook.xml.rels"))
    targets = {rel.get("Id"): str(rel.get("Target")) for rel in rels.findall("p:Relationship", ns)}
    book = ElementTree.fromstring(z.read("xl/workbook.xml"))
    out = {}
    for sheet in book.findall("m:sheets/m:sheet", ns):
        target = targets[sheet.get(f"{{{ns['r']}}}id")]
        out[str(sheet.get("name"))] = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
    return out


def _fill_sheets(
    skeleton: Path,
    target: Path,
    fills: dict[str, tuple[_TableFeed, int, int]],
    datetime_style: int,
    compresslevel: int,
) -> None:
    """Copies the workbook ``skeleton`` to ``target``, streaming each header-only sheet's rows into it."""
    with (
        zipfile.ZipFile(skeleton) as zin,
        zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as zout,
    ):
        by_file = {part: fills[name] for name, part in _sheet_files(zin).items() if name in fills}
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename not in by_file:
                zout.writestr(info.filename, data)
                continue
            feed, rows, width = by_file[info.filename]
            head, tail = data.decode("utf-8").split("</sheetData>", 1)
            head = re.sub(
                r'<dimension ref="[^"]*"/>',
                f'<dimension ref="A1:{xl_col_to_name(width - 1)}{rows + 1}"/>',
                head,
                count=1,
            )
            with zout.open(info.filename, "w") as out:
                out.write(head.encode("utf-8"))
                for chunk in feed.sheet_rows(rows, datetime_style):
                    out.write(chunk)
                out.write(("</sheetData>" + tail).encode("utf-8"))


def export_xlsx(
    engine: Engine,
    report: Report,
    path: Path,
    *,
    max_rows: int = EXCEL_MAX_ROWS,
    progress: Progress | None = None,
    compresslevel: int = 3,
) -> Path:
    """The report as a workbook: Summary, Contacts, Attempts, Hourly (with a chart of answers and abandons by
    hour). ``max_rows`` is the per-sheet row limit including the header (Excel's, unless a test lowers it).

    xlsxwriter builds the workbook (styles, Summary, Hourly and its chart, the headers of the other sheets); the
    contacts and attempts rows are then streamed into it (see ``_rows_xml``), so memory stays flat. ``compresslevel``
    is zlib's: 3 is as fast as 1 and 13% smaller; 6 is another 12% smaller but a quarter slower.
    """
    if max_rows < 2:
        raise ValueError("max_rows must leave room for a header and a row")
    path.parent.mkdir(parents=True, exist_ok=True)
    cid = report.campaign_id
    field_names = contact_field_names(engine, cid)
    columns = contact_columns(field_names)
    # Counted first so the sheets can be laid out; rows added later are left for the next export.
    n_contacts = count_rows(engine, "contact", cid)
    n_attempts = count_rows(engine, "attempt", cid)
    contact_parts = _parts(n_contacts, max_rows - 1)
    attempt_parts = _parts(n_attempts, max_rows - 1)

    skeleton = path.with_name(path.name + ".skeleton")
    partial = path.with_name(path.name + ".partial")
    try:
        with pd.ExcelWriter(skeleton, engine="xlsxwriter", engine_kwargs={"options": XLSX_OPTIONS}) as writer:
            book: Any = writer.book
            formats = _Formats(book)
            _write_summary(book, report, formats)
            contact_sheets = _header_sheets(
                book, "Contacts", columns, contact_parts, formats, report.timezone, {"phone": 16, "name": 24}
            )
            attempt_sheets = _header_sheets(
                book,
                "Attempts",
                ATTEMPT_COLUMNS,
                attempt_parts,
                formats,
                report.timezone,
                {"phone": 16, "error": 30},
            )
            _write_hourly(book, report, formats)
        datetime_style = formats.datetime.xf_index
        if not isinstance(datetime_style, int):  # pragma: no cover - the Summary sheet always uses it
            raise RuntimeError("xlsxwriter assigned no style to the datetime format")

        contacts = _TableFeed(
            iter_contact_frames(engine, report, field_names, limit=n_contacts), columns, progress
        )
        attempts = _TableFeed(
            iter_attempt_frames(engine, report, limit=n_attempts), ATTEMPT_COLUMNS, progress
        )
        fills = {
            **{
                name: (contacts, rows, len(columns))
                for name, rows in zip(contact_sheets, contact_parts, strict=True)
            },
            **{
                name: (attempts, rows, len(ATTEMPT_COLUMNS))
                for name, rows in zip(attempt_sheets, attempt_parts, strict=True)
            },
        }
        _fill_sheets(skeleton, partial, fills, datetime_style, compresslevel)
        partial.replace(path)
    finally:
        skeleton.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return path


# --- SQLite ---------------------------------------------------------------------------------------------------

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
        FROM attempts WHERE state = 'completed'""",
    "kpi_answer_rate": """
        SELECT answered, calls_placed, CAST(answered AS REAL) / NULLIF(calls_placed, 0) AS answer_rate
        FROM kpi_calls""",
    "kpi_abandon_rate": """
        SELECT abandoned, answered, CAST(abandoned AS REAL) / NULLIF(answered, 0) AS abandon_rate
        FROM kpi_calls""",
    "kpi_abandon_rate_windows": """
        WITH report_time AS (SELECT value AS at FROM summary WHERE key = 'generated_at'),
        windows(name, since) AS (
            SELECT 'campaign', NULL
            UNION ALL SELECT '24h', julianday((SELECT at FROM report_time), '-24 hours')
            UNION ALL SELECT '30d', julianday((SELECT at FROM report_time), '-30 days')
        )
        SELECT w.name AS period,
               COALESCE(SUM(a.abandoned), 0) AS abandoned,
               COALESCE(SUM(a.answered), 0) AS answered,
               CAST(SUM(a.abandoned) AS REAL) / NULLIF(SUM(a.answered), 0) AS abandon_rate
        FROM windows AS w
        LEFT JOIN attempts AS a
          ON a.state = 'completed' AND (w.since IS NULL OR julianday(a.call_time) >= w.since)
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
        SELECT COALESCE(SUM(talk_seconds), 0.0) AS talk_seconds, AVG(talk_seconds) AS avg_talk_seconds
        FROM attempts WHERE state = 'completed' AND connected = 1 AND talk_seconds IS NOT NULL""",
    "kpi_occupancy": """
        SELECT (SELECT talk_seconds FROM kpi_talk) AS talk_seconds,
               (SELECT value FROM summary WHERE key = 'agent_seconds') AS agent_seconds,
               (SELECT talk_seconds FROM kpi_talk)
                   / NULLIF((SELECT value FROM summary WHERE key = 'agent_seconds'), 0) AS occupancy""",
    "kpi_cost": """
        SELECT COALESCE(SUM(cost), 0.0) AS cost FROM attempts""",
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
            [(i.key, i.label, _summary_value_text(i)) for i in report.summary_items()],
        )
        field_names = contact_field_names(engine, report.campaign_id)
        columns = contact_columns(field_names)
        sql = _create_table(db, "contacts", columns)
        for frame in iter_contact_frames(engine, report, field_names):
            _insert(db, sql, _text_frame(frame, columns, guard=False))
            if progress:
                progress(len(frame))
        sql = _create_table(db, "attempts", ATTEMPT_COLUMNS)
        for frame in iter_attempt_frames(engine, report):
            _insert(db, sql, _text_frame(frame, ATTEMPT_COLUMNS, guard=False))
            if progress:
                progress(len(frame))
        hourly_columns = [Column("hour", "text"), *HOURLY_COLUMNS[1:]]
        _insert(db, _create_table(db, "hourly", hourly_columns), _hourly_text(report))
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
