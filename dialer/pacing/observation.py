"""What a pacing policy may see: the daemon's (or the benchmark's) view of one campaign at one instant.

Everything here is observable in production: live agent/call state comes from PBX webhooks, finished calls from
webhooks or the statistics API, counts from the database, the budget from the API client's rate-limit headers.
Nothing describes the world's hidden parameters (answer probability, ring/talk-time distributions).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FinishedCall:
    """One finished call, as the daemon learns it (webhook END or a statistics row).

    ``ring_s`` is the time from placing the call to the customer answering, or to the end of the call when the
    customer never answered (a censored ring time). ``talk_s`` is the agent's talk time (0 unless connected).
    """

    placed_at: float
    ended_at: float
    answered: bool
    connected: bool
    abandoned: bool
    ring_s: float
    talk_s: float = 0.0
    disposition: str = ""
    call_id: str = ""


@dataclass(frozen=True, slots=True)
class Observation:
    """The campaign at time ``now`` (float seconds on the driver's clock).

    ``time_of_day`` is seconds since local midnight in the campaign's timezone (for per-hour answer rates and
    VICIdial's tapering). With ``live`` (webhooks): ``idle``, ``talking_since``, ``wrapup_since``, ``waiting`` are
    the PBX's live state and ``ringing_since`` holds the placement times of calls still ringing. Without live data
    the agent fields are unknown (``idle`` = ``agents_logged_in``, empty tuples, ``waiting`` 0) and
    ``ringing_since`` holds every placed call whose outcome is not yet known (ringing, talking, or finished but
    not yet in the statistics).

    ``finished`` and ``wrapups_finished`` (durations) are what became known since the previous observation: a
    policy is fed every observation in order, exactly once. Abandon counts are the campaign's, over its legal
    window and since local midnight. ``budget`` is how many callbacks may be sent before the rate-limit window
    resets (after the reserve for statistics and other requests).
    """

    now: float
    time_of_day: float
    agents_logged_in: int
    idle: int
    talking_since: tuple[float, ...] = ()
    wrapup_since: tuple[float, ...] = ()
    ringing_since: tuple[float, ...] = ()
    waiting: int = 0
    answered_window: int = 0
    abandoned_window: int = 0
    answered_today: int = 0
    abandoned_today: int = 0
    finished: tuple[FinishedCall, ...] = field(default=())
    wrapups_finished: tuple[float, ...] = ()
    budget: int = 1_000_000
    live: bool = True

    @property
    def in_progress(self) -> int:
        """Calls that hold or may soon hold an agent: ringing + waiting + talking (every unknown one when not live)."""
        if not self.live:
            return len(self.ringing_since)
        return len(self.ringing_since) + self.waiting + len(self.talking_since)

    @property
    def available(self) -> int:
        """Agents logged in and not in wrap-up."""
        return self.agents_logged_in - len(self.wrapup_since)
