"""One daemon per database: an exclusive lock every `dialer run` holds for its whole life.

Two daemons on one database would pace the same campaigns twice against one account's rate limit (429s, and
calls beyond the pacing decision), and each would take the other's in-flight attempts for leftovers of a crash at
start-up. So the daemon takes this lock before anything else and refuses to start while another process holds it
(``DaemonAlreadyRunning``; `dialer run` exits with code 7).

- SQLite: ``fcntl.flock`` on ``<database file>.lock``. The kernel drops the lock when the holder dies, however it
  dies (SIGKILL included), so a crashed daemon never blocks the next start: the file existing means nothing,
  only the lock on it does. The file holds the holder's pid, host and start time for the refusal message.
- PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a connection of its own, open for the
  daemon's life; the server drops it when that connection ends. Advisory locks are per database, so daemons on
  other databases of the same server do not collide. The connection's ``application_name`` names the holder.

Invariant: while a daemon paces, it holds its database's lock (``verify`` is checked at every heartbeat; a lost
lock stops the daemon). There is no high-availability (standby) mode yet; one would wait for the lock here
instead of refusing. POSIX only (``fcntl``), like the rest of the daemon's process handling.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from dialer.logs import log_event

log = logging.getLogger("dialer.daemon")

# Any constant works, as long as every dialer uses the same one; db.py's migration lock is 7_349_011.
PG_DAEMON_LOCK = 7_349_012
_APP_PREFIX = "dialer run"


class DaemonAlreadyRunning(Exception):
    """Another daemon holds this database's lock; the message (one line) says which, if known."""


def _holder_fields() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds")}


def _describe(pid: Any = None, host: Any = None, since: Any = None) -> str:
    if not pid and not host:
        return "pid unknown"
    text = f"pid {pid or '?'} on host {host or '?'}"
    return f"{text}, since {since}" if since else text


def _refusal(where: str, holder: str) -> DaemonAlreadyRunning:
    return DaemonAlreadyRunning(
        f"another dialer daemon is already running on {where} ({holder}); only one `dialer run` may use a "
        "database: stop that one first, or point DIALER_DATABASE_URL at another database"
    )


def acquire_daemon_lock(engine: Engine) -> DaemonLock:
    """The lock of ``engine``'s database; raises ``DaemonAlreadyRunning`` if another process holds it."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        if path.startswith("file:"):  # a URI filename
            path = "" if "mode=memory" in path else path[len("file:") :].split("?", 1)[0]
        if not path or path == ":memory:":
            return DaemonLock()  # a private in-memory database: no other process can open it
        return FileLock.take(Path(path))
    if url.get_backend_name() == "postgresql":
        return PgAdvisoryLock.take(engine)
    return DaemonLock()  # pragma: no cover - only SQLite and PostgreSQL are supported


class DaemonLock:
    """Held from ``acquire_daemon_lock`` until ``release`` (or the process's death). This base class is the
    lock of a database no other process can open (SQLite in memory)."""

    def held(self) -> bool:
        """Still ours? False means another daemon may now run on this database: stop pacing."""
        return True

    def release(self) -> None:
        """Give the lock up (a clean stop); a crash releases it too."""


class FileLock(DaemonLock):
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd: int | None = fd

    @classmethod
    def take(cls, db_path: Path) -> FileLock:
        import fcntl

        path = db_path.with_name(db_path.name + ".lock")
        for _ in range(5):
            # os.open's descriptor is not inherited by child processes, so only this process holds the lock.
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise _refusal(f"database {db_path}", holder) from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, path):
                lock = cls(path, fd)
                lock._write_holder()
                return lock
            os.close(fd)  # the file was replaced between open and flock: lock the one now at the path
        raise DaemonAlreadyRunning(f"cannot lock {path}: the file keeps being replaced")

    def _write_holder(self) -> None:
        assert self.fd is not None
        data = json.dumps(_holder_fields()).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def held(self) -> bool:
        # flock cannot be taken from us, but the file can be deleted or replaced, and then a new daemon
        # would lock the new file: ours only counts while it is the one at the path.
        return self.fd is not None and _same_file(self.fd, self.path)

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the only descriptor drops the flock


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return "pid unknown"
    if not isinstance(info, dict):
        return "pid unknown"
    return _describe(info.get("pid"), info.get("host"), info.get("started_at"))


class PgAdvisoryLock(DaemonLock):
    def __init__(self, engine: Engine, conn: Connection) -> None:
        self.engine = engine
        self.conn: Connection | None = conn
        # The server process of our lock session: a terminated one holds the lock until it has exited.
        self.backend_pid: int | None = _backend_pid(conn)

    @classmethod
    def take(cls, db: Engine) -> PgAdvisoryLock:
        name = _app_name()
        # A connection of its own, outside the daemon's pool: closing it really ends the session (and the
        # lock), and the name it carries in pg_stat_activity never leaks onto pooled connections. Autocommit:
        # it sits idle for days and must not hold a transaction (and its snapshot) open.
        engine = sa.create_engine(db.url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT",
                                  connect_args={"application_name": name})
        try:
            conn = _take(engine)
        except BaseException:
            engine.dispose()
            raise
        if conn is None:
            engine.dispose()
            raise _refusal(f"PostgreSQL database {db.url.database}", _pg_holder(db))
        return cls(engine, conn)

    def held(self) -> bool:
        if self.conn is not None:
            try:
                self.conn.exec_driver_sql("SELECT 1").scalar()
                return True
            except sa.exc.DBAPIError:
                # The connection died (server restart, network) and took the lock with it.
                with contextlib.suppress(Exception):
                    self.conn.invalidate()
                    self.conn.close()
                self.conn = None
        try:
            self.conn = _take(self.engine)
        except sa.exc.DBAPIError:
            return True  # the server is unreachable: nobody can take the lock meanwhile; check again later
        if self.conn is not None:
            self.backend_pid = _backend_pid(self.conn)
            log_event(log, logging.WARNING, "database connection was lost; the daemon lock is taken again")
            return True
        # Our own terminated session may not have ended yet (pg_terminate_backend returns before the backend
        # exits): it still holds the lock in our name. Not lost; take it at the next check.
        return self.backend_pid is not None and _holder_backend(self.engine) == self.backend_pid

    def release(self) -> None:
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        with contextlib.suppress(Exception):
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": PG_DAEMON_LOCK})
        with contextlib.suppress(Exception):
            conn.close()
        self.engine.dispose()


def _take(engine: Engine) -> Connection | None:
    """A connection holding the advisory lock, or None if another session holds it."""
    conn = engine.connect()
    try:
        if conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_DAEMON_LOCK}).scalar():
            return conn
    except BaseException:
        conn.close()
        raise
    conn.close()
    return None


def _backend_pid(conn: Connection) -> int | None:
    try:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    except sa.exc.DBAPIError:
        return None
    return int(pid) if pid is not None else None


def _holder_backend(engine: Engine) -> int | None:
    """The server process (backend pid) of the session holding the lock, or None."""
    row = _holder_row(engine)
    return int(row[3]) if row is not None else None


def _holder_row(engine: Engine) -> Any:
    """(application_name, client address, backend start, backend pid) of the lock's holder; None if unknown."""
    sql = sa.text(
        "SELECT a.application_name, a.client_addr::text, a.backend_start, l.pid FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = :k AND l.objsubid = 1 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    try:
        with engine.connect() as conn:
            return conn.execute(sql, {"k": PG_DAEMON_LOCK}).first()
    except sa.exc.DBAPIError:
        return None


def _app_name() -> str:
    """The lock session's name in pg_stat_activity: this process, as ``_pg_holder`` reads it back."""
    f = _holder_fields()
    return f"{_APP_PREFIX} pid={f['pid']} host={f['host']}"[:63]


def _pg_holder(engine: Engine) -> str:
    """Who holds the lock, from the holder connection's ``application_name`` ("dialer run pid=.. host=..")."""
    row = _holder_row(engine)
    if row is None or not row[0]:
        return "pid unknown"
    fields = dict(p.split("=", 1) for p in str(row[0]).split() if "=" in p)
    since = row[2].isoformat(timespec="seconds") if row[2] is not None else None
    return _describe(fields.get("pid"), fields.get("host") or row[1], since)
