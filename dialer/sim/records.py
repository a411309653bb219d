"""What the simulated PBX writes down about a finished call: statistics rows, cost rows, account-time dates."""

from __future__ import annotations

import bisect
import hashlib
import heapq
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dialer.sim.model import SimCall
from dialer.sim.scenario import Scenario

STAT_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
MAX_PERIOD_S = 30 * 86400
MAX_PAGE = 1000

# Q.850 cause codes Zadarma puts in ``status_code``.
STATUS_CODES = {
    "answered": 16,
    "busy": 17,
    "no answer": 19,
    "call failed": 38,
    "unallocated number": 1,
    "cancel": 16,
}


class AccountClock:
    """Unix seconds <-> ``YYYY-MM-DD HH:MM:SS`` in the account's timezone (statistics and webhook dates)."""

    def __init__(self, timezone: str) -> None:
        self.name = timezone
        self.tz = ZoneInfo(timezone)

    def format(self, unix: float) -> str:
        return datetime.fromtimestamp(int(unix), self.tz).strftime(STAT_TIME_FORMAT)

    def parse(self, text: str) -> float:
        text = text.strip()
        for fmt in (STAT_TIME_FORMAT, "%Y-%m-%d %H:%M", "%Y-%m-%d"):
            try:
                return datetime.strptime(text, fmt).replace(tzinfo=self.tz).timestamp()
            except ValueError:
                continue
        raise ValueError(f"bad date {text!r}")

    def label(self, unix: float) -> str:
        """``UTC+2`` / ``UTC-3:30`` as /v1/info/timezone/ says it."""
        offset = datetime.fromtimestamp(unix, self.tz).utcoffset() or timedelta(0)
        minutes = int(offset.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        h, m = divmod(abs(minutes), 60)
        return f"UTC{sign}{h}" + (f":{m:02d}" if m else "")


@dataclass(slots=True)
class CallRecord:
    """The simulator's side of one callback request (the model holds the call itself)."""

    call_id: str
    key: str
    received_at: float
    from_: str
    to: str
    sip: str | None
    predicted: bool
    token: str
    responded: bool = True
    caller_name: str | None = None
    routed_by_webhook: bool = False
    webhook_answer: dict[str, Any] | None = None
    notify_sent_at: float | None = None
    routed_at: float | None = None
    cost: float = 0.0
    billseconds: int = 0
    stats_due_at: float | None = None

    @property
    def out_id(self) -> str:
        return "out_" + self.token

    @property
    def in_id(self) -> str:
        return "in_" + self.token


def call_token(seed: int, start_time: float, seq: int) -> str:
    return hashlib.md5(f"{seed}:{start_time:.6f}:{seq}".encode()).hexdigest()[:24]


def digits(number: str) -> str:
    return number.lstrip("+")


def caller_label(rec: CallRecord, scenario: Scenario) -> str:
    name = rec.caller_name or scenario.caller_names.get(digits(rec.to))
    return f"{name} ({digits(rec.to)})" if name else digits(rec.to)


def bill(scenario: Scenario, call: SimCall, scale: float = 1.0) -> tuple[int, float]:
    """Billable seconds of the customer leg (answered to hang-up) and its cost at the destination's price.

    Durations are reported in world seconds (wall seconds x time scale): a sped-up world bills and reports
    a 3-minute talk as 180 s, as Zadarma would, while timestamps stay real.
    """
    if call.answered_at is None or call.ended_at is None:
        return 0, 0.0
    seconds = math.ceil(max(0.0, call.ended_at - call.answered_at) * scale - 1e-9)
    price = scenario.price_for(call.to).price
    minutes = seconds / 60.0 if scenario.billing == "per_second" else math.ceil(seconds / 60.0)
    cost = price * minutes
    return seconds, round(cost, 5)


def pbx_rows(
    call: SimCall, rec: CallRecord, scenario: Scenario, clock: AccountClock, scale: float = 1.0
) -> list[dict[str, Any]]:
    """The legs ``/v1/statistics/pbx/`` lists for a finished call (version 2 fields); seconds in world time."""
    talk = round(call.talk_seconds * scale) if call.connected else 0
    rows = [
        {
            "call_id": f"{int(call.placed_at)}.{call.seq}1",
            "sip": rec.sip or "",
            "callstart": clock.format(call.placed_at),
            "clid": digits(rec.from_),
            "destination": digits(rec.to),
            "disposition": call.disposition or "call failed",
            "seconds": talk,
            "is_recorded": "false",
            "pbx_call_id": rec.out_id,
            "_t": float(int(call.placed_at)),
        }
    ]
    if call.answered_at is not None:
        rows.append(
            {
                "call_id": f"{int(call.answered_at)}.{call.seq}2",
                "sip": call.agent or "",
                "callstart": clock.format(call.answered_at),
                "clid": caller_label(rec, scenario),
                "destination": call.agent or call.requested_agent or "",
                "disposition": call.pbx_disposition or "no answer",
                "seconds": talk,
                "is_recorded": "true" if scenario.webhook_recording and call.connected else "false",
                "pbx_call_id": rec.in_id,
                "_t": float(int(call.answered_at)),
            }
        )
    return rows


def cost_row(call: SimCall, rec: CallRecord, scenario: Scenario, clock: AccountClock) -> dict[str, Any]:
    """The row ``/v1/statistics/`` lists for the customer leg."""
    price = scenario.price_for(call.to)
    return {
        "id": f"{int(call.placed_at)}.{call.seq}",
        "sip": rec.sip or "",
        "callstart": clock.format(call.placed_at),
        "from": digits(rec.from_),
        "to": digits(rec.to),
        "description": price.description,
        "disposition": call.disposition or "call failed",
        "billseconds": rec.billseconds,
        "cost": f"{price.price:g}",
        "billcost": rec.cost,
        "currency": scenario.currency,
        "_t": float(int(call.placed_at)),
    }


class StatisticsStore:
    """Rows become visible at their due time (call end + lag); queries see visible rows sorted by call start."""

    def __init__(self) -> None:
        self._pending: list[tuple[float, int, str, dict[str, Any]]] = []
        self._seq = 0
        self.visible: dict[str, list[tuple[float, int, dict[str, Any]]]] = {"pbx": [], "cost": []}

    def add(self, kind: str, row: dict[str, Any], due: float) -> None:
        self._seq += 1
        heapq.heappush(self._pending, (due, self._seq, kind, row))

    def release(self, now: float) -> None:
        pending = self._pending
        while pending and pending[0][0] <= now:
            _, seq, kind, row = heapq.heappop(pending)
            bisect.insort(self.visible[kind], (row["_t"], seq, row), key=lambda x: (x[0], x[1]))

    def query(self, kind: str, start: float, end: float, now: float) -> list[dict[str, Any]]:
        self.release(now)
        rows = self.visible[kind]
        lo = bisect.bisect_left(rows, start, key=lambda x: x[0])
        hi = bisect.bisect_right(rows, end, key=lambda x: x[0])
        return [r for _, _, r in rows[lo:hi]]

    def pending_count(self) -> int:
        return len(self._pending)

    def visible_count(self, kind: str) -> int:
        return len(self.visible[kind])


def public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}
