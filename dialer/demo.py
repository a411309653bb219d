"""`dialer demo`: a whole campaign against the built-in simulator, in about a minute, with nothing to configure.

Everything runs in this process: the simulator and the daemon's webhook receiver are uvicorn servers on
background threads bound to free 127.0.0.1 ports, and the daemon runs on a worker thread. Each piece is
stopped and joined before ``run_demo`` returns, so nothing keeps running and no port stays open. The database
is a throwaway SQLite file in the demo's directory: the user's DIALER_DATABASE_URL and ZADARMA_* settings
are never read.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import Engine as DbEngine

import dialer
from dialer.asgi_thread import free_port
from dialer.db import open_database, session_scope
from dialer.demo_agents import (
    DEMO_BREAKS,
    DEMO_DESK,
    add_demo_agents,
    callbacks_text,
    dispositions_text,
    team_text,
)
from dialer.dialing.daemon import Daemon, DaemonConfig
from dialer.dialing.status import daemon_status
from dialer.models import Campaign, utcnow
from dialer.outcomes.states import CampaignState
from dialer.settings import Settings
from dialer.sim.credentials import DEMO_KEY, DEMO_SECRET
from dialer.sim.scenario import Scenario
from dialer.zadarma import GENERAL

log = logging.getLogger("dialer.demo")

CAMPAIGN = "demo"
WEBHOOK_PATH = "/zadarma"
# Sim-world minutes, divided by the time scale: long enough to show retries, short enough to finish.
RETRY_DELAYS_S = {"retry_busy": 120, "retry_no_answer": 300, "retry_failed": 60, "retry_abandoned": 600}
# After the time limit, in-flight calls get this long (wall seconds) to end and be reconciled.
DRAIN_S = 15.0

# An outbound team of twenty agents on two-minute calls. At 30x the example list (194 good numbers, up to
# three attempts each) is worked through in well under a minute and a half.
DEMO_WORLD: dict[str, Any] = {
    "name": "demo",
    "seed": 1,
    "timezone": "Europe/London",
    "pbx_number": "442037691880",
    "agents": {"count": 20, "wrapup": {"dist": "const", "value": 5}, "breaks": DEMO_BREAKS},
    # The agents log in, take breaks and save dispositions through the daemon's /api (dialer.demo_agents).
    "desk": DEMO_DESK,
    "calls": {
        "answer_probability": 0.3,
        "p_busy": 0.1,
        "p_failed": 0.02,
        "p_unallocated": 0.01,
        "ring_time": {"dist": "uniform", "low": 4, "high": 14},
        "max_ring_s": 25,
        "connect_grace_s": 2,
        "talk_time": {"dist": "lognormal", "mean": 120, "sigma": 0.6},
        # Busy and failed calls end a few world seconds in, as on a real network (and, sped up, still after
        # the daemon has registered them).
        "busy_after_s": 5,
        "failed_after_s": 3,
    },
    "statistics": {"lag_s": 30},
    "webhooks": {"profile": "full"},
}


class DemoError(Exception):
    """The demo cannot run (e.g. the example contact list is missing); the message says why."""


def example_csv() -> Path:
    """campaigns/example.csv of the source tree (the demo runs from a clone with an editable install)."""
    return Path(dialer.__file__).resolve().parent.parent / "campaigns" / "example.csv"


def demo_scenario() -> Scenario:
    return Scenario.from_dict(DEMO_WORLD, source="dialer.demo")


@dataclass
class DemoOptions:
    xlsx: Path = Path("demo-results.xlsx")
    workdir: Path | None = None
    contacts: Path | None = None
    max_seconds: float = 90.0
    time_scale: float = 30.0
    quiet: bool = False
    # Serve the web console (wallboard, agent desk) beside the daemon on this port; 0: no console.
    web_port: int = 0


@dataclass
class DemoResult:
    sim_url: str = ""
    webhook_url: str = ""
    database: Path | None = None
    xlsx: Path | None = None
    ended: str = "not started"  # "complete" | "time limit" | "interrupted"
    elapsed_s: float = 0.0
    totals: dict[str, int] = field(default_factory=dict)
    web_url: str = ""
    web_login: tuple[str, str] | None = None  # the console's supervisor login made for this demo


def demo_settings(api_url: str, db_path: Path, webhook_port: int) -> Settings:
    """Settings built field by field: no environment variable and no dialer.toml can leak into the demo."""
    return Settings.model_construct(
        zadarma_key=DEMO_KEY,
        zadarma_secret=SecretStr(DEMO_SECRET),
        zadarma_api_url=api_url,
        database_url=f"sqlite:///{db_path}",
        timezone="",
        webhook_host="127.0.0.1",
        webhook_port=webhook_port,
        webhook_path=WEBHOOK_PATH,
        webhook_verify=True,
        http_timeout_s=5.0,
    )


def daemon_config(scenario: Scenario, time_scale: float, webhook_port: int) -> DaemonConfig:
    """The daemon's intervals divided by the time scale, so it paces the sped-up world as it would a real one."""
    s = time_scale
    wrapup = scenario.wrapup
    return DaemonConfig(
        tick_s=max(0.2, 6.0 / s),
        reconcile_every_s=max(0.5, 20.0 / s),
        balance_every_s=max(2.0, 60.0 / s),
        heartbeat_every_s=0.5,
        sync_every_s=0.5,
        webhook_host="127.0.0.1",
        webhook_port=webhook_port,
        webhook_path=WEBHOOK_PATH,
        webhook_verify=True,
        live_silence_s=max(5.0, 120.0 / s),
        wrapup_s=float(getattr(wrapup, "value", 0.0) or getattr(wrapup, "mean", 0.0) or 0.0) / s,
        overlap_s=300.0,
        uncertain_grace_s=max(6.0, 300.0 / s),
        pbx_leg_grace_s=max(5.0, 60.0 / s),
        stop_timeout_s=8.0,
        http_read_timeout_s=5.0,
        time_scale=s,
    )


def create_demo_campaign(
    db: DbEngine, scenario: Scenario, contacts: Path, workdir: Path, time_scale: float
) -> Any:
    """The example campaign, matched to the simulated call centre and open at any hour of any day."""
    from dialer.ingest import campaigns as svc
    from dialer.ingest.loader import load_file

    delays = {k: f"{max(1, round(v / time_scale))}s" for k, v in RETRY_DELAYS_S.items()}
    with session_scope(db) as s:
        svc.create_campaign(
            s,
            CAMPAIGN,
            scenario.pbx_number,
            agents=scenario.agent_count,
            agent_extensions=",".join(scenario.extensions[: scenario.agent_count]),
            pacing="predictive",
            max_attempts=3,
            window_start="00:00",
            window_end="23:59",
            weekdays="mon-sun",
            default_region="GB",
            timezone=scenario.timezone,
            abandon_action="ivr_play:1",
            # Wrap-up ends with the agent's disposition, or after a wall second at the latest.
            wrapup_s=1,
            **delays,
        )
    add_demo_agents(db, scenario.extensions[: scenario.agent_count], CAMPAIGN)
    return load_file(db, contacts, CAMPAIGN, rejects_path=workdir / "example.rejects.csv")


@contextlib.contextmanager
def _logs_to(path: Path) -> Iterator[None]:
    """Route log records (info and up) to a file while the live display owns the terminal, then restore."""
    from dialer.logs import setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    with path.open("a", encoding="utf-8") as stream:
        setup_logging(1, stream=stream)
        try:
            yield
        finally:
            for h in list(root.handlers):
                root.removeHandler(h)
            for h in saved[0]:
                root.addHandler(h)
            root.setLevel(saved[1])


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM takes the same clean path as Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _progress_view(
    daemon: Daemon,
    db: DbEngine,
    campaign_id: int,
    agents: int,
    started: float,
    max_seconds: float,
    phase: str,
) -> Table:
    st = daemon_status(db)
    row: dict[str, Any] = next((c for c in st["campaigns"] if c["name"] == CAMPAIGN), {})
    busy: int | str = "-"
    ringing = row.get("ringing", 0)
    waiting = row.get("waiting")
    if daemon.live is not None:
        view = daemon.live.snapshot().get("campaigns", {})
        mine = view.get(str(campaign_id), {}) if isinstance(view, dict) else {}
        if isinstance(mine, dict) and mine:
            busy = len(mine.get("talking", [])) + int(mine.get("wrapup", 0))
            ringing, waiting = mine.get("ringing", ringing), mine.get("waiting", waiting)
    budget = daemon.client.budget.snapshot().get(GENERAL, {})
    answered, abandoned = int(row.get("answered", 0)), int(row.get("abandoned", 0))
    rate = f"{100 * abandoned / answered:.1f}%" if answered else "-"
    table = Table(
        title=f"dialer demo: campaign {CAMPAIGN!r} ({row.get('state', '?')}, {phase})",
        title_justify="left",
        show_header=False,
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("Calls placed", f"{int(row.get('calls_placed', 0)):,}")
    table.add_row("Answered", f"{answered:,}")
    table.add_row("Abandoned", f"{abandoned:,} ({rate} of answered; limit 3%)")
    table.add_row("Ringing / waiting for an agent", f"{ringing} / {waiting if waiting is not None else '-'}")
    table.add_row("Agents busy", f"{busy} of {agents}")
    table.add_row("Agents", team_text(row))
    table.add_row("Dispositions saved", dispositions_text(db, campaign_id))
    table.add_row("Callbacks", callbacks_text(db, campaign_id))
    table.add_row("Contacts still to call", f"{int(row.get('due', 0)):,}")
    if budget:
        table.add_row(
            "API budget left",
            f"{int(budget['remaining'])}/{int(budget['limit'])} "
            f"(window resets in {budget['reset_in_s']:.1f}s)",
        )
    elapsed = time.monotonic() - started
    table.add_row(
        "Elapsed",
        f"{elapsed:.0f}s"
        + (
            f" of at most {max_seconds:.0f}s"
            if elapsed <= max_seconds
            else f" (new calls stopped at {max_seconds:.0f}s)"
        ),
    )
    return table


def _campaign(db: DbEngine) -> Campaign:
    from dialer.ingest import campaigns as svc

    with session_scope(db, write=False) as s:
        return svc.get_campaign(s, CAMPAIGN)


def _pause(db: DbEngine, reason: str) -> None:
    from dialer.ingest import campaigns as svc

    with session_scope(db) as s:
        if svc.get_campaign(s, CAMPAIGN).state == CampaignState.RUNNING:
            svc.pause_campaign(s, CAMPAIGN, reason)


def _drive(
    daemon: Daemon, db: DbEngine, sim: Any, opts: DemoOptions, console: Console, agents: int, started: float
) -> str:
    """Start the daemon thread, watch it, and make sure it has stopped and been joined before returning."""
    campaign_id = int(_campaign(db).id or 0)
    failures: list[BaseException] = []

    def run_daemon() -> None:
        try:
            daemon.run()
        except BaseException as exc:  # reported by the driver, after the join
            failures.append(exc)
            with contextlib.suppress(Exception):  # stop whatever did start (a second shutdown is harmless)
                daemon.shutdown()

    thread = threading.Thread(target=run_daemon, name="dialer-daemon", daemon=True)
    ended = "complete"
    drain_until: float | None = None
    deadline = started + opts.max_seconds
    phase = "dialling"

    def view() -> Table:
        return _progress_view(daemon, db, campaign_id, agents, started, opts.max_seconds, phase)

    live: Any = (
        contextlib.nullcontext()
        if opts.quiet
        else Live(view(), console=console, refresh_per_second=4, redirect_stderr=False, redirect_stdout=False)
    )
    thread.start()
    try:
        with live:
            _start_campaign_when_webhooks_verified(sim, db, thread, lambda: daemon.webhook_server)
            # Only now: a daemon told to exit when nothing runs would otherwise exit before the start.
            daemon.config.until_finished = True
            while thread.is_alive():
                thread.join(0.25)
                now = time.monotonic()
                if drain_until is None and now >= deadline:
                    # Stop placing new calls; the daemon keeps receiving webhooks and reconciling the
                    # calls in flight, and exits by itself once none is left.
                    _pause(db, "demo time limit")
                    ended, phase, drain_until = (
                        "time limit",
                        "time limit: finishing calls in flight",
                        now + DRAIN_S,
                    )
                elif drain_until is not None and now >= drain_until:
                    break
                if not opts.quiet:
                    live.update(view())
            phase = {"complete": "all calls made", "time limit": "stopped at the time limit"}[ended]
            if not opts.quiet:
                live.update(view())
    except KeyboardInterrupt:
        ended = "interrupted"
        # Same path as SIGTERM to `dialer run`: stop placing at once, let in-flight requests finish.
        daemon.engine.stop()
    finally:
        daemon.stop_event.set()
        thread.join(30)
    if thread.is_alive():  # pragma: no cover - Daemon.shutdown is bounded; this is the belt to its braces
        raise DemoError("the daemon did not stop within 30 s")
    if failures:
        exc = failures[0]
        raise DemoError(
            f"the daemon stopped with an error: {type(exc).__name__}: {exc} (details in demo.log; "
            "keep it with --dir)"
        )
    return ended


def _final_reconcile(settings: Settings, db: DbEngine, config: DaemonConfig) -> None:
    from dialer.outcomes.reconcile import ReconcileConfig, Reconciler
    from dialer.zadarma import ZadarmaClient

    rc = ReconcileConfig(
        overlap_s=config.overlap_s,
        uncertain_grace_s=config.uncertain_grace_s,
        pbx_leg_grace_s=config.pbx_leg_grace_s,
        time_scale=config.time_scale,
    )
    with ZadarmaClient.from_settings(settings) as client:
        Reconciler(db, client, config=rc, wait_for_budget=True).run_once()


def run_demo(
    opts: DemoOptions, console: Console | None = None, on_urls: Callable[[DemoResult], None] | None = None
) -> DemoResult:
    """Run the demo; raises KeyboardInterrupt only after everything has been stopped."""
    console = console or Console()
    contacts = opts.contacts or example_csv()
    if not contacts.is_file():
        raise DemoError(
            f"contact list {contacts} not found: run the demo from a clone of the repository "
            "(pip install -e .) or pass --contacts FILE"
        )
    if opts.time_scale <= 0 or opts.max_seconds <= 0:
        raise DemoError("--time-scale and --max-seconds must be > 0")
    result = DemoResult()
    with contextlib.ExitStack() as stack:
        if opts.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dialer-demo-")))
        else:
            workdir = opts.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        stack.enter_context(_sigterm_as_interrupt())
        stack.enter_context(_logs_to(workdir / "demo.log"))
        result.database = workdir / "demo.db"
        if result.database.exists():
            raise DemoError(f"{result.database} exists from an earlier demo: use another --dir")
        _run(opts, console, contacts, workdir, result, on_urls)
    return result


def _run(
    opts: DemoOptions,
    console: Console,
    contacts: Path,
    workdir: Path,
    result: DemoResult,
    on_urls: Callable[[DemoResult], None] | None,
) -> None:
    from dialer.sim.harness import run_simulator

    scenario = demo_scenario()
    webhook_port = free_port()
    webhook_url = f"http://127.0.0.1:{webhook_port}{WEBHOOK_PATH}"
    assert result.database is not None
    db = open_database(f"sqlite:///{result.database}")
    interrupted = False
    try:
        with run_simulator(scenario, time_scale=opts.time_scale, webhook_url=webhook_url) as sim:
            result.sim_url, result.webhook_url = sim.url, webhook_url
            settings = demo_settings(sim.url, result.database, webhook_port)
            config = daemon_config(scenario, opts.time_scale, webhook_port)
            if opts.web_port:
                result.web_url, result.web_login = f"http://127.0.0.1:{opts.web_port}/", _demo_login(db)
            if on_urls is not None:
                on_urls(result)
            loaded = create_demo_campaign(db, scenario, contacts, workdir, opts.time_scale)
            if not opts.quiet:
                console.print(
                    f"Loaded {loaded.loaded} contacts from {contacts.name} "
                    f"({loaded.rejected} rejected: {', '.join(loaded.reasons) or '-'}); "
                    f"{scenario.agent_count} agents, pacing predictive, world at {opts.time_scale:g}x.",
                    highlight=False,
                )
            daemon = Daemon(settings, config, db=db)
            if opts.web_port:
                from dialer.web.serve import daemon_service

                daemon.services.append(daemon_service("127.0.0.1", opts.web_port))
            started = time.monotonic()
            try:
                result.ended = _drive(daemon, db, sim, opts, console, scenario.agent_count, started)
            except KeyboardInterrupt:
                result.ended = "interrupted"
                daemon.stop_event.set()
            interrupted = result.ended == "interrupted"
            if not interrupted:
                with (
                    console.status("reconciling with the PBX statistics...")
                    if not opts.quiet
                    else contextlib.nullcontext()
                ):
                    _final_reconcile(settings, db, config)
            result.elapsed_s = time.monotonic() - started
    finally:
        db.dispose()
    if interrupted:
        console.print("Interrupted: the simulator and the daemon are stopped.")
    _report(opts, console, result)
    if interrupted:
        raise KeyboardInterrupt


def _demo_login(db: DbEngine) -> tuple[str, str]:
    """A supervisor login for the demo's console, with a fresh password (the database is the demo's own)."""
    import secrets

    from dialer.web.users import Role, add_user

    password = secrets.token_urlsafe(12)
    with session_scope(db) as s:
        add_user(s, "demo", password, Role.SUPERVISOR, utcnow())
    return "demo", password


def _start_campaign_when_webhooks_verified(
    sim: Any, db: DbEngine, thread: threading.Thread, webhook_server: Callable[[], Any]
) -> None:
    """Start the campaign once the simulated PBX has verified the daemon's webhook URL, so every call is seen live."""
    from dialer.ingest import campaigns as svc

    deadline = time.monotonic() + 10.0
    # Polled only once the daemon's uvicorn is configured: uvicorn resets its loggers while it sets up.
    while thread.is_alive() and time.monotonic() < deadline and webhook_server() is None:
        time.sleep(0.05)
    while thread.is_alive() and time.monotonic() < deadline and not sim.stats()["webhooks"]["verified"]:
        time.sleep(0.05)
    if not sim.stats()["webhooks"]["verified"]:
        log.warning("the simulator has not verified the webhook URL; outcomes will come from statistics")
    with session_scope(db) as s:
        svc.start_campaign(s, CAMPAIGN)


def _report(opts: DemoOptions, console: Console, result: DemoResult) -> None:
    from dialer.reporting.render import render
    from dialer.reporting.reports import build_report
    from dialer.reporting.xlsx_export import export_xlsx

    assert result.database is not None
    db = open_database(f"sqlite:///{result.database}")
    try:
        report = build_report(db, CAMPAIGN)
        result.totals = {
            "calls_placed": report.calls_placed,
            "answered": report.answered,
            "connected": report.connected,
            "abandoned": report.abandoned,
            "contacts": report.contacts_total,
            "reached": report.contacts_reached,
        }
        if not opts.quiet:
            console.print()
            render(report, console)
        result.xlsx = export_xlsx(db, report, opts.xlsx)
    finally:
        db.dispose()
    verdict = {
        "complete": "every contact reached or out of attempts",
        "time limit": f"time limit of {opts.max_seconds:g}s reached",
        "interrupted": "interrupted",
    }.get(result.ended, result.ended)
    console.print(
        Text.assemble(
            ("Demo ended: ", "bold"),
            f"{verdict} after {result.elapsed_s:.0f}s. ",
            f"Results: {result.xlsx}",
        )
    )


__all__ = ["DemoError", "DemoOptions", "DemoResult", "example_csv", "run_demo"]
