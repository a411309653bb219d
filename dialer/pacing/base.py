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
