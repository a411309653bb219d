"""Client behaviour against a real HTTP server: budget, 429, and retries by what is safe."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dialer.asgi_thread import ServerThread, free_port, serve
from dialer.zadarma import (
    AmbiguousError,
    AuthError,
    NotSentError,
    RejectedError,
    RetryPolicy,
    Timeouts,
    ZadarmaClient,
)
from dialer.zadarma.signing import verify_request
from tests.conftest import KEY, SECRET, wait_for

# Longer than any read timeout a test sets, so a "hang" is a timeout to the client.
HANG_S = 3.0
FAST_RETRY = RetryPolicy(max_attempts=5, initial_s=0.05, max_wait_s=0.3, jitter_s=0.05, max_total_s=20)


@dataclass
class Behaviour:
    """What the scripted server does next; tests set it and read what it saw."""

    received: list[tuple[str, float]] = field(default_factory=list)
    script: list[str] = field(default_factory=list)  # per request: ok | 429 | 500 | hang | zero | error | garbage
    headers: bool = True
    reset_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # A "hang" answers after HANG_S, or at once when this is set (the server is stopping: don't wait for it).
    release: threading.Event = field(default_factory=threading.Event)
    answered: int = 0

    def next(self) -> str:
        with self.lock:
            return self.script.pop(0) if self.script else "ok"

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.received if p == path)


def scripted_app(b: Behaviour) -> Starlette:
    async def handler(request: Request) -> Response:
        path = request.url.path
        query = request.url.query if request.method == "GET" else (await request.body()).decode()
        if not verify_request(path, query, request.headers.get("authorization"), KEY, SECRET):
            return JSONResponse({"status": "error", "message": "Not authorized"}, status_code=401)
        b.received.append((path, time.time()))
        action = b.next()
        headers = {}
        if b.headers:
            reset = b.reset_at or math.ceil(time.time()) + 60
            headers = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "50", "X-RateLimit-Reset": str(int(reset))}
        if action == "zero":
            headers["X-RateLimit-Remaining"] = "0"
        if action == "429":
            return JSONResponse({"status": "error", "message": "You exceeded the rate limit"}, 429,
                                headers={**headers, "Retry-After": "1", "X-RateLimit-Remaining": "0"})
        if action == "500":
            return JSONResponse({"status": "error", "message": "Internal error"}, 500, headers=headers)
        if action == "hang":
            deadline = time.monotonic() + HANG_S
            while not b.release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        if action == "error":
            return JSONResponse({"status": "error", "message": "Check phone number"}, 200, headers=headers)
        if action == "garbage":
            return Response("<html>oops", 200, headers=headers)
        if path == "/v1/request/callback/":
            params = dict(request.query_params)
            return JSONResponse({"status": "success", "from": params["from"], "to": params["to"],
                                 "time": int(time.time())}, headers=headers)
        return JSONResponse({"status": "success", "balance": 10.34, "currency": "USD"}, headers=headers)

    async def counted(request: Request) -> Response:
        try:
            return await handler(request)
        finally:
            with b.lock:
                b.answered += 1

    return Starlette(routes=[Route("/{rest:path}", counted, methods=["GET", "POST", "PUT"])])


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    b = Behaviour()
    with serve(scripted_app(b)) as srv:
        yield srv.url, b
        b.release.set()  # a request still hanging must not hold up the server's shutdown


def make_client(url: str, **kw: Any) -> ZadarmaClient:
    kw.setdefault("retry", FAST_RETRY)
    return ZadarmaClient(KEY, SECRET, url, **kw)


def test_balance_ok(server: tuple[str, Behaviour]) -> None:
    url, b = server
    with make_client(url) as client:
        assert float(client.balance().balance) == 10.34
    assert b.count("/v1/info/balance/") == 1


def test_never_sends_while_budget_is_zero_and_waits_for_reset(server: tuple[str, Behaviour]) -> None:
    url, b = server
    b.reset_at = math.ceil(time.time()) + 2
    b.script = ["zero"]
    with make_client(url) as client:
        client.balance()
        assert client.budget.available("general") == 0
        client.balance()
    (_, _first), (_, second) = b.received
    assert second >= b.reset_at, f"sent {b.reset_at - second:.2f}s before the reset"


def test_429_is_waited_out_and_resent(server: tuple[str, Behaviour]) -> None:
    url, b = server
    b.script = ["429"]
    with make_client(url) as client:
        assert client.balance().currency == "USD"
        assert client.stats.rate_limited == 1
    (_, first), (_, second) = b.received
    assert second - first >= 0.95


def test_429_on_a_callback_is_resent_because_it_did_nothing(server: tuple[str, Behaviour]) -> None:
    url, b = server
    b.script = ["429"]
    with make_client(url) as client:
        result = client.callback("100", "+442037691881")
    assert result.to == "442037691881"
    assert b.count("/v1/request/callback/") == 2


def test_connection_refused_callback_is_retried() -> None:
    b = Behaviour()
    port = free_port()
    holder: dict[str, Any] = {}
    # Generous: the server starts only after the client has been refused once, however long that takes.
    retry = RetryPolicy(max_attempts=200, initial_s=0.2, max_wait_s=0.5, jitter_s=0.05, max_total_s=60)
    client = ZadarmaClient(KEY, SECRET, f"http://127.0.0.1:{port}", retry=retry)

    def late_start() -> None:
        wait_for(lambda: client.stats.retries >= 1, what="the client to be refused")
        holder["srv"] = ServerThread(scripted_app(b), port=port).start()

    starter = threading.Thread(target=late_start)
    starter.start()
    try:
        with client:
            result = client.callback("100", "442037691881")
            assert client.stats.retries >= 1
        assert result.to == "442037691881"
        assert b.count("/v1/request/callback/") == 1
    finally:
        starter.join()
        holder["srv"].stop()


def test_connection_refused_gives_up_as_not_sent() -> None:
    port = free_port()
    retry = RetryPolicy(max_attempts=2, initial_s=0.01, max_wait_s=0.02, jitter_s=0, max_total_s=5)
    with ZadarmaClient(KEY, SECRET, f"http://127.0.0.1:{port}", retry=retry) as client, pytest.raises(NotSentError):
        client.balance()


def test_callback_timeout_after_processing_is_ambiguous_and_not_resent(server: tuple[str, Behaviour]) -> None:
    url, b = server
    b.script = ["hang"]
    with make_client(url, timeouts=Timeouts(read=0.5)) as client:
        with pytest.raises(AmbiguousError) as info:
            client.callback("100", "442037691881")
        assert "may have been processed" in str(info.value)
    # The client is closed: once the server has answered everything it received, nothing more can arrive.
    b.release.set()
    wait_for(lambda: b.answered == len(b.received), what="the server to answer what it received")
    assert b.count("/v1/request/callback/") == 1


def test_callback_5xx_is_ambiguous_and_not_resent(server: tuple[str, Behaviour]) -> None:
    url, b = server
    b.script = ["500"]
    with make_client(url) as client, pytest.raises(AmbiguousError):
        client.callback("100", "442037691881")
    assert b.count("/v1/request/callback/") == 1


def test_reads_retry_ambiguous_failures(server: tuple[str, Behaviour]) -> None:
    url, b = server
    b.script = ["hang", "500", "garbage"]
    with make_client(url, timeouts=Timeouts(read=0.5)) as client:
        assert client.balance().currency == "USD"
    assert b.count("/v1/info/balance/") == 4


def test_rejection_is_not_retried(server: tuple[str, Behaviour]) -> None:
    url, b = server
    b.script = ["error"]
    with make_client(url) as client, pytest.raises(RejectedError, match="Check phone number"):
        client.callback("100", "abc")
    assert b.count("/v1/request/callback/") == 1


def test_wrong_secret_is_an_auth_error(server: tuple[str, Behaviour]) -> None:
    url, _ = server
    with ZadarmaClient(KEY, "x" * 20, url, retry=FAST_RETRY) as client, pytest.raises(AuthError):
        client.balance()


def test_works_without_rate_limit_headers_by_counting_locally(server: tuple[str, Behaviour]) -> None:
    url, b = server
    b.headers = False
    with make_client(url) as client:
        before = client.budget.available("general")
        client.balance()
        client.balance()
        assert client.budget.available("general") == before - 2


def test_secret_not_in_repr_logs_or_errors(server: tuple[str, Behaviour], caplog: pytest.LogCaptureFixture) -> None:
    url, b = server
    b.script = ["500", "429", "hang"]
    caplog.set_level(logging.DEBUG)
    with make_client(url, timeouts=Timeouts(read=0.3)) as client:
        assert SECRET not in repr(client)
        client.balance()
        with pytest.raises(AmbiguousError) as info:
            b.script = ["500"]
            client.callback("100", "442037691881")
    text = caplog.text + str(info.value) + repr(info.value)
    assert "retrying" in caplog.text
    assert SECRET not in text
