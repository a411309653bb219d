"""`dialer bench live`: a pacing policy measured in the live loop, beside the discrete-event figure for the same world.

The discrete-event benchmark (``dialer.sim.des``) hands the policy exact state at zero latency. Here the same world
(a ``benchmarks/scenarios`` file, its ``[bench]`` table dropped) is served by ``dialer sim serve`` and paced by
``dialer run``, both real processes talking HTTP with webhooks on, over a throwaway SQLite database: every decision
is made on what the daemon learnt through callbacks, webhooks and statistics, late by whatever the loop costs.

Measured over ``hours`` of simulated time from the campaign's start, from the simulator's ground truth
(``/_sim/calls``, ``/_sim/agents``): occupancy = agents' talk time / their logged-in time, abandon rate =
abandoned / answered of the calls placed in the window (each followed until an agent took it or it was abandoned),
and HTTP 429s. The loop's own delays are read off the daemon's database: callback round trip (sent to accepted) and
webhook delay (the simulated agent answering to the daemon storing NOTIFY_ANSWER). Every process started here is
stopped before a run returns.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from dialer.asgi_thread import free_port
from dialer.db import open_database, session_scope
from dialer.sim.credentials import DEMO_KEY, DEMO_SECRET
from dialer.sim.des import BenchScenario, load_bench_scenario, mean_ci, run_days
from dialer.sim.scenario import read_scenario_toml

CAMPAIGN = "bench"
WEBHOOK_PATH = "/zadarma"
# How long the simulated PBX waits for the routing answer, in wall seconds: the daemon's answer is not sped up, so a
# scaled second (33 ms at 30x) would measure the machine, not the policy. Zadarma's is about a real second.
NOTIFY_START_WALL_S = 1.0
START_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 90.0

Say = Callable[[str], None]


@dataclass
class LiveBenchOptions:
    scenario: Path
    hours: float = 1.0
    time_scale: float = 30.0
    policy: str | None = None  # default: predictive
    des_seeds: int = 5
    tick_s: float | None = None  # default: one simulated second, at least 50 ms
    workdir: Path | None = None
    seed: int | None = None  # the live world's seed (default: the scenario's); other seeds, other customers


@dataclass
class LiveFigures:
    placed: int
    answered: int
    abandoned: int
    connected: int
    talk_s: float  # wall seconds (the simulator's agents' clock)
    logged_in_s: float
    rejected_429: int
    wall_s: float
    webhooks_sent: int
    webhooks_failed: int
    notify_start_timeouts: int
    callback_delay_ms_p50: float | None  # the daemon's claim (write-ahead, committed) to the PBX receiving it
    callback_delay_ms_p95: float | None
    webhook_delay_ms_p50: float | None
    webhook_delay_ms_p95: float | None
    # Why calls were abandoned (wrap-up ignored): an agent was free when the customer answered (the daemon's view
    # was late), or one freed within the PBX's connect grace (the daemon abandons at once; the model would wait).
    abandoned_agent_idle: int = 0
    abandoned_agent_freed_in_grace: int = 0

    @property
    def occupancy(self) -> float:
        return self.talk_s / self.logged_in_s if self.logged_in_s else 0.0

    @property
    def abandon_rate(self) -> float:
        return self.abandoned / self.answered if self.answered else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "occupancy": self.occupancy, "abandon_rate": self.abandon_rate}


# -- the world and the campaign ----------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def world_toml(path: Path, time_scale: float, seed: int | None = None) -> str:
    """The scenario file as ``dialer sim serve`` takes it: ``[bench]`` dropped, the routing wait in wall time."""
    data = read_scenario_toml(path)
    data.pop("bench", None)
    if seed is not None:
        data["seed"] = seed
    data.setdefault("name", path.stem)
    hooks = data.setdefault("webhooks", {})
    hooks["notify_start_timeout_s"] = max(float(hooks.get("notify_start_timeout_s", 1.0)),
                                          NOTIFY_START_WALL_S * time_scale)  # fmt: skip
    top = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    tables = [
        f"[{name}]\n" + "\n".join(f'"{k}" = {_toml_value(v)}' for k, v in table.items())
        for name, table in data.items()
        if isinstance(table, dict)
    ]
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


def contacts_needed(bench: BenchScenario, hours: float) -> int:
    """Enough fresh numbers for the busiest policy: three dials per talk a team could hold, at the lowest answer
    probability of the day, plus a margin."""
    sc = bench.scenario
    p = min([sc.answer_probability, *(pt.p for pt in sc.answer_schedule)]) or 0.05
    per_agent = hours * 3600.0 / max(sc.talk_time.expected(), 1.0)
    return math.ceil(sc.agent_count * per_agent / max(p, 0.05) * 3) + 500


def write_contacts(path: Path, n: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["phone", "name"])
        w.writerows([f"+44207{i:07d}", f"Customer {i}"] for i in range(1, n + 1))


def create_campaign(db_url: str, bench: BenchScenario, policy: str, contacts: Path, workdir: Path) -> int:
    """The campaign the daemon paces: the world's team, one attempt per number (each call meets a fresh customer,
    as in the discrete-event run), open at any hour, the abandon message as the abandon action."""
    from dialer.ingest import campaigns as svc
    from dialer.ingest.loader import load_file

    sc = bench.scenario
    db = open_database(db_url)
    try:
        with session_scope(db) as s:
            svc.create_campaign(s, CAMPAIGN, sc.pbx_number, agents=sc.agent_count,
                                agent_extensions=",".join(sc.extensions[: sc.agent_count]), pacing=policy,
                                max_attempts=1, window_start="00:00", window_end="23:59", weekdays="mon-sun",
                                default_region="GB", timezone=sc.timezone, abandon_action="ivr_play:1")  # fmt: skip
        return load_file(db, contacts, CAMPAIGN, rejects_path=workdir / "rejects.csv").loaded
    finally:
        db.dispose()


def _campaign_action(db_url: str, action: str) -> None:
    from dialer.ingest import campaigns as svc

    db = open_database(db_url)
    try:
        with session_scope(db) as s:
            if action == "start":
                svc.start_campaign(s, CAMPAIGN)
            else:
                svc.pause_campaign(s, CAMPAIGN, "benchmark window over")
    finally:
        db.dispose()


# -- processes -----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def _wait(condition: Callable[[], bool], timeout: float, what: str, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        dead = [p.args for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead[0]!r} exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def _get(url: str) -> Any:
    return httpx.get(url, timeout=30).json()


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _env(db_url: str, api_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZADARMA_", "DIALER_"))}
    env.update(DIALER_DATABASE_URL=db_url, DIALER_CONFIG=os.devnull, ZADARMA_KEY=DEMO_KEY,
               ZADARMA_SECRET=DEMO_SECRET, ZADARMA_API_URL=api_url, DIALER_HTTP_TIMEOUT="5",
               PYTHONUNBUFFERED="1")  # fmt: skip
    return env


def daemon_args(bench: BenchScenario, time_scale: float, tick_s: float, webhook_port: int) -> list[str]:
    """`dialer run` with its intervals divided by the time scale, as it would pace the real world."""
    x = time_scale
    return [sys.executable, "-m", "dialer", "run", "--tick", f"{tick_s:g}",
            "--reconcile-every", f"{max(0.5, 20 / x):g}", "--balance-every", f"{max(2.0, 60 / x):g}",
            "--heartbeat-every", "0.5", "--webhook-port", str(webhook_port), "--webhook-path", WEBHOOK_PATH,
            "--wrapup", f"{bench.scenario.wrapup.expected() / x:g}", "--silence", f"{max(5.0, 120 / x):g}",
            "--uncertain-grace", f"{max(6.0, 300 / x):g}", "--pbx-leg-grace", f"{max(5.0, 60 / x):g}",
            "--time-scale", f"{x:g}"]  # fmt: skip


# -- one run -------------------------------------------------------------------------------------------------------


def run_live(opts: LiveBenchOptions, say: Say = lambda _: None) -> dict[str, Any]:
    """One live run and its discrete-event counterpart; the dict ``dialer bench live --json`` writes."""
    bench = load_bench_scenario(opts.scenario)
    policy = opts.policy or "predictive"
    x = opts.time_scale
    if x <= 0 or opts.hours <= 0:
        raise ValueError("--time-scale and --hours must be > 0")
    tick_s = opts.tick_s if opts.tick_s is not None else max(0.05, 1.0 / x)
    with contextlib.ExitStack() as stack:
        if opts.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dialer-bench-live-")))
        else:
            workdir = opts.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        live = _run_processes(bench, policy, opts, x, tick_s, workdir, say)
    say(f"{bench.name}: discrete-event runs ({opts.des_seeds} seeds)")
    des = des_figures(bench, policy, opts.hours, opts.des_seeds)
    ratio = live.occupancy / des["occupancy"] if des["occupancy"] else None
    return {
        "scenario": bench.name,
        "scenario_file": str(opts.scenario),
        "policy": policy,
        "seed": bench.scenario.seed if opts.seed is None else opts.seed,
        "hours": opts.hours,
        "time_scale": x,
        "tick_s": tick_s,
        "live": live.to_dict(),
        "des": des,
        "occupancy_ratio": ratio,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def _run_processes(bench: BenchScenario, policy: str, opts: LiveBenchOptions, x: float, tick_s: float,
                   workdir: Path, say: Say) -> LiveFigures:  # fmt: skip
    db_path = workdir / "bench.db"
    if db_path.exists():
        raise ValueError(f"{db_path} exists from an earlier run: use another --dir")
    db_url = f"sqlite:///{db_path}"
    world = workdir / "world.toml"
    world.write_text(world_toml(opts.scenario, x, opts.seed), encoding="utf-8")
    contacts = workdir / "contacts.csv"
    write_contacts(contacts, contacts_needed(bench, opts.hours))
    loaded = create_campaign(db_url, bench, policy, contacts, workdir)
    sim_port, hook_port = free_port(), free_port()
    api = f"http://127.0.0.1:{sim_port}"
    env = _env(db_url, api)
    say(f"{bench.name}: {loaded} contacts, {bench.scenario.agent_count} agents, {policy}, "
        f"{opts.hours:g} h at {x:g}x (tick {tick_s:g} s)")  # fmt: skip
    sim_args = [sys.executable, "-m", "dialer", "sim", "serve", "--scenario", str(world), "--port", str(sim_port),
                "--time-scale", f"{x:g}", "--key", DEMO_KEY, "--secret", DEMO_SECRET,
                "--webhook-url", f"http://127.0.0.1:{hook_port}{WEBHOOK_PATH}"]  # fmt: skip
    with (
        _process(sim_args, env, workdir / "sim.log") as sim,
        _process(daemon_args(bench, x, tick_s, hook_port), env, workdir / "daemon.log") as daemon,
    ):
        procs = [sim, daemon]
        _wait(lambda: _up(api + "/_sim/stats"), START_TIMEOUT_S, "the simulator", procs)
        _wait(lambda: bool(_get(api + "/_sim/stats")["webhooks"]["verified"]), START_TIMEOUT_S,
              "the simulator to verify the daemon's webhook URL", procs)  # fmt: skip
        agents0, stats0 = _get(api + "/_sim/agents"), _get(api + "/_sim/stats")
        t_start = time.time()
        _campaign_action(db_url, "start")
        t_end = t_start + opts.hours * 3600.0 / x
        while time.time() < t_end:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a process stopped during the run: see {workdir} (sim.log, daemon.log)")
            time.sleep(min(1.0, max(0.0, t_end - time.time())))
        agents1, stats1 = _get(api + "/_sim/agents"), _get(api + "/_sim/stats")
        _campaign_action(db_url, "pause")
        say(f"{bench.name}: window over, waiting for the calls in flight to be decided")

        def decided() -> bool:
            calls = _get(f"{api}/_sim/calls?since={t_start}")
            # Decided: an agent took it, it was abandoned, or it ended unanswered.
            return all(c["connected"] or c["abandoned"] or c["ended_at"] is not None
                       for c in calls if c["received_at"] < t_end)  # fmt: skip

        _wait(decided, DRAIN_TIMEOUT_S, "the calls in flight", procs)
        calls = [c for c in _get(f"{api}/_sim/calls?since={t_start}") if c["received_at"] < t_end]
    figures = _figures(calls, agents0, agents1, stats0, stats1, t_start, t_end, db_url)
    grace = bench.scenario.connect_grace_s / x
    figures.abandoned_agent_idle, figures.abandoned_agent_freed_in_grace = _abandon_causes(
        calls, len(agents1), grace
    )
    return figures


def _abandon_causes(calls: list[dict[str, Any]], agents: int, grace: float) -> tuple[int, int]:
    """Abandoned calls with an agent idle at the customer's answer, and with one freeing within ``grace`` after."""
    busy = [(c["connected_at"], c["ended_at"] or math.inf) for c in calls if c["connected_at"] is not None]
    idle = freed = 0
    for c in calls:
        if not c["abandoned"] or c["answered_at"] is None:
            continue
        t = c["answered_at"]
        if sum(1 for start, end in busy if start <= t < end) < agents:
            idle += 1
        elif any(t < end <= t + grace for _, end in busy):
            freed += 1
    return idle, freed


def _figures(calls: list[dict[str, Any]], agents0: list[dict[str, Any]], agents1: list[dict[str, Any]],
             stats0: dict[str, Any], stats1: dict[str, Any], t_start: float, t_end: float,
             db_url: str) -> LiveFigures:  # fmt: skip
    talk = 0.0
    for c in calls:
        if c["connected_at"] is None:
            continue
        ended = c["connected_at"] + c["talk_seconds_wall"] if c["ended_at"] is not None else t_end
        talk += max(0.0, min(ended, t_end) - max(c["connected_at"], t_start))
    before = {a["extension"]: a["logged_in_seconds"] for a in agents0}
    logged = sum(a["logged_in_seconds"] - before.get(a["extension"], 0.0) for a in agents1)
    sent, delay = _loop_delays(db_url, calls)
    hooks = stats1["webhooks"]
    return LiveFigures(
        placed=len(calls),
        answered=sum(1 for c in calls if c["answered"]),
        abandoned=sum(1 for c in calls if c["answered"] and c["abandoned"]),
        connected=sum(1 for c in calls if c["connected"]),
        talk_s=talk,
        logged_in_s=logged,
        rejected_429=int(stats1["rate_limited_total"]) - int(stats0["rate_limited_total"]),
        wall_s=t_end - t_start,
        webhooks_sent=int(hooks["sent"]) - int(stats0["webhooks"]["sent"]),
        webhooks_failed=int(hooks["failed"]) - int(stats0["webhooks"]["failed"]),
        notify_start_timeouts=int(hooks["notify_start_timeouts"]) - int(stats0["webhooks"]["notify_start_timeouts"]),
        callback_delay_ms_p50=_pct(sent, 50),
        callback_delay_ms_p95=_pct(sent, 95),
        webhook_delay_ms_p50=_pct(delay, 50),
        webhook_delay_ms_p95=_pct(delay, 95),
    )


def _pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1)


def _loop_delays(db_url: str, calls: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Callback delays (the daemon claiming the contact, its decision written ahead, to the simulated PBX receiving
    the request, ms; one attempt per number) and webhook delays (the agent answering in the simulator to the daemon
    storing NOTIFY_ANSWER, ms), from the daemon's database and the simulator's truth."""
    connected_at = {c["pbx_call_id_in"]: c["connected_at"] for c in calls if c["connected"] and c["pbx_call_id_in"]}
    received_at = {"+" + str(c["to"]).lstrip("+"): c["received_at"] for c in calls}
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT phone, created_at FROM attempt")).all()
            hooks = conn.execute(sa.text("SELECT pbx_call_id, received_at FROM webhook_event "
                                         "WHERE event = 'NOTIFY_ANSWER'")).all()  # fmt: skip
    finally:
        engine.dispose()
    rtt = [(received_at[phone] - _unix(at)) * 1000 for phone, at in rows if phone in received_at]
    delay = [(_unix(at) - connected_at[pbx]) * 1000 for pbx, at in hooks if pbx in connected_at]
    return rtt, delay


def _unix(value: Any) -> float:
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


# -- the discrete-event counterpart --------------------------------------------------------------------------------


def des_figures(bench: BenchScenario, policy: str, hours: float, seeds: int) -> dict[str, Any]:
    """The same policy over the same world for ``hours`` in the discrete-event simulator, one shift per seed."""
    days = [run_days(bench, policy, seed, days=1, hours=hours)[0] for seed in range(1, seeds + 1)]
    occ, occ_ci = mean_ci([d.occupancy for d in days])
    ab, ab_ci = mean_ci([d.abandon_rate for d in days])
    return {
        "seeds": seeds,
        "occupancy": occ,
        "occupancy_ci": occ_ci,
        "abandon": ab,
        "abandon_ci": ab_ci,
        "rejected_429": sum(d.rejected_429 for d in days),
        "placed_per_seed": sum(d.placed for d in days) / len(days),
        "answered_per_seed": sum(d.answered for d in days) / len(days),
    }


def results_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | seed | policy | live occupancy | DES occupancy (95% CI) | live / DES | live abandon | "
        "DES abandon (95% CI) | live 429s | DES 429s | live answered | callback / webhook delay p50 (p95) ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lv, de = r["live"], r["des"]
        ratio = "-" if r["occupancy_ratio"] is None else f"{r['occupancy_ratio']:.3f}"
        delay = f"{_ms(lv, 'callback_delay')} / {_ms(lv, 'webhook_delay')}"
        lines.append(
            f"| {r['scenario']} | {r['seed']} | {r['policy']} | {lv['occupancy']:.3f} | {de['occupancy']:.3f} ± "
            f"{de['occupancy_ci']:.3f} | {ratio} | {lv['abandon_rate'] * 100:.2f}% | {de['abandon'] * 100:.2f}% ± "
            f"{de['abandon_ci'] * 100:.2f}% | {lv['rejected_429']} | {de['rejected_429']} | {lv['answered']} | "
            f"{delay} |"
        )
    return "\n".join(lines)


def _ms(figures: dict[str, Any], name: str) -> str:
    p50, p95 = figures[f"{name}_ms_p50"], figures[f"{name}_ms_p95"]
    return "-" if p50 is None else f"{p50:.0f} ({p95:.0f})"
