"""A campaign report as an XLSX workbook: Summary, Contacts, Attempts, Hourly (with a chart of answers, abandons),
Agents (with a chart of each agent's time in state), Dispositions (by hour and code).

Times are real Excel datetimes: timezone-naive local times in the report's timezone, which is named in the column
headers and in the Summary sheet.

Text from the input file (names, fields) is data, never a formula or a link: every text cell is a string cell
(xlsxwriter's ``write_string``, with the workbook refusing to turn strings into formulas, URLs or numbers; the
contacts and attempts rows as inline-string cells), so ``=HYPERLINK("http://x","y")`` is stored and shown as that
text.

An XLSX sheet holds at most 1,048,576 rows including its header; longer tables continue on further sheets named
"Contacts (2)", "Contacts (3)", ...
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pandas as pd
from sqlalchemy.engine import Engine
from xlsxwriter.utility import xl_col_to_name

from dialer.reporting.frames import (
    ATTEMPT_COLUMNS,
    DISPOSITION_HOURLY_COLUMNS,
    HOURLY_COLUMNS,
    Column,
    Progress,
    agent_columns,
    agents_frame,
    cell_values,
    contact_columns,
    contact_field_names,
    count_rows,
    iter_attempt_frames,
    iter_contact_frames,
)
from dialer.reporting.reports import Report

EXCEL_MAX_ROWS = 1_048_576
EXCEL_EPOCH = pd.Timestamp("1899-12-30")
XLSX_OPTIONS = {
    "strings_to_formulas": False,
    "strings_to_urls": False,
    "strings_to_numbers": False,
}


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
    return cell_values(serial)


def _write_summary(book: Any, report: Report, formats: _Formats) -> None:
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


# The Agents chart's stacks: each agent's logged-in time, state by state.
_AGENT_STACKS = (
    ("talk_seconds", "Talk", "#4472C4"),
    ("wrapup_seconds", "Wrap-up", "#ED7D31"),
    ("ringing_seconds", "Ringing", "#FFC000"),
    ("ready_seconds", "Ready", "#70AD47"),
    ("paused_seconds", "Paused", "#A5A5A5"),
)
_AGENT_RATES = ("occupancy", "conversion")


def _write_agents(book: Any, report: Report, formats: _Formats) -> None:
    """The agents table and a stacked bar per agent of their time in each state (one sheet: a row an agent)."""
    sheet = book.add_worksheet("Agents")
    sheet.freeze_panes(1, 2)
    columns = agent_columns(report)
    frame = agents_frame(report, columns)
    for i, col in enumerate(columns):
        sheet.set_column(i, i, max(10.0, min(24.0, len(col.name) + 2.0)))
        sheet.write_string(0, i, col.name, formats.header)
    for r, record in enumerate(frame.itertuples(index=False, name=None), start=1):
        for c, (col, value) in enumerate(zip(columns, record, strict=True)):
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                continue
            if col.kind == "text":
                sheet.write_string(r, c, str(value))  # names are data, never formulas
            elif col.name in _AGENT_RATES:
                sheet.write_number(r, c, value, formats.rate)
            else:
                sheet.write_number(r, c, value, formats.count)
    n = len(frame)
    if n == 0:
        return
    col_of = {c.name: i for i, c in enumerate(columns)}
    login = col_of["login"]
    chart = book.add_chart({"type": "bar", "subtype": "stacked"})
    for name, label, colour in _AGENT_STACKS:
        chart.add_series({
            "name": label,
            "categories": ["Agents", 1, login, n, login],
            "values": ["Agents", 1, col_of[name], n, col_of[name]],
            "fill": {"color": colour},
        })  # fmt: skip
    chart.set_title({"name": "Time in state per agent"})
    chart.set_x_axis({"name": "seconds", "num_format": "#,##0"})
    chart.set_y_axis({"reverse": True})  # the first agent on top, as in the table
    chart.set_size({"width": 900, "height": max(300, 120 + 36 * n)})
    sheet.insert_chart(n + 2, 1, chart)


def _write_dispositions(book: Any, report: Report, formats: _Formats) -> None:
    """The dispositions by local hour and code (a row per hour and code: far below a sheet's limit)."""
    sheet = book.add_worksheet("Dispositions")
    sheet.freeze_panes(1, 0)
    sheet.set_column(0, 0, 22)
    sheet.set_column(1, len(DISPOSITION_HOURLY_COLUMNS) - 1, 18)
    for i, col in enumerate(DISPOSITION_HOURLY_COLUMNS):
        header = f"{col.name} ({report.timezone})" if col.kind == "datetime" else col.name
        sheet.write_string(0, i, header, formats.header)
    for r, row in enumerate(report.dispositions_hourly, start=1):
        sheet.write_datetime(r, 0, row.hour, formats.hour)
        sheet.write_string(r, 1, row.code)
        if row.meaning is not None:
            sheet.write_string(r, 2, row.meaning)
        sheet.write_number(r, 3, row.calls, formats.count)


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
                    for r, v in zip(rows, cell_values(values), strict=True)
                ]
            )
        elif col.kind == "text":
            cells.append(
                [
                    "" if v is None else _text_cell(f"{letter}{r}", str(v))
                    for r, v in zip(rows, cell_values(values), strict=True)
                ]
            )
        elif col.kind == "any":
            cells.append(
                [_any_cell(f"{letter}{r}", v) for r, v in zip(rows, cell_values(values), strict=True)]
            )
        else:
            numbers = [
                None if v is None else (int(v) if col.kind == "int" else float(v))
                for v in cell_values(values)
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


_ZIP64_CELLS = 10_000_000  # ~60 bytes of XML a cell: past this a sheet may not fit a 2 GiB zip member


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
            # A sheet's XML can pass 2 GiB (a million rows of many fields): zip64 then, or zipfile refuses to go on.
            with zout.open(info.filename, "w", force_zip64=rows * width > _ZIP64_CELLS) as out:
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
    hour), Agents (with a chart of time in state), Dispositions. ``max_rows`` is the per-sheet row limit including the header (Excel's, unless a test lowers it).

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
            _write_agents(book, report, formats)
            _write_dispositions(book, report, formats)
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
