"""README's "A real campaign, step by step" (and every other `dialer` line in its code blocks), run as written
against the simulator, in README order.

Substitutions, and only these: the example files (customers.csv, tps-export.csv) are written by the test; the
sound-file id is 1; the webhook port is a free one; the calling window is opened to every hour so the test runs at
any time of day, with one attempt per contact so the campaign finishes quickly; `dialer run` gets the time-scaled
intervals of tests/e2e.py and `--until-finished`; `status --watch` is stopped with Ctrl-C once it is refreshing.
`dialer run` and `dialer status --watch` run as real processes (a daemon, a Ctrl-C), the other lines in-process.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import openpyxl
import pytest

from tests.conftest import main_thread_sleeping, wait_for
from tests.e2e import Stack, scenario_text, stack, write_contacts
from tests.readme_support import code_blocks, dialer_lines, words

# Not `e2e`: README's walkthrough is the SQLite default (it backs the database file up with sqlite3), so the
# PostgreSQL step has nothing to run here.
pytestmark = pytest.mark.slow

Action = Callable[[Stack, list[str]], None]

LOAD_EXTRAS = ["--window", "00:00-23:59", "--weekdays", "mon-sun", "--max-attempts", "1"]
# 20x, and busy/failed calls end after 5 world seconds: at higher speeds a call can end (in the simulator) before
# the daemon has registered it as placed, and the live view then counts it as ringing for two wall minutes.
TIME_SCALE = 20
WORLD = (
    scenario_text(agents=4)
    .replace("busy_after_s = 3", "busy_after_s = 5")
    .replace("failed_after_s = 1", "failed_after_s = 5")
)


def _files(argv: list[str], st: Stack) -> list[str]:
    out = []
    for w in argv:
        if w in ("customers.csv", "tps-export.csv"):
            w = str(st.tmp / w)
        out.append(w.replace("YOUR_FILE_ID", "1").replace("0-1", "442037691880"))
    return out


def _line(st: Stack, argv: list[str]) -> str:
    """A README line that needs no process of its own, run in-process."""
    return st.cli(*_files(argv, st)[1:]).stdout


def _api_balance(st: Stack, argv: list[str]) -> None:
    assert "100" in _line(st, argv)


def _db_upgrade(st: Stack, argv: list[str]) -> None:
    _line(st, argv)


def _load(st: Stack, argv: list[str]) -> None:
    out = _line(st, [*argv, *LOAD_EXTRAS])
    assert "Loaded 30, rejected 0" in out, out


def _dnc_import(st: Stack, argv: list[str]) -> None:
    _line(st, argv)


def _show(st: Stack, argv: list[str]) -> None:
    out = _line(st, argv)
    assert "spring" in out and "predictive" in out, out


def _start(st: Stack, argv: list[str]) -> None:
    _line(st, argv)
    assert st.campaign("spring").state == "running"


def _run(st: Stack, argv: list[str]) -> None:
    given = [st.webhook_port and str(st.webhook_port) if w == "8088" else w for w in argv[1:]]
    fast = st.daemon_args("--until-finished")[4:]  # after: python -m dialer -v
    fast = [w for w in fast if w != "run"]
    i = fast.index("--webhook-port")
    del fast[i : i + 2]
    proc = subprocess.run(
        [sys.executable, "-m", "dialer", "-v", *given, *fast],
        env=st.env,
        cwd=st.tmp,
        capture_output=True,
        text=True,
        timeout=600,  # bounds a hang only: 28 calls take about a minute
    )
    (st.tmp / "run.log").write_text(proc.stderr)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "webhook server listening" in proc.stderr
    assert st.campaign("spring").state == "finished"


def _status_watch(st: Stack, argv: list[str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dialer", *argv[1:]],
        env={**st.env, "COLUMNS": "200"},
        cwd=st.tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Ctrl-C once it is in its refresh loop (asleep between refreshes), however long it took to start: a
        # SIGINT before that would find it still importing.
        wait_for(lambda: proc.poll() is not None or main_thread_sleeping(proc.pid), timeout=120,
                 what="`dialer status --watch` to start refreshing")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert "spring" in out and "finished" in out, out


def _reconcile(st: Stack, argv: list[str]) -> None:
    assert "statistics requests:" in _line(st, argv)


def _report(st: Stack, argv: list[str]) -> None:
    out = _line(st, argv)
    assert "Campaign spring" in out
    book = openpyxl.load_workbook(st.tmp / "spring.xlsx", read_only=True)
    summary = {row[2]: row[1] for row in book["Summary"].iter_rows(min_row=2, values_only=True)}
    book.close()
    assert summary["contacts_dnc"] == 2
    assert summary["calls_placed"] == 28
    assert int(summary["answered"]) > 0


def _sqlite_backup(st: Stack, argv: list[str]) -> None:
    subprocess.run(argv, cwd=st.tmp, check=True, timeout=120)
    with sqlite3.connect(st.tmp / "backup.db") as conn:
        assert conn.execute("select count(*) from contact").fetchone()[0] == 30


# README line -> what runs it. A README line missing here fails tests/test_docs.py.
ACTIONS: dict[str, Action] = {
    "dialer api balance": _api_balance,
    "dialer db upgrade": _db_upgrade,
    "dialer campaign load customers.csv --campaign spring --from 0-1 --agents 4 --extensions 100,101,102,103 "
    "--pacing predictive --region GB --timezone Europe/London --abandon-window 24h "
    "--abandon-action ivr_play:YOUR_FILE_ID": _load,
    "dialer dnc import tps-export.csv --region GB": _dnc_import,
    "dialer campaign show spring": _show,
    "dialer campaign start spring": _start,
    "dialer run --webhook-port 8088": _run,
    "dialer status --watch": _status_watch,
    "dialer reconcile": _reconcile,
    "dialer report spring --xlsx spring.xlsx": _report,
}
# Run by tests/test_demo.py (the README's first command ends in it).
OTHER = {"dialer demo"}
HANDLED = set(ACTIONS) | OTHER
SQLITE_BACKUP = "sqlite3 dialer.db \".backup 'backup.db'\""


def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    lines = [line for _section, line in dialer_lines()]
    unknown = [line for line in lines if line not in HANDLED]
    assert not unknown, f"README lines this test does not know how to run: {unknown}"
    assert any(SQLITE_BACKUP in b.lines for b in code_blocks()), "README's backup command changed"
    with stack(tmp_path, time_scale=TIME_SCALE, scenario=WORLD) as st:
        phones = write_contacts(tmp_path / "customers.csv", 30)
        (tmp_path / "tps-export.csv").write_text("phone\n" + "\n".join(phones[:2]) + "\n")
        ran = []
        for line in lines:
            if line in OTHER:
                continue
            t0 = time.monotonic()
            ACTIONS[line](st, words(line))
            print(f"{time.monotonic() - t0:6.1f}s  {line}")
            ran.append(line)
        _sqlite_backup(st, words(SQLITE_BACKUP))
    assert set(ran) == set(ACTIONS)
    # What the README promises the operator: DNC numbers never dialled, every other contact called once.
    contacts = {c.phone: c for c in st.contacts()}
    assert {contacts[p].state for p in phones[:2]} == {"dnc"}
    assert all(c.attempts == 1 for p, c in contacts.items() if p not in phones[:2])
    assert json.loads(st.cli("status", "--json").stdout)["daemon"]["state"] == "stopped"
