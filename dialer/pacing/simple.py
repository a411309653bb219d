"""Fixed-rule baselines: progressive (one line per idle agent) and ratio:K (a fixed dial level)."""

from __future__ import annotations

from dialer.pacing.base import busy_agents, clamp
from dialer.pacing.observation import Observation


class ProgressivePolicy:
    """Keep one ringing call per idle agent: an answered customer always finds a free agent."""

    name = "progressive"

    def decide(self, obs: Observation) -> int:
        if obs.live:
            free = obs.idle - obs.waiting - len(obs.ringing_since)
        else:
            # Without live state every unresolved call may still hold an agent.
            free = obs.agents_logged_in - len(obs.ringing_since)
        return clamp(free, obs)

    def explain_hold(self, obs: Observation) -> str:
        return f"every free agent already has a call coming ({busy_agents(obs)})"


class RatioPolicy:
    """Keep ``round(K * agents)`` lines going (ringing + waiting + talking)."""

    def __init__(self, k: float) -> None:
        if k <= 0:
            raise ValueError("ratio K must be positive")
        self.k = k
        self.name = f"ratio:{k:g}"

    def decide(self, obs: Observation) -> int:
        return clamp(round(self.k * obs.agents_logged_in) - obs.in_progress, obs)

    def explain_hold(self, obs: Observation) -> str:
        level = round(self.k * obs.agents_logged_in)
        return f"{obs.in_progress} calls in progress reach the dial level {self.k:g} x {obs.agents_logged_in} agents = {level}"
