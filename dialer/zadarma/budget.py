"""The live API rate-limit budget, per method group, shared by every request made with one key.

Zadarma reports ``X-RateLimit-Limit/Remaining/Reset`` on each response. Other programs may use the same
key, so the headers win over our own count; without headers we count locally in fixed windows
aligned to the window length (Zadarma's reset on the minute).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

GENERAL = "general"
STATISTICS = "statistics"
DEFAULT_LIMITS: dict[str, int] = {GENERAL: 100, STATISTICS: 3}
# Sleep just past the reset so the server's clock has certainly rolled the window too.
RESET_SLACK_S = 0.05


def group_of(path: str) -> str:
    return STATISTICS if path.startswith("/v1/statistics/") else GENERAL


@dataclass
class GroupState:
    limit: int
    window_s: float
    remaining: int
    reset_at: float
    in_flight: int = 0
    from_headers: bool = False
    last_header_reset: float | None = None
    sent: int = 0
    rate_limited: int = 0
    # Send times within the last window: the statistics group also keeps to its limit in any sliding window.
    history: deque[float] = field(default_factory=deque)
    sliding: bool = False
    # True once two responses told us the server's real window length.
    window_learned: bool = False


class BudgetExhausted(Exception):
    """Raised by ``acquire(wait=False)`` when the group has nothing left in this window."""

    def __init__(self, group: str, reset_in: float) -> None:
        super().__init__(f"{group} API budget exhausted; resets in {reset_in:.1f}s")
        self.group = group
        self.reset_in = reset_in


class RateBudget:
    """Thread-safe budget. ``acquire`` before each request, ``update`` with each response's headers."""

    def __init__(
        self,
        limits: Mapping[str, int] | None = None,
        *,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        now = clock()
        self._groups: dict[str, GroupState] = {}
        for name, limit in (limits or DEFAULT_LIMITS).items():
            self._groups[name] = GroupState(limit, window_s, limit, _next_boundary(now, window_s))
        # "3 statistics requests a minute" holds for every minute, not only the server's fixed windows.
        self._groups.setdefault(STATISTICS, GroupState(3, window_s, 3, _next_boundary(now, window_s)))
        self._groups[STATISTICS].sliding = True

    def _state(self, group: str) -> GroupState:
        if group not in self._groups:
            sample = next(iter(self._groups.values()))
            self._groups[group] = GroupState(
                DEFAULT_LIMITS.get(group, 100), sample.window_s, DEFAULT_LIMITS.get(group, 100), sample.reset_at
            )
        return self._groups[group]

    def _roll(self, st: GroupState, now: float) -> None:
        if now >= st.reset_at:
            st.reset_at = _next_boundary(now, st.window_s) if not st.from_headers else _advance(st, now)
            st.remaining = max(0, st.limit - st.in_flight)

    def available(self, group: str = GENERAL, *, reserve: int = 0) -> int:
        """How many requests of ``group`` may be sent right now without waiting, keeping ``reserve`` back."""
        with self._lock:
            st = self._state(group)
            now = self._clock()
            self._roll(st, now)
            left = st.remaining - reserve
            if st.sliding:
                self._slide_wait(st, now)
                left = min(left, st.limit - len(st.history))
            return max(0, left)

    @staticmethod
    def _slide_wait(st: GroupState, now: float) -> float:
        """Seconds until a sliding-window group may send again (0 if it may now)."""
        # The sliding cap needs the real window length: until headers have taught it, the server's own
        # fixed-window count (remaining/reset) is the only limit applied.
        if not st.sliding or (st.from_headers and not st.window_learned):
            return 0.0
        while st.history and st.history[0] <= now - st.window_s:
            st.history.popleft()
        if len(st.history) < st.limit:
            return 0.0
        return st.history[0] + st.window_s - now + RESET_SLACK_S

    def reset_in(self, group: str = GENERAL) -> float:
        with self._lock:
            st = self._state(group)
            now = self._clock()
            self._roll(st, now)
            return max(0.0, st.reset_at - now)

    def acquire(self, group: str = GENERAL, *, wait: bool = True, reserve: int = 0) -> float:
        """Take one request from the budget, sleeping until the reset while it is exhausted.

        Returns the seconds waited. With ``wait=False`` raises :class:`BudgetExhausted` instead of sleeping.
        """
        waited = 0.0
        while True:
            with self._lock:
                st = self._state(group)
                now = self._clock()
                self._roll(st, now)
                slide_wait = self._slide_wait(st, now)
                if st.remaining > reserve and slide_wait <= 0:
                    st.remaining -= 1
                    st.in_flight += 1
                    st.sent += 1
                    if st.sliding:
                        st.history.append(now)
                    return waited
                delay = slide_wait if st.remaining > reserve else st.reset_at - now + RESET_SLACK_S
            if not wait:
                raise BudgetExhausted(group, max(0.0, delay))
            delay = max(0.01, delay)
            self._sleep(delay)
            waited += delay

    def release(self, group: str, *, counted: bool) -> None:
        """A request finished. ``counted=False`` gives the slot back (it never reached the server)."""
        with self._lock:
            st = self._state(group)
            st.in_flight = max(0, st.in_flight - 1)
            if not counted:
                st.remaining = min(st.limit, st.remaining + 1)
                st.sent -= 1

    def update(self, group: str, headers: Mapping[str, str]) -> bool:
        """Fold a response's ``X-RateLimit-*`` headers in. Returns False when it had none."""
        limit = _int(headers.get("x-ratelimit-limit"))
        remaining = _int(headers.get("x-ratelimit-remaining"))
        reset = _float(headers.get("x-ratelimit-reset"))
        if limit is None and remaining is None and reset is None:
            return False
        with self._lock:
            st = self._state(group)
            now = self._clock()
            prev_reset = st.last_header_reset
            if reset is not None:
                if st.last_header_reset is not None and reset > st.last_header_reset:
                    # Learn the real window length: a sped-up simulator uses shorter ones. Consecutive
                    # resets may skip idle windows, so the smallest gap seen is the window.
                    st.window_s = min(st.window_s, reset - st.last_header_reset)
                    st.window_learned = True
                st.last_header_reset = reset
                st.reset_at = max(reset, now) if reset > now else _next_boundary(now, st.window_s)
            if limit is not None and limit > 0:
                st.limit = limit
            if remaining is not None:
                # Requests we sent after this one are not in the server's figure yet.
                fresh = max(0, remaining - max(0, st.in_flight - 1))
                same_window = reset is not None and prev_reset is not None and abs(reset - prev_reset) < 0.5
                # Within one window the server's count only goes down; a response that arrives late carries
                # an older, higher figure, so it may lower our count but never raise it.
                st.remaining = min(st.remaining, fresh) if same_window else fresh
            st.from_headers = True
            return True

    def rate_limited(self, group: str, retry_at: float | None) -> None:
        """A 429: nothing left until ``retry_at`` (or the known reset)."""
        with self._lock:
            st = self._state(group)
            st.rate_limited += 1
            st.remaining = 0
            now = self._clock()
            if retry_at is not None and retry_at > now:
                st.reset_at = retry_at
            elif st.reset_at <= now:
                st.reset_at = _next_boundary(now, st.window_s)

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            now = self._clock()
            out: dict[str, dict[str, float]] = {}
            for name, st in self._groups.items():
                self._roll(st, now)
                out[name] = {
                    "limit": st.limit,
                    "remaining": st.remaining,
                    "reset_in_s": round(max(0.0, st.reset_at - now), 3),
                    "window_s": st.window_s,
                    "sent": st.sent,
                    "rate_limited": st.rate_limited,
                }
            return out


def _next_boundary(now: float, window_s: float) -> float:
    return (math.floor(now / window_s) + 1) * window_s


def _advance(st: GroupState, now: float) -> float:
    # Past a header-given reset: the next one is a whole number of windows later.
    steps = math.floor((now - st.reset_at) / st.window_s) + 1
    return st.reset_at + steps * st.window_s


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
