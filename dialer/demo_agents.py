"""The demo's agents: accounts with a PIN for the simulated agents, who log in, take breaks and save dispositions
through the daemon's /api (the simulator's ``[desk]``), and what the demo shows of them while it runs and at its end.

Kept apart from ``dialer.demo`` (the orchestration) so that module stays about starting and stopping things.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine as DbEngine
from sqlmodel import col

from dialer.db import session_scope
from dialer.models import Attempt, Callback, utcnow
from dialer.outcomes.codes import DEFAULT_DISPOSITIONS
from dialer.outcomes.states import AgentState, CallbackState

DEMO_PIN = "2468"
# How often each default disposition is saved, in their order: sale, not interested, call back, wrong number, do
# not call, no decision-maker.
SHARES = (0.2, 0.35, 0.2, 0.05, 0.05, 0.15)
# The simulated agents at the console: breaks going round the team, a lunch, dispositions with callbacks (some
# "only me") three to twelve world minutes later, so the demo's minute and a half shows them placed.
DEMO_DESK: dict[str, Any] = {
    "login": "agent{extension}",
    "pin": DEMO_PIN,
    "retry_s": 0.1,
    "callback_after": {"dist": "uniform", "low": 180, "high": 720},
    "only_me": 0.4,
    "dispositions": {d.code: p for d, p in zip(DEFAULT_DISPOSITIONS, SHARES, strict=True)},
}
DEMO_BREAKS: list[dict[str, Any]] = [
    *({"start": f"09:{m:02d}", "end": f"09:{m + 5:02d}", "count": 2, "code": "break"} for m in (4, 9, 14, 19)),
    {"start": "09:25", "end": "09:35", "count": 3, "code": "lunch"},
]


def add_demo_agents(db: DbEngine, extensions: list[str], campaign: str) -> int:
    """One account per simulated agent (login ``agent<extension>``, the demo PIN), working ``campaign``."""
    from dialer.agents.accounts import add_agent

    now = utcnow()
    with session_scope(db) as s:
        for i, ext in enumerate(extensions):
            add_agent(s, f"agent{ext}", name=f"Agent {i + 1}", extension=ext, campaigns=[campaign], pin=DEMO_PIN,
                      now=now)  # fmt: skip
    return len(extensions)


def team_text(row: dict[str, Any]) -> str:
    """``12 ready, 5 talking, 3 paused`` from a ``dialer status`` campaign row."""
    agents = row.get("agents") or {}
    shown = [f"{n} {state}" for state, n in agents.items() if n and state != AgentState.LOGGED_OUT]
    return ", ".join(shown) or "nobody logged in yet"


def dispositions_text(db: DbEngine, campaign_id: int) -> str:
    """``31 (sale 6, not_interested 11, ...)``: the dispositions the agents saved so far."""
    with session_scope(db, write=False) as s:
        rows = s.execute(
            sa.select(col(Attempt.agent_disposition), sa.func.count())
            .where(col(Attempt.campaign_id) == campaign_id, col(Attempt.agent_disposition).is_not(None))
            .group_by(col(Attempt.agent_disposition)).order_by(sa.func.count().desc())
        ).all()  # fmt: skip
    total = sum(int(n) for _, n in rows)
    return f"{total}" + (f" ({', '.join(f'{code} {n}' for code, n in rows)})" if rows else "")


def callbacks_text(db: DbEngine, campaign_id: int) -> str:
    """``9 scheduled by agents: 4 placed, 5 waiting (2 only me)``."""
    with session_scope(db, write=False) as s:
        rows = s.execute(
            sa.select(col(Callback.state), sa.func.count(),
                      sa.func.sum(sa.case((col(Callback.agent_id).is_not(None), 1), else_=0)))
            .where(col(Callback.campaign_id) == campaign_id).group_by(col(Callback.state))
        ).all()  # fmt: skip
    by = {str(state): (int(n), int(mine or 0)) for state, n, mine in rows}
    total = sum(n for n, _ in by.values())
    placed = by.get(CallbackState.PLACED, (0, 0))[0]
    waiting, mine = by.get(CallbackState.SCHEDULED, (0, 0))
    return f"{total} scheduled by agents: {placed} placed, {waiting} waiting ({mine} only me)"
