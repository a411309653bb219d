"""A full disk pauses dialling instead of failing every tick: one log line a minute, and dialling resumes when a
write succeeds again.

Every tick writes (claims are written ahead), so with the disk full each tick used to end in a logged traceback
(about 25 a second). The daemon asks ``is_disk_full`` of each failed job; while ``DiskPause.paused`` the engine
places nothing (``Engine.hold``), and the next job that writes successfully (the heartbeat) ends the pause.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_TEXT = ("database or disk is full", "disk is full", "no space left on device", "disk quota exceeded")
LOG_EVERY_S = 60.0


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what SQLAlchemy wrapped (``orig``) and what it was raised from or during, once each."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        linked = (getattr(e, "orig", None), e.__cause__, e.__context__)
        todo.extend(x for x in linked if isinstance(x, BaseException))


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) says the disk or the database's file system is full."""
    for e in exception_chain(exc):
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return True
        if any(text in str(e).lower() for text in _FULL_TEXT):
            return True
    return False


class DiskPause:
    """Whether dialling is paused for a full disk, and when to say so again (at most once per ``every_s``)."""

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        self.every_s = every_s
        self._lock = threading.Lock()
        self.paused = False
        self._logged_at: float | None = None
        self._failures = 0

    def failed(self, now: float) -> int | None:
        """A write failed for a full disk at ``now``: the number of failures to report now, or None (not yet)."""
        with self._lock:
            self.paused = True
            self._failures += 1
            if self._logged_at is not None and now - self._logged_at < self.every_s:
                return None
            self._logged_at, count, self._failures = now, self._failures, 0
            return count

    def wrote(self) -> bool:
        """A write succeeded: True when that ends a pause (say so once)."""
        with self._lock:
            was, self.paused = self.paused, False
            if was:
                self._logged_at, self._failures = None, 0
            return was
