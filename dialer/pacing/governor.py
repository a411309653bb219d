"""The abandon governor: the one place the campaign's abandon cap is enforced, outside and around every policy.

A policy decides how many calls it wants; the governor lets through what progressive dialling would place (one
ringing call per free agent: an answered customer finds an agent) and, beyond that, only as many over-dialled calls
as the campaign's abandon slack can pay for. The slack is the abandons the cap still allows over the legal window,
``target x answered - abandoned``, counted from the database and brought up to date with the calls finished since
(the database counts are re-read every half minute). An over-dialled call is charged, while it rings, the chance
that it is answered (each answered one may find no agent: the worst case); calls already ringing beyond the free
agents are charged first, with a reserve for bad luck (two standard deviations and one abandon). So a policy that would breach the cap is throttled to progressive until the rate is back
under the target, whatever the policy (``ratio:K``, ``vicidial``, ``predictive`` or a future one).

Pure like every policy: no I/O, no clock reads. ``make_policy`` wraps every policy in it, so the daemon and the
discrete-event benchmark run the same governor.
"""

from __future__ import annotations

import math

from dialer.pacing.base import Policy, clamp
from dialer.pacing.observation import Observation
from dialer.pacing.simple import ProgressivePolicy

# Until enough calls are seen, an over-dialled call is assumed answered this often (a high, safe guess).
_PRIOR_ANSWER = 0.6
_PRIOR_WEIGHT = 20.0
_Z = 2.0


class AbandonGovernor:
    """``inner``'s decisions, capped so the campaign's abandon rate stays at most ``target`` over its window."""

    def __init__(self, inner: Policy, target: float = 0.03) -> None:
        if not 0 < target < 1:
            raise ValueError("abandon target must be between 0 and 1")
        self.inner = inner
        self.target = target
        self._progressive = ProgressivePolicy()
        self._placed_seen = 0.0
        self._answered_seen = 0.0
        # Calls finished since the database counts last changed (they are re-read only every so often).
        self._counts: tuple[int, int] = (-1, -1)
        self._answered_since = 0
        self._abandoned_since = 0
        self.throttled = False  # the last decision was cut by the governor

    @property
    def name(self) -> str:
        return self.inner.name

    @name.setter
    def name(self, value: str) -> None:
        self.inner.name = value

    def answer_rate(self) -> float:
        """Answered / placed over the calls seen so far, pulled towards a safe prior while they are few."""
        return (self._answered_seen + _PRIOR_ANSWER * _PRIOR_WEIGHT) / (self._placed_seen + _PRIOR_WEIGHT)

    def slack(self, obs: Observation) -> float:
        """Abandons the cap still allows over the legal window, counting the calls finished since the counts."""
        answered = obs.answered_window + self._answered_since
        abandoned = obs.abandoned_window + self._abandoned_since
        return self.target * answered - abandoned

    def _learn(self, obs: Observation) -> None:
        counts = (obs.answered_window, obs.abandoned_window)
        if counts != self._counts:
            self._counts, self._answered_since, self._abandoned_since = counts, 0, 0
        for call in obs.finished:
            self._placed_seen += 1
            if call.answered:
                self._answered_seen += 1
                self._answered_since += 1
                self._abandoned_since += int(call.abandoned)

    def decide(self, obs: Observation) -> int:
        self._learn(obs)
        wanted = self.inner.decide(obs)  # the policy sees every observation, throttled or not
        safe = self._progressive.decide(obs)
        if wanted <= safe:
            self.throttled = False
            return wanted
        p = self.answer_rate()
        free = obs.idle - obs.waiting if obs.live else obs.agents_logged_in
        over_ringing = max(0, len(obs.ringing_since) - max(free, 0))
        # What the calls already over-dialled may still cost: their mean, plus a reserve for bad luck (two
        # standard deviations and one abandon), so the cap holds with high probability, not just on average.
        risk = over_ringing * p + _Z * math.sqrt(over_ringing * p * (1 - p)) + 1.0
        spare = self.slack(obs) - risk
        extra = max(0, math.floor(spare / p)) if spare > 0 else 0
        allowed = clamp(safe + extra, obs)
        self.throttled = wanted > allowed
        return min(wanted, allowed)

    def explain_hold(self, obs: Observation) -> str:
        if self.throttled:
            return (
                f"abandon governor: the {self.target:.0%} cap leaves no room for over-dialling now "
                "(dialling progressively until the rate is back under it)"
            )
        explain = getattr(self.inner, "explain_hold", None)
        return str(explain(obs)) if callable(explain) else f"{self.inner.name} chose no call"
