"""The tick's first step: what pacing sees of one campaign at one instant (``observe``).

Agent and call figures come from the live state (webhooks) while it is not silent, else from the database; abandon
counts over the legal window and since local midnight come from the database, re-read every ``counts_refresh_s``.

A campaign with agents (``dialer.agents``) is paced for its team: the agents logged in and not paused, plus those in
calls. Invariant: the team is read from the database on every tick and pushed into the live state before the live
view is taken (``sync_team``), so a pause or a logout is paced for at the very next tick, and a team with nobody
logged in and not paused counts zero agents. A campaign without agents keeps its configured count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine as DbEngine
from sqlmodel import col, select

from dialer.agents.presence import TeamPresence, expire_wrapups, team_presence
from dialer.db import session_scope
from dialer.dialing.live_types import AGENT_TALKING, IDLE, OFFLINE, WRAPUP
from dialer.dialing.why_store import Explainer
from dialer.models import Attempt, Campaign
from dialer.outcomes.states import IN_CALL_AGENT_STATES, LIVE_ATTEMPT_STATES, AgentState, AttemptState
from dialer.pacing.base import Policy
from dialer.pacing.observation import FinishedCall, Observation
from dialer.reporting.figures import ABANDON_WINDOWS, call_counts, window_start


class LiveSource(Protocol):
    """What the engine needs from the webhook live state (dialer.dialing.live.LiveState)."""

    def call_placed(self, campaign_id: int, attempt_id: int, phone: str, placed_at: float) -> None: ...

    def call_failed(self, campaign_id: int, attempt_id: int, now: float | None = None) -> None: ...

    def hold_agent(self, extension: str, attempt_id: int, now: float) -> bool: ...

    def sync_team(
        self, campaign_id: int, members: Mapping[str, tuple[str, float | None]], *, wrapup_s: float, now: float
    ) -> None: ...


ObserveHook = Callable[[Campaign, float], Observation | None]


@dataclass
class CampaignRuntime:
    """What the engine keeps of one campaign between ticks."""

    policy: Policy
    pacing: str
    last_finished_id: int = 0
    counts_at: float = 0.0
    answered_window: int = 0
    abandoned_window: int = 0
    answered_today: int = 0
    abandoned_today: int = 0
    last_tick: float = 0.0
    agent_seconds: float = 0.0
    team_size: int = -1  # the working team the last tick paced for (agents' campaigns only)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Why the campaign is (not) dialling, kept between ticks: stored and logged when it changes.
    why: Explainer = field(default_factory=Explainer)


@dataclass(frozen=True)
class Observed:
    obs: Observation
    team: TeamPresence | None  # None: the campaign has no agents


def observe(
    db: DbEngine,
    campaign: Campaign,
    rt: CampaignRuntime,
    now: float,
    *,
    budget: int,
    live: LiveSource | None,
    live_observer: ObserveHook | None,
    time_scale: float,
    refresh_s: float,
) -> Observed:
    refresh_counts(db, campaign, rt, now, refresh_s)
    local = datetime.fromtimestamp(now, zone(campaign.timezone))
    time_of_day = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    common: dict[str, Any] = {
        "answered_window": rt.answered_window,
        "abandoned_window": rt.abandoned_window,
        "answered_today": rt.answered_today,
        "abandoned_today": rt.abandoned_today,
        "budget": budget,
        "time_of_day": time_of_day,
    }
    assert campaign.id is not None
    team = read_team(db, campaign.id, datetime.fromtimestamp(now, UTC))
    if team is not None and live is not None:
        live.sync_team(campaign.id, team_members(team), wrapup_s=campaign.wrapup_s, now=now)
    live_obs = live_observer(campaign, now) if live_observer else None
    if live_obs is not None:
        return Observed(replace(live_obs, **common), team)
    # No real-time events: every call whose outcome we do not know yet may be ringing or talking.
    with session_scope(db, write=False) as s:
        pending = s.exec(
            select(Attempt.sent_at, Attempt.created_at).where(
                col(Attempt.campaign_id) == campaign.id, col(Attempt.state).in_(LIVE_ATTEMPT_STATES)
            )
        ).all()
        finished_rows = s.exec(
            select(Attempt)
            .where(Attempt.campaign_id == campaign.id, col(Attempt.state) == AttemptState.COMPLETED,
                   col(Attempt.id) > rt.last_finished_id)
            .order_by(col(Attempt.id))
        ).all()
    if finished_rows:
        rt.last_finished_id = max(a.id or 0 for a in finished_rows)
    ringing = tuple(sorted((a or b).timestamp() for a, b in pending))
    if team is None:
        agents = idle = configured_agents(campaign)
    else:
        # The unresolved calls above stand for the agents in calls; one in wrap-up is not free to take one.
        agents, idle = team.ready + team.count(*IN_CALL_AGENT_STATES), team.ready
    return Observed(
        Observation(
            now=now,
            agents_logged_in=agents,
            idle=idle,
            ringing_since=ringing,
            finished=tuple(finished_call(a, time_scale) for a in finished_rows),
            live=False,
            **common,
        ),
        team,
    )


def read_team(db: DbEngine, campaign_id: int, now: datetime) -> TeamPresence | None:
    """The campaign's team now; a wrap-up found past its limit is written back first (its end event)."""
    with session_scope(db, write=False) as s:
        team = team_presence(s, campaign_id, now)
    if team is not None and team.expired:
        with session_scope(db) as s:
            expire_wrapups(s, [a.id for a in team.agents if a.expired], now)
    return team


_LIVE_PRESENCE = {AgentState.READY: IDLE, AgentState.WRAPUP: WRAPUP, AgentState.RINGING: AGENT_TALKING,
                  AgentState.TALKING: AGENT_TALKING}  # fmt: skip


def team_members(team: TeamPresence) -> dict[str, tuple[str, float | None]]:
    """Each agent's extension and presence in the live state's terms (paused and logged out are offline)."""
    return {
        a.extension: (_LIVE_PRESENCE.get(a.state, OFFLINE), a.wrapup_until.timestamp() if a.wrapup_until else None)
        for a in team.agents
    }


def refresh_counts(db: DbEngine, campaign: Campaign, rt: CampaignRuntime, now: float, refresh_s: float) -> None:
    """Abandon counts over the legal window and since local midnight, re-read at most every ``refresh_s``."""
    if now - rt.counts_at < refresh_s and rt.counts_at:
        return
    now_dt = datetime.fromtimestamp(now, UTC)
    window = campaign.abandon_window if campaign.abandon_window in ABANDON_WINDOWS else "30d"
    midnight = datetime.fromtimestamp(now, zone(campaign.timezone)).replace(
        hour=0, minute=0, second=0, microsecond=0
    ).astimezone(UTC)
    assert campaign.id is not None
    with session_scope(db, write=False) as s:
        legal = call_counts(s, campaign.id, window_start(now_dt, window))
        today = call_counts(s, campaign.id, midnight)
    rt.answered_window, rt.abandoned_window = legal.answered, legal.abandoned
    rt.answered_today, rt.abandoned_today = today.answered, today.abandoned
    rt.counts_at = now


def configured_agents(campaign: Campaign) -> int:
    return len(campaign.agent_extensions) or max(1, campaign.agents)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except Exception:
        return ZoneInfo("UTC")


def finished_call(a: Attempt, time_scale: float = 1.0) -> FinishedCall:
    """A stored call as pacing sees it: on the wall clock, so a sped-up world's stored (world) seconds are
    scaled down."""
    start = (a.placed_at or a.sent_at or a.created_at).timestamp()
    end = (a.finished_at or a.updated_at).timestamp()
    talk = float(a.talk_seconds or 0.0) / time_scale
    return FinishedCall(
        placed_at=start,
        ended_at=max(end, start),
        answered=bool(a.answered),
        connected=bool(a.connected),
        abandoned=bool(a.abandoned),
        ring_s=float(a.ring_seconds) / time_scale if a.ring_seconds is not None else max(0.0, end - start - talk),
        talk_s=talk,
        disposition=a.disposition or "",
    )
