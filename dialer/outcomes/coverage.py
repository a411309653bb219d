"""When Zadarma's statistics provably cover an uncertain callback's time, so that finding no call means none rang.

An uncertain callback (a timeout or 5xx after sending) may have rung the customer. Zadarma lists a call in its
statistics only after the call ends, plus a delay that is usually seconds but has been seen at 20 minutes. Declaring
such a callback "never placed" gives its attempt back and lets the contact be dialled again, so it is declared
only on evidence from the statistics themselves, never on the wall clock alone:

1. **The statistics have moved past it**: a customer leg that started after the callback was sent has been fetched
   (the *high-water mark* of call starts seen, ``latest_call``). Rows for later calls cannot arrive before the
   delay has passed for them, so a lag that grows is noticed here rather than guessed.
2. **And its row would be in by now**: the last complete fetch (``fetched_until``, the reconciler's watermark)
   happened at least a *margin* after the callback was sent. The margin is learned: the largest delay seen
   between a call's end (its start plus its seconds) and the first fetch of its row (``lag_s``; the customer
   leg's seconds do not count the ring, so this includes the longest ring seen too), plus the longest call seen
   (``longest_call_s``: a call still talking has no row yet). ``--uncertain-grace`` is only a lower bound.

A callback after which the account placed no call (a campaign's last call) can never satisfy (1). Then, as long as
none of our own later calls is still to show up, twice the margin must have passed at a complete fetch: the only
case decided without a later row, and still never before any lag has been observed.

Until the rule holds the attempt stays ``uncertain``, a live state: the number lock holds and the contact is not
dialled again. What is learned lives in the database (``COVERAGE_KEY``), per hour of fetching for the last day,
so a long outage (rows of its calls first fetched hours late) widens the margin for a day, never narrows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from dialer.kv import get_value, put_value
from dialer.models import StatRow

COVERAGE_KEY = "reconcile:coverage"
# What was learned is kept per hour of fetching, this many hours back.
KEEP_HOURS = 24
# A campaign's last call has no later call to show the statistics moved past it: it waits this many margins.
TAIL_FACTOR = 2.0

_STAT: sa.Table = StatRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Coverage:
    """What the statistics are known to cover; see the module docstring for the rule."""

    fetched_until: datetime | None
    latest_call: datetime | None
    lag_s: float | None
    longest_call_s: float
    floor_s: float

    @property
    def margin_s(self) -> float | None:
        """How long after a callback its row would surely have been fetched; None before any row was seen."""
        if self.lag_s is None:
            return None
        return max(self.floor_s, self.lag_s + self.longest_call_s)

    def covers(self, sent_at: datetime, *, later_call_pending: bool) -> bool:
        """Whether a callback sent at ``sent_at`` with no customer leg in the statistics never happened.

        ``later_call_pending``: the account placed a call after it that the statistics have not listed yet.
        """
        margin = self.margin_s
        if margin is None or self.fetched_until is None:
            return False
        if self.latest_call is not None and self.latest_call > sent_at:
            return self.fetched_until >= sent_at + timedelta(seconds=margin)
        if later_call_pending:
            return False  # its row will move the high-water mark past this callback: wait for it
        return self.fetched_until >= sent_at + timedelta(seconds=TAIL_FACTOR * margin)

    def describe(self) -> str:
        """The evidence, for the event log."""
        parts = [f"statistics fetched up to {_iso(self.fetched_until)}",
                 f"latest call seen started {_iso(self.latest_call)}"]
        if self.margin_s is not None:
            parts.append(f"margin {self.margin_s:.0f} s (lag {self.lag_s or 0:.0f} s + longest call "
                         f"{self.longest_call_s:.0f} s, at least {self.floor_s:.0f} s)")
        return ", ".join(parts)


def read_coverage(s: Session, fetched_until: datetime | None, floor_s: float, now: datetime) -> Coverage:
    """What the statistics cover, from what :func:`learn_from_rows` stored and the last complete fetch."""
    value = get_value(s, COVERAGE_KEY) or {}
    hours = _recent(value.get("hours") or [], now)
    lags = [h[1] for h in hours]
    return Coverage(
        fetched_until=fetched_until,
        latest_call=_parse(value.get("latest_call")),
        lag_s=max(lags) if lags else None,
        longest_call_s=max((h[2] for h in hours), default=0.0),
        floor_s=floor_s,
    )


def unseen_rows(s: Session, source: str, records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The records (by ``row_key``) not stored yet: only a row's first fetch tells how late it came."""
    keys = list(records)
    seen: set[str] = set()
    for i in range(0, len(keys), 900):
        chunk = keys[i : i + 900]
        seen.update(k for (k,) in s.execute(
            sa.select(_STAT.c.row_key).where(_STAT.c.source == source, _STAT.c.row_key.in_(chunk))))
    return [r for k, r in records.items() if k not in seen]


def learn_from_rows(s: Session, rows: Sequence[dict[str, Any]], fetched_at: datetime, time_scale: float) -> None:
    """Fold rows fetched for the first time at ``fetched_at`` into what is known (``COVERAGE_KEY``)."""
    lag, longest, latest = observe(
        ((r.get("callstart"), r.get("seconds"), r.get("pbx_call_id")) for r in rows), fetched_at, time_scale)
    if lag is None:
        return
    value = get_value(s, COVERAGE_KEY) or {}
    hour = fetched_at.astimezone(UTC).strftime("%Y-%m-%dT%H")
    hours = {h: (h_lag, h_longest) for h, h_lag, h_longest in _recent(value.get("hours") or [], fetched_at)}
    old_lag, old_longest = hours.get(hour, (0.0, 0.0))
    hours[hour] = (max(old_lag, lag), max(old_longest, longest))
    known = _parse(value.get("latest_call"))
    if latest is not None and (known is None or latest > known):
        known = latest
    put_value(s, COVERAGE_KEY, {"latest_call": _iso(known) if known else None,
                                "hours": [[h, *hours[h]] for h in sorted(hours)]})


def observe(
    rows: Iterable[tuple[datetime | None, int | None, str | None]], fetched_at: datetime, time_scale: float
) -> tuple[float | None, float, datetime | None]:
    """Pure. From rows first fetched at ``fetched_at`` as (callstart, seconds, pbx_call_id): the largest delay
    from a call's end to the fetch, the longest call (wall seconds) and the latest customer-leg start.

    ``seconds`` are the world's: a sped-up simulator world divides them by ``time_scale`` (1 against Zadarma).
    """
    lag: float | None = None
    longest = 0.0
    latest: datetime | None = None
    for callstart, seconds, pbx_call_id in rows:
        if callstart is None:
            continue
        duration = max(0.0, float(seconds or 0)) / time_scale
        delay = max(0.0, (fetched_at - callstart).total_seconds() - duration)
        lag = delay if lag is None else max(lag, delay)
        longest = max(longest, duration)
        customer_leg = not (pbx_call_id or "").startswith("in_")
        if customer_leg and callstart <= fetched_at and (latest is None or callstart > latest):
            latest = callstart
    return lag, longest, latest


def _recent(hours: list[Any], now: datetime) -> list[tuple[str, float, float]]:
    oldest = (now - timedelta(hours=KEEP_HOURS)).astimezone(UTC).strftime("%Y-%m-%dT%H")
    out: list[tuple[str, float, float]] = []
    for h in hours:
        if isinstance(h, list | tuple) and len(h) == 3 and str(h[0]) >= oldest:
            out.append((str(h[0]), float(h[1]), float(h[2])))
    return out


def _parse(value: Any) -> datetime | None:
    try:
        dt = datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None
    if dt is not None and dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "never"
