"""The HTTP simulator: the Zadarma API v1 over the call model, in real (optionally sped-up) time.

``create_app(scenario, key=..., secret=...)`` builds the Starlette app; ``run_simulator(...)`` runs it on a free
127.0.0.1 port in a background thread for tests. Time scaling: every call duration, the statistics lag and the
rate-limit window are divided by ``time_scale`` while timestamps stay real unix time, so at 60x a 3-minute talk
lasts 3 wall seconds and the 100-requests window lasts one second.

Ground truth for tests lives under ``/_sim/`` (no signature needed): ``/_sim/calls``, ``/_sim/stats``,
``/_sim/agents``, ``/_sim/requests`` (every API request: arrival time, key, path, status),
``/_sim/webhook`` (GET to read, POST ``url=...`` to point notifications elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import random
import re
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dialer.sim import webhooks as wh
from dialer.sim.credentials import DEMO_KEY, DEMO_SECRET
from dialer.sim.model import CallModel, ModelEvent, SimCall
from dialer.sim.ratelimit import RateLimiter
from dialer.sim.records import (
    MAX_PAGE,
    MAX_PERIOD_S,
    AccountClock,
    CallRecord,
    StatisticsStore,
    bill,
    call_token,
    cost_row,
    pbx_rows,
    public,
)
from dialer.sim.scenario import Scenario, default_scenario
from dialer.zadarma.parsing import to_xml
from dialer.zadarma.signing import verify_request

log = logging.getLogger("dialer.sim")

TO_RE = re.compile(r"^\+?\d{3,20}$")
FROM_RE = re.compile(r"^\+?[0-9A-Za-z\-]{1,32}$")
INTERNAL_STATUS_RE = re.compile(r"^/v1/pbx/internal/(\d+)/status/$")
HOLD_S = 60.0
# The request log keeps this many of the latest API requests (a long demo must not grow without bound).
REQUEST_LOG_MAX = 100_000
LOOP_MAX_SLEEP_S = 0.25

Result = tuple[int, dict[str, Any]]


class ApiError(Exception):
    """A request the method refuses: ``status=error`` with this message."""

    def __init__(self, message: str, code: int = 200) -> None:
        super().__init__(message)
        self.result = _error(message, code)


class Hold(Exception):
    """The request was processed but its response must never arrive (timeout-after-processing)."""

    def __init__(self, result: Result) -> None:
        self.result = result


@dataclass
class _Method:
    verbs: frozenset[str]
    handler: Callable[[dict[str, str], str, str], Awaitable[Result]]


def _error(message: str, code: int = 200) -> Result:
    return code, {"status": "error", "message": message}


class Simulator:
    """All simulator state; every method runs on the server's event loop."""

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        key: str = DEMO_KEY,
        secret: str = DEMO_SECRET,
        time_scale: float = 1.0,
        webhook_url: str | None = None,
        faults: dict[str, float] | None = None,
        extra_keys: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        scenario = scenario or default_scenario()
        if faults:
            scenario = scenario.with_faults(faults)
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.scenario = scenario
        self.key = key
        self.secret = secret
        self.keys = {key: secret, **(extra_keys or {})}
        self.time_scale = float(time_scale)
        self.now = clock
        self.started_at = clock()
        self.model = CallModel(scenario, self.started_at, time_scale=self.time_scale)
        self.clock = AccountClock(scenario.timezone)
        self.limiter = RateLimiter(
            scenario.general_per_window, scenario.statistics_per_window, scenario.window_s / self.time_scale
        )
        self.stats = StatisticsStore()
        self.records: dict[str, CallRecord] = {}
        self.balance = scenario.balance
        self.hooks = wh.WebhookSender(
            secret, scenario.webhook_profile, drop_rate=scenario.fault("webhook_drop"), seed=scenario.seed
        )
        self.initial_webhook_url = webhook_url
        self.fault_rng = random.Random(scenario.seed * 7919 + 17)
        self.counters: Counter[str] = Counter()
        self.by_method: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.rate_limited: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()
        self.request_log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_MAX)
        self.sms: list[dict[str, Any]] = []
        self.caller_ids: dict[str, str] = {}
        self.redirection: dict[str, dict[str, str]] = {
            s: {
                "sip_id": s,
                "status": "off",
                "condition": "always",
                "destination": "phone",
                "destination_value": scenario.pbx_number,
            }
            for s in scenario.sips
        }
        self.loop: asyncio.AbstractEventLoop | None = None
        self._kick: asyncio.Event | None = None
        self._release: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._methods: dict[str, _Method] = {
            "/v1/info/balance/": _Method(frozenset({"GET", "POST"}), self._balance),
            "/v1/info/price/": _Method(frozenset({"GET", "POST"}), self._price),
            "/v1/info/timezone/": _Method(frozenset({"GET", "POST"}), self._timezone),
            "/v1/request/callback/": _Method(frozenset({"GET", "POST"}), self._callback),
            "/v1/sip/": _Method(frozenset({"GET"}), self._sip_list),
            "/v1/sip/callerid/": _Method(frozenset({"PUT", "POST"}), self._sip_callerid),
            "/v1/sip/redirection/": _Method(frozenset({"GET", "PUT", "POST"}), self._sip_redirection),
            "/v1/sms/send/": _Method(frozenset({"POST", "GET"}), self._sms_send),
            "/v1/statistics/": _Method(frozenset({"GET"}), self._statistics),
            "/v1/statistics/pbx/": _Method(frozenset({"GET"}), self._pbx_statistics),
            "/v1/pbx/internal/": _Method(frozenset({"GET"}), self._pbx_internal),
        }

    # -- lifecycle -------------------------------------------------------------------------------------
    async def startup(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._kick = asyncio.Event()
        self._release = asyncio.Event()
        await self.hooks.start()
        if self.initial_webhook_url:
            self.hooks.set_url(self.initial_webhook_url)
        self._loop_task = asyncio.create_task(self._run_loop())

    async def shutdown(self) -> None:
        self.release_held()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self.hooks.close()

    def release_held(self) -> None:
        """Let held (timeout-after-processing) requests finish so the server can stop."""
        if self._release is not None:
            self._release.set()

    def release_held_threadsafe(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.release_held)

    def kick(self) -> None:
        if self._kick is not None:
            self._kick.set()

    # -- the model loop ----------------------------------------------------------------------------------
    async def _run_loop(self) -> None:
        assert self._kick is not None
        kick = self._kick
        while True:
            try:
                self.model.defer_routing = self.hooks.pbx_active
                for event in self.model.advance(self.now()):
                    self._on_event(event)
                self.stats.release(self.now())
            except Exception:  # pragma: no cover - a bug here must not kill the simulator silently
                log.exception("simulator loop error")
            nxt = self.model.next_event_time()
            delay = LOOP_MAX_SLEEP_S if nxt is None else min(LOOP_MAX_SLEEP_S, max(0.0, nxt - self.now()))
            if delay <= 0:
                await asyncio.sleep(0)
                continue
            kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kick.wait(), delay)

    def _on_event(self, e: ModelEvent) -> None:
        if e.call_id is None:
            return
        call = self.model.calls.get(e.call_id)
        rec = self.records.get(e.call_id)
        if call is None or rec is None:
            return
        kind = e.kind
        sc = self.scenario
        if kind == "bridged":
            if call.state != "routing":
                return
            if self.hooks.pbx_active:
                rec.routed_by_webhook = True
                timeout = max(sc.notify_start_timeout_s / self.time_scale, 0.05)
                self.hooks.send_and_answer(
                    call.id,
                    wh.pbx_start(call, rec, self.clock, sc.pbx_number),
                    timeout,
                    functools.partial(self._route_from_answer, call, rec),
                )
            else:
                self.model.route(call.id, self.now(), None)
                self.kick()
        elif kind == "connected":
            if rec.routed_by_webhook:
                self.hooks.send(call.id, wh.pbx_internal(call, rec, self.clock, sc.pbx_number))
                self.hooks.send(call.id, wh.pbx_answer(call, rec, self.clock))
        elif kind == "ended":
            self._on_ended(call, rec)

    def _route_from_answer(self, call: SimCall, rec: CallRecord, answer: dict[str, Any] | None) -> None:
        target: str | None = None
        if answer:
            rec.webhook_answer = answer
            name = answer.get("caller_name")
            if name:
                rec.caller_name = str(name)
            redirect = answer.get("redirect")
            if str(answer.get("hangup", "")) in ("1", "true", "True"):
                target = "hangup"
            elif redirect is not None and str(redirect) == "blacklist":
                target = "blacklist"
            elif answer.get("ivr_play") is not None:
                target = f"ivr:{answer['ivr_play']}"
            elif redirect is not None and self.model.agent(str(redirect)) is not None:
                target = str(redirect)
            # A scenario id ("0-1") or an unknown extension: the PBX routes as it would by default.
        self.model.route(call.id, self.now(), target)
        self.kick()

    def _on_ended(self, call: SimCall, rec: CallRecord) -> None:
        sc = self.scenario
        rec.billseconds, rec.cost = bill(sc, call, self.time_scale)
        self.balance -= rec.cost
        due = (call.ended_at or self.now()) + (sc.lag_s + sc.fault("statistics_lag_s")) / self.time_scale
        rec.stats_due_at = due
        for row in pbx_rows(call, rec, sc, self.clock, self.time_scale):
            self.stats.add("pbx", row, due)
        self.stats.add("cost", cost_row(call, rec, sc, self.clock), due)
        if self.hooks.out_active:
            self.hooks.send(call.id, wh.out_end(call, rec, self.clock))
        if rec.routed_by_webhook:
            self.hooks.send(call.id, wh.pbx_end(call, rec, self.clock, sc.pbx_number, self.time_scale))

    # -- HTTP: the API -----------------------------------------------------------------------------------
    async def api(self, request: Request) -> Response:
        arrived = self.now()
        response = await self._api(request)
        auth = request.headers.get("authorization") or ""
        self.request_log.append(
            {
                "at": arrived,
                "key": auth.partition(":")[0].strip(),
                "method": request.method,
                "path": request.url.path,
                "status": response.status_code,
            }
        )
        return response

    async def _api(self, request: Request) -> Response:
        path = request.url.path
        verb = request.method
        if verb == "GET":
            raw = request.scope.get("query_string", b"").decode("latin-1")
        else:
            payload = await request.body()
            raw = (
                payload.decode("utf-8", "replace")
                if payload
                else request.scope.get("query_string", b"").decode("latin-1")
            )
        params = dict(parse_qsl(raw, keep_blank_values=True))
        fmt = "xml" if params.get("format") == "xml" else "json"
        self.counters["requests"] += 1
        self.by_method[path] += 1
        method = self._resolve(path)
        headers = {"X-Zadarma-Method": path}
        if method is None:
            return self._respond(404, {"status": "error", "message": "Method not found"}, fmt, headers)
        if verb not in method.verbs:
            return self._respond(405, {"status": "error", "message": "Method not allowed"}, fmt, headers)
        auth = request.headers.get("authorization")
        key = auth.partition(":")[0].strip() if auth else ""
        secret = self.keys.get(key)
        now = self.now()
        if secret is None or not verify_request(path, raw, auth, key, secret):
            self.counters["unauthorized"] += 1
            if secret is not None:
                self._limit_headers(headers, key, path, now, consume=False)
            return self._respond(401, {"status": "error", "message": "Not authorized"}, fmt, headers)
        decision = self._limit_headers(headers, key, path, now, consume=True)
        if not decision:
            self.rate_limited[key] += 1
            headers["Retry-After"] = str(max(1, math.ceil(self.limiter_reset(key, path, now) - now)))
            return self._respond(
                429, {"status": "error", "message": "You exceeded the rate limit"}, fmt, headers
            )
        sc = self.scenario
        slow = sc.fault("slow_ms")
        if slow > 0:
            await asyncio.sleep(slow / 1000.0)
        if sc.fault("server_error_rate") and self.fault_rng.random() < sc.fault("server_error_rate"):
            code = 500 if self.fault_rng.random() < 0.5 else 502
            self.faults_injected[f"server_error_{code}"] += 1
            self.by_status[code] += 1
            text = (
                "Internal Server Error"
                if code == 500
                else "<html><body><h1>502 Bad Gateway</h1></body></html>"
            )
            return Response(text, status_code=code, headers=headers, media_type="text/html")
        if sc.fault("error_rate") and self.fault_rng.random() < sc.fault("error_rate"):
            self.faults_injected["error"] += 1
            return self._respond(
                200, {"status": "error", "message": "Temporary error, please try again later"}, fmt, headers
            )
        try:
            code, body = await method.handler(params, key, path)
        except ApiError as exc:
            code, body = exc.result
        except Hold:
            self.faults_injected["timeout_after_processing"] += 1
            assert self._release is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), HOLD_S)
            # Whatever is sent now, the client gave up long ago (or the server is stopping).
            return Response("held past the client's timeout", status_code=504, headers=headers)
        return self._respond(code, body, fmt, headers)

    def _resolve(self, path: str) -> _Method | None:
        method = self._methods.get(path)
        if method is None and INTERNAL_STATUS_RE.match(path):
            return _Method(frozenset({"GET"}), self._pbx_internal_status)
        return method

    def _limit_headers(
        self, headers: dict[str, str], key: str, path: str, now: float, *, consume: bool
    ) -> bool:
        d = self.limiter.check(key, path, now, consume=consume)
        headers["X-RateLimit-Limit"] = str(d.limit)
        headers["X-RateLimit-Remaining"] = str(d.remaining)
        headers["X-RateLimit-Reset"] = self.limiter.reset_header(d.reset_at)
        return d.allowed

    def limiter_reset(self, key: str, path: str, now: float) -> float:
        return self.limiter.check(key, path, now, consume=False).reset_at

    def _respond(self, code: int, body: dict[str, Any], fmt: str, headers: dict[str, str]) -> Response:
        self.by_status[code] += 1
        if fmt == "xml":
            return Response(to_xml(body), status_code=code, headers=headers, media_type="text/xml")
        return Response(
            json.dumps(body, ensure_ascii=False, separators=(",", ":")),
            status_code=code,
            headers=headers,
            media_type="application/json",
        )

    # -- API methods ---------------------------------------------------------------------------------------
    async def _balance(self, params: dict[str, str], key: str, path: str) -> Result:
        return 200, {
            "status": "success",
            "balance": round(self.balance, 4),
            "currency": self.scenario.currency,
        }

    async def _price(self, params: dict[str, str], key: str, path: str) -> Result:
        number = params.get("number", "")
        if not TO_RE.match(number):
            return _error("Check phone number")
        price = self.scenario.price_for(number)
        return 200, {
            "status": "success",
            "info": {
                "prefix": price.prefix,
                "description": price.description,
                "price": f"{price.price:g}",
                "currency": self.scenario.currency,
            },
        }

    async def _timezone(self, params: dict[str, str], key: str, path: str) -> Result:
        now = self.now()
        return 200, {
            "status": "success",
            "unixtime": int(now),
            "datetime": self.clock.format(now),
            "timezone": self.clock.label(now),
        }

    async def _callback(self, params: dict[str, str], key: str, path: str) -> Result:
        from_ = params.get("from", "").strip()
        to = params.get("to", "").strip()
        if not from_ or not to:
            return _error("Wrong parameters: from and to are required")
        if not TO_RE.match(to) or not FROM_RE.match(from_):
            return _error("Check phone number")
        if self.balance <= 0:
            return _error("Not enough money")
        now = self.now()
        call = self.model.place_call(to, now, from_)
        rec = CallRecord(
            call_id=call.id,
            key=key,
            received_at=now,
            from_=from_,
            to=to,
            sip=params.get("sip") or None,
            predicted=params.get("predicted", "") not in ("", "0", "false"),
            token=call_token(self.scenario.seed, self.started_at, call.seq),
        )
        self.records[call.id] = rec
        self.counters["callbacks"] += 1
        if self.hooks.out_active:
            self.hooks.send(call.id, wh.out_start(call, rec, self.clock))
        self.kick()
        body = {"status": "success", "from": _as_number(from_), "to": _as_number(to), "time": int(now)}
        p = self.scenario.fault("timeout_after_processing")
        if p and self.fault_rng.random() < p:
            rec.responded = False
            raise Hold((200, body))
        return 200, body

    async def _sip_list(self, params: dict[str, str], key: str, path: str) -> Result:
        sips = [{"id": s, "display_name": s, "lines": 5} for s in self.scenario.sips]
        return 200, {"status": "success", "sips": sips, "left": max(0, 5 - len(sips))}

    async def _sip_callerid(self, params: dict[str, str], key: str, path: str) -> Result:
        sip, number = params.get("id", ""), params.get("number", "")
        if sip not in self.redirection:
            return _error("Wrong SIP id")
        if not TO_RE.match(number):
            return _error("Check phone number")
        self.caller_ids[sip] = number.lstrip("+")
        return 200, {"status": "success", "sip": sip, "new_caller_id": number.lstrip("+")}

    async def _sip_redirection(self, params: dict[str, str], key: str, path: str) -> Result:
        sip = params.get("id")
        if params.get("status") is None and params.get("number") is None:
            info = [v for k, v in self.redirection.items() if sip in (None, "", k)]
            if sip and not info:
                return _error("Wrong SIP id")
            return 200, {"status": "success", "info": info}
        if sip not in self.redirection:
            return _error("Wrong SIP id")
        entry = self.redirection[sip]
        if params.get("status") is not None:
            if params["status"] not in ("on", "off"):
                return _error("Wrong status")
            entry["status"] = params["status"]
            return 200, {"status": "success", "sip": sip, "current_status": entry["status"]}
        number = params.get("number", "")
        if not TO_RE.match(number):
            return _error("Check phone number")
        entry.update(destination=params.get("type", "phone"), destination_value=number.lstrip("+"))
        return 200, {"status": "success", "sip": sip, "destination": number.lstrip("+")}

    async def _sms_send(self, params: dict[str, str], key: str, path: str) -> Result:
        numbers = [n.strip() for n in params.get("number", "").split(",") if n.strip()]
        message = params.get("message", "")
        if not numbers or not message:
            return _error("Wrong parameters: number and message are required")
        good = [n for n in numbers if TO_RE.match(n)]
        denied = [{"number": n, "message": "Check phone number"} for n in numbers if not TO_RE.match(n)]
        parts = max(1, math.ceil(len(message) / 160))
        cost = round(self.scenario.sms_price * parts * len(good), 4)
        self.balance -= cost
        self.sms.append(
            {
                "numbers": good,
                "message": message,
                "sender": params.get("sender"),
                "cost": cost,
                "at": self.now(),
                "key": key,
            }
        )
        return 200, {
            "status": "success",
            "messages": len(good) * parts,
            "cost": cost,
            "currency": self.scenario.currency,
            "denied_numbers": denied,
        }

    def _period(self, params: dict[str, str]) -> tuple[float, float]:
        now = self.now()
        try:
            start = self.clock.parse(params["start"]) if params.get("start") else now - 86400
            end = self.clock.parse(params["end"]) if params.get("end") else now
        except ValueError:
            raise ApiError("Wrong date format, use YYYY-MM-DD HH:MM:SS") from None
        if end < start:
            raise ApiError("Wrong period: end is before start")
        # Zadarma silently cuts a longer period to a month.
        return start, min(end, start + MAX_PERIOD_S)

    def _page(self, params: dict[str, str], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            skip = max(0, int(params.get("skip", "0") or 0))
            limit = int(params.get("limit", str(MAX_PAGE)) or MAX_PAGE)
        except ValueError:
            skip, limit = 0, MAX_PAGE
        limit = min(max(1, limit), MAX_PAGE)
        return [public(r) for r in rows[skip : skip + limit]]

    async def _pbx_statistics(self, params: dict[str, str], key: str, path: str) -> Result:
        start, end = self._period(params)
        rows = self.stats.query("pbx", start, end, self.now())
        call_type = params.get("call_type")
        if call_type in ("in", "out"):
            rows = [r for r in rows if r["pbx_call_id"].startswith(call_type + "_")]
        version = params.get("version", "2")
        stats = self._page(params, rows)
        if version != "2":
            for r in stats:
                r.pop("pbx_call_id", None)
        return 200, {
            "status": "success",
            "start": self.clock.format(start),
            "end": self.clock.format(end),
            "version": int(version) if version.isdigit() else 2,
            "stats": stats,
        }

    async def _statistics(self, params: dict[str, str], key: str, path: str) -> Result:
        start, end = self._period(params)
        rows = self.stats.query("cost", start, end, self.now())
        sip = params.get("sip")
        if sip:
            rows = [r for r in rows if r["sip"] == sip]
        return 200, {
            "status": "success",
            "start": self.clock.format(start),
            "end": self.clock.format(end),
            "stats": self._page(params, rows),
        }

    async def _pbx_internal(self, params: dict[str, str], key: str, path: str) -> Result:
        numbers = [int(a.extension) if a.extension.isdigit() else a.extension for a in self.model.agents]
        return 200, {"status": "success", "pbx_id": self.scenario.pbx_id, "numbers": numbers}

    async def _pbx_internal_status(self, params: dict[str, str], key: str, path: str) -> Result:
        m = INTERNAL_STATUS_RE.match(path)
        ext = m.group(1) if m else ""
        agent = self.model.agent(ext)
        if agent is None:
            return _error("Wrong internal number")
        return 200, {
            "status": "success",
            "pbx_id": self.scenario.pbx_id,
            "number": int(ext),
            "is_online": "true" if agent.logged_in else "false",
        }

    # -- HTTP: ground truth ----------------------------------------------------------------------------------
    def truth(self, call: SimCall, rec: CallRecord) -> dict[str, Any]:
        return {
            "id": call.id,
            "seq": call.seq,
            "pbx_call_id": rec.out_id,
            "pbx_call_id_in": rec.in_id if call.answered else None,
            "key": rec.key,
            "from": rec.from_,
            "to": rec.to,
            "sip": rec.sip,
            "predicted": rec.predicted,
            "received_at": rec.received_at,
            "responded": rec.responded,
            "state": call.state,
            "outcome": call.outcome,
            "disposition": call.disposition,
            "pbx_disposition": call.pbx_disposition,
            "answered": call.answered,
            "connected": call.connected,
            "abandoned": call.abandoned,
            "hangup": call.hangup,
            "ivr": call.ivr,
            "agent": call.agent,
            "requested_agent": call.requested_agent,
            "caller_name": rec.caller_name,
            "routed_by_webhook": rec.routed_by_webhook,
            "webhook_answer": rec.webhook_answer,
            "placed_at": call.placed_at,
            "answered_at": call.answered_at,
            "connected_at": call.connected_at,
            "ended_at": call.ended_at,
            # Durations in world seconds, like the statistics; *_wall are what the sped-up clock saw.
            "ring_seconds": None if call.ring_seconds is None else call.ring_seconds * self.time_scale,
            "talk_seconds": None if call.talk_seconds is None else call.talk_seconds * self.time_scale,
            "ring_seconds_wall": call.ring_seconds,
            "talk_seconds_wall": call.talk_seconds,
            "billseconds": rec.billseconds,
            "cost": rec.cost,
            "stats_due_at": rec.stats_due_at,
        }

    async def sim_calls(self, request: Request) -> Response:
        since = float(request.query_params.get("since", "0") or 0)
        out = [
            self.truth(self.model.calls[cid], rec)
            for cid, rec in self.records.items()
            if rec.received_at >= since
        ]
        return JSONResponse(out)

    async def sim_requests(self, request: Request) -> Response:
        """Every API request received (the latest ``REQUEST_LOG_MAX``) in the order they were answered, ``at``
        being the arrival time; ``?since=`` unix time, ``?path_prefix=`` e.g. ``/v1/statistics/``."""
        since = float(request.query_params.get("since", "0") or 0)
        prefix = request.query_params.get("path_prefix", "")
        return JSONResponse(
            [r for r in self.request_log if r["at"] >= since and r["path"].startswith(prefix)]
        )

    async def sim_stats(self, request: Request) -> Response:
        return JSONResponse(self.stats_snapshot())

    def stats_snapshot(self) -> dict[str, Any]:
        calls = self.model.calls.values()
        return {
            "started_at": self.started_at,
            "now": self.now(),
            "time_scale": self.time_scale,
            "scenario": self.scenario.name,
            "requests": self.counters["requests"],
            "unauthorized": self.counters["unauthorized"],
            "callbacks": self.counters["callbacks"],
            "by_method": dict(self.by_method),
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "rate_limited": dict(self.rate_limited),
            "rate_limited_total": sum(self.rate_limited.values()),
            "faults": dict(self.scenario.faults),
            "faults_injected": dict(self.faults_injected),
            "limits": {
                "general_per_window": self.limiter.general,
                "statistics_per_window": self.limiter.statistics,
                "window_s": self.limiter.window_s,
            },
            "webhooks": self.hooks.status(),
            "calls": {
                "total": len(self.model.calls),
                "ended": sum(1 for c in calls if c.ended_at is not None),
                "answered": sum(1 for c in calls if c.answered),
                "connected": sum(1 for c in calls if c.connected),
                "abandoned": sum(1 for c in calls if c.abandoned),
            },
            "statistics_rows": {
                "pending": self.stats.pending_count(),
                "pbx": self.stats.visible_count("pbx"),
                "cost": self.stats.visible_count("cost"),
            },
            "balance": round(self.balance, 4),
            "sms": len(self.sms),
        }

    async def sim_agents(self, request: Request) -> Response:
        now = self.now()
        return JSONResponse(
            [
                {
                    "extension": a.extension,
                    "logged_in": a.logged_in,
                    "state": a.state,
                    "since": a.since,
                    "call_id": a.call_id,
                    "calls_taken": a.calls_taken,
                    "talk_seconds": round(a.talk_total * self.time_scale, 3),
                    "wrapup_seconds": round(a.wrapup_total, 3),
                    "logged_in_seconds": round(a.logged_in_seconds(now), 3),
                }
                for a in self.model.agents
            ]
        )

    async def sim_webhook(self, request: Request) -> Response:
        if request.method == "POST":
            url: str | None
            if request.headers.get("content-type", "").startswith("application/json"):
                url = (await request.json()).get("url")
            else:
                url = (await request.form()).get("url")  # type: ignore[assignment]
            self.hooks.set_url(str(url) if url else None)
        return JSONResponse(self.hooks.status())


def _as_number(value: str) -> int | str:
    digits = value.lstrip("+")
    return int(digits) if digits.isdigit() and len(digits) < 19 else value


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
    """The ASGI app. ``app.state.sim`` is the :class:`Simulator` (touch it only from the server's loop)."""
    sim = Simulator(
        scenario,
        key=key,
        secret=secret,
        time_scale=time_scale,
        webhook_url=webhook_url,
        faults=faults,
        extra_keys=extra_keys,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await sim.startup()
        try:
            yield
        finally:
            await sim.shutdown()

    verbs = ["GET", "POST", "PUT", "DELETE"]
    app = Starlette(
        routes=[
            Route("/_sim/calls", sim.sim_calls, methods=["GET"]),
            Route("/_sim/stats", sim.sim_stats, methods=["GET"]),
            Route("/_sim/agents", sim.sim_agents, methods=["GET"]),
            Route("/_sim/requests", sim.sim_requests, methods=["GET"]),
            Route("/_sim/webhook", sim.sim_webhook, methods=["GET", "POST"]),
            Route("/{path:path}", sim.api, methods=verbs),
        ],
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    app.state.sim = sim
    return app


class RunningSimulator:
    """A simulator serving on a background thread. ``url`` is its base URL (also ``str(running)``)."""

    def __init__(self, app: Starlette, server: Any) -> None:
        self.app = app
        self.sim: Simulator = app.state.sim
        self._server = server
        self.url: str = server.url
        self.key = self.sim.key
        self.secret = self.sim.secret

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

    def stop(self) -> None:
        self.sim.release_held_threadsafe()
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
    running = RunningSimulator(app, server)
    try:
        yield running
    finally:
        running.stop()
