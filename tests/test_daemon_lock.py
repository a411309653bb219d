"""One daemon per database: a second `dialer run` is refused (exit 7, naming the running one); a SIGKILLed
daemon never blocks the next start. SQLite (a flock on `<db>.lock`) and PostgreSQL (an advisory lock)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from dialer import db
from dialer.commands.common import EXIT_DAEMON_RUNNING
from dialer.dialing.daemon_lock import DaemonAlreadyRunning, acquire_daemon_lock
from tests import test_db_postgres
from tests.e2e import KEY, SECRET, stack

pg_url = test_db_postgres.pg_url

HOLDER = """
import sys, time
from dialer.db import make_engine
from dialer.dialing.daemon_lock import acquire_daemon_lock
acquire_daemon_lock(make_engine(sys.argv[1]))
print("locked", flush=True)
time.sleep(600)
"""


def _dialer_run(url: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ZADARMA_", "DIALER_"))},
        "DIALER_DATABASE_URL": url,
        "ZADARMA_KEY": KEY,
        "ZADARMA_SECRET": SECRET,
        # Nothing listens here: a daemon that got past the lock would fail loudly, not hang.
        "ZADARMA_API_URL": "http://127.0.0.1:9",
    }
    return subprocess.run([sys.executable, "-m", "dialer", "run", "--max-runtime", "1"], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip


def _assert_refused(res: subprocess.CompletedProcess[str], pid: int) -> None:
    assert res.returncode == EXIT_DAEMON_RUNNING, (res.returncode, res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert "already running" in lines[0] and f"pid {pid}" in lines[0] and socket.gethostname() in lines[0]
    assert "Traceback" not in res.stderr


def test_a_second_daemon_on_a_sqlite_database_is_refused_and_touches_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    engine = db.open_database(url)
    lock = acquire_daemon_lock(engine)
    try:
        assert (tmp_path / "d.db.lock").exists()
        with pytest.raises(DaemonAlreadyRunning, match=f"pid {os.getpid()}"):
            acquire_daemon_lock(db.make_engine(url))
        _assert_refused(_dialer_run(url), os.getpid())
        with engine.connect() as conn:  # the refused daemon wrote no heartbeat, recovered no attempts
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM key_value").scalar() == 0
    finally:
        lock.release()
        engine.dispose()
    acquire_daemon_lock(db.make_engine(url)).release()  # released: the next one gets it


def test_the_lock_of_a_sigkilled_holder_is_free_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    db.open_database(url).dispose()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(DaemonAlreadyRunning, match=f"pid {holder.pid}"):
            acquire_daemon_lock(db.make_engine(url))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    # The lock file is still there, with the dead holder's pid in it: only the kernel's lock counts.
    assert json.loads((tmp_path / "d.db.lock").read_text())["pid"] == holder.pid
    acquire_daemon_lock(db.make_engine(url)).release()


def test_a_replaced_lock_file_counts_as_a_lost_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    lock = acquire_daemon_lock(db.make_engine(url))
    try:
        assert lock.held()
        (tmp_path / "d.db.lock").unlink()
        assert not lock.held()  # a new daemon could now lock a new file: this one must stop
    finally:
        lock.release()


def test_a_second_daemon_on_a_postgres_database_is_refused(pg_url: str) -> None:
    engine = db.open_database(pg_url)
    lock = acquire_daemon_lock(engine)
    try:
        with pytest.raises(DaemonAlreadyRunning, match=f"pid {os.getpid()}"):
            acquire_daemon_lock(engine)
        _assert_refused(_dialer_run(pg_url), os.getpid())
        assert lock.held()
        # The holder's session dies (a server restart, a network cut): the lock goes with it; the next daemon
        # may take it, and the old one learns at its next heartbeat that it must stop.
        with engine.connect() as conn:
            conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE :n"
                " AND datname = current_database()"), {"n": f"dialer run pid={os.getpid()} %"})  # fmt: skip
        time.sleep(0.2)
        second = acquire_daemon_lock(engine)
        try:
            assert not lock.held()
        finally:
            second.release()
        assert lock.held()  # free again: taken back on a new connection
    finally:
        lock.release()
        engine.dispose()


@pytest.mark.slow
@pytest.mark.e2e
def test_real_daemons_second_refused_then_a_sigkilled_one_does_not_block_the_next(tmp_path: Path) -> None:
    with stack(tmp_path, webhooks=False) as st:
        st.make_campaign("one", 50, agents=3, pacing="ratio:2")
        st.cli("campaign", "start", "one")
        first = st.start_daemon()
        _wait_running(st, first.pid)
        second = subprocess.run(st.daemon_args(), env=st.env, capture_output=True, text=True, timeout=60,
                                check=False)  # fmt: skip
        _assert_refused(second, first.pid)
        assert first.poll() is None
        assert json.loads(st.cli("status", "--json").stdout)["daemon"]["pid"] == first.pid
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        third = st.start_daemon()
        _wait_running(st, third.pid)
        third.send_signal(signal.SIGTERM)
        assert third.wait(15) == 0


def _wait_running(st: object, pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = json.loads(st.cli("status", "--json").stdout)  # type: ignore[attr-defined]
        daemon = status.get("daemon") or {}
        if daemon.get("pid") == pid and daemon.get("state") == "running":
            return
        time.sleep(0.3)
    raise AssertionError(f"daemon {pid} did not report running; log:\n{st.daemon_log()[-3000:]}")  # type: ignore[attr-defined]
