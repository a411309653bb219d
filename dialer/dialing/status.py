"""What `dialer status` shows: the daemon's heartbeat plus live counts from the database, and for each campaign
why it is or is not dialling (the engine's stored verdict, or what its state says: ``dialer.dialing.why``), its
agents by state and its scheduled callbacks (``team_figures``, which ``/metrics`` shows too).

"Due now" counts every contact whose time has come: fresh and retry contacts, and scheduled callbacks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine as DbEngine
from sqlmodel import col, select

from dialer.db import session_scope
from dialer.dialing.why import Reason, Verdict, describe, effective, format_time, stored
from dialer.kv import get_value
from dialer.models import Agent, AgentCampaign, Attempt, Callback, Campaign, Contact, EventLog, utcnow
from dialer.outcomes.states import (
    LIVE_ATTEMPT_STATES,
    WAITING_CONTACT_STATES,
    AgentState,
    CallbackState,
    CampaignState,
)


class DaemonState(StrEnum):
    """What ``dialer status`` says of the daemon (its heartbeat), not of a campaign."""

    RUNNING = "running"
    STOPPED = "stopped"
    NOT_RESPONDING = "not responding"
    NEVER_RAN = "never ran"

STATUS_KEY = "daemon:status"


def daemon_status(db: DbEngine, tz: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The status; times in words are in ``tz`` (the operator's DIALER_TIMEZONE), else each campaign's zone."""
    now = now or utcnow()
    with session_scope(db, write=False) as s:
        hb = get_value(s, STATUS_KEY) or {}
        campaigns = s.exec(
            select(Campaign).where(col(Campaign.state) != CampaignState.DELETED).order_by(col(Campaign.id))
        ).all()
        later = col(Contact.next_attempt_at) > now
        due = {row[0]: row[1:] for row in s.execute(
            sa.select(col(Contact.campaign_id), sa.func.count(), sa.func.sum(sa.case((later, 1), else_=0)),
                      sa.func.min(sa.case((later, col(Contact.next_attempt_at)))))
            .where(col(Contact.state).in_(WAITING_CONTACT_STATES))
            .group_by(col(Contact.campaign_id))
        ).all()}  # fmt: skip
        attempt_rows = s.execute(
            sa.select(
                col(Attempt.campaign_id),
                sa.func.count(),
                sa.func.sum(sa.case((col(Attempt.state).in_(LIVE_ATTEMPT_STATES), 1), else_=0)),
                sa.func.sum(sa.case((col(Attempt.answered).is_(True), 1), else_=0)),
                sa.func.sum(sa.case((col(Attempt.abandoned).is_(True), 1), else_=0)),
            ).group_by(col(Attempt.campaign_id))
        ).all()
        errors = s.exec(
            select(EventLog).where(col(EventLog.level).in_(("warning", "error")))
            .order_by(col(EventLog.id).desc()).limit(5)
        ).all()
    teams = team_figures(db, now)
    per: dict[int | None, tuple[Any, ...]] = {row[0]: tuple(row[1:]) for row in attempt_rows}
    live_state = hb.get("live_state") or {}
    daemon = _daemon(hb, now)
    out_campaigns = []
    for c in campaigns:
        total, live, answered, abandoned = per.get(c.id, (0, 0, 0, 0))
        per_campaign = live_state.get("campaigns", {}) if isinstance(live_state, dict) else {}
        view = per_campaign.get(str(c.id), {}) if isinstance(per_campaign, dict) else {}
        n_due, n_later, next_at = due.get(c.id, (0, 0, None))
        next_at = _aware(next_at)
        zone = tz or c.timezone
        out_campaigns.append({
            "name": c.name,
            "state": c.state,
            "pause_reason": c.pause_reason,
            "why": _why(c, daemon.get("state") == DaemonState.RUNNING, zone, now),
            "due": int(n_due or 0),
            "due_now": int(n_due or 0) - int(n_later or 0),
            "due_later": int(n_later or 0),
            "due_later_from": next_at.isoformat() if next_at else None,
            "due_later_text": _waiting_text(int(n_later or 0), next_at, zone, now),
            "ringing": int(view.get("ringing", live or 0)),
            "waiting": view.get("waiting"),
            "talking": len(view["talking"]) if isinstance(view.get("talking"), list) else None,
            "agents_idle": view.get("idle"),
            "calls_placed": int(total or 0),
            "answered": int(answered or 0),
            "abandoned": int(abandoned or 0),
            # None: the campaign has no agents (it paces for its configured count).
            "agents": teams[c.id].agents if c.id in teams and teams[c.id].agents else None,
            "callbacks_scheduled": teams[c.id].callbacks_scheduled if c.id in teams else 0,
            "callbacks_due": teams[c.id].callbacks_due if c.id in teams else 0,
        })
    return {
        "daemon": daemon,
        "campaigns": out_campaigns,
        "errors": [f"{e.at.isoformat(timespec='seconds')} {e.kind}: {e.message}" for e in reversed(errors)]
        + list(hb.get("errors") or []),
    }


def _daemon(hb: dict[str, Any], now: datetime) -> dict[str, Any]:
    daemon: dict[str, Any] = dict(hb)
    if hb.get("updated_at"):
        age = (now - datetime.fromisoformat(hb["updated_at"])).total_seconds()
        daemon["age_s"] = age
        if hb.get("state") == DaemonState.RUNNING and age > 30:
            daemon["state"] = DaemonState.NOT_RESPONDING
    else:
        daemon["state"] = DaemonState.NEVER_RAN
    return daemon


def stored_verdict(c: Campaign) -> Verdict | None:
    return stored(c.dial_reason, c.dial_reason_detail, c.dial_reason_until)


def _why(c: Campaign, daemon_running: bool, zone: str, now: datetime) -> dict[str, Any]:
    verdict = effective(c.state, c.pause_reason, stored_verdict(c), daemon_running=daemon_running)
    is_stored = verdict == stored_verdict(c)
    since = c.dial_reason_since if is_stored else (c.updated_at if verdict.reason != Reason.NO_DAEMON else None)
    return {
        "reason": verdict.reason.value,
        "text": describe(verdict, zone, now),
        "detail": verdict.detail or None,
        "until": verdict.until.isoformat() if verdict.until else None,
        "since": since.isoformat() if since else None,
    }


def _waiting_text(n: int, first: datetime | None, zone: str, now: datetime) -> str:
    if not n or first is None:
        return ""
    return f"{n:,} from {format_time(first, zone, now)}"


def _aware(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def campaign_reasons(db: DbEngine) -> list[tuple[int, str, str]]:
    """(id, name, reason code) of every campaign not deleted, for the /metrics gauge (read at scrape time from
    the daemon serving it, so the daemon is running)."""
    with session_scope(db, write=False) as s:
        rows = s.exec(select(Campaign).where(col(Campaign.state) != CampaignState.DELETED)).all()
        return [(c.id or 0, c.name, effective(c.state, c.pause_reason, stored_verdict(c), daemon_running=True)
                 .reason.value) for c in rows]  # fmt: skip


@dataclass
class TeamFigures:
    """One campaign's agents by state (every state, 0 included, when it has agents) and its scheduled callbacks
    (``due``: their time has come, whether or not they can be placed this moment)."""

    agents: dict[str, int] = field(default_factory=dict)
    callbacks_scheduled: int = 0
    callbacks_due: int = 0


def team_figures(db: DbEngine, now: datetime | None = None) -> dict[int, TeamFigures]:
    """Campaign id -> its agents by state and callbacks, for every campaign that has either."""
    now = now or utcnow()
    out: dict[int, TeamFigures] = {}
    with session_scope(db, write=False) as s:
        for cid, state, n in s.execute(
            sa.select(col(AgentCampaign.campaign_id), col(Agent.state), sa.func.count())
            .join(Agent, col(Agent.id) == col(AgentCampaign.agent_id))
            .where(col(Agent.removed_at).is_(None))
            .group_by(col(AgentCampaign.campaign_id), col(Agent.state))
        ).all():  # fmt: skip
            fig = out.setdefault(int(cid), TeamFigures())
            if not fig.agents:
                fig.agents = {a.value: 0 for a in AgentState}
            fig.agents[str(state)] = int(n)
        for cid, scheduled, due in s.execute(
            sa.select(col(Callback.campaign_id), sa.func.count(),
                      sa.func.sum(sa.case((col(Callback.next_try_at) <= now, 1), else_=0)))
            .where(col(Callback.state) == CallbackState.SCHEDULED)
            .group_by(col(Callback.campaign_id))
        ).all():  # fmt: skip
            fig = out.setdefault(int(cid), TeamFigures())
            fig.callbacks_scheduled, fig.callbacks_due = int(scheduled), int(due or 0)
    return out
