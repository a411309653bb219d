"""`dialer run`, `dialer status` and `dialer reconcile`: the daemon and what it is doing.

The daemon, the database layer, the settings and Rich are imported inside each command, not when the CLI starts.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

from dialer.commands.common import EXIT_API, EXIT_CONFIG, EXIT_DAEMON_RUNNING, EXIT_ERROR, fail, print_json

if TYPE_CHECKING:
    from rich.table import Table


def run(
    tick: float = typer.Option(1.0, "--tick", help="Seconds between pacing decisions."),
    reconcile_every: float = typer.Option(20.0, "--reconcile-every", help="Seconds between statistics pulls."),
    balance_every: float = typer.Option(60.0, "--balance-every", help="Seconds between balance checks."),
    heartbeat_every: float = typer.Option(2.0, "--heartbeat-every", help="Seconds between status updates."),
    balance_floor: float = typer.Option(0.0, "--balance-floor", help="Pause campaigns while the balance is below this."),
    webhook_port: int = typer.Option(None, "--webhook-port", help="Serve PBX webhooks on this port (0 = off). "
                                     "Default: DIALER_WEBHOOK_PORT."),
    webhook_host: str = typer.Option(None, "--webhook-host", help="Address to listen on. Default: DIALER_WEBHOOK_HOST."),
    webhook_path: str = typer.Option(None, "--webhook-path", help="URL path of the webhook. Default: /zadarma."),
    web_port: int = typer.Option(None, "--web-port", help="Serve the web console (agent desk, wallboard) on this "
                                 "port (0 = off). Default: DIALER_WEB_PORT (off)."),
    web_host: str = typer.Option(None, "--web-host", help="Address the console listens on. Default: "
                                 "DIALER_WEB_HOST (127.0.0.1)."),
    no_verify: bool = typer.Option(False, "--no-verify-webhooks", help="Accept unsigned webhooks (unsafe)."),
    wrapup: float = typer.Option(0.0, "--wrapup", help="Seconds an agent needs after a call before the next."),
    uncertain_grace: float = typer.Option(900.0, "--uncertain-grace",
                                          help="Least seconds before an uncertain callback not in the statistics "
                                          "counts as never placed; the statistics must also cover its time (rows "
                                          "for later calls, plus the lag and longest call seen)."),
    pbx_leg_grace: float = typer.Option(300.0, "--pbx-leg-grace", help="Seconds to wait for a PBX leg row."),
    silence: float = typer.Option(120.0, "--silence", help="Webhook silence (s) after which pacing falls back "
                                  "to statistics."),
    until_finished: bool = typer.Option(False, "--until-finished", help="Exit when every campaign has finished "
                                        "and been reconciled."),
    max_runtime: float = typer.Option(0.0, "--max-runtime", help="Exit after this many seconds (0 = never)."),
    time_scale: float = typer.Option(1.0, "--time-scale", help="Only against `dialer sim serve --time-scale X`: "
                                     "the same X, so agent time is counted in the simulated world's seconds."),
) -> None:
    """Run the dialer daemon: pace every running campaign, reconcile, serve webhooks and the agents' API (/api on
    the webhook port; its OpenAPI schema at /api/openapi.json).

    Stops cleanly on Ctrl-C or SIGTERM (within 10 s, nothing lost).

    One daemon per database: while one runs, another `dialer run` on it exits at once with code 7, naming its pid and host.

    With --web-port the web console runs beside it on its own port: the agents' desk at /agent and the
    supervisors' wallboard at / (logins: `dialer user add`).

    Example: dialer -v run --webhook-port 8080 --web-port 8090
    """
    from dialer.db import DatabaseVersionError
    from dialer.dialing.daemon import DaemonConfig
    from dialer.dialing.daemon_lock import DaemonAlreadyRunning
    from dialer.settings import ConfigError, load_settings
    from dialer.web.serve import run_with_console

    try:
        settings = load_settings()
        config = DaemonConfig(
            tick_s=tick,
            reconcile_every_s=reconcile_every,
            balance_every_s=balance_every,
            balance_floor=balance_floor,
            heartbeat_every_s=heartbeat_every,
            http_read_timeout_s=settings.http_timeout_s,
            api_token_ttl_s=settings.api_token_ttl_s,
            webhook_port=settings.webhook_port if webhook_port is None else webhook_port,
            webhook_host=webhook_host or settings.webhook_host,
            webhook_path=webhook_path or settings.webhook_path,
            webhook_verify=settings.webhook_verify and not no_verify,
            wrapup_s=wrapup,
            uncertain_grace_s=uncertain_grace,
            pbx_leg_grace_s=pbx_leg_grace,
            live_silence_s=silence,
            until_finished=until_finished,
            max_runtime_s=max_runtime,
            time_scale=time_scale,
        )
        code = run_with_console(settings, config, web_host or settings.web_host,
                                settings.web_port if web_port is None else web_port)
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    except DatabaseVersionError as exc:
        fail(str(exc), EXIT_ERROR)
    except DaemonAlreadyRunning as exc:
        fail(str(exc), EXIT_DAEMON_RUNNING)
    raise typer.Exit(code)


def status(
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh every 2 seconds until Ctrl-C."),
) -> None:
    """What the daemon is doing now: campaigns, why each is or is not dialling, calls, agents, budget, errors.

    Reads the database, so it works from any shell while `dialer run` is running.

    Example: dialer status --watch
    """
    from rich.console import Console
    from rich.live import Live

    from dialer.db import DatabaseVersionError, open_database
    from dialer.dialing.status import daemon_status
    from dialer.settings import ConfigError, load_settings

    console = Console()
    try:
        settings = load_settings()
        db = open_database(settings.database_url)
    except (ConfigError, DatabaseVersionError) as exc:
        fail(str(exc), EXIT_CONFIG)
    # Times in words in the operator's zone when DIALER_TIMEZONE is set, else in each campaign's.
    tz = settings.timezone or None
    if as_json:
        print_json(daemon_status(db, tz))
        return
    if not watch:
        console.print(_status_table(daemon_status(db, tz)))
        return
    with Live(_status_table(daemon_status(db, tz)), console=console, refresh_per_second=1) as live:
        try:
            while True:
                time.sleep(2)
                live.update(_status_table(daemon_status(db, tz)))
        except KeyboardInterrupt:
            pass


def _status_table(st: dict[str, object]) -> Table:
    from rich.table import Table

    daemon = st.get("daemon") or {}
    assert isinstance(daemon, dict)
    title = f"daemon: {daemon.get('state', 'not running')}"
    if daemon.get("age_s") is not None:
        title += f" (last heartbeat {daemon['age_s']:.0f}s ago, pid {daemon.get('pid')})"
    table = Table(title=title, caption_justify="left")
    for col_name in ("campaign", "state", "due now", "due later", "ringing", "waiting", "talking", "calls",
                     "answered", "abandoned", "abandon %"):
        table.add_column(col_name, justify="right" if col_name not in ("campaign", "state") else "left")
    campaigns = st.get("campaigns") or []
    assert isinstance(campaigns, list)
    # Under the table, one line per campaign: why it is or is not dialling, and when the waiting ones fall due.
    lines: list[str] = []
    for c in campaigns:
        answered = c.get("answered", 0)
        rate = f"{100 * c.get('abandoned', 0) / answered:.1f}" if answered else "-"
        table.add_row(c["name"], c["state"], f"{c.get('due_now', 0):,}", f"{c.get('due_later', 0):,}",
                      str(c.get("ringing", 0)), str(c.get("waiting", "-")), str(c.get("talking", "-")),
                      f"{c.get('calls_placed', 0):,}", f"{answered:,}", f"{c.get('abandoned', 0):,}", rate)
        why = c.get("why") or {}
        line = f"{c['name']}: {why.get('text', '')}"
        if c.get("due_later_text"):
            line += f"; due later: {c['due_later_text']}"
        if c.get("agents"):
            line += "; agents: " + ", ".join(f"{n} {state}" for state, n in c["agents"].items() if n)
        if c.get("callbacks_scheduled"):
            line += f"; callbacks: {c['callbacks_due']} due of {c['callbacks_scheduled']} scheduled"
        lines.append(line)
    budget = daemon.get("budget") or {}
    if isinstance(budget, dict) and budget:
        lines.append("budget: " + ", ".join(
            f"{g} {int(b['remaining'])}/{int(b['limit'])} (reset {b['reset_in_s']:.0f}s)" for g, b in budget.items()
        ))  # fmt: skip
        errors = st.get("errors") or []
        if isinstance(errors, list) and errors:
            lines.append("last errors:\n" + "\n".join(str(e) for e in errors[-5:]))
    table.caption = "\n".join(lines) or None
    return table


def reconcile(
    since: datetime = typer.Option(None, "--since", formats=["%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"],
                                   help="Re-read statistics from this UTC time (default: since the watermark)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Pull Zadarma's PBX statistics and match them to our calls (the record of truth).

    Safe to run any time, also while the daemon runs: re-reading changes nothing.

    Example: dialer reconcile --since 2026-11-01
    """
    from rich.console import Console

    from dialer.db import DatabaseVersionError, open_database
    from dialer.outcomes.reconcile import Reconciler
    from dialer.settings import ConfigError, load_settings
    from dialer.zadarma import ZadarmaClient, ZadarmaError

    console = Console()
    try:
        settings = load_settings()
        db = open_database(settings.database_url)
        client = ZadarmaClient.from_settings(settings)
    except (ConfigError, DatabaseVersionError) as exc:
        fail(str(exc), EXIT_CONFIG)
    with client:
        try:
            with console.status("reading statistics (3 requests a minute)..."):
                result = Reconciler(db, client, wait_for_budget=True).run_once(
                    since=since.replace(tzinfo=UTC) if since else None
                )
        except ZadarmaError as exc:
            fail(str(exc), EXIT_API)
    data = result.__dict__
    if as_json:
        typer.echo(json.dumps(data, default=str, indent=2))
    else:
        _print_reconcile(console, result)
    if result.errors:  # e.g. a wrong key or secret: a script must not take this run for a reconcile
        fail(f"the statistics could not be read: {result.errors[0]}", EXIT_API)


def _print_reconcile(console: Any, result: Any) -> None:
    console.print(
        f"statistics requests: {result.requests}, rows read: {result.rows_fetched:,} ({result.rows_new:,} new), "
        f"attempts completed: {result.completed:,}, uncertain resolved: {result.resolved_uncertain:,}"
        + (" (incomplete: run again to fetch the rest)" if result.incomplete else "")
    )
    for err in result.errors[1:]:
        console.print(f"[yellow]warning:[/] {err}")
