"""What keeps a hostile sender from costing the webhook receiver anything: token buckets for refused requests (per
source and overall) and for the log lines they cause.

A forged flood must never reach the database, the liveness clock or a new ``/metrics`` series (``webhook_app``
refuses it before the writer thread); this module only bounds what refusing it costs: once a source (or everyone
together) has spent its budget of failures, its next requests are answered 429 without reading their bodies
(small ones are still read and checked, so a genuine PBX sharing an address with a forger keeps getting through),
and the warnings become one line per source now and then, with how many were left out.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """One token bucket per key (``rate`` tokens a second up to ``burst``); at most ``max_keys`` keys are kept
    (the least recently used goes first), so a sender rotating addresses cannot grow memory without bound."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _bucket(self, key: str, now: float) -> _Bucket:
        b = self._buckets.get(key)
        if b is None:
            b = _Bucket(self.burst, now)
            self._buckets[key] = b
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
            b.at = now
        return b

    def empty(self, key: str) -> bool:
        """True when ``key`` has no token left (nothing is spent)."""
        with self._lock:
            return self._bucket(key, self.clock()).tokens < 1.0

    def take(self, key: str) -> bool:
        """Spend one token of ``key``: False when there was none."""
        with self._lock:
            b = self._bucket(key, self.clock())
            if b.tokens < 1.0:
                return False
            b.tokens -= 1.0
            return True


GLOBAL = "*"


class FailureGuard:
    """Budgets for refused webhook requests: ``per_source`` failures a second from one address (bursts of
    ``source_burst``) and ``overall`` from everyone (bursts of ``overall_burst``)."""

    def __init__(
        self,
        *,
        per_source: float = 5.0,
        source_burst: float = 50.0,
        overall: float = 50.0,
        overall_burst: float = 500.0,
        delay_s: float = 0.25,
        max_delayed: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sources = TokenBuckets(per_source, source_burst, clock=clock)
        self._overall = TokenBuckets(overall, overall_burst, max_keys=1, clock=clock)
        self.delay_s = delay_s
        self.max_delayed = max_delayed
        self._delayed = 0

    async def slow_down(self) -> None:
        """Hold an over-budget refusal about ``delay_s`` before answering (a tarpit): a sender that waits for answers
        gets a few refusals a second per connection instead of thousands, at the cost of a sleeping coroutine.
        At most ``max_delayed`` wait at once (the rest are answered at once), so holding costs bounded memory."""
        if self.delay_s <= 0 or self._delayed >= self.max_delayed:
            return
        self._delayed += 1  # only ever touched on the event loop: no lock needed
        try:
            # Jittered, so held connections do not all come back in one burst that would stall genuine events.
            await asyncio.sleep(self.delay_s * random.uniform(0.5, 1.5))
        finally:
            self._delayed -= 1

    def exhausted(self, source: str) -> bool:
        """True when ``source`` or everyone together has no failure left to spend."""
        return self._sources.empty(source) or self._overall.empty(GLOBAL)

    def failed(self, source: str) -> bool:
        """Record one failure from ``source``: False when it was over budget (answer 429, log nothing)."""
        # A source already over its own budget does not spend everyone's.
        return self._sources.take(source) and self._overall.take(GLOBAL)


class LogBudget:
    """At most ``burst`` lines per key, then one per ``every_s`` seconds, each saying how many were left out;
    at most ``max_keys`` keys (further keys share the key ``"other"``), so the log stays readable in a flood."""

    def __init__(
        self,
        *,
        burst: float = 20.0,
        every_s: float = 60.0,
        max_keys: int = 200,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._buckets = TokenBuckets(1.0 / every_s, burst, max_keys=max_keys + 1, clock=clock)
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._keys: set[str] = set()
        self._skipped: dict[str, int] = {}

    def _key(self, key: str) -> str:
        with self._lock:
            if key in self._keys:
                return key
            if len(self._keys) < self._max_keys:
                self._keys.add(key)
                return key
            return "other"

    def first(self, key: str) -> bool:
        """True the first time ``key`` is seen (bounded: past ``max_keys`` keys they share ``"other"``)."""
        with self._lock:
            if key in self._keys or len(self._keys) >= self._max_keys:
                return False
            self._keys.add(key)
            return True

    def allow(self, key: str) -> int | None:
        """None: leave this line out; else log it, with the number of lines left out before it."""
        key = self._key(key)
        if not self._buckets.take(key):
            with self._lock:
                self._skipped[key] = self._skipped.get(key, 0) + 1
            return None
        with self._lock:
            return self._skipped.pop(key, 0)


class RefuseExhausted:
    """ASGI middleware: a POST to ``path`` from a source over its failure budget, with a body larger than
    ``small_body`` bytes (or of unknown size), is answered 429 before any routing or body reading: in a flood the
    refusals cost as little as possible, so genuine events sharing the event loop keep their latency."""

    def __init__(
        self, app: Any, *, path: str, guard: FailureGuard, small_body: int, on_refused: Callable[[], None]
    ) -> None:
        self.app = app
        self.path = path
        self.guard = guard
        self.small_body = small_body
        self.on_refused = on_refused

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == self.path:
            client = scope.get("client")
            source = client[0] if client else "?"
            size = None
            for name, value in scope["headers"]:
                if name == b"content-length":
                    size = int(value) if value.isdigit() else None
            if (size is None or size > self.small_body) and self.guard.exhausted(source):
                self.on_refused()
                await self.guard.slow_down()
                await send({"type": "http.response.start", "status": 429, "headers": _PLAIN})
                await send({"type": "http.response.body", "body": b"too many refused requests"})
                return
        await self.app(scope, receive, send)


_PLAIN = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"25")]
