"""The data of the live state: call and agent states, the records ``LiveState`` keeps and the views it hands out.

``LiveView`` and ``EndResult`` are frozen snapshots, safe to keep and read on any thread. ``LiveCall``,
``AgentRecord`` and ``CampaignRecord`` are the mutable records inside ``dialer.dialing.live.LiveState``: they are
changed only by it, under its lock (a ``LiveCall`` handed out by ``LiveState.call`` is for reading).

``CampaignLike`` names what the live state reads of a campaign without importing the models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from dialer.pacing.observation import FinishedCall


class CampaignLike(Protocol):
    """What ``observation`` reads of a campaign (``dialer.models.Campaign`` fits)."""

    id: int | None
    agents: int
    agent_extensions: list[str]


# Call states, in the order a call goes through them (see dialer.dialing.live).
RINGING, WAITING, ROUTED, TALKING, ENDED, ANSWERED_UNKNOWN = (
    "ringing",
    "waiting",
    "routed",
    "talking",
    "ended",
    "answered_unknown",
)
# Agent states.
IDLE, RESERVED, AGENT_TALKING, WRAPUP, OFFLINE = "idle", "reserved", "talking", "wrapup", "offline"
# Finished calls (and wrap-up durations) kept for a reader that does not drain them.
MAX_UNDRAINED = 10_000


@dataclass(frozen=True, slots=True)
class LiveView:
    """One campaign at ``now``: the live fields of ``dialer.pacing.observation.Observation`` plus detail.

    ``idle_agents`` is (extension, idle since), longest idle first; with a count-only campaign whose extensions are
    not learned yet ``idle`` may exceed ``len(idle_agents)``. ``talking`` is (extension, since) for the agents counted
    in ``talking_since`` (unknown extensions show as ``""``).
    """

    campaign_id: int
    now: float
    agents_logged_in: int
    idle: int
    talking_since: tuple[float, ...]
    wrapup_since: tuple[float, ...]
    ringing_since: tuple[float, ...]
    waiting: int
    idle_agents: tuple[tuple[str, float], ...] = ()
    talking: tuple[tuple[str, float], ...] = ()
    last_event_at: float | None = None


@dataclass(slots=True)
class LiveCall:
    attempt_id: int
    campaign_id: int
    phone: str
    placed_at: float
    state: str = RINGING
    answered_at: float | None = None
    agent: str | None = None
    connected_at: float | None = None
    ended_at: float | None = None
    finished: bool = False  # a FinishedCall was emitted (exactly one per call)
    pbx_ids: set[str] = field(default_factory=set)


@dataclass(slots=True)
class AgentRecord:
    """One PBX extension, shared by every campaign that names it."""

    extension: str
    state: str = IDLE
    since: float = 0.0
    idle_since: float = 0.0
    wrapup_until: float | None = None
    wrapup_campaign: int | None = None
    pbx_call_id: str | None = None
    attempt_id: int | None = None
    # Reserved ahead of the call, for an "only me" callback (``LiveState.hold_agent``), not by a routed customer.
    held: bool = False


@dataclass(slots=True)
class CampaignRecord:
    """A campaign's agents (named extensions, or a count and the extensions learned from its calls) and what
    finished since its reader last drained it."""

    campaign_id: int
    extensions: list[str] = field(default_factory=list)
    count: int = 0
    learned: list[str] = field(default_factory=list)
    wrapup_s: float = 0.0
    configured: bool = False
    finished: list[FinishedCall] = field(default_factory=list)
    wrapups_done: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EndResult:
    """What ``call_ended`` learned: whether an agent had answered, who, and the FinishedCall if one was emitted."""

    agent_answered: bool
    agent: str | None
    answered_at: float | None
    connected_at: float | None
    placed_at: float | None
    finished: FinishedCall | None
