"""Zadarma's rate limits as the simulator keeps them: fixed windows per user key, aligned to window boundaries.

Two buckets per key: ``general`` (100 a window) and ``statistics`` (3 a window, shared by every
``/v1/statistics/...`` method). A statistics request is counted in the statistics bucket only, not in the general
one: the real service's rule is unverified and this choice lets a client reason about the two budgets separately.
Requests refused with 429 are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

GENERAL = "general"
STATISTICS = "statistics"


def group_of(path: str) -> str:
    return STATISTICS if path.startswith("/v1/statistics/") else GENERAL


@dataclass(slots=True)
class Bucket:
    window_id: int = -1
    used: int = 0


@dataclass(slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # unix seconds when the window rolls over
    group: str


@dataclass
class RateLimiter:
    general: int = 100
    statistics: int = 3
    window_s: float = 60.0
    buckets: dict[tuple[str, str], Bucket] = field(default_factory=dict)

    def limit_of(self, group: str) -> int:
        return self.statistics if group == STATISTICS else self.general

    def check(self, key: str, path: str, now: float, *, consume: bool = True) -> Decision:
        group = group_of(path)
        limit = self.limit_of(group)
        wid = math.floor(now / self.window_s)
        bucket = self.buckets.get((key, group))
        if bucket is None:
            bucket = self.buckets[(key, group)] = Bucket()
        if bucket.window_id != wid:
            bucket.window_id = wid
            bucket.used = 0
        reset_at = (wid + 1) * self.window_s
        if bucket.used >= limit:
            return Decision(False, limit, 0, reset_at, group)
        if consume:
            bucket.used += 1
        return Decision(True, limit, limit - bucket.used, reset_at, group)

    def reset_header(self, reset_at: float) -> str:
        """Whole unix seconds (rounded up) as Zadarma sends them; a sped-up simulator whose windows are not whole
        seconds sends milliseconds too, or a client could not learn the window length."""
        if float(self.window_s).is_integer():
            return str(math.ceil(reset_at - 1e-9))
        return f"{reset_at:.3f}"
