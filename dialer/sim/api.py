"""The Zadarma API v1 as the simulator serves it: the Starlette app, the ``/v1/...`` method handlers, signature
checking, the rate-limit glue, and the scenario's faults as a client meets them (slow answers, 500/502 pages,
``status=error``, a callback processed but never answered).

Invariant: every request that reaches the API route is counted and logged in the :class:`Simulator`'s record
(``dialer.sim.truth``) and answered in Zadarma's shape (JSON or, with ``format=xml``, XML); an unsigned or
rate-limited request changes no state beyond those counters and the limiter's window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dialer.sim import webhooks as wh
from dialer.sim.records import MAX_PAGE, MAX_PERIOD_S, CallRecord, call_token, public
from dialer.sim.truth import Simulator
from dialer.zadarma.parsing import to_xml
from dialer.zadarma.signing import verify_request

TO_RE = re.compile(r"^\+?\d{3,20}$")
FROM_RE = re.compile(r"^\+?[0-9A-Za-z\-]{1,32}$")
INTERNAL_STATUS_RE = re.compile(r"^/v1/pbx/internal/(\d+)/status/$")
HOLD_S = 60.0

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


def _as_number(value: str) -> int | str:
    digits = value.lstrip("+")
    return int(digits) if digits.isdigit() and len(digits) < 19 else value


class ZadarmaApi:
    """The ``/v1/`` API over one :class:`Simulator`; ``keys`` maps every accepted API key to its secret."""

    def __init__(self, sim: Simulator, keys: dict[str, str]) -> None:
        self.sim = sim
        self.keys = keys
        self.fault_rng = random.Random(sim.scenario.seed * 7919 + 17)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
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
        self._release = asyncio.Event()
        await self.sim.startup()

    async def shutdown(self) -> None:
        self.release_held()
        await self.sim.shutdown()

    def release_held(self) -> None:
        """Let held (timeout-after-processing) requests finish so the server can stop."""
        if self._release is not None:
            self._release.set()

    def release_held_threadsafe(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.release_held)

    # -- HTTP ------------------------------------------------------------------------------------------
    async def endpoint(self, request: Request) -> Response:
        arrived = self.sim.now()
        response = await self._api(request)
        auth = request.headers.get("authorization") or ""
        self.sim.request_log.append(
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
        sim = self.sim
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
        sim.counters["requests"] += 1
        sim.by_method[path] += 1
        method = self._resolve(path)
        headers = {"X-Zadarma-Method": path}
        if method is None:
            return self._respond(404, {"status": "error", "message": "Method not found"}, fmt, headers)
        if verb not in method.verbs:
            return self._respond(405, {"status": "error", "message": "Method not allowed"}, fmt, headers)
        auth = request.headers.get("authorization")
        key = auth.partition(":")[0].strip() if auth else ""
        secret = self.keys.get(key)
        now = sim.now()
        if secret is None or not verify_request(path, raw, auth, key, secret):
            sim.counters["unauthorized"] += 1
            if secret is not None:
                self._limit_headers(headers, key, path, now, consume=False)
            return self._respond(401, {"status": "error", "message": "Not authorized"}, fmt, headers)
        decision = self._limit_headers(headers, key, path, now, consume=True)
        if not decision:
            sim.rate_limited[key] += 1
            headers["Retry-After"] = str(max(1, math.ceil(self._limiter_reset(key, path, now) - now)))
            return self._respond(
                429, {"status": "error", "message": "You exceeded the rate limit"}, fmt, headers
            )
        sc = sim.scenario
        slow = sc.fault("slow_ms")
        if slow > 0:
            await asyncio.sleep(slow / 1000.0)
        if sc.fault("server_error_rate") and self.fault_rng.random() < sc.fault("server_error_rate"):
            code = 500 if self.fault_rng.random() < 0.5 else 502
            sim.faults_injected[f"server_error_{code}"] += 1
            sim.by_status[code] += 1
            text = (
                "Internal Server Error"
                if code == 500
                else "<html><body><h1>502 Bad Gateway</h1></body></html>"
            )
            return Response(text, status_code=code, headers=headers, media_type="text/html")
        if sc.fault("error_rate") and self.fault_rng.random() < sc.fault("error_rate"):
            sim.faults_injected["error"] += 1
            return self._respond(
                200, {"status": "error", "message": "Temporary error, please try again later"}, fmt, headers
            )
        try:
            code, body = await method.handler(params, key, path)
        except ApiError as exc:
            code, body = exc.result
        except Hold:
            sim.faults_injected["timeout_after_processing"] += 1
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
        limiter = self.sim.limiter
        d = limiter.check(key, path, now, consume=consume)
        headers["X-RateLimit-Limit"] = str(d.limit)
        headers["X-RateLimit-Remaining"] = str(d.remaining)
        headers["X-RateLimit-Reset"] = limiter.reset_header(d.reset_at)
        return d.allowed

    def _limiter_reset(self, key: str, path: str, now: float) -> float:
        return self.sim.limiter.check(key, path, now, consume=False).reset_at

    def _respond(self, code: int, body: dict[str, Any], fmt: str, headers: dict[str, str]) -> Response:
        self.sim.by_status[code] += 1
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
            "balance": round(self.sim.balance, 4),
            "currency": self.sim.scenario.currency,
        }

    async def _price(self, params: dict[str, str], key: str, path: str) -> Result:
        number = params.get("number", "")
        if not TO_RE.match(number):
            return _error("Check phone number")
        sc = self.sim.scenario
        price = sc.price_for(number)
        return 200, {
            "status": "success",
            "info": {
                "prefix": price.prefix,
                "description": price.description,
                "price": f"{price.price:g}",
                "currency": sc.currency,
            },
        }

    async def _timezone(self, params: dict[str, str], key: str, path: str) -> Result:
        now = self.sim.now()
        clock = self.sim.clock
        return 200, {
            "status": "success",
            "unixtime": int(now),
            "datetime": clock.format(now),
            "timezone": clock.label(now),
        }

    async def _callback(self, params: dict[str, str], key: str, path: str) -> Result:
        sim = self.sim
        from_ = params.get("from", "").strip()
        to = params.get("to", "").strip()
        if not from_ or not to:
            return _error("Wrong parameters: from and to are required")
        if not TO_RE.match(to) or not FROM_RE.match(from_):
            return _error("Check phone number")
        if sim.balance <= 0:
            return _error("Not enough money")
        now = sim.now()
        call = sim.model.place_call(to, now, from_)
        rec = CallRecord(
            call_id=call.id,
            key=key,
            received_at=now,
            from_=from_,
            to=to,
            sip=params.get("sip") or None,
            predicted=params.get("predicted", "") not in ("", "0", "false"),
            token=call_token(sim.scenario.seed, sim.started_at, call.seq),
        )
        sim.records[call.id] = rec
        sim.counters["callbacks"] += 1
        if sim.hooks.out_active:
            sim.hooks.send(call.id, wh.out_start(call, rec, sim.clock))
        sim.kick()
        body = {"status": "success", "from": _as_number(from_), "to": _as_number(to), "time": int(now)}
        p = sim.scenario.fault("timeout_after_processing")
        if p and self.fault_rng.random() < p:
            rec.responded = False
            raise Hold((200, body))
        return 200, body

    async def _sip_list(self, params: dict[str, str], key: str, path: str) -> Result:
        sips = [{"id": s, "display_name": s, "lines": 5} for s in self.sim.scenario.sips]
        return 200, {"status": "success", "sips": sips, "left": max(0, 5 - len(sips))}

    async def _sip_callerid(self, params: dict[str, str], key: str, path: str) -> Result:
        sip, number = params.get("id", ""), params.get("number", "")
        if sip not in self.sim.redirection:
            return _error("Wrong SIP id")
        if not TO_RE.match(number):
            return _error("Check phone number")
        self.sim.caller_ids[sip] = number.lstrip("+")
        return 200, {"status": "success", "sip": sip, "new_caller_id": number.lstrip("+")}

    async def _sip_redirection(self, params: dict[str, str], key: str, path: str) -> Result:
        redirection = self.sim.redirection
        sip = params.get("id")
        if params.get("status") is None and params.get("number") is None:
            info = [v for k, v in redirection.items() if sip in (None, "", k)]
            if sip and not info:
                return _error("Wrong SIP id")
            return 200, {"status": "success", "info": info}
        if sip not in redirection:
            return _error("Wrong SIP id")
        entry = redirection[sip]
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
        sim = self.sim
        numbers = [n.strip() for n in params.get("number", "").split(",") if n.strip()]
        message = params.get("message", "")
        if not numbers or not message:
            return _error("Wrong parameters: number and message are required")
        good = [n for n in numbers if TO_RE.match(n)]
        denied = [{"number": n, "message": "Check phone number"} for n in numbers if not TO_RE.match(n)]
        parts = max(1, math.ceil(len(message) / 160))
        cost = round(sim.scenario.sms_price * parts * len(good), 4)
        sim.balance -= cost
        sim.sms.append(
            {
                "numbers": good,
                "message": message,
                "sender": params.get("sender"),
                "cost": cost,
                "at": sim.now(),
                "key": key,
            }
        )
        return 200, {
            "status": "success",
            "messages": len(good) * parts,
            "cost": cost,
            "currency": sim.scenario.currency,
            "denied_numbers": denied,
        }

    def _period(self, params: dict[str, str]) -> tuple[float, float]:
        now = self.sim.now()
        clock = self.sim.clock
        try:
            start = clock.parse(params["start"]) if params.get("start") else now - 86400
            end = clock.parse(params["end"]) if params.get("end") else now
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
        sim = self.sim
        start, end = self._period(params)
        rows = sim.stats.query("pbx", start, end, sim.now())
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
            "start": sim.clock.format(start),
            "end": sim.clock.format(end),
            "version": int(version) if version.isdigit() else 2,
            "stats": stats,
        }

    async def _statistics(self, params: dict[str, str], key: str, path: str) -> Result:
        sim = self.sim
        start, end = self._period(params)
        rows = sim.stats.query("cost", start, end, sim.now())
        sip = params.get("sip")
        if sip:
            rows = [r for r in rows if r["sip"] == sip]
        return 200, {
            "status": "success",
            "start": sim.clock.format(start),
            "end": sim.clock.format(end),
            "stats": self._page(params, rows),
        }

    async def _pbx_internal(self, params: dict[str, str], key: str, path: str) -> Result:
        numbers = [int(a.extension) if a.extension.isdigit() else a.extension for a in self.sim.model.agents]
        return 200, {"status": "success", "pbx_id": self.sim.scenario.pbx_id, "numbers": numbers}

    async def _pbx_internal_status(self, params: dict[str, str], key: str, path: str) -> Result:
        m = INTERNAL_STATUS_RE.match(path)
        ext = m.group(1) if m else ""
        agent = self.sim.model.agent(ext)
        if agent is None:
            return _error("Wrong internal number")
        return 200, {
            "status": "success",
            "pbx_id": self.sim.scenario.pbx_id,
            "number": int(ext),
            "is_online": "true" if agent.logged_in else "false",
        }


def build_app(sim: Simulator, keys: dict[str, str]) -> Starlette:
    """The ASGI app: the ``/_sim/`` ground truth, then every other path to the API.

    ``app.state.api`` is the :class:`ZadarmaApi` (touch it and its simulator only from the server's loop)."""
    api = ZadarmaApi(sim, keys)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await api.startup()
        try:
            yield
        finally:
            await api.shutdown()

    app = Starlette(
        routes=[*sim.routes(), Route("/{path:path}", api.endpoint, methods=["GET", "POST", "PUT", "DELETE"])],
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    app.state.api = api
    return app
