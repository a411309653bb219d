"""Our predictive policy: place calls while an extra call's chance of finding no agent stays under a threshold.

Every second it forecasts the agents free over the next answer horizon ``h`` (mean time to answer + connect grace):
``X = idle - waiting + sum(agents talking or in wrap-up that finish within h, from the learned duration hazard
given how long each has lasted) - sum(ringing calls that will still answer, q(e) given how long each has rung)``.
Each term is a Bernoulli, so ``X`` has a mean and a variance; the k-th new call adds another Bernoulli(p). The
policy places the k-th call while ``P(X - new calls before it <= 0)`` (normal approximation) stays under the abandon
controller's threshold. Counting the variance, not just the mean, is what lets it dial harder when the forecast is
sure (many agents, calls nearly done) and hold back when it is not (few agents, fresh calls).

Everything (answer rate per hour of day, ring-time and talk/wrap-up distributions, statistics lag) is learned
online from finished calls. Until a few answered calls and completed talks are in, it dials progressively, which
cannot abandon. It never asks for more calls than the API budget allows.

Without live data (no webhooks) it sees only its own unresolved calls and finished calls after the statistics lag;
it then estimates, for a call placed ``e`` seconds ago and not yet reported, the chance that it holds an agent
(or will need one) at ``e + h``, from the same learned distributions.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from dialer.pacing.abandon import AbandonController
from dialer.pacing.base import busy_agents, clamp
from dialer.pacing.estimators import AnswerRate, Duration, Lag, RingTime
from dialer.pacing.observation import FinishedCall, Observation

_NORMAL = NormalDist()


class PredictivePolicy:
    name = "predictive"

    def __init__(
        self,
        abandon_target: float = 0.03,
        grace_s: float = 2.0,
        day_hours: float = 8.0,
        margin_z: float = 1.0,
        gain: float = 0.15,
        initial_threshold: float = 0.05,
        warmup_answered: int = 10,
        warmup_talks: int = 3,
    ) -> None:
        self.grace_s = grace_s
        self.day_s = day_hours * 3600.0
        self.warmup_answered = warmup_answered
        self.warmup_talks = warmup_talks
        self.answer = AnswerRate()
        self.ring = RingTime()
        self.talk = Duration()
        self.wrap = Duration(prior_mean=0.0)
        self.lag = Lag()
        self.controller = AbandonController(
            cap=abandon_target, margin_z=margin_z, gain=gain, initial_threshold=initial_threshold
        )
        self._q: list[float] = []
        self._q_p = -1.0
        self._q_n = -1
        self._z_lam = -1.0
        self._z = 0.0
        self._blind: tuple[list[float], list[float], list[float]] | None = None
        self._blind_key: tuple[float, float, int] = (0.0, 0.0, 0)
        self.last_threshold = 0.0
        self._next_aim = -math.inf

    # -- learning ------------------------------------------------------------------------------------------
    def _learn(self, obs: Observation) -> None:
        for call in obs.finished:
            self._learn_call(call, obs)
        for w in obs.wrapups_finished:
            self.wrap.add(w)

    def _learn_call(self, call: FinishedCall, obs: Observation) -> None:
        self.answer.add(call.answered, _tod(obs, call.placed_at))
        self.ring.add(call)
        if call.connected:
            self.talk.add(call.talk_s)
        if call.answered:
            self.controller.observe(call.abandoned)
        if not obs.live:
            self.lag.add(obs.now - call.ended_at)

    def _warm(self) -> bool:
        return self.ring.n_answered >= self.warmup_answered and self.talk.n >= self.warmup_talks

    def _z_for(self, lam: float) -> float:
        if abs(lam - self._z_lam) > 1e-4 * self._z_lam:
            self._z_lam = lam
            self._z = _NORMAL.inv_cdf(1.0 - min(max(lam, 1e-9), 0.5))
        return self._z

    def _q_table(self, p: float) -> list[float]:
        n = self.ring.n_answered + self.ring.n_other
        if abs(p - self._q_p) > 0.002 or n - self._q_n > max(50, n // 20):
            self._q = self.ring.q_table(p)
            self._q_p = p
            self._q_n = n
        return self._q

    # -- deciding ------------------------------------------------------------------------------------------
    def decide(self, obs: Observation) -> int:
        self._learn(obs)
        if obs.agents_logged_in <= 0 or obs.budget <= 0:
            return 0
        if not self._warm():
            return _progressive(obs)
        p = min(max(self.answer.at(obs.time_of_day), 0.005), 0.99)
        h = self.ring.mean_answer_s() + self.grace_s
        wrap_mean = self.wrap.mean() if self.wrap.n else 0.0
        if obs.now >= self._next_aim:
            self._next_aim = obs.now + 60.0
            # A day's answers: agents x shift / (talk + wrap-up), at ~90% occupancy.
            self.controller.set_daily_answers(
                obs.agents_logged_in * self.day_s / (self.talk.mean() + wrap_mean + 1.0) * 0.9
            )
        lam = self.controller.threshold(
            obs.answered_window, obs.abandoned_window, obs.answered_today, obs.abandoned_today
        )
        self.last_threshold = lam
        if obs.live:
            mu, var = self._forecast_live(obs, p, h)
        else:
            mu, var = self._forecast_blind(obs, p, h)
        z = self._z_for(lam)
        n = 0
        limit = obs.budget
        pq = p * (1 - p)
        while n < limit:
            m = mu - n * p - 0.5
            if m < 0 or m * m < z * z * (var + n * pq):
                break
            n += 1
        return clamp(n, obs)

    def explain_hold(self, obs: Observation) -> str:
        if not self._warm():
            return (f"learning ({self.ring.n_answered}/{self.warmup_answered} answers, {self.talk.n}/"
                    f"{self.warmup_talks} talks; dialling progressively): {busy_agents(obs)}")
        return (f"an extra call would find no free agent with a chance above the abandon threshold "
                f"{self.last_threshold:.2%} ({busy_agents(obs)})")

    def _forecast_live(self, obs: Observation, p: float, h: float) -> tuple[float, float]:
        now = obs.now
        mu = float(obs.idle - obs.waiting)
        var = 0.0
        if obs.talking_since:
            tab = self.talk.free_table(h)
            top = len(tab) - 1
            elapsed = 0.0
            for s in obs.talking_since:
                a = now - s
                elapsed += a
                f = tab[min(int(a), top)]
                mu += f
                var += f * (1 - f)
            self.talk.set_running(elapsed)
        if obs.wrapup_since and self.wrap.n:
            tab = self.wrap.free_table(h)
            top = len(tab) - 1
            for s in obs.wrapup_since:
                f = tab[min(int(now - s), top)]
                mu += f
                var += f * (1 - f)
        if obs.ringing_since:
            q = self._q_table(p)
            top = len(q) - 1
            for s in obs.ringing_since:
                e = now - s
                qq = q[min(int(e), top)] if e >= 0 else p
                mu -= qq
                var += qq * (1 - qq)
        return mu, var

    def _forecast_blind(self, obs: Observation, p: float, h: float) -> tuple[float, float]:
        a_tab, b_tab, c_tab = self._blind_tables(h)
        top = len(a_tab) - 1
        now = obs.now
        mu = float(obs.agents_logged_in)
        var = 0.0
        for s in obs.ringing_since:
            i = min(max(int(now - s), 0), top)
            u = p * b_tab[i] + (1 - p) * c_tab[i]
            pi = min(1.0, p * a_tab[i] / u) if u > 1e-12 else 0.0
            mu -= pi
            var += pi * (1 - pi)
        return mu, var

    def _blind_tables(self, h: float) -> tuple[list[float], list[float], list[float]]:
        """For a call placed e seconds ago (index e): A = P(answers after e, or answered and still talking at
        e + h | answers); B = P(its record is not in yet at e | answers); C = the same for an unanswered call."""
        lag = self.lag.value
        key = (round(h), round(lag), self.talk.n // max(100, self.talk.n // 10))
        if self._blind is not None and key == self._blind_key:
            return self._blind
        ring = self.ring
        n_ans = max(ring.n_answered, 1)
        taus = [(t, c / n_ans) for t, c in enumerate(ring._ans) if c]
        talk_surv = self.talk.survival()
        top_l = len(talk_surv) - 1
        sa, so = ring._survivals()
        emax = 1800
        lag_i = round(lag)
        hi = round(h)
        a_tab = [0.0] * (emax + 1)
        b_tab = [0.0] * (emax + 1)
        c_tab = [0.0] * (emax + 1)
        for e in range(emax + 1):
            later = sa[min(e + 1, len(sa) - 1)]
            still = 0.0
            unres = 0.0
            x = e - lag_i
            for t, f in taus:
                if t <= e:
                    k = e + hi - t
                    still += f * (talk_surv[k] if k <= top_l else 0.0)
                k2 = x - t
                unres += f * (1.0 if k2 < 0 else (talk_surv[k2] if k2 <= top_l else 0.0))
            a_tab[e] = later + still
            b_tab[e] = unres
            c_tab[e] = 1.0 if x < 0 else so[min(x, len(so) - 1)]
        self._blind = (a_tab, b_tab, c_tab)
        self._blind_key = key
        return self._blind


def _progressive(obs: Observation) -> int:
    if obs.live:
        return clamp(obs.idle - obs.waiting - len(obs.ringing_since), obs)
    return clamp(obs.agents_logged_in - len(obs.ringing_since), obs)


def _tod(obs: Observation, t: float) -> float:
    return (obs.time_of_day - (obs.now - t)) % 86400.0
