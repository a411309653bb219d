"""The discrete-event pacing simulator: a pacing policy driving the call model in simulated time.

The same :class:`~dialer.sim.model.CallModel` the HTTP simulator serves, the same policy objects the daemon runs
(``dialer.pacing.make_policy``), no HTTP and no wall clock. Each simulated day is one shift on a fresh model whose
seed is derived from ``(seed, day)``, so every policy meets the same customers with the same outcomes (common random
numbers: the k-th call placed on a day has the same fate whichever policy placed it). One policy object lives
through all the days of a run, like a daemon running a campaign for days; the campaign's legal abandon window
(30 days) therefore covers the whole run, and "today" resets each day.

The policy is asked every simulated second and whenever a customer answers, an agent becomes free, or an agent's
presence changes. The team it paces for is the daemon's: the agents logged in and not on a break, plus those finishing
a call before leaving, as their own login, pause, return and logout events report it (the daemon's presence feed),
never the schedule's count. What else it sees depends on the scenario's webhooks: with any webhooks it sees the PBX's live agent and call state; with
``profile = "none"`` it sees only its own unresolved calls and the finished calls' statistics rows, which appear
``lag_s`` after the call ends and are fetched by a poll every 20 s (3 statistics requests a minute).

The API budget: fixed rate-limit windows of ``window_s`` seconds; callbacks may use ``general_per_window`` minus a
reserve (default: the statistics allowance) kept for statistics, balance and other requests. A decision above the
budget is clipped, and each call it asked for beyond the budget is counted as a would-be HTTP 429.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dialer.pacing import FinishedCall, Observation, Policy, make_policy
from dialer.sim.model import CallModel, SimCall
from dialer.sim.scenario import DAY_S, Scenario, ScenarioError, read_scenario_toml

STATS_POLL_S = 20.0
DRAIN_S = 120.0
# Events that wake the policy at once: as the daemon ticks a campaign when an agent's presence changes.
_TRIGGERS = frozenset(("answered", "wrapup_end"))
# The agents' presence feed: what each model event makes of the agent, for the team the policy paces for.
_PRESENCE = {"agent_login": True, "agent_ready": True, "agent_pause": False, "agent_logout": False}


@dataclass
class BenchScenario:
    """A scenario file for the benchmark: the call-model world plus an optional ``[bench]`` table.

    ``[bench]`` keys: ``policies`` (list of pacing specs, the default set to compare), ``days`` (simulated days per
    seed), ``budget_reserve`` (requests per window kept back from callbacks), ``description``.
    """

    name: str
    scenario: Scenario
    policies: list[str] = field(default_factory=list)
    days: int = 3
    budget_reserve: int | None = None
    description: str = ""

    @property
    def live(self) -> bool:
        return self.scenario.webhook_profile != "none"

    @property
    def reserve(self) -> int:
        return self.scenario.statistics_per_window if self.budget_reserve is None else self.budget_reserve

    @property
    def callbacks_per_window(self) -> int:
        return max(self.scenario.general_per_window - self.reserve, 0)


def load_bench_scenario(path: str | Path) -> BenchScenario:
    p = Path(path)
    data = read_scenario_toml(p)
    bench = data.pop("bench", {})
    if not isinstance(bench, dict):
        raise ScenarioError("[bench] must be a table")
    unknown = set(bench) - {"policies", "days", "budget_reserve", "description"}
    if unknown:
        raise ScenarioError(f"[bench]: unknown key(s) {', '.join(sorted(unknown))}")
    data.setdefault("name", p.stem)
    scenario = Scenario.from_dict(data, source=str(p))
    return BenchScenario(
        name=str(data["name"]),
        scenario=scenario,
        policies=[str(x) for x in bench.get("policies", [])],
        days=int(bench.get("days", 3)),
        budget_reserve=None if "budget_reserve" not in bench else int(bench["budget_reserve"]),
        description=str(bench.get("description", "")),
    )


@dataclass
class DayResult:
    """One simulated shift's metrics (definitions of docs/simulator.md)."""

    day: int
    logged_in_s: float
    talk_s: float
    wrapup_s: float
    answered: int
    abandoned: int
    connected: int
    placed: int
    rejected_429: int
    budget_allowed: int
    u_star: float

    @property
    def occupancy(self) -> float:
        return self.talk_s / self.logged_in_s if self.logged_in_s else 0.0

    @property
    def abandon_rate(self) -> float:
        return self.abandoned / self.answered if self.answered else 0.0

    @property
    def budget_use(self) -> float:
        return self.placed / self.budget_allowed if self.budget_allowed else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(occupancy=self.occupancy, abandon_rate=self.abandon_rate, budget_use=self.budget_use)
        return d


Recorder = Callable[[Observation, int], None]


def upper_bound(bench: BenchScenario, model: CallModel, t0: float, t1: float, step: float = 60.0) -> float:
    """U* over a shift: min(T/(T+W), (R/60)*p*T/N), integrated over the shift's agents and answer rate."""
    sc = bench.scenario
    talk = sc.talk_time.expected()
    wrap = sc.wrapup.expected()
    per_s = bench.callbacks_per_window / sc.window_s
    num = 0.0
    den = 0.0
    t = t0
    while t < t1:
        dt = min(step, t1 - t)
        mid = t + dt / 2
        n = model.logged_in_agents(mid)
        if n > 0:
            # Agents on a break are logged in (the denominator) but take no calls.
            cap_agents = model.working_agents(mid) * talk / (talk + wrap) if talk + wrap > 0 else 0.0
            cap_rate = per_s * model.answer_probability_at(mid) * talk
            num += min(cap_agents, cap_rate) * dt
            den += n * dt
        t += dt
    return num / den if den else 0.0


class _Day:
    """One shift: the model, the live state the daemon would hold, and the metrics."""

    def __init__(self, bench: BenchScenario, seed: int, day: int, hours: float) -> None:
        sc = replace(bench.scenario, seed=seed * 1000 + day)
        self.bench = bench
        self.t0 = day * DAY_S + sc.shift_start_s
        self.t1 = self.t0 + hours * 3600.0
        self.model = CallModel(sc, self.t0)
        self.live = bench.live
        self.window_s = sc.window_s
        self.per_window = bench.callbacks_per_window
        lag = sc.lag_s + sc.faults.get("statistics_lag_s", 0.0)
        self.lag = lag
        self.ringing: dict[str, float] = {}
        self.talking: dict[str, float] = {}
        self.wrapup: dict[str, float] = {}
        self.unresolved: dict[str, float] = {}
        self.pending: deque[tuple[float, FinishedCall]] = deque()
        self.new_finished: list[FinishedCall] = []
        self.new_wraps: list[float] = []
        self.answered = 0
        self.abandoned = 0
        self.connected = 0
        self.placed = 0
        self.rejected = 0
        self.windows_used: dict[int, int] = {}
        self.talk_s = 0.0
        self.wrap_s = 0.0
        self.seq = 0
        self.seen_answered = 0
        self.seen_abandoned = 0
        # The team as the daemon's presence reports it: logged in and not paused, plus those finishing a call
        # before a break or logout (``dialer.agents.presence``), read off the agents' own moves, not the schedule.
        self.working: set[str] = set()

    def _record(self, call: SimCall) -> FinishedCall:
        return FinishedCall(
            placed_at=call.placed_at,
            ended_at=call.ended_at if call.ended_at is not None else call.placed_at,
            answered=call.answered,
            connected=call.connected,
            abandoned=call.abandoned,
            ring_s=call.ring_seconds,
            talk_s=call.talk_seconds,
            disposition=call.disposition or "",
            call_id=call.id,
        )

    def process(self, events: list[Any]) -> bool:
        """Apply model events to the daemon-visible state; True if one should wake the policy."""
        wake = False
        calls = self.model.calls
        t1 = self.t1
        for ev in events:
            kind = ev.kind
            if kind == "connected":
                self.talking[ev.agent] = ev.time
                self.connected += 1
            elif kind == "talk_end":
                start = self.talking.pop(ev.agent, ev.time)
                if start < t1:
                    self.talk_s += min(ev.time, t1) - start
                self.wrapup[ev.agent] = ev.time
            elif kind == "wrapup_end":
                start = self.wrapup.pop(ev.agent, ev.time)
                if start < t1:
                    self.wrap_s += min(ev.time, t1) - start
                self.new_wraps.append(ev.time - start)
                wake = True
            elif kind == "ended":
                call = calls[ev.call_id]
                self.ringing.pop(ev.call_id, None)
                rec = self._record(call)
                if call.answered:
                    self.answered += 1
                    self.abandoned += int(call.abandoned)
                if self.live:
                    self.new_finished.append(rec)
                else:
                    ready = ev.time + self.lag
                    self.pending.append((math.ceil(ready / STATS_POLL_S) * STATS_POLL_S, rec))
            elif kind in ("answered", "no_answer", "busy", "failed", "unallocated"):
                self.ringing.pop(ev.call_id, None)
                if kind == "answered":
                    wake = True
            elif kind in _PRESENCE:
                if _PRESENCE[kind]:
                    self.working.add(ev.agent)
                else:
                    self.working.discard(ev.agent)
                wake = True
            elif kind in _TRIGGERS:
                wake = True
        return wake


def run_days(
    bench: BenchScenario,
    policy: Policy | str,
    seed: int,
    days: int | None = None,
    hours: float | None = None,
    recorder: Recorder | None = None,
) -> list[DayResult]:
    """Run one policy over ``days`` shifts of ``bench`` with ``seed``; one policy object across the days."""
    pol = make_policy(policy) if isinstance(policy, str) else policy
    n_days = bench.days if days is None else days
    shift_h = bench.scenario.shift_hours if hours is None else hours
    results: list[DayResult] = []
    window_answered = 0
    window_abandoned = 0
    for day in range(n_days):
        d = _Day(bench, seed, day, shift_h)
        res = _run_day(d, pol, window_answered, window_abandoned, recorder)
        res.day = day
        window_answered += res.answered
        window_abandoned += res.abandoned
        results.append(res)
    return results


def _run_day(d: _Day, pol: Policy, win_ans0: int, win_ab0: int, recorder: Recorder | None) -> DayResult:
    model = d.model
    t0, t1 = d.t0, d.t1
    live = d.live
    unresolved = d.unresolved
    pending = d.pending
    per_window = d.per_window
    window_s = d.window_s
    seq_prefix = f"+4477{int(t0 // DAY_S):03d}"
    d.process(model.advance(t0))
    next_tick = t0

    def observe(now: float) -> Observation:
        if live:
            finished = tuple(d.new_finished)
        else:
            out = []
            while pending and pending[0][0] <= now:
                rec = pending.popleft()[1]
                out.append(rec)
            finished = tuple(out)
            for rec in finished:
                unresolved.pop(rec.call_id, None)
                if rec.answered:
                    d.seen_answered += 1
                    d.seen_abandoned += int(rec.abandoned)
        d.new_finished = []
        wraps = tuple(d.new_wraps)
        d.new_wraps = []
        # The policy's view of the counts: live data when webhooks run, else what the statistics have shown.
        ans_today = d.answered if live else d.seen_answered
        ab_today = d.abandoned if live else d.seen_abandoned
        w = int((now - t0) // window_s)
        budget = per_window - d.windows_used.get(w, 0)
        n_logged = len(d.working)
        if live:
            return Observation(
                now=now,
                time_of_day=model.clock(now) % DAY_S,
                agents_logged_in=n_logged,
                idle=model.free_agents(),
                talking_since=tuple(d.talking.values()),
                wrapup_since=tuple(d.wrapup.values()),
                ringing_since=tuple(d.ringing.values()),
                waiting=model.waiting_calls(),
                answered_window=win_ans0 + ans_today,
                abandoned_window=win_ab0 + ab_today,
                answered_today=ans_today,
                abandoned_today=ab_today,
                finished=finished,
                wrapups_finished=wraps,
                budget=budget,
                live=True,
            )
        return Observation(
            now=now,
            time_of_day=model.clock(now) % DAY_S,
            agents_logged_in=n_logged,
            idle=n_logged,
            ringing_since=tuple(unresolved.values()),
            answered_window=win_ans0 + ans_today,
            abandoned_window=win_ab0 + ab_today,
            answered_today=ans_today,
            abandoned_today=ab_today,
            finished=finished,
            budget=budget,
            live=False,
        )

    def act(now: float) -> None:
        obs = observe(now)
        n = pol.decide(obs)
        if recorder is not None:
            recorder(obs, n)
        if n <= 0:
            return
        w = int((now - t0) // window_s)
        used = d.windows_used.get(w, 0)
        allowed = max(per_window - used, 0)
        if n > allowed:
            d.rejected += n - allowed
            n = allowed
        d.windows_used[w] = used + n
        for _ in range(n):
            d.seq += 1
            call = model.place_call(f"{seq_prefix}{d.seq:07d}", now)
            d.placed += 1
            if call.ended_at is None:
                d.ringing[call.id] = now
            if not live:
                unresolved[call.id] = now
        d.process(model.advance(now))

    while True:
        ne = model.next_event_time()
        if ne is not None and ne < next_tick:
            wake = d.process(model.advance(ne))
            if wake and ne < t1:
                act(ne)
            continue
        if next_tick >= t1:
            break
        d.process(model.advance(next_tick))
        act(next_tick)
        next_tick += 1.0

    # Snapshot the shift's time use at its end, then let calls already placed finish for the abandon count.
    d.process(model.advance(t1))
    talk_s = d.talk_s + sum(t1 - s for s in d.talking.values() if s < t1)
    wrap_s = d.wrap_s + sum(t1 - s for s in d.wrapup.values() if s < t1)
    logged = sum(a.logged_in_seconds(t1) for a in model.agents)
    u_star = upper_bound(d.bench, model, t0, t1)
    d.process(model.advance(t1 + DRAIN_S))
    windows = math.ceil((t1 - t0) / window_s)
    return DayResult(
        day=0,
        logged_in_s=logged,
        talk_s=talk_s,
        wrapup_s=wrap_s,
        answered=d.answered,
        abandoned=d.abandoned,
        connected=d.connected,
        placed=d.placed,
        rejected_429=d.rejected,
        budget_allowed=windows * per_window,
        u_star=u_star,
    )


# -- running many cells and summarising them ---------------------------------------------------------------

CAP = 0.03
# Two-sided 95% Student t quantiles by degrees of freedom (1..30); beyond, the normal 1.96.
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (Student t over the seeds)."""
    n = len(values)
    if n == 0:
        return 0.0, 0.0
    m = sum(values) / n
    if n == 1:
        return m, 0.0
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    t = _T975[n - 2] if n - 2 < len(_T975) else 1.96
    return m, t * math.sqrt(var / n)


@dataclass
class CellResult:
    """One scenario x policy: every seed's days."""

    scenario: str
    policy: str
    seeds: list[int]
    days: list[list[DayResult]]
    seconds: float = 0.0

    def per_seed_occupancy(self) -> list[float]:
        return [sum(d.talk_s for d in ds) / max(sum(d.logged_in_s for d in ds), 1e-9) for ds in self.days]

    def per_seed_abandon(self) -> list[float]:
        return [sum(d.abandoned for d in ds) / max(sum(d.answered for d in ds), 1) for ds in self.days]

    def all_days(self) -> list[DayResult]:
        return [d for ds in self.days for d in ds]

    def summary(self) -> dict[str, Any]:
        occ, occ_ci = mean_ci(self.per_seed_occupancy())
        ab, ab_ci = mean_ci(self.per_seed_abandon())
        days = self.all_days()
        logged = sum(d.logged_in_s for d in days)
        u_star = sum(d.u_star * d.logged_in_s for d in days) / logged if logged else 0.0
        wrap = sum(d.wrapup_s for d in days) / logged if logged else 0.0
        over = sum(1 for d in days if d.abandon_rate > CAP)
        allowed = sum(d.budget_allowed for d in days)
        return {
            "scenario": self.scenario,
            "policy": self.policy,
            "seeds": len(self.seeds),
            "days": len(days),
            "occupancy": occ,
            "occupancy_ci": occ_ci,
            "abandon": ab,
            "abandon_ci": ab_ci,
            "days_over_cap": over / len(days) if days else 0.0,
            "days_over_cap_count": over,
            "worst_day_abandon": max((d.abandon_rate for d in days), default=0.0),
            "u_star": u_star,
            "occupancy_over_u_star": occ / u_star if u_star else 0.0,
            "wrapup_share": wrap,
            "answered_per_day": sum(d.answered for d in days) / len(days) if days else 0.0,
            "budget_use": sum(d.placed for d in days) / allowed if allowed else 0.0,
            "rejected_429": sum(d.rejected_429 for d in days),
            "fails_cap": ab > CAP,
            "seconds": self.seconds,
        }


def _job(
    args: tuple[str, str, int, int | None, float | None],
) -> tuple[str, str, int, list[DayResult], float]:
    import time

    path, policy, seed, days, hours = args
    bench = load_bench_scenario(path)
    started = time.perf_counter()
    res = run_days(bench, policy, seed, days=days, hours=hours)
    return path, policy, seed, res, time.perf_counter() - started


def run_matrix(
    scenario_paths: list[str],
    policies_for: Callable[[BenchScenario], list[str]],
    seeds: int,
    days: int | None = None,
    hours: float | None = None,
    jobs: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> list[CellResult]:
    """Run every scenario x policy x seed (seeds 1..N) on ``jobs`` worker processes."""
    import multiprocessing as mp

    benches = {p: load_bench_scenario(p) for p in scenario_paths}
    work: list[tuple[str, str, int, int | None, float | None]] = []
    order: list[tuple[str, str]] = []
    for path, bench in benches.items():
        for pol in policies_for(bench):
            make_policy(pol)  # fail early on a bad spec
            order.append((path, pol))
            work.extend((path, pol, s, days, hours) for s in range(1, seeds + 1))
    # Longest first keeps both workers busy to the end.
    work.sort(key=lambda w: -(benches[w[0]].scenario.agent_count * (w[3] or benches[w[0]].days)))
    got: dict[tuple[str, str], dict[int, tuple[list[DayResult], float]]] = {k: {} for k in order}
    done = 0
    if jobs <= 1:
        results = map(_job, work)
        for path, pol, seed, res, secs in results:
            got[(path, pol)][seed] = (res, secs)
            done += 1
            if progress:
                progress(done, len(work))
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(jobs) as pool:
            for path, pol, seed, res, secs in pool.imap_unordered(_job, work):
                got[(path, pol)][seed] = (res, secs)
                done += 1
                if progress:
                    progress(done, len(work))
    cells = []
    for path, pol in order:
        by_seed = got[(path, pol)]
        seeds_sorted = sorted(by_seed)
        cells.append(
            CellResult(
                scenario=benches[path].name,
                policy=pol,
                seeds=seeds_sorted,
                days=[by_seed[s][0] for s in seeds_sorted],
                seconds=sum(by_seed[s][1] for s in seeds_sorted),
            )
        )
    return cells
