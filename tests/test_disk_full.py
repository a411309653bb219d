"""A full disk pauses dialling: one log line a minute instead of a traceback a tick, nothing placed meanwhile, and
dialling resumes at the first successful write. The failures are the driver's own errors (SQLITE_FULL as SQLAlchemy
wraps it, ENOSPC), fed to the daemon's real job listener on a real database."""

from __future__ import annotations

import errno
import logging
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent

from dialer.demo import demo_settings
from dialer.dialing.daemon import Daemon, DaemonConfig
from dialer.dialing.disk import DiskPause, is_disk_full
from tests.webhooks_support import make_db, seed


def _sqlite_full() -> BaseException:
    try:
        raise sa.exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError("database or disk is full"))
    except sa.exc.OperationalError as exc:
        return exc


def test_what_counts_as_a_full_disk() -> None:
    assert is_disk_full(_sqlite_full())
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as inner:
            raise RuntimeError("write failed") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)
    assert not is_disk_full(sa.exc.OperationalError("x", {}, sqlite3.OperationalError("database is locked")))
    assert not is_disk_full(ValueError("boom"))


def test_one_line_a_minute_while_full() -> None:
    pause = DiskPause(every_s=60)
    assert pause.failed(0.0) == 1 and pause.paused
    assert all(pause.failed(t / 10) is None for t in range(1, 590))
    assert pause.failed(60.0) == 590  # the next line says how many failures it stands for
    assert pause.wrote() and not pause.paused
    assert not pause.wrote()  # said once


def test_the_daemon_pauses_dialling_and_resumes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = make_db(tmp_path)
    seeded = seed(engine, n=2)
    daemon = Daemon(demo_settings("http://127.0.0.1:9", Path("unused.db"), 0), DaemonConfig(), db=engine)
    try:
        caplog.set_level(logging.INFO, logger="dialer.daemon")
        for _ in range(1000):  # 40 s of 25 ticks a second
            event = JobExecutionEvent(EVENT_JOB_ERROR, "pace:1", None, None, exception=_sqlite_full())
            daemon._on_job_event(event)
        lines = [r for r in caplog.records if "disk full" in r.getMessage()]
        assert len(lines) == 1 and not any(r.exc_info for r in caplog.records)
        assert daemon.engine.hold()
        result = daemon.engine.tick(seeded.campaign_id)
        assert (result.decided, result.claimed) == (0, 0)  # held: not even observed
        daemon._on_job_event(JobExecutionEvent(EVENT_JOB_EXECUTED, "heartbeat", None, None))
        assert not daemon.engine.hold()
        assert sum("disk space is back" in r.getMessage() for r in caplog.records) == 1
    finally:
        daemon.client.close()
        engine.dispose()
