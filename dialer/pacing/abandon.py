"""The abandon controller: keeps the campaign's realised abandon rate under the legal cap, with margin.

It steers one number, ``threshold``: the largest chance that an extra call, if answered, finds no agent, that the
predictive policy will accept. A stochastic-approximation update on every answered call (up a little when the call
reached an agent, down a lot when it was abandoned) is an integral controller on the campaign's cumulative abandon
slack, so the realised rate converges to the aim and a day's abandon count cannot drift far from it. On top, the
campaign's counts over the legal window and since midnight pull the threshold down at once when either is over
the aim.

The aim sits below the cap by a margin that shrinks with the number of answers a day brings: a 3% cap with ~1,300
answers a day needs an aim near 2.3% for fewer than 5% of days to end over the cap.
"""

from __future__ import annotations

import math


class AbandonController:
    def __init__(
        self,
        cap: float = 0.03,
        margin_z: float = 1.0,
        gain: float = 0.15,
        initial_threshold: float = 0.05,
        min_threshold: float = 1e-4,
        max_threshold: float = 0.45,
        guard_gain: float = 0.35,
    ) -> None:
        if not 0 < cap < 1:
            raise ValueError("abandon cap must be between 0 and 1")
        self.cap = cap
        self.margin_z = margin_z
        self.gain = gain
        self.guard_gain = guard_gain
        self._log_t = math.log(initial_threshold)
        self._log_min = math.log(min_threshold)
        self._log_max = math.log(max_threshold)
        self.aim = cap
        self.set_daily_answers(1000.0)

    def set_daily_answers(self, expected: float) -> None:
        """Expected answered calls per day: the larger the daily sample, the closer to the cap the aim may sit."""
        n = max(expected, 50.0)
        margin = self.margin_z * math.sqrt(self.cap * (1 - self.cap) / n)
        self.aim = max(self.cap * 0.5, self.cap - margin)

    def observe(self, abandoned: bool) -> None:
        """One answered call finished: integral step towards the aim."""
        step = self.gain * (self.aim - (1.0 if abandoned else 0.0))
        self._log_t = min(self._log_max, max(self._log_min, self._log_t + step))

    def threshold(
        self, answered_window: int, abandoned_window: int, answered_today: int, abandoned_today: int
    ) -> float:
        slack = min(
            self.aim * answered_window - abandoned_window,
            self.aim * answered_today - abandoned_today,
        )
        log_t = self._log_t
        if slack < 0:
            log_t += self.guard_gain * slack
        return math.exp(max(self._log_min, log_t))

    @property
    def base_threshold(self) -> float:
        return math.exp(self._log_t)
