"""Why a campaign is or is not dialling: the facts of one tick in, one reason out. Pure: no database, no clock.

The engine gathers ``TickFacts`` each tick and asks ``decide``; ``effective`` turns what is stored (or the
campaign's state) into what `dialer status` and /metrics show; ``describe`` renders a verdict in the operator's
zone ("outside calling window until Mon 09:00 Europe/London").

Invariant: exactly one reason per campaign at a time, chosen by a fixed precedence (``decide`` reads top to
bottom): what makes calling impossible (paused, nothing callable before some time T) comes before what holds
calls back (agents, API budget, pacing), so the reason shown is the one that would still hold if the others went.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from dialer.outcomes.states import LOW_BALANCE, CampaignState

# How the daemon pauses a campaign whose account balance is under --balance-floor (dialing/daemon.py).
# A tick that places nothing while no call is in progress is still the rhythm of work for this long after the last
# call (a VICIdial dial slot is 2.5 s, an agent's wrap-up often tens of seconds); only a longer pause is reported as
# pacing holding back or no agent being free, so a working campaign does not flip reasons with every call.
PACING_GRACE_S = 60.0


class Reason(StrEnum):
    """What a campaign is doing; the value is the code in the database and the /metrics label (a closed set)."""

    DIALLING = "dialling"
    PAUSED = CampaignState.PAUSED.value
    LOW_BALANCE = "low_balance"
    NOT_RUNNING = "not_running"
    NO_DAEMON = "no_daemon"
    OUTSIDE_WINDOW = "outside_window"
    RETRY_WAIT = "retry_wait"
    CALLBACK_WAIT = "callback_wait"
    REDIAL_LOCK = "redial_lock"
    NUMBERS_IN_CALL = "numbers_in_call"
    FINISHING = "finishing"
    NO_AGENTS = "no_agents"
    API_BUDGET = "api_budget"
    PACING_HELD = "pacing_held"


class WaitKind(StrEnum):
    """Why a contact's next attempt lies in the future."""

    WINDOW = "window"  # it was (or would be) outside its calling window: moved to the next opening
    RETRY = "retry_delay"  # the retry delay after its last call
    LOCK = "lock"  # a legal redial lock (the delay after an abandoned call)
    CALLBACK = "scheduled_callback"  # a scheduled callback's time


@dataclass(frozen=True)
class ContactFacts:
    """The campaign's dialable contacts at one instant (``dialer.dialing.why_store.contact_facts``).

    ``due_now``: pending/retry contacts due now and under the attempt cap, and scheduled callbacks due now
    (``callbacks_due`` of them). ``waiting``/``next_at``/``next_kind``: those due later (callbacks included), the
    earliest next attempt and why it waits. ``in_call``: contacts with a call under way.
    ``due_sampled``/``due_in_window``/``due_next_window``: the first due contacts checked against their
    calling windows, how many are callable now, and the earliest opening for the others.
    """

    due_now: int = 0
    waiting: int = 0
    next_at: datetime | None = None
    next_kind: WaitKind | None = None
    in_call: int = 0
    due_sampled: int = 0
    due_in_window: int = 0
    due_next_window: datetime | None = None
    callbacks_due: int = 0


@dataclass(frozen=True)
class TickFacts:
    """What one tick of a running campaign saw and did."""

    now: datetime
    decided: int  # calls pacing asked for, after the budget
    claimed: int
    skipped_window: int  # due contacts the claim found outside their window (and moved to the next opening)
    agents_logged_in: int
    agents_idle: int
    live: bool  # agent figures come from PBX webhooks
    in_progress: int  # this campaign's calls ringing, waiting or talking
    budget: int  # callbacks the API budget allows now
    budget_reset_at: datetime | None = None
    policy_reason: str = ""  # pacing's own words when it chose 0
    since_last_call_s: float | None = None  # None: no call placed since the daemon started
    contacts: ContactFacts | None = None
    # The campaign has agents (dialer.agents): who of them cannot take a call ("2 paused, 1 logged out"); None
    # for a campaign paced for its configured count.
    team: str | None = None


@dataclass(frozen=True)
class Verdict:
    reason: Reason
    detail: str = ""
    until: datetime | None = None

    def same_as(self, other: Verdict | None) -> bool:
        """A change worth logging and storing: another reason or another end time (the detail's figures move
        every tick and are not news)."""
        return other is not None and other.reason == self.reason and other.until == self.until


def stored(code: str | None, detail: str | None, until: datetime | None) -> Verdict | None:
    """The verdict kept on a campaign row (None before the engine's first tick, or for a code it does not know:
    written by a newer dialer)."""
    try:
        reason = Reason(code) if code else None
    except ValueError:
        return None
    return Verdict(reason, detail or "", until) if reason is not None else None


def decide(f: TickFacts) -> Verdict:
    """The one reason that best explains this tick (see the module docstring for the precedence)."""
    if f.claimed > 0:
        return Verdict(Reason.DIALLING)
    c = f.contacts
    if c is not None and c.due_now == 0:
        if c.waiting and c.next_at is not None:
            return _waiting(c)
        return Verdict(Reason.FINISHING, "nothing left to dial; the calls in progress end the campaign")
    if c is not None and c.due_sampled and c.due_in_window == 0:
        return Verdict(Reason.OUTSIDE_WINDOW, "", _earliest(c.due_next_window, _window_wait(c)))
    if f.skipped_window and f.decided:
        return Verdict(Reason.OUTSIDE_WINDOW, "", _window_wait(c) if c is not None else None)
    if f.agents_logged_in <= 0:
        if f.team is not None:
            return Verdict(Reason.NO_AGENTS, "no ready agents" + (f": {f.team}" if f.team else ""))
        return Verdict(Reason.NO_AGENTS, "no agent logged in")
    if f.budget <= 0:
        return Verdict(Reason.API_BUDGET, "the API rate limit is spent", f.budget_reset_at)
    if f.decided == 0:
        working = f.in_progress > 0 or (
            f.since_last_call_s is not None and f.since_last_call_s < PACING_GRACE_S
        )
        if working:
            return Verdict(Reason.DIALLING, f"pacing waits: {f.policy_reason}" if f.policy_reason else "")
        if f.live and f.agents_idle <= 0:
            return Verdict(Reason.NO_AGENTS, f"none of the {f.agents_logged_in} agents is free")
        return Verdict(Reason.PACING_HELD, f.policy_reason)
    if c is not None and c.due_now > 0:
        if c.due_now == c.callbacks_due:
            return Verdict(Reason.CALLBACK_WAIT, "the due callbacks wait for their agent (only me) to be ready")
        # Pacing asked for calls and due contacts exist, yet none could be claimed: their numbers are in calls.
        return Verdict(Reason.NUMBERS_IN_CALL)
    return Verdict(Reason.DIALLING)


def _waiting(c: ContactFacts) -> Verdict:
    kind = c.next_kind or WaitKind.RETRY
    reason = {WaitKind.WINDOW: Reason.OUTSIDE_WINDOW, WaitKind.LOCK: Reason.REDIAL_LOCK,
              WaitKind.CALLBACK: Reason.CALLBACK_WAIT}.get(kind, Reason.RETRY_WAIT)  # fmt: skip
    return Verdict(reason, "", c.next_at)


def _window_wait(c: ContactFacts | None) -> datetime | None:
    if c is None or c.next_kind != WaitKind.WINDOW:
        return None
    return c.next_at


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return min(a, b)


def effective(
    state: str,
    pause_reason: str | None,
    stored: Verdict | None,
    *,
    daemon_running: bool,
) -> Verdict:
    """What to show for a campaign: its state says it all unless it is running; a running campaign's reason is
    the engine's last verdict, which means nothing while no daemon runs."""
    if state == CampaignState.PAUSED:
        if (pause_reason or "").startswith(LOW_BALANCE):
            return Verdict(Reason.LOW_BALANCE, pause_reason or "")
        return Verdict(Reason.PAUSED, pause_reason or "")
    if state != CampaignState.RUNNING:
        return Verdict(Reason.NOT_RUNNING, str(state))
    if not daemon_running:
        return Verdict(Reason.NO_DAEMON, "start it: dialer run")
    return stored or Verdict(Reason.DIALLING, "no tick yet")


_TEXT = {
    Reason.DIALLING: "dialling",
    Reason.PAUSED: CampaignState.PAUSED.value,
    Reason.LOW_BALANCE: "paused: account balance below the floor",
    Reason.NOT_RUNNING: "not running",
    Reason.NO_DAEMON: "the daemon is not running",
    Reason.OUTSIDE_WINDOW: "outside calling window",
    Reason.RETRY_WAIT: "every remaining contact is waiting for its retry delay",
    Reason.CALLBACK_WAIT: "every remaining contact waits for its scheduled callback",
    Reason.REDIAL_LOCK: "every remaining contact is under a redial lock (after an abandoned call)",
    Reason.NUMBERS_IN_CALL: "the due numbers are in calls from another campaign",
    Reason.FINISHING: "finishing",
    Reason.NO_AGENTS: "no agent available",
    Reason.API_BUDGET: "API budget exhausted",
    Reason.PACING_HELD: "pacing holds",
}


def describe(v: Verdict, zone: str, now: datetime | None = None) -> str:
    """One line for people: ``outside calling window until Mon 09:00 Europe/London``, then the detail."""
    if v.reason == Reason.NOT_RUNNING:
        return f"not running ({v.detail})" if v.detail else "not running"
    text = _TEXT[v.reason]
    if v.until is not None:
        text += f" until {format_time(v.until, zone, now)}"
    if v.detail:
        text += f" ({v.detail})"
    return text


def format_time(t: datetime, zone: str, now: datetime | None = None) -> str:
    """``Mon 09:00 Europe/London`` within the coming week, with the date beyond it (or when ``now`` is unknown
    the weekday alone would be ambiguous)."""
    tz = _zone(zone)
    local = t.astimezone(tz)
    name = tz.key
    if now is not None and timedelta(0) <= t - now < timedelta(days=6):
        return f"{local:%a %H:%M} {name}"
    return f"{local:%a %Y-%m-%d %H:%M} {name}"


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except Exception:
        return ZoneInfo("UTC")
