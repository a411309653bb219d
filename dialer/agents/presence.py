"""What the daemon reads of a campaign's agents: who is ready, paused, in a call or logged out, right now.

A campaign with agents (``agent_campaign`` rows) paces for its team's presence; one without keeps its configured
agent count (``team_presence`` returns None). Invariant: reading never writes; a wrap-up whose limit has passed
reads as ``ready`` from its limit on, and ``expire_wrapups`` writes those ends (the engine calls it when a read
found one), stamped at the limit.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from dialer.models import Agent, AgentCampaign
from dialer.outcomes.agent_states import expire_wrapup, is_ready
from dialer.outcomes.states import WORKING_AGENT_STATES, AgentState


@dataclass(frozen=True)
class AgentPresence:
    id: int
    login: str
    extension: str
    state: AgentState
    since: datetime
    wrapup_until: datetime | None = None
    expired: bool = False  # a wrap-up past its limit, read as ready


@dataclass(frozen=True)
class TeamPresence:
    """A campaign's agents at one instant."""

    agents: tuple[AgentPresence, ...]

    def count(self, *states: AgentState) -> int:
        return sum(1 for a in self.agents if a.state in states)

    @property
    def working(self) -> int:
        """Logged in and not paused, plus those in calls: the team pacing dials for."""
        return self.count(*WORKING_AGENT_STATES)

    @property
    def ready(self) -> int:
        return self.count(AgentState.READY)

    @property
    def paused(self) -> int:
        return self.count(AgentState.PAUSED)

    @property
    def logged_out(self) -> int:
        return self.count(AgentState.LOGGED_OUT)

    @property
    def ready_ids(self) -> frozenset[int]:
        return frozenset(a.id for a in self.agents if a.state == AgentState.READY)

    @property
    def expired(self) -> bool:
        return any(a.expired for a in self.agents)

    def by_extension(self) -> dict[str, AgentPresence]:
        return {a.extension: a for a in self.agents}

    def describe(self) -> str:
        """``2 paused, 1 logged out`` for "why not dialling"."""
        parts = [f"{n} {what}" for n, what in ((self.paused, AgentState.PAUSED), (self.logged_out, "logged out"),
                                               (self.working - self.ready, "busy")) if n]  # fmt: skip
        return ", ".join(parts)


def team_presence(session: Session, campaign_id: int, now: datetime) -> TeamPresence | None:
    """The campaign's agents (None: it has none)."""
    rows = session.exec(
        select(Agent)
        .join(AgentCampaign, col(AgentCampaign.agent_id) == col(Agent.id))
        .where(col(AgentCampaign.campaign_id) == campaign_id, col(Agent.removed_at).is_(None))
        .order_by(col(Agent.id))
    ).all()
    if not rows:
        return None
    out = []
    for a in rows:
        state, since, expired = AgentState(a.state), a.state_since, False
        if state == AgentState.WRAPUP and is_ready(a.state, a.wrapup_until, now) and a.wrapup_until is not None:
            state, since, expired = AgentState.READY, a.wrapup_until, True
        out.append(AgentPresence(a.id or 0, a.login, a.extension, state, since, a.wrapup_until, expired))
    return TeamPresence(tuple(out))


def expire_wrapups(session: Session, agent_ids: Collection[int], now: datetime) -> int:
    """Write the end of every wrap-up among ``agent_ids`` whose limit has passed."""
    agents = session.exec(select(Agent).where(col(Agent.id).in_(list(agent_ids)))).all()
    return sum(1 for a in agents if expire_wrapup(session, a, now))


def campaigns_with_agents(session: Session, campaign_ids: Collection[int]) -> set[int]:
    q = (
        sa.select(col(AgentCampaign.campaign_id))
        .join(Agent, col(Agent.id) == col(AgentCampaign.agent_id))
        .where(col(AgentCampaign.campaign_id).in_(list(campaign_ids)), col(Agent.removed_at).is_(None))
        .distinct()
    )
    return {int(i) for i in session.execute(q).scalars()}
