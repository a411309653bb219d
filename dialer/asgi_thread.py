"""Run an ASGI app with uvicorn in a background thread: for tests, the demo and the daemon's webhook server."""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """A uvicorn server on its own thread and event loop; ``stop()`` shuts it down and joins."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning") -> None:
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(
            app, host=host, port=self.port, log_level=log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn:{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"server on {self.url} failed to start")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on {self.url} did not start in {timeout}s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)


@contextmanager
def serve(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[ServerThread]:
    server = ServerThread(app, host, port).start()
    try:
        yield server
    finally:
        server.stop()


def check_listen(host: str, port: int, setting: str) -> None:
    """Raise ``ConfigError`` (naming ``setting``) unless a server could listen on ``host:port`` now: checked before
    anything starts, so a port in use or out of range is one line, not a server thread's traceback."""
    from dialer.settings import ConfigError

    if not 0 < port <= 65535:
        raise ConfigError(f"{setting}={port}: out of range (a TCP port is 1-65535)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except socket.gaierror as exc:
        raise ConfigError(f"{setting}: cannot listen on host {host!r}: {exc.strerror}") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"{setting}={port}: port {port} on {host} is already in use (another `dialer run` or "
                "`dialer webhooks serve`?): stop it or choose another port"
            ) from None
        raise ConfigError(f"{setting}={port}: cannot listen on {host}:{port}: {exc.strerror}") from None
