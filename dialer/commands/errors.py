"""One-line errors for every command: the one place where failures no command handles itself become a message.

Known failures (a locked, read-only, full or unreadable database, a full disk, Ctrl-C, no memory) get a message
that says what to do and a non-zero exit code (130 for Ctrl-C); anything else is one line naming the error plus
"run with -vv for details", and the traceback is printed only at -vv. Invariant: no `dialer` command ends with a
Python traceback unless -vv asked for one. Database work is transactional, so an error here never leaves a
half-written change behind (the transaction it interrupted has been rolled back by the time we get here).

Imports nothing heavier than Typer: exceptions are recognised by their text and errno, not by importing
SQLAlchemy or sqlite3.
"""

from __future__ import annotations

import errno
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from dialer.commands.common import EXIT_CONFIG, EXIT_ERROR, fail
from dialer.dialing.disk import exception_chain

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

DETAILS = "run with -vv for details"
INTERRUPTED = "interrupted (Ctrl-C): what was not finished was rolled back; run the command again"

# (text in the database driver's message, what to tell the operator). First match wins.
_DATABASE = (
    ("database is locked",
     "the database is locked: another process (a `dialer run` daemon, another command, a backup) held its write "
     "lock for longer than the busy timeout; nothing was changed, run the command again when it is done"),
    ("readonly database",
     "the database is read-only: nothing was changed; make the database file and its directory writable by "
     "this user (SQLite also writes the -wal and -shm files next to it) or point DIALER_DATABASE_URL elsewhere"),
    ("read-only",
     "the database is read-only: nothing was changed; make it writable or point DIALER_DATABASE_URL elsewhere"),
    ("disk is full",
     "the disk holding the database is full: nothing from this command was saved; "
     "free some space and run it again"),
    ("disk i/o error",
     "the disk holding the database failed to read or write (disk I/O error): nothing was saved; check the disk "
     "and that the database is not on a network share, then run the command again"),
    ("unable to open database file",
     "cannot open the database file: check that its directory exists and is writable (DIALER_DATABASE_URL)"),
    ("file is not a database",
     "DIALER_DATABASE_URL: not a dialer database / corrupted: restore from backup (or point it at the right file)"),
    ("malformed",
     "DIALER_DATABASE_URL: not a dialer database / corrupted (malformed): restore from backup"),
    ("could not connect", "cannot connect to the database server (DIALER_DATABASE_URL): is it running?"),
    ("connection refused", "cannot connect to the database server (DIALER_DATABASE_URL): is it running?"),
)  # fmt: skip

# The database setting points at the wrong (or a damaged) file: a configuration error, not a passing failure.
_WRONG_FILE = frozenset({"file is not a database", "malformed"})

_OS = {
    errno.ENOSPC: "the disk is full: nothing from this command was saved; free some space and run it again",
    errno.EDQUOT: "the disk quota is exceeded: nothing from this command was saved; free some space and run it "
    "again",
    errno.EROFS: "the file system is read-only: nothing was changed; use a writable location",
}


def describe(exc: BaseException) -> tuple[str, int] | None:
    """(message, exit code) for a failure the operator can act on, None for an unexpected one."""
    chain = list(exception_chain(exc))
    if any(isinstance(e, KeyboardInterrupt) for e in chain):
        return INTERRUPTED, EXIT_INTERRUPTED
    for e in chain:
        # A setting (environment, dialer.toml) is wrong: its message names it (dialer.settings.ConfigError).
        if type(e).__name__ == "ConfigError":
            return str(e).splitlines()[0] if str(e) else "a setting is wrong", EXIT_CONFIG
    for e in chain:
        if isinstance(e, OSError) and e.errno in _OS:
            return _OS[e.errno], EXIT_ERROR
    for e in chain:
        if type(e).__name__ in ("OperationalError", "DatabaseError", "ProgrammingError"):
            text = str(getattr(e, "orig", None) or e).lower()
            for needle, message in _DATABASE:
                if needle in text:
                    return message, EXIT_CONFIG if needle in _WRONG_FILE else EXIT_ERROR
    for e in chain:
        if isinstance(e, MemoryError):
            return "out of memory: nothing was saved; close other programs or split the input", EXIT_ERROR
        if isinstance(e, PermissionError):
            where = f" {e.filename}" if e.filename else ""
            return f"permission denied{where}: nothing was changed; check the file's owner and mode", EXIT_ERROR
    return None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line[:200]}" if line else type(exc).__name__


@contextmanager
def one_line_errors(verbose: int = 0) -> Iterator[None]:
    """Around a whole command: known failures become their message, others one line + how to see more."""
    try:
        yield
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except BaseException as exc:
        if type(exc).__module__.startswith("typer") or isinstance(exc, GeneratorExit):
            raise  # Typer's own usage errors print themselves
        known = describe(exc)
        if verbose >= 2:
            traceback.print_exception(exc, file=sys.stderr)
        if known is not None:
            fail(*known)
        fail(f"unexpected error: {_first_line(exc)} ({DETAILS})", EXIT_ERROR)
