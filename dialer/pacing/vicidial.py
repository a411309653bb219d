"""VICIdial's adaptive dial level (ADAPT_TAPERED and ADAPT_AVERAGE), re-implemented from its description in
docs/pacing.md as the industry baseline."""

from __future__ import annotations

from collections import deque

from dialer.pacing.base import clamp
from dialer.pacing.observation import Observation


class VicidialPolicy:
    """Dial level adapted every 15 s from 15 one-second samples of ready / waiting / total agents.

    ``mode`` is ``"tapered"`` or ``"average"``; ``drop_target`` is VICIdial's adaptive dropped percentage (as a
    fraction), ``intensity`` and ``dl_diff_target`` its aggressiveness knobs, ``latest`` the ADAPT_TAPERED latest
    time in seconds since midnight (VICIdial's default 21:00).
    """

    SAMPLE_S = 1.0
    ADAPT_S = 15.0
    DIAL_S = 2.5

    def __init__(
        self,
        mode: str = "tapered",
        drop_target: float = 0.03,
        intensity: float = 0.0,
        dl_diff_target: float = 0.0,
        max_level: float = 3.0,
        latest: float = 21 * 3600.0,
    ) -> None:
        if mode not in ("tapered", "average"):
            raise ValueError(f"unknown VICIdial mode {mode!r}")
        self.mode = mode
        self.name = "vicidial" if mode == "tapered" else "vicidial-average"
        self.drop_target = drop_target
        self.intensity = intensity
        self.dl_diff_target = dl_diff_target
        self.max_level = max_level
        self.latest = latest
        self.dial_level = 1.0
        self._samples: deque[tuple[int, int, int]] = deque(maxlen=15)
        self._answers: deque[tuple[float, bool]] = deque()
        self._next_sample: float | None = None
        self._next_adapt: float | None = None
        self._next_dial: float | None = None

    def _adapt(self, obs: Observation) -> None:
        if self._samples:
            n = len(self._samples)
            ready = sum(s[0] for s in self._samples) / n
            waiting = sum(s[1] for s in self._samples) / n
            total = sum(s[2] for s in self._samples) / n
            if total > 0:
                m = (ready - waiting + self.dl_diff_target) / total
                k = self.intensity / 100.0
                m = m * abs(k - 1) if m < 0 else m * (1 + k)
                self.dial_level = round(self.dial_level * (1 + m), 3)
        horizon = obs.now - 60.0
        while self._answers and self._answers[0][0] < horizon:
            self._answers.popleft()
        recent = len(self._answers)
        if recent > 20 and sum(1 for _, dropped in self._answers if dropped) > 0.5 * recent:
            self.dial_level /= 2
        if obs.answered_today > 50 and obs.abandoned_today / obs.answered_today > self.drop_target:
            if self.mode == "average":
                self.dial_level /= 2
            else:
                now_hhmm = _hhmm(obs.time_of_day)
                latest_hhmm = _hhmm(self.latest)
                if now_hhmm >= latest_hhmm:
                    self.dial_level = 1.0
                else:
                    self.dial_level *= min(1.0, (latest_hhmm - now_hhmm) / 1000.0)
        self.dial_level = min(max(self.dial_level, 1.0), self.max_level)

    def decide(self, obs: Observation) -> int:
        for call in obs.finished:
            if call.answered:
                self._answers.append((call.ended_at, call.abandoned))
        if self._next_sample is None:
            self._next_sample = obs.now
            self._next_adapt = obs.now + self.ADAPT_S
            self._next_dial = obs.now
        assert self._next_adapt is not None and self._next_dial is not None
        if obs.now >= self._next_sample:
            if obs.live:
                ready, waiting = obs.idle, obs.waiting
            else:
                ready, waiting = max(0, obs.agents_logged_in - len(obs.ringing_since)), 0
            self._samples.append((ready, waiting, obs.agents_logged_in))
            self._next_sample = max(self._next_sample + self.SAMPLE_S, obs.now - self.SAMPLE_S)
        if obs.now >= self._next_adapt:
            self._adapt(obs)
            self._next_adapt = max(self._next_adapt + self.ADAPT_S, obs.now)
        if obs.now >= self._next_dial:
            # Catch up on missed slots after a gap (no ticks while nobody was logged in).
            self._next_dial = max(self._next_dial + self.DIAL_S, obs.now)
            return clamp(round(self.dial_level * obs.available) - obs.in_progress, obs)
        return 0

    def explain_hold(self, obs: Observation) -> str:
        level = round(self.dial_level * obs.available)
        if level - obs.in_progress <= 0:
            return (f"{obs.in_progress} calls in progress reach the dial level {self.dial_level:g} x "
                    f"{obs.available} available agents = {level}")
        return f"waiting for the next dial slot (every {self.DIAL_S:g} s)"


def _hhmm(seconds_of_day: float) -> int:
    minutes = int(seconds_of_day // 60)
    return (minutes // 60) * 100 + minutes % 60
