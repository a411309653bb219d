"""The simulated PBX and its ground truth: the call model run in real (optionally sped-up) time, the record of
every call and API request, and the ``/_sim/`` endpoints that show it.

Time scaling: every call duration, the statistics lag and the rate-limit window are divided by ``time_scale``
while timestamps stay real unix time, so at 60x a 3-minute talk lasts 3 wall seconds and the 100-requests window
lasts one second. Durations in the ground truth are in world seconds, like the statistics.

Ground truth for tests (no signature needed): ``/_sim/calls``, ``/_sim/stats``, ``/_sim/agents``,
``/_sim/requests`` (every API request: arrival time, key, path, status), ``/_sim/webhook`` (GET to read, POST
``url=...`` to point notifications elsewhere), ``/_sim/desk`` (with a ``[desk]`` scenario: what the simulated agents
told the dialer's agents API and when, and each disposition they saved; see ``dialer.sim.desk``).

Invariant: all of it runs on the server's event loop, and every call the model places through ``/v1/`` has its
:class:`CallRecord` in :attr:`Simulator.records` before the model can report an event for it, so what ``/_sim/``
shows is what the client's calls really did.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter, deque
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dialer.sim import webhooks as wh
from dialer.sim.desk import Desk
from dialer.sim.model import CallModel, ModelEvent, SimCall
from dialer.sim.ratelimit import RateLimiter
from dialer.sim.records import AccountClock, CallRecord, StatisticsStore, bill, cost_row, pbx_rows
from dialer.sim.scenario import Scenario

log = logging.getLogger("dialer.sim")

# The request log keeps this many of the latest API requests (a long demo must not grow without bound).
REQUEST_LOG_MAX = 100_000
LOOP_MAX_SLEEP_S = 0.25


class Simulator:
    """All simulator state; every method runs on the server's event loop."""

    def __init__(
        self, scenario: Scenario, *, secret: str, time_scale: float = 1.0, webhook_url: str | None = None
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.scenario = scenario
        self.time_scale = float(time_scale)
        self.now = time.time
        self.started_at = self.now()
        # With a desk, agents take calls only once the dialer has confirmed them ready (see dialer.sim.desk).
        self.model = CallModel(scenario, self.started_at, time_scale=self.time_scale,
                               gate_agents=scenario.desk is not None)  # fmt: skip
        self.clock = AccountClock(scenario.timezone)
        self.limiter = RateLimiter(
            scenario.general_per_window, scenario.statistics_per_window, scenario.window_s / self.time_scale
        )
        self.stats = StatisticsStore()
        self.records: dict[str, CallRecord] = {}
        self.balance = scenario.balance
        self.hooks = wh.WebhookSender(
            secret,
            scenario.webhook_profile,
            drop_rate=scenario.fault("webhook_drop"),
            seed=scenario.seed,
            encoding=scenario.webhook_encoding,
        )
        self.initial_webhook_url = webhook_url
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
        self._kick: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self.desk = Desk(self, scenario.desk) if scenario.desk is not None else None

    # -- lifecycle -------------------------------------------------------------------------------------
    async def startup(self) -> None:
        self._kick = asyncio.Event()
        await self.hooks.start()
        if self.initial_webhook_url:
            self.hooks.set_url(self.initial_webhook_url)
        if self.desk is not None:
            await self.desk.start()
        self._loop_task = asyncio.create_task(self._run_loop())

    async def shutdown(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self.desk is not None:
            await self.desk.close()
        await self.hooks.close()

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
        if self.desk is not None:
            self.desk.on_event(e)
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
                rec.notify_sent_at = self.now()
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
        rec.routed_at = self.now()
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
            # As the PBX orders them: the agent's leg ends (or the abandon message has played), then the call.
            if call.connected:
                self.hooks.send(call.id, wh.pbx_internal_end(call, rec, self.clock, sc.pbx_number))
            if call.ivr is not None:
                self.hooks.send(call.id, wh.pbx_ivr(call, rec, self.clock, sc.pbx_number))
        recorded = sc.webhook_recording and call.connected
        if rec.routed_by_webhook:
            self.hooks.send(
                call.id, wh.pbx_end(call, rec, self.clock, sc.pbx_number, self.time_scale, recorded=recorded)
            )
        if recorded:
            self.hooks.send(call.id, wh.record(call, rec))

    # -- HTTP: ground truth ----------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        """The ``/_sim/`` endpoints; they need no signature and count as no API request."""
        return [
            Route("/_sim/calls", self.sim_calls, methods=["GET"]),
            Route("/_sim/stats", self.sim_stats, methods=["GET"]),
            Route("/_sim/agents", self.sim_agents, methods=["GET"]),
            Route("/_sim/requests", self.sim_requests, methods=["GET"]),
            Route("/_sim/webhook", self.sim_webhook, methods=["GET", "POST"]),
            Route("/_sim/desk", self.sim_desk, methods=["GET"]),
        ]

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
            # The routing decision was made between these two (unix time): NOTIFY_START sent, its answer received.
            "notify_sent_at": rec.notify_sent_at,
            "routed_at": rec.routed_at,
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

    async def sim_desk(self, request: Request) -> Response:
        if self.desk is None:
            return JSONResponse({"error": "this scenario has no [desk]"}, status_code=404)
        return JSONResponse(self.desk.snapshot())

    async def sim_webhook(self, request: Request) -> Response:
        if request.method == "POST":
            url: str | None
            if request.headers.get("content-type", "").startswith("application/json"):
                url = (await request.json()).get("url")
            else:
                url = (await request.form()).get("url")  # type: ignore[assignment]
            self.hooks.set_url(str(url) if url else None)
        return JSONResponse(self.hooks.status())
