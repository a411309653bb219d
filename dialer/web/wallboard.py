"""What the wallboard shows, read from the database: every campaign with its state and why it is or is not
dialling, calls ringing and waiting, agents by state and for how long, the abandon rate today / 24 h / 30 days
against the cap, answered and abandoned calls per hour, the API budget, and a table of the agents.

Reading only. Two parts: the live part (campaigns' state and calls, agents' states: ``dialing.status`` and
``agents.accounts``) is read every time, and the figures over hours and days (``reporting.figures``), which move
slowly and cost a scan of the calls, are read at most every ``slow_every_s`` (``BoardReader``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col

from dialer.agents.accounts import AgentInfo, list_agents
from dialer.db import reader, session_scope
from dialer.dialing.status import DaemonState, daemon_status
from dialer.dialing.why import Reason
from dialer.models import Attempt, Campaign
from dialer.outcomes.states import AgentState, AttemptState
from dialer.reporting.figures import call_counts, call_time_sql, report_instant, window_start

HOURS = 12  # bars in the per-hour chart
AGENT_ORDER = (AgentState.TALKING, AgentState.RINGING, AgentState.WRAPUP, AgentState.READY, AgentState.PAUSED,
               AgentState.LOGGED_OUT)  # fmt: skip


@dataclass(frozen=True)
class Rates:
    today: float | None = None
    day: float | None = None
    month: float | None = None


@dataclass(frozen=True)
class HourBar:
    start: datetime
    answered: int
    abandoned: int


@dataclass
class Slow:
    """The figures over hours and days."""

    rates: dict[int, Rates] = field(default_factory=dict)
    hourly: list[HourBar] = field(default_factory=list)
    handled: dict[int, tuple[int, float]] = field(default_factory=dict)  # agent id -> calls, talk seconds today
    at: float = 0.0


@dataclass(frozen=True)
class CampaignRow:
    id: int
    name: str
    state: str
    why: str
    why_reason: str
    why_until: datetime | None
    dialling: bool
    ringing: int
    waiting: int | None
    talking: int | None
    due_now: int
    due_later: str
    answered: int
    abandoned: int
    cap: float
    window: str
    rates: Rates
    agents: int
    pacing: str


@dataclass(frozen=True)
class BoardView:
    now: datetime
    daemon: str
    daemon_age_s: float | None
    budget: list[tuple[str, int, int, float]]
    campaigns: list[CampaignRow]
    agents: list[AgentInfo]
    by_state: list[tuple[str, int]]
    hourly: list[HourBar]
    handled: dict[int, tuple[int, float]]
    ringing: int
    waiting: int

    @property
    def hour_max(self) -> int:
        return max([1, *(h.answered for h in self.hourly)])


class BoardReader:
    """Reads the wallboard; the slow figures are shared and re-read at most every ``slow_every_s``."""

    def __init__(self, db: Engine, *, slow_every_s: float = 5.0) -> None:
        self.db = db
        self.slow_every_s = slow_every_s
        self._slow = Slow()
        self._lock = threading.Lock()

    def read(self, now: datetime) -> BoardView:
        status = daemon_status(self.db, None, now)
        with session_scope(self.db, write=False) as s:
            agents = list_agents(s, now)
            campaigns = {c.name: c for c in s.exec(sa.select(Campaign)).scalars()}  # type: ignore[call-overload]
        slow = self._slow_part(now, [c.id or 0 for c in campaigns.values()])
        rows = [_campaign_row(c, campaigns.get(c["name"]), slow) for c in status["campaigns"]]
        daemon = status.get("daemon") or {}
        budget = [(str(g), int(b.get("remaining", 0)), int(b.get("limit", 0)), float(b.get("reset_in_s", 0.0)))
                  for g, b in (daemon.get("budget") or {}).items() if isinstance(b, dict)]  # fmt: skip
        counts = Counter(a.state for a in agents)
        return BoardView(
            now=now, daemon=str(daemon.get("state", DaemonState.NEVER_RAN)), daemon_age_s=daemon.get("age_s"),
            budget=budget, campaigns=rows, agents=sorted(agents, key=_agent_order), hourly=slow.hourly,
            by_state=[(str(state), counts.get(state, 0)) for state in AGENT_ORDER], handled=slow.handled,
            ringing=sum(r.ringing for r in rows), waiting=sum(r.waiting or 0 for r in rows),
        )  # fmt: skip

    def _slow_part(self, now: datetime, campaign_ids: list[int]) -> Slow:
        with self._lock:
            if time.monotonic() - self._slow.at < self.slow_every_s and set(campaign_ids) <= set(self._slow.rates):
                return self._slow
            self._slow = read_slow(self.db, now, campaign_ids)
            return self._slow


def read_slow(db: Engine, now: datetime, campaign_ids: list[int]) -> Slow:
    out = Slow(at=time.monotonic())
    now = report_instant(now)
    with reader(db).connect() as conn:
        zones = dict(conn.execute(sa.select(col(Campaign.id), col(Campaign.timezone))).all())
        for cid in campaign_ids:
            midnight = _midnight(now, zones.get(cid) or "UTC")
            out.rates[cid] = Rates(today=call_counts(conn, cid, midnight).abandon_rate,
                                   day=call_counts(conn, cid, window_start(now, "24h")).abandon_rate,
                                   month=call_counts(conn, cid, window_start(now, "30d")).abandon_rate)  # fmt: skip
        first = now.replace(minute=0, second=0) - timedelta(hours=HOURS - 1)
        when = call_time_sql()
        rows = conn.execute(
            sa.select(when, col(Attempt.answered), col(Attempt.abandoned), col(Attempt.agent_id),
                      col(Attempt.connected), col(Attempt.talk_seconds))
            .where(col(Attempt.state) == AttemptState.COMPLETED, when >= first)
        ).all()  # fmt: skip
    answered: Counter[int] = Counter()
    abandoned: Counter[int] = Counter()
    today = now.replace(hour=0, minute=0, second=0)
    for at, was_answered, was_abandoned, agent_id, connected, talk in rows:
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        slot = int((at - first).total_seconds() // 3600)
        answered[slot] += bool(was_answered)
        abandoned[slot] += bool(was_abandoned)
        if agent_id is not None and connected and at >= today:
            calls, seconds = out.handled.get(agent_id, (0, 0.0))
            out.handled[agent_id] = (calls + 1, seconds + float(talk or 0.0))
    out.hourly = [HourBar(first + timedelta(hours=i), answered[i], abandoned[i]) for i in range(HOURS)]
    return out


def _midnight(now: datetime, zone: str) -> datetime:
    try:
        local = now.astimezone(ZoneInfo(zone))
    except Exception:  # a zone this system lacks: count the day in UTC
        local = now
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def _campaign_row(c: dict[str, Any], campaign: Campaign | None, slow: Slow) -> CampaignRow:
    why = c.get("why") or {}
    until = why.get("until")
    cid = campaign.id or 0 if campaign is not None else 0
    return CampaignRow(
        id=cid, name=c["name"], state=c["state"], why=str(why.get("text", "")), why_reason=str(why.get("reason", "")),
        why_until=datetime.fromisoformat(until) if until else None, dialling=why.get("reason") == Reason.DIALLING,
        ringing=int(c.get(AgentState.RINGING) or 0), waiting=c.get("waiting"), talking=c.get(AgentState.TALKING),
        due_now=int(c.get("due_now") or 0), due_later=str(c.get("due_later_text") or ""),
        answered=int(c.get("answered") or 0), abandoned=int(c.get("abandoned") or 0),
        cap=campaign.abandon_target if campaign is not None else 0.03,
        window=campaign.abandon_window if campaign is not None else "30d",
        rates=slow.rates.get(cid, Rates()), agents=campaign.agents if campaign is not None else 0,
        pacing=campaign.pacing if campaign is not None else "",
    )  # fmt: skip


def _agent_order(a: AgentInfo) -> tuple[int, str]:
    order = {str(s): i for i, s in enumerate(AGENT_ORDER)}
    return order.get(a.state, len(order)), a.login

