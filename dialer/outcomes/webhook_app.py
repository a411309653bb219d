"""The PBX webhook receiver over HTTP: an ASGI app for ``GET/POST {path}`` (Zadarma's ``zd_echo`` check and the
NOTIFY_* events), ``/healthz`` and ``/metrics`` (and whatever routes the caller mounts beside them).

Request path: parse the form (urlencoded or multipart) on the event loop, check the ``Signature`` header, then hand
the event to one writer thread that stores and folds it (``dialer.outcomes.events.WebhookProcessor``) and answers
NOTIFY_START with the routing it decided. One writer thread keeps events of one call in arrival order and keeps
SQLite's busy-wait sleeps (which would ruin latency) out of the picture: each batch is one short ``BEGIN IMMEDIATE``
transaction that never waits for another of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from dialer.dialing.live import LiveState
from dialer.logs import log_event
from dialer.metrics import CONTENT_TYPE, Metrics
from dialer.outcomes.events import Processed, WebhookProcessor
from dialer.outcomes.webhook_guard import GLOBAL, FailureGuard, LogBudget, RefuseExhausted, TokenBuckets
from dialer.zadarma.signing import WEBHOOK_SIGNED_FIELDS, verify_webhook

log = logging.getLogger("dialer.webhooks")

MAX_BODY_BYTES = 64 * 1024
# Real events are a few hundred bytes: a source over its failure budget may still send bodies this small (larger
# ones are refused unread by ``RefuseExhausted``).
_SMALL_BODY = 4 * 1024
_MAX_BATCH = 64


@dataclass(slots=True)
class _Job:
    fields: dict[str, str]
    received_at: datetime
    signature_ok: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Processed]


def _resolve(future: asyncio.Future[Processed], result: Processed | BaseException) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class _EventWriter:
    """The one thread that feeds ``processor``: requests queue their events and await the results."""

    def __init__(self, processor: WebhookProcessor) -> None:
        self.processor = processor
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()

    def _ensure_writer(self) -> queue.SimpleQueue[_Job | None]:
        with self._writer_lock:
            if self._writer is None or not self._writer.is_alive():
                self._queue = queue.SimpleQueue()
                self._writer = threading.Thread(
                    target=self._write_loop, args=(self._queue,), name="webhook-writer", daemon=True
                )
                self._writer.start()
            return self._queue

    def close(self) -> None:
        """Finish queued events and stop the writer thread."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                self._queue.put(None)
        if writer is not None:
            writer.join(timeout=30)

    async def process(self, fields: dict[str, str], received_at: datetime, signature_ok: bool) -> Processed:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Processed] = loop.create_future()
        self._ensure_writer().put(_Job(fields, received_at, signature_ok, loop, future))
        return await future

    def _write_loop(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        """One writer: events commit in arrival order; under load, the events that queued up while the previous
        batch was being written share one transaction, so a burst costs fewer commits per event."""
        stop = False
        while not stop:
            first = jobs.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < _MAX_BATCH:
                try:
                    nxt = jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            try:
                results: list[Processed | BaseException] = list(
                    self.processor.process_batch([(j.fields, j.received_at, j.signature_ok) for j in batch])
                )
            except Exception as exc:
                results = [exc] * len(batch)
            for job, result in zip(batch, results, strict=True):
                with contextlib.suppress(RuntimeError):  # the server's loop already closed
                    job.loop.call_soon_threadsafe(_resolve, job.future, result)


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "?"


def create_webhook_app(
    db_engine: Engine,
    *,
    secret: str,
    live: LiveState,
    path: str = "/zadarma",
    verify: bool = True,
    metrics: Metrics | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    time_scale: float = 1.0,
    routes: Sequence[BaseRoute] = (),
    guard: FailureGuard | None = None,
) -> Starlette:
    """The webhook app: ``GET/POST {path}``, ``GET /healthz``, ``GET /metrics``, and ``routes`` served beside them
    (the daemon mounts the agents' API, ``dialer.agents.api``, at ``/api``).

    ``verify=False`` accepts unsigned events of the known kinds (logged as a WARNING at start-up); with
    ``verify=True`` a secret is required and only verified events reach the database, the liveness clock and
    ``/metrics``. An event name with no signing rule is refused (403) either way; refused requests are budgeted
    per source and overall (``guard``, default ``webhook_guard.FailureGuard()``). The app's ``state.processor`` is the ``WebhookProcessor`` (tests and the daemon may use it).
    ``/metrics`` reads its call counters from ``db_engine`` (unless ``metrics`` already has a database).
    ``time_scale`` is a sped-up simulator world's (see ``WebhookProcessor``).
    """
    if verify and not secret:
        raise ValueError(
            "webhook verification needs the Zadarma secret; pass verify=False to turn it off explicitly"
        )
    if not path.startswith("/"):
        path = "/" + path
    if metrics is None:
        metrics = Metrics()
    if metrics.db is None:
        metrics.db = db_engine
    processor = WebhookProcessor(db_engine, live, metrics, time_scale=time_scale)
    writer = _EventWriter(processor)

    guard = guard or FailureGuard()
    refusal_logs = LogBudget()
    unknown_seen = LogBudget(max_keys=1000)
    unknown_lines = TokenBuckets(1 / 6, 10, max_keys=1)

    async def refuse(client: str, status: int, text: str, message: str | None, **fields: object) -> Response:
        """A refused request: counted, logged within the source's log budget, 429 once over its failure budget."""
        if not guard.failed(client):
            metrics.inc("dialer_webhook_rate_limited_total")
            await guard.slow_down()
            return PlainTextResponse("too many refused requests", status_code=429)
        left_out = None if message is None else refusal_logs.allow(client)
        if message is not None and left_out is not None:
            log_event(log, logging.WARNING, message, client=client, left_out=left_out, **fields)
        return PlainTextResponse(text, status_code=status)

    async def hook(request: Request) -> Response:
        if request.method == "GET":
            echo = request.query_params.get("zd_echo")
            return PlainTextResponse(echo if echo is not None else "ok")
        received_at = datetime.now(UTC)
        client = _client(request)
        length = request.headers.get("content-length")
        size = int(length) if length is not None and length.isdigit() else None
        if size is not None and size > max_body_bytes:
            metrics.inc("dialer_webhook_malformed_total")
            return await refuse(client, 413, "body too large", "webhook refused: body too large", size=size)
        try:
            form = await request.form(max_files=5, max_fields=200, max_part_size=max_body_bytes)
        except Exception as exc:
            metrics.inc("dialer_webhook_malformed_total")
            return await refuse(
                client,
                400,
                "malformed body",
                "malformed webhook body",
                error=type(exc).__name__,
                content_type=request.headers.get("content-type", "")[:100],
            )
        fields: dict[str, str] = {}
        for name, value in form.multi_items():
            if isinstance(value, str) and name not in fields:
                fields[name] = value
        await form.close()
        event = fields.get("event", "").strip()
        if not event:
            metrics.inc("dialer_webhook_malformed_total")
            return await refuse(
                client,
                400,
                "missing event",
                "webhook without an event field",
                fields=",".join(sorted(fields))[:200],
            )
        fields["event"] = event
        if event not in WEBHOOK_SIGNED_FIELDS:
            # No signing rule known: it cannot be verified, so it is never stored, counted or taken as a sign of
            # life. Its name is logged the first time only (a bounded set), and those lines are rate-limited.
            metrics.inc("dialer_webhook_unknown_events_total")
            if unknown_seen.first(event) and unknown_lines.take(GLOBAL):
                log_event(log, logging.WARNING, "webhook refused: unknown event", event=event[:100], client=client)
            return await refuse(client, 403, "unknown event", None)
        signature = request.headers.get("signature")
        ok = bool(secret) and verify_webhook(fields, signature, secret)
        if verify and not ok:
            metrics.inc("dialer_webhook_signature_failures_total")
            return await refuse(
                client,
                403,
                "bad signature",
                "webhook refused: bad signature",
                event=event,
                pbx_call_id=fields.get("pbx_call_id", "")[:100],
                signature="missing" if not signature else "wrong",
            )
        try:
            result = await writer.process(fields, received_at, ok)
        except Exception as exc:
            log_event(
                log,
                logging.ERROR,
                "webhook event not stored",
                event=event,
                pbx_call_id=fields.get("pbx_call_id", ""),
                error=f"{type(exc).__name__}: {exc}",
            )
            return PlainTextResponse("internal error", status_code=500)
        if event == "NOTIFY_START":
            return JSONResponse(result.answer or {})
        return PlainTextResponse("ok")

    async def healthz(request: Request) -> Response:
        last = live.last_event_at
        return JSONResponse(
            {
                "ok": True,
                "verify": verify,
                "events": live.events_seen,
                "last_event_age_s": None if last is None else round(time.time() - last, 3),
            }
        )

    async def metrics_endpoint(request: Request) -> Response:
        # The call counters are a database read: off the event loop, so webhooks never wait for a scrape.
        text = await asyncio.to_thread(metrics.render, live)
        return Response(text, media_type=CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not verify:
            log_event(
                log,
                logging.WARNING,
                "webhook signature verification is OFF: anyone who can reach this URL can forge call events",
                path=path,
            )
        log_event(log, logging.INFO, "webhook receiver ready", path=path, verify=verify)
        try:
            yield
        finally:
            writer.close()

    app = Starlette(
        routes=[
            Route(path, hook, methods=["GET", "POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *routes,
        ],
        lifespan=lifespan,
        middleware=[
            Middleware(
                RefuseExhausted,
                path=path,
                guard=guard,
                small_body=_SMALL_BODY,
                on_refused=lambda: metrics.inc("dialer_webhook_rate_limited_total"),
            )
        ],
    )
    app.state.processor = processor
    app.state.live = live
    app.state.metrics = metrics
    return app
