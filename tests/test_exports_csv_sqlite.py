"""CSV (formula-guarded text, local times) and the standalone SQLite report whose views give build_report's KPIs."""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from sqlmodel import select

from dialer.reporting.csv_export import csv_safe, export_csv
from dialer.reporting.reports import Report, build_report
from dialer.reporting.sqlite_export import export_sqlite
from dialer.reporting.xlsx_export import export_xlsx
from tests.test_reports_build import CAMPAIGN, EVIL_NAME, NOW, TZ, Sample, build_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sample]:
    s = build_sample(tmp_path_factory.mktemp("csvsql"))
    yield s
    s.engine.dispose()


@pytest.fixture(scope="module")
def report(sample: Sample) -> Report:
    return build_report(sample.engine, CAMPAIGN, now=NOW)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:  # the files start with a BOM for Excel
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+2", "'=1+2"),
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("-2+3", "'-2+3"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("\t=1", "'\t=1"),
        ("+442037691880", "+442037691880"),  # a phone number is not a formula
        ("-3.5", "-3.5"),
        ("Bob", "Bob"),
        (12, 12),
        (None, None),
    ],
)
def test_csv_safe(value: object, expected: object) -> None:
    assert csv_safe(value) == expected


def test_csv_files(sample: Sample, report: Report, tmp_path: Path) -> None:
    done: list[int] = []
    paths = export_csv(sample.engine, report, tmp_path / "out", progress=done.append)
    assert [p.name for p in paths] == ["summary.csv", "contacts.csv", "attempts.csv", "hourly.csv", "agents.csv",
                                       "dispositions_hourly.csv"]  # fmt: skip
    assert sum(done) == 8 + 9

    contacts = read_csv(tmp_path / "out" / "contacts.csv")
    assert len(contacts) == 8
    assert contacts[0]["name"] == "'" + EVIL_NAME and contacts[0]["phone"] == "+12025550101"
    assert (contacts[1]["account"], contacts[1]["city"]) == ("'=1+2", "'@SUM(A1)")
    assert contacts[2]["account"] == "'-2+3" and contacts[2]["note"] == "x"
    assert contacts[0]["account"] == "A-1"
    assert (contacts[3]["memo"], contacts[3]["score"]) == (" a & b <c>\x01", "7")
    assert [c["final_state"] for c in contacts] == [
        "reached",
        "reached",
        "exhausted",
        "reached",
        "invalid",
        "pending",
        "pending",
        "dnc",
    ]
    assert contacts[0]["source_line"] == "12" and contacts[6]["attempts"] == "0"

    attempts = read_csv(tmp_path / "out" / "attempts.csv")
    assert attempts[0]["call_time"] == "2026-11-25 23:30:00-05:00"
    assert attempts[5]["call_time"] == "2026-10-01 10:00:00-04:00"
    assert (attempts[1]["answered"], attempts[1]["connected"], attempts[1]["abandoned"]) == ("1", "0", "1")
    assert attempts[7]["answered"] == "" and attempts[7]["error"] == "bad number"

    summary = {r["key"]: r["value"] for r in read_csv(tmp_path / "out" / "summary.csv")}
    assert summary["timezone"] == TZ and summary["generated_at"] == "2026-11-26 07:00:00-05:00"
    assert float(summary["abandon_rate"]) == pytest.approx(0.4)

    hourly = pd.read_csv(tmp_path / "out" / "hourly.csv")
    assert hourly["hour"].tolist() == [
        "2026-10-01 10:00",
        "2026-11-10 10:00",
        "2026-11-25 23:00",
        "2026-11-26 00:00",
    ]
    assert hourly["abandoned"].tolist() == [h.abandoned for h in report.hourly]


@pytest.fixture(scope="module")
def sqlite_path(sample: Sample, report: Report, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_sqlite(sample.engine, report, tmp_path_factory.mktemp("sq") / "report.sqlite")


def query(path: Path, sql: str) -> list[sqlite3.Row]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_sqlite_views_answer_the_same_kpis(sqlite_path: Path, report: Report) -> None:
    (row,) = query(sqlite_path, "SELECT * FROM kpi_summary")
    for key in ("calls_placed", "answered", "connected", "abandoned"):
        assert row[key] == getattr(report, key), key
    for key in (
        "answer_rate",
        "abandon_rate",
        "abandon_rate_24h",
        "abandon_rate_30d",
        "talk_seconds",
        "avg_talk_seconds",
        "occupancy",
        "attempts_per_reached",
        "list_penetration",
        "cost",
    ):
        assert row[key] == pytest.approx(getattr(report, key)), key
    windows = {
        r["period"]: (r["abandoned"], r["answered"])
        for r in query(sqlite_path, "SELECT * FROM kpi_abandon_rate_windows")
    }
    assert windows == {"campaign": (2, 5), "24h": (1, 3), "30d": (2, 4)}
    (ab,) = query(sqlite_path, "SELECT abandon_rate FROM kpi_abandon_rate")
    assert ab[0] == pytest.approx(report.abandon_rate)
    (an,) = query(sqlite_path, "SELECT answer_rate FROM kpi_answer_rate")
    assert an[0] == pytest.approx(report.answer_rate)
    contacts = {r["final_state"]: r["contacts"] for r in query(sqlite_path, "SELECT * FROM kpi_contacts")}
    assert contacts == {
        "reached": report.contacts_reached,
        "exhausted": report.contacts_exhausted,
        "invalid": report.contacts_invalid,
        "dnc": report.contacts_dnc,
        "pending": report.contacts_pending,
    }


def test_sqlite_tables(sqlite_path: Path, report: Report) -> None:
    tables = {r[0] for r in query(sqlite_path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"summary", "contacts", "attempts", "hourly", "agents", "dispositions_hourly",
                      "disposition_codes", "agent_events"}  # fmt: skip
    (name,) = query(sqlite_path, "SELECT name, typeof(name) AS t FROM contacts WHERE contact_id = 1")
    assert (name["name"], name["t"]) == (EVIL_NAME, "text")  # stored as given: SQLite runs no formulas
    (city,) = query(sqlite_path, "SELECT city FROM contacts WHERE contact_id = 2")
    assert city[0] == "@SUM(A1)"
    (score,) = query(sqlite_path, "SELECT score, typeof(score) FROM contacts WHERE contact_id = 4")
    assert tuple(score) == (7, "integer")
    # Local times with their offset: SQLite's date functions turn them back into UTC.
    (t,) = query(
        sqlite_path, "SELECT call_time, datetime(call_time) AS utc FROM attempts WHERE attempt_id = 1"
    )
    assert (t["call_time"], t["utc"]) == ("2026-11-25 23:30:00-05:00", "2026-11-26 04:30:00")
    (tz,) = query(sqlite_path, "SELECT value FROM summary WHERE key = 'timezone'")
    assert tz[0] == TZ
    hourly = query(sqlite_path, "SELECT hour, answered, abandoned FROM hourly ORDER BY hour")
    assert [tuple(r) for r in hourly] == [
        (h.hour.strftime("%Y-%m-%d %H:%M"), h.answered, h.abandoned) for h in report.hourly
    ]
    (n,) = query(sqlite_path, "SELECT COUNT(*) FROM attempts")
    assert n[0] == report.attempts_total


def test_sqlite_without_agent_data_has_unknown_occupancy(tmp_path: Path) -> None:
    sample = build_sample(tmp_path, agent_seconds=None)
    try:
        report = build_report(sample.engine, CAMPAIGN, now=NOW)
        path = export_sqlite(sample.engine, report, tmp_path / "r.sqlite")
        export_sqlite(sample.engine, report, path)  # replacing an existing report works
    finally:
        sample.engine.dispose()
    (row,) = query(path, "SELECT occupancy, talk_seconds FROM kpi_occupancy")
    assert row["occupancy"] is None and row["talk_seconds"] == 380
    assert not (tmp_path / "r.sqlite.partial").exists()


def test_rounding_and_whole_second_times(tmp_path: Path) -> None:
    """Seconds to 0.1 s and the cost to the cent in the report; a call's cost as billed; no sub-second times."""
    from datetime import UTC, datetime

    from dialer.db import session_scope
    from dialer.models import Attempt, Campaign, Contact

    sample = build_sample(tmp_path)
    try:
        with session_scope(sample.engine) as s:
            camp = s.exec(select(Campaign).where(Campaign.name == "other")).one()
            contact = Contact(campaign_id=camp.id, phone="+442037690001", state="done", attempts=1)
            s.add(contact)
            s.flush()
            for ring, talk, cost in ((7.26, 42.349, 0.0123), (3.04, 17.0, 0.004)):
                s.add(Attempt(campaign_id=camp.id, contact_id=contact.id, phone=contact.phone, state="completed",
                              placed_at=datetime(2026, 11, 26, 11, 0, 0, 700000, tzinfo=UTC),
                              finished_at=datetime(2026, 11, 26, 11, 59, 59, 999000, tzinfo=UTC),
                              answered=True, connected=True, abandoned=False, disposition="answered",
                              ring_seconds=ring, talk_seconds=talk, cost=cost))  # fmt: skip
        report = build_report(sample.engine, "other", now=NOW)
        assert (report.talk_seconds, report.avg_talk_seconds, report.cost) == (59.3, 29.7, 0.02)
        export_csv(sample.engine, report, tmp_path / "csv")
        rows = read_csv(tmp_path / "csv" / "attempts.csv")
        assert [(r["ring_seconds"], r["talk_seconds"], r["cost"]) for r in rows] == [
            ("7.3", "42.3", "0.0123"),
            ("3.0", "17.0", "0.004"),
        ]
        assert rows[0]["finished_at"] == "2026-11-26 11:59:59+00:00" and rows[0]["call_time"].endswith("11:00:00+00:00")
        summary = {r["key"]: r["value"] for r in read_csv(tmp_path / "csv" / "summary.csv")}
        assert (summary["talk_seconds"], summary["cost"]) == ("59.3", "0.02")
        (kpi,) = query(export_sqlite(sample.engine, report, tmp_path / "r.sqlite"), "SELECT * FROM kpi_summary")
        assert (kpi["talk_seconds"], kpi["avg_talk_seconds"], kpi["cost"]) == (59.3, 29.7, 0.02)
        book = openpyxl.load_workbook(export_xlsx(sample.engine, report, tmp_path / "r.xlsx"), read_only=True)
        header, *cells = book["Attempts"].iter_rows(values_only=True)
        col = {h.split(" (")[0]: i for i, h in enumerate(header)}
        assert cells[0][col["finished_at"]] == datetime(2026, 11, 26, 11, 59, 59)  # not .999
        assert cells[0][col["ring_seconds"]] == 7.3
        book.close()
    finally:
        sample.engine.dispose()
