"""`dialer report` through the command line (in-process): JSON for machines, tables for people, exports, clear
errors."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest

from tests.conftest import clean_env, invoke
from tests.test_reports_build import CAMPAIGN, TZ, Sample, build_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sample]:
    s = build_sample(tmp_path_factory.mktemp("cli"))
    s.engine.dispose()  # the commands own the database from here
    yield s


def run(sample: Sample, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return invoke(["report", *args], env=clean_env(DIALER_DATABASE_URL=sample.url, COLUMNS="120", **env), cwd=cwd)


def test_json(sample: Sample, tmp_path: Path) -> None:
    out = run(sample, CAMPAIGN, "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["campaign"] == CAMPAIGN and data["timezone"] == TZ
    assert (data["calls_placed"], data["answered"], data["connected"], data["abandoned"]) == (7, 5, 3, 2)
    assert data["abandon_rate"] == 0.4 and data["occupancy"] == pytest.approx(0.38)
    assert (data["contacts_reached"], data["contacts_pending"], data["contacts_dnc"]) == (3, 2, 1)
    assert data["last_call_at"] == "2026-11-26T00:40:00-05:00"
    assert [h["hour"] for h in data["hourly"]][-2:] == ["2026-11-25T23:00:00", "2026-11-26T00:00:00"]
    assert data["cost"] == 1.88  # 1.875, to the cent


def test_tables_for_people(sample: Sample, tmp_path: Path) -> None:
    out = run(sample, CAMPAIGN, "--tz", "UTC", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "times in UTC" in text
    assert "40.0%" in text and "71.4%" in text and "38.0%" in text  # abandon, answer rate, occupancy
    assert "2026-11-26 04:00" in text and "2026-11-26 05:00" in text  # the hourly rows in UTC
    assert "6m 20s" in text  # total talk time


def test_exports_with_json(sample: Sample, tmp_path: Path) -> None:
    xlsx, sqlite_file, csv_dir = tmp_path / "r.xlsx", tmp_path / "r.sqlite", tmp_path / "csv"
    out = run(
        sample,
        CAMPAIGN,
        "--json",
        "--xlsx",
        str(xlsx),
        "--sqlite",
        str(sqlite_file),
        "--csv",
        str(csv_dir),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["campaign"] == CAMPAIGN  # stdout stays pure JSON; notices go to stderr
    assert "Wrote XLSX" in out.stderr
    assert openpyxl.load_workbook(xlsx).sheetnames == ["Summary", "Contacts", "Attempts", "Hourly", "Agents",
                                                       "Dispositions"]  # fmt: skip
    db = sqlite3.connect(sqlite_file)
    try:
        assert db.execute("SELECT abandon_rate FROM kpi_abandon_rate").fetchone()[0] == pytest.approx(0.4)
    finally:
        db.close()
    assert sorted(p.name for p in csv_dir.iterdir()) == [
        "agents.csv",
        "attempts.csv",
        "contacts.csv",
        "dispositions_hourly.csv",
        "hourly.csv",
        "summary.csv",
    ]


def test_user_mistakes_are_clear_errors(sample: Sample, tmp_path: Path) -> None:
    out = run(sample, "nope", cwd=tmp_path)
    assert out.returncode == 1
    assert (
        "no campaign named 'nope'" in out.stderr and "winter" in out.stderr and "Traceback" not in out.stderr
    )
    out = run(sample, CAMPAIGN, "--tz", "Mars/Olympus", cwd=tmp_path)
    assert out.returncode == 2 and "unknown timezone" in out.stderr and "Traceback" not in out.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = run(sample, CAMPAIGN, "--xlsx", str(blocker / "r.xlsx"), cwd=tmp_path)
    assert out.returncode == 1 and "cannot write" in out.stderr and "Traceback" not in out.stderr


def test_operator_timezone_from_the_environment(sample: Sample, tmp_path: Path) -> None:
    env_run = run(sample, CAMPAIGN, "--json", cwd=tmp_path, DIALER_TIMEZONE="Asia/Tokyo")
    assert env_run.returncode == 0, env_run.stderr
    data = json.loads(env_run.stdout)
    assert data["timezone"] == "Asia/Tokyo"
    assert data["last_call_at"] == "2026-11-26T14:40:00+09:00"  # 00:40 in New York


def test_csv_has_a_bom_for_excel_unless_no_bom(sample: Sample, tmp_path: Path) -> None:
    for extra, bom in (((), True), (("--no-bom",), False)):
        target = tmp_path / ("bom" if bom else "plain")
        out = run(sample, CAMPAIGN, "--csv", str(target), *extra, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        for name in ("summary.csv", "contacts.csv", "attempts.csv", "hourly.csv"):
            data = (target / name).read_bytes()
            assert data.startswith(b"\xef\xbb\xbf") is bom, name
            assert data.count(b"\xef\xbb\xbf") == int(bom), name  # one mark, at the start


def test_progress_only_on_a_terminal_and_only_when_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import time

    from rich.console import Console

    from dialer.commands import report as command

    screen = io.StringIO()
    monkeypatch.setattr(command, "Console", lambda **_: Console(file=screen, force_terminal=True, width=80))
    monkeypatch.setattr(command, "SHOW_PROGRESS_AFTER_S", 0.2)
    with command._progress("Writing quick", 10) as advance:
        advance(10)
    assert "Writing quick" not in screen.getvalue()
    with command._progress("Writing slow", 10) as advance:
        time.sleep(0.6)
        advance(10)
    assert "Writing slow" in screen.getvalue()
