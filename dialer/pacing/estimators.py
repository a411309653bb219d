"""Online estimators the predictive policy learns from finished calls (stdlib only, O(1) per lookup).

Every estimator starts knowing nothing about the world; cautious priors only decide what to do before data arrives.
"""

from __future__ import annotations

import math

from dialer.pacing.observation import FinishedCall

HOUR = 3600.0


class AnswerRate:
    """Answer probability: a recent exponentially-weighted rate blended with the same hour-of-day on past data.

    The per-hour history lets a campaign anticipate a rate that changes through the day (mornings answer more);
    the recent rate tracks today's level. A Beta(1, 1)-style prior keeps early estimates away from 0 and 1 and,
    because typical rates are well below one half, errs high (fewer calls) while data is scarce.
    """

    def __init__(self, half_life_calls: float = 150.0, hour_weight: float = 300.0) -> None:
        self._decay = 0.5 ** (1.0 / half_life_calls)
        self._w = 0.0
        self._ans = 0.0
        self.n = 0
        self.answered = 0
        self._hour_n = [0] * 24
        self._hour_ans = [0] * 24
        self._hour_weight = hour_weight

    def add(self, answered: bool, time_of_day: float) -> None:
        self._w = self._w * self._decay + 1.0
        self._ans = self._ans * self._decay + (1.0 if answered else 0.0)
        self.n += 1
        self.answered += int(answered)
        h = int(time_of_day // HOUR) % 24
        self._hour_n[h] += 1
        self._hour_ans[h] += int(answered)

    def recent(self) -> float:
        return (self._ans + 1.0) / (self._w + 2.0)

    def at(self, time_of_day: float) -> float:
        """The answer probability expected for a call placed at this time of day."""
        recent = self.recent()
        h = int(time_of_day // HOUR) % 24
        n_h = self._hour_n[h]
        if n_h == 0 or self.n < 2 * n_h:
            # Only today's data in this hour: the recent rate already holds it.
            return recent
        w = n_h / (n_h + self._hour_weight)
        return w * (self._hour_ans[h] + 1.0) / (n_h + 2.0) + (1 - w) * recent


class RingTime:
    """Time to answer of answered calls and time to end of the others, in 1-second bins.

    ``q(e, p)`` is the chance that a call still ringing after ``e`` seconds will be answered: it falls with ``e``
    because a call ringing past the usual answer times will almost surely not answer.
    """

    MAX_S = 180

    def __init__(self) -> None:
        self._ans = [0] * (self.MAX_S + 1)
        self._other = [0] * (self.MAX_S + 1)
        self.n_answered = 0
        self.n_other = 0
        self._sum_answered = 0.0
        self._tables: tuple[list[float], list[float]] | None = None
        self._since_rebuild = 0

    def add(self, call: FinishedCall) -> None:
        b = min(max(int(call.ring_s), 0), self.MAX_S)
        if call.answered:
            self._ans[b] += 1
            self.n_answered += 1
            self._sum_answered += call.ring_s
        else:
            self._other[b] += 1
            self.n_other += 1
        self._since_rebuild += 1
        if self._tables is None or self._since_rebuild >= max(20, (self.n_answered + self.n_other) // 20):
            self._tables = None

    def mean_answer_s(self) -> float:
        if self.n_answered == 0:
            return 10.0
        return self._sum_answered / self.n_answered

    def _survivals(self) -> tuple[list[float], list[float]]:
        """Fractions of answered / non-answered calls still ringing after e seconds (bin e: ring_s >= e+1)."""
        if self._tables is None:
            sa = [0.0] * (self.MAX_S + 2)
            so = [0.0] * (self.MAX_S + 2)
            na = max(self.n_answered, 1)
            no = max(self.n_other, 1)
            acc_a = 0
            acc_o = 0
            for e in range(self.MAX_S, -1, -1):
                acc_a += self._ans[e]
                acc_o += self._other[e]
                sa[e] = acc_a / na
                so[e] = acc_o / no
            self._tables = (sa, so)
            self._since_rebuild = 0
        return self._tables

    def q_table(self, p: float) -> list[float]:
        """q(e) for e = 0..MAX_S (index by int(e)): P(will answer | still ringing after e seconds)."""
        sa, so = self._survivals()
        total = self.n_answered + self.n_other
        out = [0.0] * (self.MAX_S + 1)
        for e in range(self.MAX_S + 1):
            # Bin e holds ring times in [e, e+1): take the bin's midpoint as the share still ringing.
            a = p * total * (0.5 * (sa[e] + sa[e + 1]) if e > 0 else 1.0)
            o = (1 - p) * total * (0.5 * (so[e] + so[e + 1]) if e > 0 else 1.0)
            # Half a call of prior mass keeps an unseen tail from counting as certain either way.
            out[e] = (a + 0.5 * p) / (a + o + 0.5)
        return out


class Duration:
    """A duration distribution (talk time, wrap-up) from completed samples, with censoring-aware cold start.

    ``free_table(h)`` gives, for each elapsed second ``a``, the chance that an activity that has lasted ``a`` seconds
    ends within the next ``h`` seconds. With few samples it leans on an exponential whose mean also counts the
    elapsed time of activities still running (the censored maximum-likelihood mean), so a morning of short first
    calls does not make the policy think agents free up sooner than they do.
    """

    MAX_S = 3600
    FULL_TRUST = 300

    def __init__(self, prior_mean: float = 120.0) -> None:
        self._hist = [0] * (self.MAX_S + 1)
        self.n = 0
        self._sum = 0.0
        self._prior_mean = prior_mean
        self._table: list[float] | None = None
        self._table_h = -1.0
        self._table_n = -1
        self._censored_mean = prior_mean

    def add(self, seconds: float) -> None:
        self._hist[min(max(int(seconds), 0), self.MAX_S)] += 1
        self.n += 1
        self._sum += seconds

    def mean(self) -> float:
        return self._sum / self.n if self.n else self._prior_mean

    def set_running(self, elapsed_total: float) -> None:
        """Total elapsed time of the activities still running (censored samples), for the cold-start mean."""
        if self.n < self.FULL_TRUST:
            self._censored_mean = (
                (self._sum + elapsed_total) / self.n if self.n else max(self._prior_mean, elapsed_total)
            )

    def free_table(self, h: float) -> list[float]:
        stale = self._table is None or abs(h - self._table_h) > 0.5
        grown = self.n != self._table_n and (
            self.n < self.FULL_TRUST or self.n - self._table_n >= max(50, self.n // 20)
        )
        if stale or grown:
            self._table = self._build(h)
            self._table_h = h
            self._table_n = self.n
        assert self._table is not None
        return self._table

    def survival(self) -> list[float]:
        """share of samples lasting at least ``x`` seconds, for x = 0..MAX_S (exponential before any data)."""
        size = self.MAX_S + 1
        if self.n == 0:
            mean = max(self._censored_mean, 1.0)
            return [math.exp(-x / mean) for x in range(size)]
        out = [0.0] * size
        acc = 0
        for a in range(size - 1, -1, -1):
            acc += self._hist[a]
            out[a] = acc / self.n
        return out

    def _build(self, h: float) -> list[float]:
        size = self.MAX_S + 1
        mean = self._censored_mean if self.n < self.FULL_TRUST else self.mean()
        expo = 1.0 - math.exp(-h / max(mean, 1.0))
        if self.n == 0:
            return [expo] * size
        # Survival S[a] = share of samples lasting at least a seconds.
        surv = [0.0] * (size + 1)
        acc = 0
        for a in range(size - 1, -1, -1):
            acc += self._hist[a]
            surv[a] = acc
        w = min(1.0, self.n / self.FULL_TRUST)
        hi = math.floor(h)
        frac = h - hi
        out = [expo] * size
        for a in range(size):
            s_a = surv[a]
            if s_a < 20:
                # Too few samples this long to say anything about the tail: use the exponential fallback.
                break
            j = min(a + hi, size)
            k = min(a + hi + 1, size)
            s_h = surv[j] * (1 - frac) + surv[k] * frac
            emp = 1.0 - s_h / s_a
            out[a] = w * emp + (1 - w) * expo
        return out


class Lag:
    """How long after a call ends its record reaches the daemon (statistics lag); a high quantile, learned."""

    def __init__(self) -> None:
        self._samples: list[float] = []
        self.value = 60.0

    def add(self, delay: float) -> None:
        self._samples.append(max(delay, 0.0))
        if len(self._samples) > 500:
            self._samples = self._samples[-500:]
        if len(self._samples) % 10 == 1 or len(self._samples) < 20:
            s = sorted(self._samples)
            self.value = s[min(len(s) - 1, int(0.9 * len(s)))]
