"""`dialer demo` as a user runs it: a real subprocess, whose results open in openpyxl and which leaves nothing behind
(slow), and stops cleanly on Ctrl-C (slow); its usage errors in-process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import openpyxl
import pytest

from tests.conftest import clean_env, invoke, wait_for

URLS = re.compile(r"Simulator: http://127\.0\.0\.1:(\d+)\s+Webhooks: http://127\.0\.0\.1:(\d+)/zadarma")


def _marked_processes(marker: str) -> list[int]:
    """Every process (alive, ours to read) whose environment carries ``marker``: the demo's descendants inherit it,
    even after being re-parented to init."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in env:
            found.append(int(entry.name))
    return found


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The field after the parenthesised command name (which may contain spaces) is the state, then PPID.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _summary(path: Path) -> dict[str, object]:
    book = openpyxl.load_workbook(path, read_only=True)
    try:
        assert "Summary" in book.sheetnames
        return {row[2]: row[1] for row in book["Summary"].iter_rows(min_row=2, values_only=True)}
    finally:
        book.close()


def _attempts(path: Path) -> list[dict[str, object]]:
    """The Attempts sheet as dicts keyed by column name (without the timezone in the headers)."""
    book = openpyxl.load_workbook(path, read_only=True)
    try:
        header, *rows = book["Attempts"].iter_rows(values_only=True)
        names = [str(h).split(" (")[0] for h in header]
        return [dict(zip(names, row, strict=True)) for row in rows]
    finally:
        book.close()


def _assert_spreadsheet_consistent(path: Path) -> None:
    """Item 10 of issue 13: in the 30x world, times never after the report's, durations in world seconds."""
    report_time = _summary(path)["generated_at"]
    attempts = _attempts(path)
    late = [a for a in attempts if a["finished_at"] is not None and a["finished_at"] > report_time]  # type: ignore[operator]
    assert late == [], f"finished after the report time {report_time}: {late[:3]}"
    answered = [a for a in attempts if a["answered"]]
    assert answered
    for a in answered:
        ring, talk = a["ring_seconds"], a["talk_seconds"]
        assert isinstance(ring, int | float) and isinstance(talk, int | float), a
        assert ring == round(ring, 1) and talk == round(talk, 1), a
    # World seconds: the demo world rings 4-14 s and talks ~2 minutes; wall seconds would be 30 times less.
    rings = sorted(float(a["ring_seconds"]) for a in answered)  # type: ignore[arg-type]
    assert 3.0 <= rings[len(rings) // 2] <= 20.0, rings
    talks = sorted(float(a["talk_seconds"]) for a in answered if a["connected"])  # type: ignore[arg-type]
    assert talks and talks[len(talks) // 2] > 30.0, talks


@pytest.mark.slow
def test_demo_runs_writes_results_and_leaves_nothing_behind(tmp_path: Path) -> None:
    marker = f"DIALER_DEMO_TEST_{uuid.uuid4().hex}"
    user_db = tmp_path / "user.db"
    env = {
        **os.environ,
        marker: "1",
        "PYTHONUNBUFFERED": "1",
        # The user's own settings must not be used: if they were, the demo would fail (bad keys, dead URL)
        # or write into user.db.
        "ZADARMA_KEY": "not-the-demo-key",
        "ZADARMA_SECRET": "not-the-demo-secret",
        "ZADARMA_API_URL": "http://127.0.0.1:9",
        "DIALER_DATABASE_URL": f"sqlite:///{user_db}",
    }
    out_path = tmp_path / "demo.out"
    with out_path.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dialer", "demo", "--max-seconds", "12", "--quiet"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        match = None
        while match is None and time.monotonic() < deadline and proc.poll() is None:
            match = URLS.search(out_path.read_text())
            time.sleep(0.1)
        assert match, f"the demo printed no URLs:\n{out_path.read_text()}"
        sim_port, webhook_port = int(match.group(1)), int(match.group(2))
        # Both servers really listen while the demo runs, so the checks after it are not vacuous.
        assert _port_open(sim_port)
        ok = False
        while time.monotonic() < deadline and not ok:
            ok = _port_open(webhook_port)
            time.sleep(0.1)
        assert ok, "the daemon's webhook port never opened"
        # Everything runs in the demo's own process: no child process at any time.
        assert _children(proc.pid) == []
        # 12 s of dialling, up to 15 s to finish the calls in flight, then reconciling and the report: the
        # deadline only bounds a hang.
        rc = proc.wait(240)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    text = out_path.read_text()
    assert rc == 0, text
    assert "Demo ended" in text
    assert not _port_open(sim_port)
    assert not _port_open(webhook_port)
    assert _marked_processes(marker) == []
    assert not user_db.exists()

    summary = _summary(tmp_path / "demo-results.xlsx")
    assert summary["campaign"] == "demo"
    assert int(summary["contacts_total"]) == 194  # type: ignore[call-overload]
    assert int(summary["calls_placed"]) > 20  # type: ignore[call-overload]
    assert int(summary["answered"]) > 0  # type: ignore[call-overload]
    # The time limit paused the campaign; nothing was left half-sent, and reconciliation completed the calls.
    assert summary["campaign_state"] == "paused"
    assert int(summary["attempts_placing"]) == 0  # type: ignore[call-overload]
    assert int(summary["attempts_completed"]) > 20  # type: ignore[call-overload]
    _assert_spreadsheet_consistent(tmp_path / "demo-results.xlsx")


@pytest.mark.slow
def test_demo_ctrl_c_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dialer", "demo", "--xlsx", "out.xlsx"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = URLS.search(line)
        assert match, line
        # Interrupt it mid-campaign: once the simulated PBX has seen the first calls, however long that takes.
        sim_url = f"http://127.0.0.1:{match.group(1)}"
        wait_for(lambda: proc.poll() is not None or httpx.get(sim_url + "/_sim/stats", timeout=10).json()
                 ["calls"]["total"] >= 3, timeout=120, what="the demo to place its first calls")
        assert proc.poll() is None, "the demo ended before it was interrupted"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, rest
    assert "Interrupted" in rest
    assert not _port_open(int(match.group(1)))
    assert not _port_open(int(match.group(2)))
    assert int(_summary(tmp_path / "out.xlsx")["attempts_total"]) > 0  # type: ignore[call-overload]


def test_demo_without_the_example_list_says_what_to_do(tmp_path: Path) -> None:
    out = invoke(["demo", "--contacts", str(tmp_path / "missing.csv")], env=clean_env(), cwd=tmp_path)
    assert out.returncode == 2
    assert "missing.csv not found" in out.stderr
    assert "Traceback" not in out.stderr
