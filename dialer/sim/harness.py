"""Running the simulator: its configuration (scenario, keys, time scale, webhook URL, faults) and serving it, in a
background thread for tests and the demo (:func:`run_simulator`) or in its own process (``dialer sim serve``
serves :func:`create_app` with uvicorn).

Invariant: a simulator started by :func:`run_simulator` is stopped and its thread joined when the block ends,
held (timeout-after-processing) requests included, so no test leaves a server behind.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
from starlette.applications import Starlette

from dialer.sim.api import ZadarmaApi, build_app
from dialer.sim.credentials import DEMO_KEY, DEMO_SECRET
from dialer.sim.scenario import Scenario, default_scenario
from dialer.sim.truth import Simulator


def create_app(
    scenario: Scenario | None = None,
    *,
    key: str = DEMO_KEY,
    secret: str = DEMO_SECRET,
    time_scale: float = 1.0,
    webhook_url: str | None = None,
    faults: dict[str, float] | None = None,
    extra_keys: dict[str, str] | None = None,
) -> Starlette:
    """A configured simulator as an ASGI app: ``faults`` are laid over the scenario's own, ``key``/``secret``
    sign the API and the webhooks, ``extra_keys`` (key -> secret) are further accounts the API accepts."""
    scenario = scenario or default_scenario()
    if faults:
        scenario = scenario.with_faults(faults)
    sim = Simulator(scenario, secret=secret, time_scale=time_scale, webhook_url=webhook_url)
    return build_app(sim, {key: secret, **(extra_keys or {})})


class RunningSimulator:
    """A simulator serving on a background thread. ``url`` is its base URL (also ``str(running)``)."""

    def __init__(self, app: Starlette, server: Any, *, key: str, secret: str) -> None:
        self._api: ZadarmaApi = app.state.api
        self._server = server
        self.url: str = server.url
        self.key = key
        self.secret = secret

    def __str__(self) -> str:
        return self.url

    def get(self, path: str) -> Any:
        return httpx.get(self.url + path, timeout=10).json()

    def calls(self) -> list[dict[str, Any]]:
        return self.get("/_sim/calls")

    def stats(self) -> dict[str, Any]:
        return self.get("/_sim/stats")

    def requests(self, path_prefix: str = "") -> list[dict[str, Any]]:
        return self.get("/_sim/requests?path_prefix=" + path_prefix)

    def wait_webhook_verified(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats()["webhooks"]["verified"]:
                return True
            time.sleep(0.02)
        return False

    def wait_calls_ended(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Every call placed so far has ended and its statistics rows are out."""
        deadline = time.monotonic() + timeout
        while True:
            calls = self.calls()
            now = time.time()
            if all(c["ended_at"] is not None and (c["stats_due_at"] or math.inf) <= now for c in calls):
                return calls
            if time.monotonic() > deadline:
                raise TimeoutError("calls still in progress")
            time.sleep(0.05)

    def release_held(self) -> None:
        """Answer every held (timeout-after-processing) request now, with a 504: a test that has seen every other
        answer arrive need not wait out a client timeout to know which requests were held."""
        self._api.release_held_threadsafe()

    def stop(self) -> None:
        self._api.release_held_threadsafe()
        self._server.stop()


@contextlib.contextmanager
def run_simulator(
    scenario: Scenario | None = None,
    *,
    key: str = DEMO_KEY,
    secret: str = DEMO_SECRET,
    time_scale: float = 1.0,
    webhook_url: str | None = None,
    faults: dict[str, float] | None = None,
    extra_keys: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[RunningSimulator]:
    """Serve a simulator on a free port for the duration of the block, then stop it and join its thread."""
    from dialer.asgi_thread import ServerThread

    app = create_app(
        scenario,
        key=key,
        secret=secret,
        time_scale=time_scale,
        webhook_url=webhook_url,
        faults=faults,
        extra_keys=extra_keys,
    )
    server = ServerThread(app, host, port).start()
    running = RunningSimulator(app, server, key=key, secret=secret)
    try:
        yield running
    finally:
        running.stop()
