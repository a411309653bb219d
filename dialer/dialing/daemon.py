"""`dialer run`: the long-running process. Wiring only: jobs, the webhook server, signals, shutdown.

Jobs are built from the database at start-up and kept in sync with it (a campaign started from the CLI
gets its pacing job within seconds); nothing is pickled. SIGTERM or Ctrl-C stops new calls at once, lets
in-flight requests finish, marks any still unanswered as uncertain, and exits within 10 seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor as JobPool
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine as DbEngine
from sqlmodel import col, func, select

from dialer.agents.presence import campaigns_with_agents
from dialer.contention import is_disconnect
from dialer.db import open_database, session_scope
from dialer.dialing.daemon_lock import DaemonLock, acquire_daemon_lock
from dialer.dialing.disk import DiskPause, is_disk_full
from dialer.dialing.engine import Engine, EngineConfig
from dialer.dialing.status import STATUS_KEY, DaemonState
from dialer.kv import get_value, put_value
from dialer.logs import log_event
from dialer.models import Attempt, Campaign, EventLog, utcnow
from dialer.outcomes.reconcile import ReconcileConfig, Reconciler
from dialer.outcomes.refusals import NO_MONEY_KEY, balance_decision, pause_for_refusal
from dialer.outcomes.states import LIVE_ATTEMPT_STATES, LOW_BALANCE, CampaignState
from dialer.settings import Settings
from dialer.zadarma import (
    STATISTICS,
    AuthError,
    BudgetExhausted,
    Refusal,
    Timeouts,
    ZadarmaClient,
    ZadarmaError,
)

log = logging.getLogger("dialer.daemon")


@dataclass
class DaemonConfig:
    """Every interval is a setting, so the daemon paces well against a simulator running faster than life."""

    tick_s: float = 1.0
    reconcile_every_s: float = 20.0
    balance_every_s: float = 60.0
    balance_floor: float = 0.0
    heartbeat_every_s: float = 2.0
    sync_every_s: float = 2.0
    webhooks: bool = True
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 0
    webhook_path: str = "/zadarma"
    webhook_verify: bool = True
    live_silence_s: float = 120.0
    wrapup_s: float = 0.0
    overlap_s: float = 300.0
    uncertain_grace_s: float = 900.0
    pbx_leg_grace_s: float = 300.0
    stop_timeout_s: float = 8.0
    http_read_timeout_s: float = 15.0
    until_finished: bool = False
    time_scale: float = 1.0
    max_runtime_s: float = 0.0
    api_token_ttl_s: float = 12 * 3600.0


class Daemon:
    def __init__(self, settings: Settings, config: DaemonConfig, *, db: DbEngine | None = None) -> None:
        self.settings = settings
        self.config = config
        self.db = db or open_database(settings.database_url)
        self.client = ZadarmaClient.from_settings(settings, timeouts=Timeouts(read=config.http_read_timeout_s))
        self.stop_event = threading.Event()
        self.started_at = utcnow()
        self.live: Any = None
        self.metrics: Any = None
        self.webhook_server: Any = None
        self.agent_api: Any = None
        self.webhook_app: Any = None
        self.processor: Any = None  # the webhook processor (dialer.outcomes.events), once webhooks are on
        # Servers beside the webhooks (the web console: `dialer run --web-port`), each started with the daemon
        # once its webhooks are up and returning the function that stops it.
        self.services: list[Callable[[Daemon], Callable[[], None]]] = []
        self._service_stops: list[Callable[[], None]] = []
        self.engine = Engine(self.db, self.client,
                             config=EngineConfig(tick_s=config.tick_s, time_scale=config.time_scale))
        self.reconciler = Reconciler(
            self.db,
            self.client,
            config=ReconcileConfig(
                overlap_s=config.overlap_s,
                uncertain_grace_s=config.uncertain_grace_s,
                pbx_leg_grace_s=config.pbx_leg_grace_s,
                time_scale=config.time_scale,
            ),
        )
        self.scheduler = BackgroundScheduler(
            executors={"default": JobPool(max_workers=8)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        self._last_reconcile_ok = 0.0
        self._ran_campaign = False
        self._silent_logged = False
        self._errors: list[str] = []
        # Held from run() to the end of shutdown(): one daemon per database (dialing/daemon_lock.py).
        self.lock: DaemonLock | None = None
        self._exit_code = 0
        self.disk = DiskPause()
        self.engine.hold = lambda: self.disk.paused

    # -- start and stop -----------------------------------------------------------------------------

    def run(self) -> int:
        """Raises DaemonAlreadyRunning, having touched nothing, while another daemon runs on this database."""
        # First of all: recover() below would take that daemon's in-flight calls for leftovers of a crash.
        try:
            self.lock = acquire_daemon_lock(self.db)
        except BaseException:
            self.client.close()
            raise
        self._install_signals()
        recovered = self.engine.recover()
        # One request before pacing starts teaches the budget the account's real limits and window.
        self.check_balance()
        self._start_webhooks()
        self._service_stops = [start(self) for start in self.services]
        now = datetime.now(UTC)
        self.scheduler.add_listener(self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_EXECUTED)
        self.scheduler.add_job(self.sync_jobs, "interval", seconds=self.config.sync_every_s, id="sync",
                               next_run_time=now)
        self.scheduler.add_job(self.reconcile, "interval", seconds=self.config.reconcile_every_s, id="reconcile",
                               next_run_time=now)
        self.scheduler.add_job(self.check_balance, "interval", seconds=self.config.balance_every_s, id="balance")
        self.scheduler.add_job(self.heartbeat, "interval", seconds=self.config.heartbeat_every_s, id="heartbeat",
                               next_run_time=now)
        log_event(log, logging.INFO, "daemon started", pid=os.getpid(), recovered=recovered,
                  api=self.client.base_url, live=self.live is not None)
        self.scheduler.start()
        deadline = time.monotonic() + self.config.max_runtime_s if self.config.max_runtime_s else None
        try:
            while not self.stop_event.wait(0.2):
                if deadline is not None and time.monotonic() > deadline:
                    log_event(log, logging.INFO, "maximum run time reached; stopping")
                    break
                if self.config.until_finished and self._all_done():
                    log_event(log, logging.INFO, "every campaign finished and reconciled; stopping")
                    break
        finally:
            self.shutdown()
        return self._exit_code

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, _frame: Any) -> None:
            log_event(log, logging.WARNING, "stop requested", signal=signal.Signals(signum).name)
            # Stop placing at once: the flag is checked before every claim and every send.
            self.engine.stop()
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def shutdown(self) -> None:
        if self.lock is None:  # never started: the database may be another daemon's, leave it alone
            self.client.close()
            return
        started = time.monotonic()
        self.engine.stop()
        self.stop_event.set()
        with contextlib.suppress(Exception):  # already stopped
            self.scheduler.shutdown(wait=False)
        self.engine.close(timeout=self.config.stop_timeout_s)
        # Jobs still running (a reconcile page, a balance check) get what is left of the stop budget.
        waiter = threading.Thread(target=self._wait_jobs, daemon=True)
        waiter.start()
        waiter.join(max(0.5, self.config.stop_timeout_s - (time.monotonic() - started)))
        self.engine.store_agent_seconds()
        for stop in self._service_stops:
            with contextlib.suppress(Exception):  # one service failing to stop must not keep the others up
                stop()
        if self.agent_api is not None:
            self.agent_api.close()  # ends the agents' event streams, so the server need not wait for them
        if self.webhook_server is not None:
            self.webhook_server.stop(timeout=2.0)
        if self._exit_code == 0:  # with the lock lost, the status row may be another daemon's now
            self.heartbeat(state=DaemonState.STOPPED)
        self.client.close()
        self.lock.release()
        log_event(log, logging.INFO, "daemon stopped", seconds=round(time.monotonic() - started, 2))

    def _wait_jobs(self) -> None:
        with contextlib.suppress(Exception):
            self.scheduler._executors["default"].shutdown(wait=True)

    # -- jobs -----------------------------------------------------------------------------------------

    def sync_jobs(self) -> None:
        """Give every running campaign a pacing job and drop the jobs of campaigns that stopped."""
        if self.stop_event.is_set():
            return
        running = set(self.engine.running_campaign_ids())
        self._ran_campaign = self._ran_campaign or bool(running)
        existing = {int(j.id.split(":")[1]) for j in self.scheduler.get_jobs() if j.id.startswith("pace:")}
        if self.live is not None:
            self._configure_live(running)
        for cid in running - existing:
            self.scheduler.add_job(self.engine.tick, "interval", seconds=self.config.tick_s, args=[cid],
                                   id=f"pace:{cid}", next_run_time=datetime.now(UTC))
            log_event(log, logging.INFO, "pacing campaign", campaign_id=cid)
        for cid in existing - running:
            self.scheduler.remove_job(f"pace:{cid}")
            log_event(log, logging.INFO, "stopped pacing campaign", campaign_id=cid)

    def _configure_live(self, campaign_ids: set[int]) -> None:
        """Tell the live state which agents each running campaign has (they may change with `campaign set`).
        A campaign with agent sessions is the engine's to sync, every tick (dialer.dialing.observing)."""
        with session_scope(self.db, write=False) as s:
            campaigns = s.exec(select(Campaign).where(col(Campaign.id).in_(campaign_ids))).all()
            teams = campaigns_with_agents(s, campaign_ids)
        now = time.time()
        for c in campaigns:
            if c.id not in teams:
                self.live.configure_campaign(c.id, extensions=tuple(c.agent_extensions), agents=c.agents, now=now)

    def tick_now(self, campaign_id: int) -> None:
        """Something pacing cares about happened (an answer, an end): tick now, not at the next second."""
        job = self.scheduler.get_job(f"pace:{campaign_id}")
        if job is not None and not self.stop_event.is_set():
            job.modify(next_run_time=datetime.now(UTC))

    def reconcile(self) -> None:
        if self.stop_event.is_set():
            return
        result = self.reconciler.run_once(stop=self.stop_event)
        if not result.incomplete:
            self._last_reconcile_ok = time.time()

    def check_balance(self) -> None:
        reserve = self.engine.config.general_reserve
        if self.stop_event.is_set():
            return
        try:
            # Never the window's last requests: another program on the key may already have taken them.
            balance = float(self.client.balance(wait_for_budget=False, reserve=reserve).balance)
        except BudgetExhausted:
            return  # checked again at the next interval
        except AuthError as exc:
            # The key every callback would use is refused: pause before a single contact is tried.
            with session_scope(self.db) as s:
                paused = pause_for_refusal(s, 0, Refusal.AUTH, exc.message, utcnow())
            if paused:
                log_event(log, logging.ERROR, "campaigns paused: Zadarma refused the API key", campaigns=paused)
            self._note_error(f"balance check failed: {exc}")
            return
        except ZadarmaError as exc:
            self._note_error(f"balance check failed: {exc}")
            return
        floor = self.config.balance_floor
        with session_scope(self.db) as s:
            # After Zadarma refused a callback for money, "recovered" means above the balance it refused at.
            mark = get_value(s, NO_MONEY_KEY)
            decision = balance_decision(balance, floor, mark)
            if decision.mark != mark:
                put_value(s, NO_MONEY_KEY, decision.mark)
            if decision.action == "pause":
                for c in s.exec(select(Campaign).where(col(Campaign.state) == CampaignState.RUNNING)).all():
                    c.state, c.pause_reason, c.updated_at = CampaignState.PAUSED, f"{LOW_BALANCE}: {balance:.2f} < {floor:.2f}", utcnow()
                    s.add(c)
                    s.add(EventLog(campaign_id=c.id, level="warning", kind="low_balance", message=c.pause_reason))
                    log_event(log, logging.WARNING, "campaign paused: balance below floor", campaign=c.name,
                              balance=balance, floor=floor)
            elif decision.action == "resume":
                for c in s.exec(select(Campaign).where(col(Campaign.state) == CampaignState.PAUSED)).all():
                    if (c.pause_reason or "").startswith(LOW_BALANCE):
                        c.state, c.pause_reason, c.updated_at = CampaignState.RUNNING, None, utcnow()
                        s.add(c)
                        s.add(EventLog(campaign_id=c.id, kind="resumed", message=f"balance {balance:.2f} recovered"))
                        log_event(log, logging.INFO, "campaign resumed: balance recovered", campaign=c.name)
            put_value(s, "daemon:balance", {"balance": balance, "at": utcnow().isoformat()})

    def heartbeat(self, state: DaemonState = DaemonState.RUNNING) -> None:
        if state == DaemonState.RUNNING and self.lock is not None and not self.lock.held():
            self._lock_lost()
            return
        self.engine.store_agent_seconds()
        if self.processor is not None:
            from dialer.outcomes.refold import refold_pending

            refold_pending(self.processor)
        live_now = self.live is not None and not self._live_silent()
        status: dict[str, Any] = {
            "pid": os.getpid(),
            "state": state,
            "started_at": self.started_at.isoformat(),
            "updated_at": utcnow().isoformat(),
            "api_url": self.client.base_url,
            "budget": self.client.budget.snapshot(),
            "live": live_now,
            "errors": self._errors[-5:],
            "config": {k: v for k, v in asdict(self.config).items() if "secret" not in k},
        }
        if self.live is not None:
            status["live_state"] = self.live.snapshot()
        with session_scope(self.db) as s:
            put_value(s, STATUS_KEY, status)

    # -- webhooks and live state ---------------------------------------------------------------------

    def _start_webhooks(self) -> None:
        if not self.config.webhooks or not self.config.webhook_port:
            log_event(log, logging.WARNING,
                      "running without real-time events: no webhook port configured; outcomes come from "
                      "statistics only (set --webhook-port and point Zadarma's PBX notifications at it)")
            return
        from dialer.agents.api import AgentApi
        from dialer.asgi_thread import ServerThread
        from dialer.dialing.live import LiveState
        from dialer.metrics import Metrics
        from dialer.outcomes.webhook_app import create_webhook_app

        self.metrics = Metrics(budget=self.client.budget, db=self.db)
        self.live = LiveState(wrapup_s=self.config.wrapup_s)
        self.live.subscribe(self.tick_now)
        self.agent_api = AgentApi(self.db, token_ttl_s=self.config.api_token_ttl_s, on_team_change=self.team_changed)
        app = create_webhook_app(
            self.db,
            secret=self.settings.zadarma_secret.get_secret_value(),
            live=self.live,
            path=self.config.webhook_path,
            verify=self.config.webhook_verify,
            metrics=self.metrics,
            time_scale=self.config.time_scale,
            routes=[self.agent_api.mount("/api")],
        )
        self.agent_api.attach(app.state.processor)
        self.webhook_app = app
        self.processor = app.state.processor
        self.webhook_server = ServerThread(app, self.config.webhook_host, self.config.webhook_port).start()
        self.engine.live = self.live
        self.engine.live_observer = self._live_observation
        log_event(log, logging.INFO, "webhook server listening",
                  url=f"{self.webhook_server.url}{self.config.webhook_path}")

    def team_changed(self, campaign_ids: Collection[int]) -> None:
        """An agent changed their presence through the API (``dialer.agents.api``): the live state hears it now,
        not at the next tick, and the campaigns' pacing ticks at once."""
        from dialer.dialing.observing import read_team, team_members

        now = time.time()
        with session_scope(self.db, write=False) as s:
            campaigns = s.exec(select(Campaign).where(col(Campaign.id).in_(list(campaign_ids)))).all()
        for c in campaigns:
            assert c.id is not None
            team = read_team(self.db, c.id, datetime.fromtimestamp(now, UTC))
            if team is not None and self.live is not None:
                self.live.sync_team(c.id, team_members(team), wrapup_s=c.wrapup_s, now=now)
            self.tick_now(c.id)

    def _live_silent(self) -> bool:
        return bool(self.live.is_silent(time.time(), self.config.live_silence_s))

    def _live_observation(self, campaign: Campaign, now: float) -> Any:
        """The live view while webhooks flow; None (fall back to statistics) when they fall silent."""
        if self.live is None:
            return None
        if self._live_silent():
            # Before the first event the live state counts as silent; only a silence period after the daemon
            # started is news (until then pacing quietly uses statistics, as it would anyway).
            up_s = time.time() - self.started_at.timestamp()
            if not self._silent_logged and up_s >= self.config.live_silence_s:
                log_event(log, logging.WARNING, "no webhook events lately: pacing from statistics only",
                          silence_s=self.config.live_silence_s)
                self._silent_logged = True
            return None
        if self._silent_logged:
            log_event(log, logging.INFO, "webhook events flowing again: pacing from live state")
            self._silent_logged = False
        self._heal_live(int(campaign.id or 0), now)
        return self.live.observation(campaign, now)

    def _heal_live(self, campaign_id: int, now: float) -> None:
        """Calls the live state still has in progress whose attempt the database says is over (their end event was
        lost; the statistics or another source completed them) are closed, so pacing never counts a phantom."""
        ids = self.live.live_attempts(campaign_id)
        if not ids:
            return
        with session_scope(self.db, write=False) as s:
            over = s.exec(
                select(Attempt.id).where(col(Attempt.id).in_(ids), col(Attempt.state).not_in(LIVE_ATTEMPT_STATES))
            ).all()
        closed = self.live.close_calls([int(a) for a in over if a is not None], now)
        if closed:
            log_event(log, logging.INFO, "live calls closed from the database (their end events were lost)",
                      campaign_id=campaign_id, calls=closed)

    # -- helpers -------------------------------------------------------------------------------------

    def _all_done(self) -> bool:
        with session_scope(self.db, write=False) as s:
            running = s.exec(select(func.count()).select_from(Campaign).where(col(Campaign.state) == CampaignState.RUNNING)).one()
            live = s.exec(
                select(func.count()).select_from(Attempt).where(col(Attempt.state).in_(LIVE_ATTEMPT_STATES))
            ).one()
        # Until a campaign has run in this process there is nothing to finish: wait for one to be started.
        return running == 0 and live == 0 and self._ran_campaign and self._last_reconcile_ok > 0

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_EXECUTED:
            if event.job_id == "heartbeat" and self.disk.wrote():
                log_event(log, logging.WARNING, "disk space is back: dialling resumes")
        elif event.code == EVENT_JOB_MISSED:
            log_event(log, logging.INFO, "job ran late", job=event.job_id)
        elif event.exception is not None and is_disk_full(event.exception):
            count = self.disk.failed(time.monotonic())
            if count is not None:  # one line a minute, not a traceback a tick
                self._note_error(f"disk full: dialling paused until space returns ({count} failed writes since "
                                 f"the last line; database {self.config_db_hint()})")
        elif event.exception is not None and is_disconnect(event.exception):
            # A database restart: one line; the job runs again at its next interval on a fresh connection.
            self._note_error(f"{event.job_id}: database connection lost; it runs again at its next interval")
        elif event.exception is not None:
            self._note_error(f"{event.job_id}: {type(event.exception).__name__}: {event.exception}")
            log.error("job %s failed", event.job_id, exc_info=event.exception)

    def config_db_hint(self) -> str:
        """Where the database is, for the disk-full line (the URL without a password)."""
        return self.db.url.render_as_string(hide_password=True)

    def _lock_lost(self) -> None:
        """Another daemon may be running on this database now (our lock file was replaced, or the PostgreSQL
        session holding the lock died and another daemon took it): stop placing at once and exit non-zero."""
        if self._exit_code:
            return
        self._exit_code = 1
        log_event(log, logging.ERROR, "lost the one-daemon-per-database lock; stopping")
        self.engine.stop()
        self.stop_event.set()

    def _note_error(self, message: str) -> None:
        self._errors.append(f"{utcnow().isoformat(timespec='seconds')} {message}")
        self._errors = self._errors[-20:]
        log_event(log, logging.WARNING, message)


def run_daemon(settings: Settings, config: DaemonConfig, *, on_ready: Callable[[Daemon], None] | None = None) -> int:
    settings.require_credentials()
    if config.webhooks and config.webhook_port:
        from dialer.asgi_thread import check_listen

        check_listen(config.webhook_host, config.webhook_port, "--webhook-port / DIALER_WEBHOOK_PORT")
    daemon = Daemon(settings, config)
    if on_ready is not None:
        on_ready(daemon)
    return daemon.run()


__all__ = ["STATISTICS", "Daemon", "DaemonConfig", "run_daemon"]
