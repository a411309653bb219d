"""End-to-end harness: the simulator and the daemon as real subprocesses over a real database (a SQLite file, or
with ``pytest --db postgres`` a throwaway PostgreSQL database on 127.0.0.1:5432); the other `dialer` commands
(campaign, dnc, report, status) run in-process against the same database and simulator.

Used by the daemon, webhook, lock and README tests. Every process is started on a free 127.0.0.1 port and
stopped at the end, whatever happened; every wait is for a condition, with a deadline that only bounds a hang.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import Session, select

from dialer.asgi_thread import free_port
from dialer.db import make_engine
from dialer.models import Attempt, Campaign, Contact
from dialer.sim.credentials import DEMO_KEY, DEMO_SECRET
from tests import pg
from tests.conftest import clean_env, invoke, wait_for

# The database engine the stacks run on: set from `pytest --db` (tests/conftest.py).
ENGINE = "sqlite"

# The simulator's demo account: what `dialer sim serve` accepts by default.
KEY, SECRET = DEMO_KEY, DEMO_SECRET

FAST_WORLD = """
name = "e2e"
seed = {seed}
timezone = "Europe/London"
pbx_number = "442037691880"

[agents]
count = {agents}
extensions = [{extensions}]
wrapup = {{ dist = "const", value = 2 }}

[calls]
answer_probability = 0.35
p_busy = 0.12
p_failed = 0.03
p_unallocated = 0.02
ring_time = {{ dist = "uniform", low = 4, high = 14 }}
max_ring_s = 25
connect_grace_s = 2
talk_time = {{ dist = "exponential", mean = 30 }}
busy_after_s = 3
failed_after_s = 1

[limits]
general_per_window = {general}
statistics_per_window = 3
window_s = 60

[statistics]
lag_s = {lag}

[webhooks]
profile = "{webhooks}"
# How long the PBX waits for our NOTIFY_START answer before routing the caller itself, in world seconds: 60 is two
# wall seconds at 30x. Zadarma's own second would be 33 ms wall at 30x, which a busy machine misses, and the
# simulator would then connect or abandon the call against the daemon's decision.
notify_start_timeout_s = 60
"""


def scenario_text(*, seed: int = 7, agents: int = 5, general: int = 100, lag: float = 10, webhooks: str = "full") -> str:
    exts = ", ".join(f'"{100 + i}"' for i in range(agents))
    return FAST_WORLD.format(seed=seed, agents=agents, extensions=exts, general=general, lag=lag, webhooks=webhooks)


def write_contacts(path: Path, n: int, *, start: int = 0) -> list[str]:
    phones = [f"+44207946{i:04d}" for i in range(start, start + n)]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["phone", "name", "account"])
        for i, phone in enumerate(phones):
            w.writerow([phone, f"Customer {start + i}", f"A-{start + i:05d}"])
    return phones


class Stack:
    """One simulated call centre: a simulator process, a database, and daemon processes on demand."""

    def __init__(self, tmp: Path, *, time_scale: float = 60.0, scenario: str | None = None,
                 faults: list[str] | None = None, webhooks: bool = True, http_timeout: float = 2.0,
                 engine: str | None = None) -> None:
        self.tmp = tmp
        self.time_scale = time_scale
        self.db_path = tmp / "dialer.db"
        self._pg_admin = None
        self.db_url = f"sqlite:///{self.db_path}"
        self.engine = engine or ENGINE
        if self.engine == "postgres":
            self._pg_admin = pg.admin_engine()
            assert self._pg_admin is not None, "pytest --db postgres needs a PostgreSQL server at 127.0.0.1:5432"
            self.db_url = pg.create_database(self._pg_admin)
        self._db_engine: Any = None
        self.sim_port = free_port()
        self.webhook_port = free_port() if webhooks else 0
        self.scenario_path = tmp / "world.toml"
        self.scenario_path.write_text(scenario or scenario_text(webhooks="full" if webhooks else "none"))
        self.faults = faults or []
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ZADARMA_", "DIALER_"))},
            "DIALER_DATABASE_URL": self.db_url,
            "DIALER_CONFIG": os.devnull,
            "ZADARMA_KEY": KEY,
            "ZADARMA_SECRET": SECRET,
            "ZADARMA_API_URL": f"http://127.0.0.1:{self.sim_port}",
            "DIALER_HTTP_TIMEOUT": str(http_timeout),
            "PYTHONUNBUFFERED": "1",
        }
        self.sim: subprocess.Popen[str] | None = None
        self.daemons: list[subprocess.Popen[str]] = []
        self.logs: list[Path] = []

    @property
    def api(self) -> str:
        return self.env["ZADARMA_API_URL"]

    # -- processes ----------------------------------------------------------------------------------

    def start_sim(self) -> None:
        args = [sys.executable, "-m", "dialer", "sim", "serve", "--port", str(self.sim_port),
                "--time-scale", str(self.time_scale), "--scenario", str(self.scenario_path)]
        if self.webhook_port:
            args += ["--webhook-url", f"http://127.0.0.1:{self.webhook_port}/zadarma"]
        for fault in self.faults:
            args += ["--fault", fault]
        log = self.tmp / "sim.log"
        self.logs.append(log)
        self.sim = subprocess.Popen(args, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
        sim = self.sim

        def up() -> bool:
            try:
                httpx.get(self.api + "/_sim/stats", timeout=5).raise_for_status()
                return True
            except httpx.HTTPError:
                if sim.poll() is not None:
                    raise RuntimeError("simulator exited: " + log.read_text()) from None
                return False

        wait_for(up, timeout=120, what="the simulator to serve", every=0.1)

    def daemon_args(self, *extra: str) -> list[str]:
        s = self.time_scale
        return [
            sys.executable, "-m", "dialer", "-v", "run",
            "--tick", "0.1",
            "--reconcile-every", "0.5",
            "--balance-every", "5",
            "--heartbeat-every", "0.5",
            "--webhook-port", str(self.webhook_port),
            "--wrapup", str(2 / s),
            "--uncertain-grace", str(max(6.0, 300 / s)),
            "--pbx-leg-grace", "5",
            "--silence", str(max(5.0, 120 / s)),
            "--time-scale", str(s),
            *extra,
        ]

    def start_daemon(self, *extra: str) -> subprocess.Popen[str]:
        log = self.tmp / f"daemon{len(self.daemons)}.log"
        self.logs.append(log)
        proc = subprocess.Popen(self.daemon_args(*extra), env=self.env, stdout=log.open("w"),
                                stderr=subprocess.STDOUT, text=True)
        self.daemons.append(proc)
        return proc

    def run_daemon(self, timeout: float, *extra: str, start: str | tuple[str, ...] = ()) -> subprocess.Popen[str]:
        """`dialer run --until-finished` to its end. The campaigns named in ``start`` are started once the daemon
        runs and the simulator has verified its webhook URL: a call placed before then gets no events, and the
        daemon's live view would count it as ringing for two minutes, stalling the pacing."""
        proc = self.start_daemon("--until-finished", *extra)
        names = (start,) if isinstance(start, str) else start
        if names and self.webhook_port:
            wait_for(lambda: proc.poll() is not None or self.sim_stats()["webhooks"]["verified"], timeout=120,
                     what="the simulator to verify the daemon's webhook URL")
            assert self.sim_stats()["webhooks"]["verified"], self.daemon_log()[-3000:]
        for name in names:
            self.cli("campaign", "start", name)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon did not finish in {timeout}s; log:\n{self.daemon_log()[-4000:]}") from None
        return proc

    def daemon_log(self) -> str:
        return "\n".join(p.read_text() for p in self.logs if p.name.startswith("daemon") and p.exists())

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """`dialer ARGS` in-process, with the daemon's settings (database, simulator, credentials)."""
        settings = {k: v for k, v in self.env.items() if k.startswith(("ZADARMA_", "DIALER_"))}
        out = invoke(args, env=clean_env(**settings), cwd=self.tmp, input=input)
        if check and out.returncode != 0:
            raise AssertionError(f"dialer {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out

    def stop(self) -> None:
        for proc in [*self.daemons, *([self.sim] if self.sim else [])]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.daemons, *([self.sim] if self.sim else [])]:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def close(self) -> None:
        """After :meth:`stop`: the database goes too (a PostgreSQL one is dropped); tests may read it until then."""
        if self._db_engine is not None:
            self._db_engine.dispose()
            self._db_engine = None
        if self._pg_admin is not None:
            pg.drop_database(self._pg_admin, self.db_url)
            self._pg_admin.dispose()
            self._pg_admin = None

    # -- campaign -----------------------------------------------------------------------------------

    def make_campaign(self, name: str, n_contacts: int, *, agents: int = 5, pacing: str = "progressive",
                      max_attempts: int = 3, extra: list[str] | None = None) -> list[str]:
        csv_path = self.tmp / f"{name}.csv"
        phones = write_contacts(csv_path, n_contacts)
        s = self.time_scale
        self.cli(
            "campaign", "create", name, "--from", "442037691880", "--agents", str(agents),
            "--extensions", ",".join(str(100 + i) for i in range(agents)), "--pacing", pacing,
            "--max-attempts", str(max_attempts), "--window", "00:00-23:59", "--weekdays", "mon-sun",
            "--retry-busy", f"{max(1, round(60 / s))}s", "--retry-no-answer", f"{max(1, round(90 / s))}s",
            "--retry-failed", f"{max(1, round(30 / s))}s", "--retry-abandoned", f"{max(1, round(120 / s))}s",
            "--timezone", "Europe/London", *(extra or []),
        )
        self.cli("campaign", "load", str(csv_path), "--campaign", name)
        return phones

    # -- reading what happened ------------------------------------------------------------------------

    def truth(self) -> list[dict[str, Any]]:
        return list(httpx.get(self.api + "/_sim/calls", timeout=10).json())

    def sim_stats(self) -> dict[str, Any]:
        return dict(httpx.get(self.api + "/_sim/stats", timeout=10).json())

    def wait_truth_settled(self, timeout: float = 120) -> list[dict[str, Any]]:
        def settled() -> tuple[list[dict[str, Any]]] | None:
            calls = self.truth()
            now = time.time()
            if all(c.get("ended_at") is not None and (c.get("stats_due_at") or 0) <= now for c in calls):
                return (calls,)
            return None

        return wait_for(settled, timeout=timeout, what="the simulated calls to end", every=0.2)[0]

    def db(self) -> Session:
        if self._db_engine is None:
            self._db_engine = make_engine(self.db_url)
        return Session(self._db_engine)

    def attempts(self) -> list[Attempt]:
        with self.db() as s:
            return list(s.exec(select(Attempt)).all())

    def contacts(self) -> list[Contact]:
        with self.db() as s:
            return list(s.exec(select(Contact)).all())

    def campaign(self, name: str) -> Campaign:
        with self.db() as s:
            c = s.exec(select(Campaign).where(Campaign.name == name)).one()
            return c

    def report_json(self, name: str) -> dict[str, Any]:
        return dict(json.loads(self.cli("report", name, "--json").stdout))


@contextmanager
def stack(tmp: Path, *, start_sim: bool = True, **kw: Any) -> Iterator[Stack]:
    """``start_sim=False``: the caller starts the simulator (e.g. after slow setup, when its shift clock matters)."""
    st = Stack(tmp, **kw)
    try:
        if start_sim:
            st.start_sim()
        yield st
    finally:
        st.stop()
        st.close()
