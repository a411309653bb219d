"""The one interface every pacing policy implements."""

from __future__ import annotations

from typing import Protocol

from dialer.pacing.observation import Observation


class Policy(Protocol):
    """A stateful pacing policy: fed every observation in time order, returns how many calls to place now."""

    name: str

    def decide(self, obs: Observation) -> int:
        """Calls to place now: never negative, never above ``obs.budget``."""
        ...


def clamp(n: int, obs: Observation) -> int:
    """Keep a decision within [0, budget]."""
    if n <= 0:
        return 0
    return min(n, max(obs.budget, 0))


class ExplainsHold(Protocol):
    """A policy that can say, in a few words, why its last decision was 0 (read-only: the policy's state and the
    observation it decided on; no I/O, nothing changes)."""

    def explain_hold(self, obs: Observation) -> str: ...


def why_held(policy: Policy, obs: Observation) -> str:
    """Why ``policy`` placed no call on ``obs``: the reasons common to every policy first, then its own."""
    if obs.budget <= 0:
        return "the API budget is spent"
    if obs.agents_logged_in <= 0:
        return "no agent logged in"
    explain = getattr(policy, "explain_hold", None)
    if callable(explain):
        return str(explain(obs))
    return f"{policy.name} chose no call ({busy_agents(obs)})"


def busy_agents(obs: Observation) -> str:
    """The agents and calls a hold is about, e.g. ``2 idle agents, 2 calls ringing, 0 waiting``."""
    if obs.live:
        return f"{obs.idle} idle agents, {len(obs.ringing_since)} calls ringing, {obs.waiting} waiting"
    return f"{obs.agents_logged_in} agents, {len(obs.ringing_since)} calls without an outcome yet"
