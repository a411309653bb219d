"""Shared by the simulated-agents tests: a world whose agents work through the dialer's agents API (``[desk]``), and
the checks of the dialer's routing against the simulator's record of what those agents told it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

DESK_WORLD = """
name = "desk"
seed = {seed}
timezone = "Europe/London"
pbx_number = "442037691880"

[shift]
start = "09:00"

[agents]
extensions = [{extensions}]
wrapup = {{ dist = "const", value = 4 }}
# Everyone from 09:00; one agent logs out at {logout} and comes back at {back}.
schedule = [{{ start = "09:00", end = "24:00", count = {stay} }}, {{ start = "09:00", end = "{logout}", count = 1 }},
            {{ start = "{back}", end = "24:00", count = 1 }}]
breaks = [{breaks}]

[desk]
login = "agent{{extension}}"
pin = "{pin}"
callback_after = {{ dist = "uniform", low = {cb_low}, high = {cb_high} }}
only_me = 0.5
retry_s = 0.1

[desk.dispositions]
sale = 0.25
not_interested = 0.25
callback = 0.25
wrong_number = 0.1
dnc = 0.15

[calls]
answer_probability = 0.45
p_busy = 0.1
p_failed = 0.02
p_unallocated = 0.0
ring_time = {{ dist = "uniform", low = 4, high = 12 }}
max_ring_s = 25
connect_grace_s = 2
talk_time = {{ dist = "exponential", mean = 60 }}
busy_after_s = 3
failed_after_s = 1

[limits]
general_per_window = 100
statistics_per_window = 3
window_s = 60

[statistics]
lag_s = 10

[webhooks]
profile = "full"
notify_start_timeout_s = 60
"""
PIN = "2468"
# Five two-minute breaks going round the team, two lunches: people do not all leave at the same instant. They
# start a few world minutes in: the simulator starts some wall seconds before the daemon.
STAGGERED_BREAKS = ", ".join(
    [f'{{ start = "09:{m:02d}", end = "09:{m + 2:02d}", count = 1, code = "break" }}' for m in (6, 7, 8, 9, 10)]
    + [f'{{ start = "09:{m:02d}", end = "09:{m + 3:02d}", count = 1, code = "lunch" }}' for m in (11, 12)]
)


def desk_world(*, agents: int = 10, seed: int = 11, logout: str = "09:09", back: str = "09:13",
               breaks: str = STAGGERED_BREAKS,
               cb_low: float = 60, cb_high: float = 300) -> str:  # fmt: skip
    exts = ", ".join(f'"{100 + i}"' for i in range(agents))
    return DESK_WORLD.format(seed=seed, extensions=exts, stay=agents - 1, logout=logout, back=back, breaks=breaks, pin=PIN,
                             cb_low=cb_low, cb_high=cb_high)  # fmt: skip


def away_periods(timeline: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Per extension, the periods in which the dialer had surely been told the agent is away (paused or logged out):
    from the dialer's answer to the pause or logout to the moment the desk asked to be ready again. Before the first
    login counts as away from the start of time."""
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    by_ext: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in timeline:
        by_ext[row["extension"]].append(row)
    for ext, rows in by_ext.items():
        away_from: float | None = -math.inf
        for row in sorted(rows, key=lambda r: r["asked_at"]):
            if row["state"] == "ready":
                if away_from is not None:
                    out[ext].append((away_from, row["asked_at"]))
                away_from = None
            elif away_from is None and row["ok"] and not row["deferred"]:
                away_from = row["at"]
        if away_from is not None:
            out[ext].append((away_from, math.inf))
    return out


def routed_to_away(calls: list[dict[str, Any]], timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls the dialer's routing answer sent to an agent who was away for the whole time it could have decided
    (from NOTIFY_START sent to its answer received)."""
    away = away_periods(timeline)
    bad = []
    for c in calls:
        answer = c.get("webhook_answer") or {}
        ext = str(answer.get("redirect") or "")
        if not ext or c.get("notify_sent_at") is None or c.get("routed_at") is None:
            continue
        if any(start <= c["notify_sent_at"] and c["routed_at"] <= end for start, end in away.get(ext, [])):
            bad.append(c)
    return bad
