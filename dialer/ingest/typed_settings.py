"""A campaign's settings as one types them: the inverse of ``dialer.ingest.campaigns.parse_setting``.

``dialer campaign show`` prints these (``window 09:00-20:00``, ``weekdays mon-fri``, ``retry_busy 30m``,
``abandon_target 3%``). Invariant: ``campaigns.parse_settings(typed_settings(c))`` gives back the stored values.
"""

from __future__ import annotations

from collections.abc import Iterable

from dialer.ingest.campaigns import WEEKDAY_NAMES
from dialer.models import Campaign


def format_duration(seconds: int) -> str:
    """900 -> "15m", 5400 -> "1h30m", 0 -> "0s": text ``parse_duration_s`` reads back to the same seconds."""
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)


def format_weekdays(days: Iterable[int]) -> str:
    """[0, 1, 2, 3, 4] -> "mon-fri", [0, 2, 4] -> "mon,wed,fri": consecutive days as a range."""
    runs: list[list[int]] = []
    for d in sorted(set(days)):
        if runs and d == runs[-1][-1] + 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    return ",".join(
        WEEKDAY_NAMES[r[0]] if len(r) == 1 else f"{WEEKDAY_NAMES[r[0]]}-{WEEKDAY_NAMES[r[-1]]}" for r in runs
    )


def format_fraction(value: float) -> str:
    """0.03 -> "3%", 0.025 -> "2.5%"."""
    return f"{round(value * 100, 6):g}%"


def typed_settings(c: Campaign) -> dict[str, str]:
    """A campaign's settings as one types them (``dialer campaign set NAME KEY=VALUE`` keys; ``window=09:00-20:00``,
    ``weekdays=mon-fri``, ``retry_busy=30m``, ``abandon_target=3%``). ``parse_settings`` reads each back to the
    stored value; an unset one is ""."""
    return {
        "from": c.from_number,
        "sip": c.sip or "",
        "agents": str(c.agents),
        "extensions": ",".join(c.agent_extensions),
        "pacing": c.pacing,
        "abandon_target": format_fraction(c.abandon_target),
        "abandon_window": c.abandon_window,
        "max_attempts": str(c.max_attempts),
        "retry_busy": format_duration(c.retry_busy_s),
        "retry_no_answer": format_duration(c.retry_no_answer_s),
        "retry_failed": format_duration(c.retry_failed_s),
        "retry_abandoned": format_duration(c.retry_abandoned_s),
        "window": f"{c.window_start}-{c.window_end}",
        "weekdays": format_weekdays(c.weekdays),
        "holidays": ",".join(c.holidays),
        "region": c.default_region or "",
        "timezone": c.timezone,
        "abandon_action": c.abandon_action,
        "wrapup": format_duration(c.wrapup_s),
        "script": c.script or "",
    }
