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
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from dialer.dialing.live import LiveState
from dialer.logs import log_event
from dialer.metrics import CONTENT_TYPE, Metrics
from dialer.outcomes.events import Processed, WebhookProcessor
from dialer.zadarma.signing import WEBHOOK_SIGNED_FIELDS, verify_webhook

log = logging.getLogger("dialer.webhooks")

MAX_BODY_BYTES = 64 * 1024
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
) -> Starlette:
    """The webhook app: ``GET/POST {path}``, ``GET /healthz``, ``GET /metrics``, and ``routes`` served beside them
    (the daemon mounts the agents' API, ``dialer.agents.api``, at ``/api``).

    ``verify=False`` accepts unsigned events (logged as a WARNING at start-up); with ``verify=True`` a secret is
    required. The app's ``state.processor`` is the ``WebhookProcessor`` (tests and the daemon may use it).
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

    async def hook(request: Request) -> Response:
        if request.method == "GET":
            echo = request.query_params.get("zd_echo")
            return PlainTextResponse(echo if echo is not None else "ok")
        received_at = datetime.now(UTC)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            metrics.inc("dialer_webhook_malformed_total")
            return PlainTextResponse("body too large", status_code=413)
        try:
            form = await request.form(max_files=5, max_fields=200, max_part_size=max_body_bytes)
        except Exception as exc:
            metrics.inc("dialer_webhook_malformed_total")
            log_event(
                log,
                logging.WARNING,
                "malformed webhook body",
                client=_client(request),
                error=type(exc).__name__,
                content_type=request.headers.get("content-type", ""),
            )
            return PlainTextResponse("malformed body", status_code=400)
        fields: dict[str, str] = {}
        for name, value in form.multi_items():
            if isinstance(value, str) and name not in fields:
                fields[name] = value
        await form.close()
        event = fields.get("event", "").strip()
        if not event:
            metrics.inc("dialer_webhook_malformed_total")
            log_event(
                log,
                logging.WARNING,
                "webhook without an event field",
                client=_client(request),
                fields=",".join(sorted(fields))[:200],
            )
            return PlainTextResponse("missing event", status_code=400)
        fields["event"] = event
        signature = request.headers.get("signature")
        known = event in WEBHOOK_SIGNED_FIELDS
        ok = bool(secret) and known and verify_webhook(fields, signature, secret)
        if verify and known and not ok:
            metrics.inc("dialer_webhook_signature_failures_total")
            log_event(
                log,
                logging.WARNING,
                "webhook refused: bad signature",
                event=event,
                pbx_call_id=fields.get("pbx_call_id", ""),
                client=_client(request),
                signature="missing" if not signature else "wrong",
            )
            return PlainTextResponse("bad signature", status_code=403)
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
    )
    app.state.processor = processor
    app.state.live = live
    app.state.metrics = metrics
    return app
