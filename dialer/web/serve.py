"""Serving the console: beside the daemon (`dialer run --web-port`, sharing its agents' event feed, wrong-PIN
limiter and pacing hooks, on its own port so the webhook port can face the internet while this one stays on the
office network) or alone against the database (`dialer web`, for a second screen).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

from dialer.asgi_thread import ServerThread
from dialer.dialing.daemon import DaemonConfig, run_daemon
from dialer.logs import log_event
from dialer.settings import Settings
from dialer.web.app import Console

log = logging.getLogger("dialer.web")


def start_console(db: Engine, host: str, port: int, **console_kw: Any) -> tuple[Console, ServerThread]:
    console = Console(db, **console_kw)
    try:
        server = ServerThread(console.app, host, port).start()
    except BaseException:
        console.close()
        raise
    log_event(log, logging.INFO, "web console listening", url=server.url)
    return console, server


def daemon_service(host: str, port: int) -> Callable[[Any], Callable[[], None]]:
    """What `dialer run --web-port` adds to the daemon: the console, started once the daemon's webhooks (and its
    agents' API, whose feed and limiter it shares) are up; returns the function that stops it."""

    def start(daemon: Any) -> Callable[[], None]:
        api = daemon.agent_api
        kw: dict[str, Any] = {"token_ttl_s": daemon.config.api_token_ttl_s}
        if api is not None:
            kw.update(feed=api.feed, limiter=api.limiter, on_team_change=daemon.team_changed)
        console, server = start_console(daemon.db, host, port, **kw)
        if daemon.webhook_app is not None:
            console.attach(daemon.webhook_app.state.processor)

        def stop() -> None:
            console.close()
            server.stop(timeout=2.0)

        return stop

    return start


def run_with_console(settings: Settings, config: DaemonConfig, host: str, port: int) -> int:
    """`dialer run`: the daemon, with the console beside it when ``port`` is set (0: the daemon alone)."""
    return run_daemon(settings, config,
                      on_ready=(lambda d: d.services.append(daemon_service(host, port))) if port else None)


def serve_forever(db: Engine, host: str, port: int, stop: threading.Event | None = None) -> str:
    """`dialer web`: the console alone until Ctrl-C; returns its URL once stopped."""
    console, server = start_console(db, host, port)
    stop = stop or threading.Event()
    try:
        while not stop.wait(0.5) and server.thread.is_alive():
            pass
    except KeyboardInterrupt:
        pass
    finally:
        console.close()
        server.stop(timeout=2.0)
    return server.url
