"""What `dialer status` shows: the daemon's heartbeat plus live counts from the database."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine as DbEngine
from sqlmodel import col, select

from dialer.db import session_scope
from dialer.kv import get_value
from dialer.models import Attempt, Campaign, Contact, EventLog, utcnow
from dialer.outcomes.states import DUE_CONTACT_STATES, LIVE_ATTEMPT_STATES


class DaemonState(StrEnum):
    """What ``dialer status`` says of the daemon (its heartbeat), not of a campaign."""

    RUNNING = "running"
    STOPPED = "stopped"
    NOT_RESPONDING = "not responding"
    NEVER_RAN = "never ran"

STATUS_KEY = "daemon:status"


def daemon_status(db: DbEngine) -> dict[str, Any]:
    now = utcnow()
    with session_scope(db, write=False) as s:
        hb = get_value(s, STATUS_KEY) or {}
        campaigns = s.exec(select(Campaign).order_by(col(Campaign.id))).all()
        due = dict(s.execute(
            sa.select(col(Contact.campaign_id), sa.func.count()).where(col(Contact.state).in_(DUE_CONTACT_STATES))
            .group_by(col(Contact.campaign_id))
        ).all())
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
    per: dict[int | None, tuple[Any, ...]] = {row[0]: tuple(row[1:]) for row in attempt_rows}
    live_state = hb.get("live_state") or {}
    out_campaigns = []
    for c in campaigns:
        total, live, answered, abandoned = per.get(c.id, (0, 0, 0, 0))
        per_campaign = live_state.get("campaigns", {}) if isinstance(live_state, dict) else {}
        view = per_campaign.get(str(c.id), {}) if isinstance(per_campaign, dict) else {}
        out_campaigns.append({
            "name": c.name,
            "state": c.state,
            "pause_reason": c.pause_reason,
            "due": int(due.get(c.id, 0)),
            "ringing": int(view.get("ringing", live or 0)),
            "waiting": view.get("waiting"),
            "talking": len(view["talking"]) if isinstance(view.get("talking"), list) else None,
            "agents_idle": view.get("idle"),
            "calls_placed": int(total or 0),
            "answered": int(answered or 0),
            "abandoned": int(abandoned or 0),
        })
    daemon: dict[str, Any] = dict(hb)
    if hb.get("updated_at"):
        age = (now - datetime.fromisoformat(hb["updated_at"])).total_seconds()
        daemon["age_s"] = age
        if hb.get("state") == DaemonState.RUNNING and age > 30:
            daemon["state"] = DaemonState.NOT_RESPONDING
    else:
        daemon["state"] = DaemonState.NEVER_RAN
    return {
        "daemon": daemon,
        "campaigns": out_campaigns,
        "errors": [f"{e.at.isoformat(timespec='seconds')} {e.kind}: {e.message}" for e in reversed(errors)]
        + list(hb.get("errors") or []),
    }
