"""A campaign report as a directory of CSV files: summary.csv, contacts.csv, attempts.csv, hourly.csv, agents.csv,
dispositions_hourly.csv.

Times are text ``YYYY-MM-DD HH:MM:SS+HH:MM`` in the report's timezone (see ``frames.text_frame``).

The files are UTF-8 with a byte-order mark by default: Excel on Windows reads a CSV without one in the system's
ANSI code page, which garbles every non-ASCII name. ``bom=False`` (``dialer report --no-bom``) writes plain UTF-8
for tools that do not expect the mark.

Text from the input file (names, fields) is data, never a formula: every text cell goes through the one guard
``dialer.cells.formula_safe`` (a leading ``'`` before what a spreadsheet would run).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
from sqlalchemy.engine import Engine

from dialer.cells import formula_safe, formula_safe_cells
from dialer.reporting.frames import (
    ATTEMPT_COLUMNS,
    DISPOSITION_HOURLY_COLUMNS,
    Column,
    Progress,
    agent_columns,
    agents_frame,
    contact_columns,
    contact_field_names,
    dispositions_hourly_text,
    hourly_text,
    iter_attempt_frames,
    iter_contact_frames,
    summary_value_text,
    text_frame,
)
from dialer.reporting.reports import Report

csv_safe = formula_safe  # the name the report's tests know
_guard = formula_safe_cells


def export_csv(
    engine: Engine, report: Report, directory: Path, *, progress: Progress | None = None, bom: bool = True
) -> list[Path]:
    """summary.csv, contacts.csv, attempts.csv, hourly.csv, agents.csv, dispositions_hourly.csv in ``directory``
    (created if needed); UTF-8 with a byte-order mark unless ``bom`` is False."""
    directory.mkdir(parents=True, exist_ok=True)
    encoding = "utf-8-sig" if bom else "utf-8"
    names = ("summary", "contacts", "attempts", "hourly", "agents", "dispositions_hourly")
    paths = [directory / f"{name}.csv" for name in names]
    summary = pd.DataFrame(
        {
            "key": [i.key for i in report.summary_items()],
            "label": [i.label for i in report.summary_items()],
            "value": [csv_safe(summary_value_text(i)) for i in report.summary_items()],
        }
    )
    summary.to_csv(paths[0], index=False, quoting=csv.QUOTE_MINIMAL, encoding=encoding)

    field_names = contact_field_names(engine, report.campaign_id)
    columns = contact_columns(field_names)
    _stream_csv(paths[1], columns, iter_contact_frames(engine, report, field_names), progress, encoding)
    _stream_csv(paths[2], list(ATTEMPT_COLUMNS), iter_attempt_frames(engine, report), progress, encoding)
    hourly_text(report).to_csv(paths[3], index=False, encoding=encoding)
    agents = agent_columns(report)
    text_frame(agents_frame(report, agents), agents, guard=_guard).to_csv(paths[4], index=False, encoding=encoding)
    hours = [Column("hour", "text"), *DISPOSITION_HOURLY_COLUMNS[1:]]
    text_frame(dispositions_hourly_text(report), hours, guard=_guard).to_csv(paths[5], index=False,
                                                                              encoding=encoding)  # fmt: skip
    return paths


def _stream_csv(
    path: Path,
    columns: Sequence[Column],
    frames: Iterator[pd.DataFrame],
    progress: Progress | None,
    encoding: str,
) -> None:
    # "utf-8-sig" writes the mark once, at the start of the file.
    with path.open("w", encoding=encoding, newline="") as handle:
        pd.DataFrame(columns=[c.name for c in columns]).to_csv(handle, index=False)
        for frame in frames:
            text_frame(frame, columns, guard=_guard).to_csv(handle, index=False, header=False)
            if progress:
                progress(len(frame))
