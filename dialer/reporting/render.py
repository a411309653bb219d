"""A campaign report on the terminal: rich tables of contacts, calls, abandon rates, the hourly table, and (when
the campaign has agents) the agents and the dispositions by hour.

Rendering only: every figure comes from the ``Report`` as it is; nothing here reads the database.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table

from dialer.outcomes.states import LIVE_ATTEMPT_STATES, AttemptState

if TYPE_CHECKING:
    from dialer.reporting.reports import Report

# The terminal shows the last two days; --json and the exports hold every hour.
HOURLY_ROWS_SHOWN = 48


def count(n: int | float | None) -> str:
    return "—" if n is None else f"{n:,.0f}"


def pct(x: float | None, unknown: str = "—") -> str:
    return unknown if x is None else f"{x * 100:.1f}%"


def duration(seconds: float | None, unknown: str = "—") -> str:
    if seconds is None:
        return unknown
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h:,}h {m:02d}m {sec:02d}s"
    return f"{m}m {sec:02d}s" if m else f"{sec}s"


def when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M")


def render(r: Report, console: Console) -> None:
    """Prints the report ``r`` on ``console``: a heading, then the contacts, calls, abandon and hourly tables."""
    console.print(
        f"[bold]Campaign {r.campaign}[/bold] ({r.campaign_state}) — times in {r.timezone}; "
        f"report at {when(r.local(r.generated_at))}; calls {when(r.local(r.first_call_at))} "
        f"to {when(r.local(r.last_call_at))}",
        highlight=False,
    )

    contacts = Table(title="Contacts", title_justify="left")
    contacts.add_column("Final state")
    contacts.add_column("Contacts", justify="right")
    contacts.add_column("Share", justify="right")
    for label, n in (
        ("Reached", r.contacts_reached),
        ("Exhausted", r.contacts_exhausted),
        ("Invalid", r.contacts_invalid),
        ("Do not call", r.contacts_dnc),
        ("Pending", r.contacts_pending),
    ):
        contacts.add_row(label, count(n), pct(n / r.contacts_total if r.contacts_total else None))
    contacts.add_row("[bold]Total[/bold]", f"[bold]{count(r.contacts_total)}[/bold]", "")
    contacts.add_row("List penetration", count(r.contacts_attempted), pct(r.list_penetration))
    console.print(contacts)

    calls = Table(title="Calls", title_justify="left")
    calls.add_column("Measure")
    calls.add_column("Value", justify="right")
    live = sum(r.attempts_by_state.get(s, 0) for s in LIVE_ATTEMPT_STATES)
    calls.add_row("Attempts (all states)", count(r.attempts_total))
    calls.add_row(
        "  in progress / rejected / not placed",
        f"{count(live)} / {count(r.attempts_by_state.get(AttemptState.FAILED, 0))} / "
        f"{count(r.attempts_by_state.get(AttemptState.NOT_PLACED, 0))}",
    )
    calls.add_row("Calls placed", count(r.calls_placed))
    calls.add_row("Answered", f"{count(r.answered)} ({pct(r.answer_rate)})")
    calls.add_row("Connected to an agent", count(r.connected))
    calls.add_row("Abandoned", count(r.abandoned))
    calls.add_row(
        "Calls per reached contact",
        "—" if r.attempts_per_reached is None else f"{r.attempts_per_reached:,.2f}",
    )
    calls.add_row("Talk time", duration(r.talk_seconds))
    calls.add_row("Average talk time", duration(r.avg_talk_seconds))
    calls.add_row("Occupancy", pct(r.occupancy, "unknown (no agent data)"))
    calls.add_row("Cost", f"{r.cost:,.2f}")
    console.print(calls)

    abandon = Table(
        title=f"Abandon rate (abandoned / answered; target {pct(r.abandon_target)} over "
        f"{'24 h' if r.abandon_window == '24h' else '30 days'})",
        title_justify="left",
    )
    abandon.add_column("Window")
    abandon.add_column("Abandoned", justify="right")
    abandon.add_column("Answered", justify="right")
    abandon.add_column("Rate", justify="right")
    for label, ab, an, rate in (
        ("Campaign", r.abandoned, r.answered, r.abandon_rate),
        ("Last 24 h", r.abandoned_24h, r.answered_24h, r.abandon_rate_24h),
        ("Last 30 days", r.abandoned_30d, r.answered_30d, r.abandon_rate_30d),
    ):
        over = rate is not None and rate > r.abandon_target
        abandon.add_row(label, count(ab), count(an), f"[red]{pct(rate)}[/red]" if over else pct(rate))
    console.print(abandon)

    rows = r.hourly[-HOURLY_ROWS_SHOWN:]
    title = f"Hourly ({r.timezone})"
    if len(r.hourly) > len(rows):
        title += f" — last {len(rows)} of {len(r.hourly)} hours; all of them in --json / exports"
    hourly = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0, 0, 1)
    )
    hourly.add_column("Hour", no_wrap=True)
    for name in ("Placed", "Answered", "Connected", "Abandoned", "Abandon %", "Talk"):
        hourly.add_column(name, justify="right", no_wrap=True, min_width=len(name))
    for h in rows:
        hourly.add_row(
            h.hour.strftime("%Y-%m-%d %H:00"),
            count(h.calls_placed),
            count(h.answered),
            count(h.connected),
            count(h.abandoned),
            pct(h.abandon_rate),
            duration(h.talk_seconds),
        )
    if not rows:
        hourly.add_row("no calls yet", "", "", "", "", "", "")
    console.print(hourly)
    _render_agents(r, console)
    _render_dispositions(r, console)


def _codes(counts: dict[str, float] | dict[str, int], show: type[int] | type[float]) -> str:
    """``sale 3, callback 1`` (codes with nothing left out)."""
    parts = [f"{code} {duration(n) if show is float else count(n)}" for code, n in counts.items() if n]
    return ", ".join(parts) or "—"


def _render_agents(r: Report, console: Console) -> None:
    """One row per agent: calls, time in each state, occupancy, dispositions, conversion (if there are agents)."""
    if not r.agents:
        return
    table = Table(
        title=f"Agents ({when(r.local(r.agents_from))} to {when(r.local(r.generated_at))}; occupancy = talk / "
        "logged in and not paused)",
        title_justify="left",
    )
    table.add_column("Agent")
    for name in ("Handled", "Talk", "Wrap-up", "Ready", "Paused", "Logged in", "Occupancy", "Sales",
                 "Conversion"):  # fmt: skip
        table.add_column(name, justify="right")
    table.add_column("Pauses by code")
    table.add_column("Dispositions")
    for a in r.agents:
        table.add_row(
            a.login,
            count(a.calls_handled),
            duration(a.talk_seconds),
            duration(a.wrapup_seconds),
            duration(a.ready_seconds),
            duration(a.paused_seconds),
            duration(a.logged_in_seconds),
            pct(a.occupancy),
            count(a.sales),
            pct(a.conversion),
            _codes(a.pause_seconds, float),
            _codes(a.dispositions, int) + (f"; none yet {a.undisposed}" if a.undisposed else ""),
        )
    console.print(table)


def _render_dispositions(r: Report, console: Console) -> None:
    """Dispositions by local hour, a column per code (the last ``HOURLY_ROWS_SHOWN`` hours)."""
    if not r.dispositions_hourly:
        return
    codes = list(dict.fromkeys([c.code for c in r.disposition_codes] + [d.code for d in r.dispositions_hourly]))
    by_hour: dict[datetime, dict[str, int]] = {}
    for d in r.dispositions_hourly:
        by_hour.setdefault(d.hour, {})[d.code] = d.calls
    hours = sorted(by_hour)
    shown = hours[-HOURLY_ROWS_SHOWN:]
    title = f"Dispositions by hour ({r.timezone})"
    if len(hours) > len(shown):
        title += f" — last {len(shown)} of {len(hours)} hours; all of them in --json / exports"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0, 0, 1))
    table.add_column("Hour", no_wrap=True)
    for code in codes:
        table.add_column(code, justify="right")
    table.add_column("Total", justify="right")
    for hour in shown:
        row = by_hour[hour]
        table.add_row(hour.strftime("%Y-%m-%d %H:00"), *(count(row.get(code, 0)) for code in codes),
                      count(sum(row.values())))  # fmt: skip
    console.print(table)
