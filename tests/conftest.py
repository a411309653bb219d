"""Shared fixtures and constants: the API credentials tests sign with, the `dialer` command line run in-process,
a real SQLite database file with the schema, simulators on free ports, and waiting for a condition.

Invariant: nothing here passes or fails by the wall clock. Waits poll a condition up to a generous deadline (a
loaded machine only makes them slower), and an in-process command leaves the process as it found it: environment,
working directory and logging handlers are restored after each run.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, chdir, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from typer.testing import CliRunner

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from dialer.sim.harness import RunningSimulator
    from dialer.sim.scenario import Scenario

# dialer modules are imported inside the fixtures that need them: a module broken mid-edit then fails the tests
# that use it, not the collection of the whole suite.

# Zadarma's documented test credentials (their signature examples use them); the simulator accepts any pair.
KEY = "k0k1k2k3k4k5k6k7k8k9"
SECRET = "s0s1s2s3s4s5s6s7s8s9"
PBX_NUMBER = "442037691880"

T = TypeVar("T")


# pyproject's per-test timeout (300 s) catches a hung quick test; a slow end-to-end test on a busy machine may
# honestly need longer, and its own waits are bounded already.
SLOW_TEST_TIMEOUT_S = 1200


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--db", choices=("sqlite", "postgres"), default="sqlite",
                     help="database engine of the end-to-end stacks (tests/e2e.py): a SQLite file, or a throwaway "
                          "PostgreSQL database on 127.0.0.1:5432. Example: pytest -m e2e --db postgres")


def pytest_configure(config: pytest.Config) -> None:
    from tests import e2e

    e2e.ENGINE = config.getoption("--db")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT_S))


def wait_for(condition: Callable[[], T], timeout: float = 60.0, *, what: str = "condition",
              every: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy (and return that); fail after ``timeout`` seconds.

    The deadline only bounds a hang: it is generous so that a busy machine makes a test slower, never red."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def main_thread_sleeping(pid: int) -> bool:
    """Whether process ``pid``'s main thread is blocked in a sleep (nanosleep): for a command that loops
    ``time.sleep`` until Ctrl-C, proof that it is in that loop and a SIGINT now is a Ctrl-C it handles.

    Reads the kernel's wait channel, or where that is hidden the system call the thread is blocked in."""
    task = Path(f"/proc/{pid}/task/{pid}")
    try:
        if "nanosleep" in (task / "wchan").read_text():
            return True
        call = (task / "syscall").read_text().split()[0]
    except (OSError, IndexError):
        return False
    return call in _SLEEP_SYSCALLS.get(platform.machine(), ())


# nanosleep and clock_nanosleep.
_SLEEP_SYSCALLS = {"x86_64": ("35", "230"), "aarch64": ("101", "115")}


# -- the command line, in-process ------------------------------------------------------------------------

def clean_env(**overrides: str | None) -> dict[str, str | None]:
    """CliRunner env: every ZADARMA_/DIALER_ variable of the caller unset, no config file, then ``overrides``."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("ZADARMA_", "DIALER_"))}
    env["DIALER_CONFIG"] = os.devnull
    env.update(overrides)
    return env


_LOGGERS = ("", "httpx", "httpcore", "apscheduler", "alembic")


@contextmanager
def _logging_restored() -> Iterator[None]:
    # The CLI's callback points the root logger at the runner's stderr, which is closed after the run.
    saved = [(name, logging.getLogger(name).level, list(logging.getLogger(name).handlers)) for name in _LOGGERS]
    try:
        yield
    finally:
        for name, level, handlers in saved:
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.handlers[:] = handlers


def invoke(args: Sequence[str], *, env: Mapping[str, str | None], cwd: Path,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``dialer ARGS`` in this process (Typer's CliRunner) with ``env`` laid over the environment and ``cwd``
    as the working directory. Returns what a subprocess run would: exit code, stdout, stderr.

    An exception the command does not handle propagates (it would have been a traceback for the user)."""
    from dialer.cli import app

    runner = CliRunner()
    with _logging_restored(), chdir(cwd):
        result = runner.invoke(app, list(args), env=dict(env), input=input, catch_exceptions=False,
                               prog_name="dialer")
    return subprocess.CompletedProcess(["dialer", *args], result.exit_code, result.stdout, result.stderr)


class Cli:
    """``cli("campaign", "list")``: the `dialer` command in-process over one test's database and directory."""

    def __init__(self, cwd: Path, env: dict[str, str | None]) -> None:
        self.cwd = cwd
        self.env = env

    @property
    def database_url(self) -> str:
        url = self.env.get("DIALER_DATABASE_URL")
        assert url is not None
        return url

    def __call__(self, *args: str, env: Mapping[str, str | None] | None = None,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        return invoke(args, env={**self.env, **(env or {})}, cwd=self.cwd, input=input)

    def ok(self, *args: str, **kw: Any) -> str:
        """Run a command that must succeed; its stdout."""
        res = self(*args, **kw)
        assert res.returncode == 0, f"dialer {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
        return res.stdout


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """The `dialer` command in-process: cwd tmp_path, database tmp_path/dialer.db, no ZADARMA_/DIALER_ settings or
    config file from the caller; COLUMNS=120 so tables are laid out as on a wide terminal."""
    return Cli(tmp_path, clean_env(DIALER_DATABASE_URL=f"sqlite:///{tmp_path / 'dialer.db'}", COLUMNS="120"))


# -- a database and simulators ---------------------------------------------------------------------------

@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "dialer.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[Engine]:
    """A real SQLite database file (tmp_path/dialer.db) with the schema, disposed of afterwards."""
    from dialer.db import open_database

    engine = open_database(f"sqlite:///{db_path}")
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def start_simulator() -> Iterator[Callable[..., RunningSimulator]]:
    """``start_simulator(scenario, time_scale=20, ...)``: a simulator on a free port (signing with KEY/SECRET unless
    told otherwise), stopped at the end of the test. Takes :func:`run_simulator`'s arguments."""
    from dialer.sim.harness import run_simulator

    with ExitStack() as stack:

        def start(*args: Any, **kw: Any) -> RunningSimulator:
            kw.setdefault("key", KEY)
            kw.setdefault("secret", SECRET)
            return stack.enter_context(run_simulator(*args, **kw))

        yield start


@pytest.fixture
def simulator(start_simulator: Callable[..., RunningSimulator]) -> RunningSimulator:
    """The default scenario in real time, signing with KEY/SECRET."""
    return start_simulator()


def small_world(*, seed: int, agents: int, **overrides: Any) -> Scenario:
    """A small simulated world for in-process engine + reconciler tests: no webhooks, statistics 30 s late;
    ``overrides`` replace (or, for tables, update) sections of it."""
    from dialer.sim.scenario import Scenario

    d: dict[str, Any] = {
        "seed": seed,
        "timezone": "Europe/London",
        "pbx_number": PBX_NUMBER,
        "agents": {"count": agents},
        "calls": {"answer_probability": 0.5, "p_busy": 0.2, "p_failed": 0.05, "p_unallocated": 0.0,
                  "ring_time": {"dist": "uniform", "low": 3, "high": 8}, "max_ring_s": 20,
                  "talk_time": {"dist": "uniform", "low": 20, "high": 60}},
        "statistics": {"lag_s": 30},
        "webhooks": {"profile": "none"},
    }
    for key, value in overrides.items():
        d[key] = {**d.get(key, {}), **value} if isinstance(value, dict) else value
    return Scenario.from_dict(d)
