"""`dialer report CAMPAIGN`: the campaign's KPIs on the terminal or as JSON, and its exports.

Progress goes to stderr, only on a terminal and only once a step has taken ``SHOW_PROGRESS_AFTER_S``: a small
campaign's report prints without a flicker, a large one's says what it is doing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from dialer.commands.common import EXIT_CONFIG, EXIT_ERROR, EXIT_USAGE, config_errors, fail
from dialer.reporting.render import render
from dialer.settings import load_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from dialer.reporting.reports import Report

SHOW_PROGRESS_AFTER_S = 1.0


def report(
    campaign: str = typer.Argument(..., help="Campaign name."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON (stable keys)."),
    csv_dir: Path | None = typer.Option(
        None,
        "--csv",
        metavar="DIR",
        help="Write summary.csv, contacts.csv, attempts.csv, hourly.csv, agents.csv and dispositions_hourly.csv "
        "into DIR.",
    ),
    xlsx_file: Path | None = typer.Option(
        None,
        "--xlsx",
        metavar="FILE",
        help="Write an Excel workbook (Summary, Contacts, Attempts, Hourly + chart, Agents + chart, "
        "Dispositions).",
    ),
    sqlite_file: Path | None = typer.Option(
        None, "--sqlite", metavar="FILE", help="Write a standalone SQLite database with kpi_* views."
    ),
    tz: str | None = typer.Option(
        None, "--tz", metavar="ZONE", help="Show times in this IANA zone instead of the campaign's (default: DIALER_TIMEZONE if set)."
    ),
    no_bom: bool = typer.Option(
        False,
        "--no-bom",
        help="Write the CSV files as plain UTF-8. By default they start with a byte-order mark, without which "
        "Excel on Windows misreads non-ASCII text.",
    ),
) -> None:
    """Report a campaign: contacts by final state, answer and abandon rates (campaign, 24 h, 30 days), occupancy,
    talk time, cost, an hourly table, and with agents a per-agent table (calls, time in each state, occupancy,
    dispositions, conversion) and the dispositions by hour; optionally export it as CSV, XLSX or SQLite.

    Example: dialer report spring --xlsx spring.xlsx --tz Europe/London
    """
    # Imported here: pandas and SQLAlchemy are slow to load and other commands need neither.
    from dialer.db import DatabaseVersionError, open_database
    from dialer.reporting.reports import CampaignNotFound, build_report

    with config_errors():
        settings = load_settings()
    try:
        engine = open_database(settings.database_url)
    except DatabaseVersionError as exc:
        fail(str(exc), EXIT_CONFIG)
    try:
        try:
            with _progress(f"Reading campaign {campaign}", 0):
                result = build_report(engine, campaign, tz=tz or settings.timezone or None)
        except CampaignNotFound as exc:
            fail(str(exc), EXIT_ERROR)
        except ValueError as exc:
            fail(str(exc), EXIT_USAGE)
        if as_json:
            typer.echo(result.to_json())
        else:
            render(result, Console())
        _exports(engine, result, csv_dir, xlsx_file, sqlite_file, bom=not no_bom, notices=Console(stderr=as_json))
    finally:
        engine.dispose()


def _exports(
    engine: Engine,
    result: Report,
    csv_dir: Path | None,
    xlsx_file: Path | None,
    sqlite_file: Path | None,
    *,
    bom: bool,
    notices: Console,
) -> None:
    from dialer.reporting.csv_export import export_csv
    from dialer.reporting.sqlite_export import export_sqlite
    from dialer.reporting.xlsx_export import export_xlsx

    jobs: list[tuple[str, Path, Callable[[Callable[[int], None]], object]]] = []
    if csv_dir is not None:
        jobs.append(("CSV", csv_dir, lambda p: export_csv(engine, result, csv_dir, progress=p, bom=bom)))
    if xlsx_file is not None:
        jobs.append(("XLSX", xlsx_file, lambda p: export_xlsx(engine, result, xlsx_file, progress=p)))
    if sqlite_file is not None:
        jobs.append(("SQLite", sqlite_file, lambda p: export_sqlite(engine, result, sqlite_file, progress=p)))
    rows = result.contacts_total + result.attempts_total
    for label, target, run in jobs:
        with _progress(f"Writing {label}", rows) as advance:
            try:
                run(advance)
            except OSError as exc:
                fail(f"cannot write {target}: {exc.strerror or exc}", EXIT_ERROR)
        notices.print(f"Wrote {label}: {target}", highlight=False)


@contextmanager
def _progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A transient progress bar on stderr over ``total`` rows (a spinner for 0), shown only on a terminal and
    only once the block has run ``SHOW_PROGRESS_AFTER_S``. Yields ``advance(rows)``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda n: None
        return
    columns: list[Any] = (
        [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        if total
        else [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
    )
    bar = Progress(*columns, console=console, transient=True)
    task = bar.add_task(description, total=total or None)
    lock = threading.Lock()
    shown, finished = threading.Event(), threading.Event()

    def show() -> None:
        with lock:  # never start the display after the block has ended
            if not finished.is_set():
                bar.start()
                shown.set()

    timer = threading.Timer(SHOW_PROGRESS_AFTER_S, show)
    timer.daemon = True
    timer.start()
    try:
        yield lambda n: bar.advance(task, n)
    finally:
        with lock:
            finished.set()
            timer.cancel()
            if shown.is_set():
                bar.stop()
