"""The simulated agents at the dialer's console: they work through the dialer's agents API (``/api``) as people do.

When the call model logs an agent in, sends them on a break, brings them back or logs them out (the scenario's
``[agents]`` schedule and breaks), the desk tells the dialer over HTTP (``POST /api/login`` with the PIN, ``POST
/api/state``, ``POST /api/logout``); when a call connected to an agent has ended and its wrap-up is over, the agent
reads the call (``GET /api/call``) and saves a disposition (``POST /api/disposition``) drawn from the ``[desk]``
probabilities, with a callback time (some "only me") for a call-back disposition.

Invariants, which make the record (``/_sim/desk``) the truth tests check the dialer's routing against:

- the model holds an agent who logs in or comes back (``CallModel(gate_agents=True)``) until the dialer has answered
  that they are ready, and takes an agent out of the PBX's queue the moment they leave, before the dialer hears of
  it: so the PBX never connects a customer to someone the dialer cannot count;
- each agent's requests go one at a time, in the order the model decided them; a break or logout decided at the end
  of a wrap-up is told before that call's disposition (the dialer would otherwise see the agent ready in between);
- every change is recorded with ``asked_at`` (when the desk sent it) and ``at`` (when the dialer's answer came): the
  dialer made the change between the two.

Runs on the simulator's event loop; knows the dialer only through HTTP (the architecture keeps ``dialer.sim`` apart
from ``dialer.agents``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from dialer.sim.agenda import DeskConfig
from dialer.sim.model import ModelEvent

if TYPE_CHECKING:
    from dialer.sim.truth import Simulator

log = logging.getLogger("dialer.sim.desk")

# How long a disposition is retried while the dialer has not yet seen the call end (wall seconds).
DISPOSITION_PATIENCE_S = 120.0
CALL_LOOKUPS = 25
# Presence and call events the desk acts on.
_PRESENCE = {"agent_login": "ready", "agent_ready": "ready", "agent_pause": "paused", "agent_logout": "logged_out"}


@dataclass
class DeskAgent:
    extension: str
    login: str
    token: str | None = None
    state: str = "logged_out"  # what the dialer last answered
    actions: deque[tuple[str, Any]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    attempts: dict[str, int] = field(default_factory=dict)  # model call id -> the dialer's attempt id
    pending: set[asyncio.Task[None]] = field(default_factory=set)  # dispositions waiting for the call's end


class Desk:
    """Every simulated agent of one simulator, and the record of what they did."""

    def __init__(self, sim: Simulator, config: DeskConfig) -> None:
        self.sim = sim
        self.config = config
        self.rng = random.Random(sim.scenario.seed ^ 0xDE5C)
        self.agents = {ext: DeskAgent(ext, config.login_for(ext, i))
                       for i, ext in enumerate(sim.scenario.extensions)}  # fmt: skip
        self.timeline: list[dict[str, Any]] = []
        self.dispositions: list[dict[str, Any]] = []
        self.errors: Counter[str] = Counter()
        self.meanings: dict[str, str] = {}  # disposition code -> meaning, from GET /api/me
        self.client: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))
        self._tasks = [asyncio.create_task(self._work(a)) for a in self.agents.values()]

    async def close(self) -> None:
        tasks = [*self._tasks, *(t for a in self.agents.values() for t in a.pending)]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def api_url(self) -> str | None:
        if self.config.api_url:
            return self.config.api_url.rstrip("/")
        hook = self.sim.hooks.url
        if not hook:
            return None
        parts = urlsplit(hook)
        return f"{parts.scheme}://{parts.netloc}/api"

    # -- from the model --------------------------------------------------------------------------------------
    def on_event(self, e: ModelEvent) -> None:
        agent = self.agents.get(e.agent or "")
        if agent is None:
            return
        if e.kind in _PRESENCE:
            target = _PRESENCE[e.kind]
            code = None
            if target == "paused":
                model_agent = self.sim.model.agent(agent.extension)
                code = model_agent.pause_code if model_agent is not None else None
            self._queue(agent, "presence", (target, code, self.sim.now()))
        elif e.kind == "connected" and e.call_id is not None:
            self._queue(agent, "connected", e.call_id)
        elif e.kind == "wrapup_end" and e.call_id is not None:
            self._queue(agent, "disposition", e.call_id)

    def _queue(self, agent: DeskAgent, kind: str, arg: Any) -> None:
        agent.actions.append((kind, arg))
        agent.wake.set()

    async def _work(self, agent: DeskAgent) -> None:
        while True:
            await agent.wake.wait()
            agent.wake.clear()
            while agent.actions:
                kind, arg = agent.actions.popleft()
                try:
                    if kind == "disposition" and agent.actions and agent.actions[0][0] == "presence":
                        # Leaving at the end of this wrap-up: tell the dialer first, so it never sees them ready;
                        # a logout ends the session (the token) only once this call's disposition is saved.
                        leaving = agent.actions.popleft()[1]
                        await self._presence(agent, *leaving, end_session=False)
                        await self._dispose(agent, arg)
                        if leaving[0] == "logged_out":
                            await self._end_session(agent)
                        continue
                    if kind == "presence":
                        await self._presence(agent, *arg)
                    elif kind == "connected":
                        await self._learn_call(agent, arg)
                    elif kind == "disposition":
                        await self._dispose(agent, arg)
                except asyncio.CancelledError:
                    raise
                except Exception:  # pragma: no cover - a desk bug must not stop this agent for the whole run
                    log.exception("desk agent %s: %s failed", agent.login, kind)
                    self.errors["crash"] += 1

    # -- presence --------------------------------------------------------------------------------------------
    async def _presence(self, agent: DeskAgent, target: str, code: str | None, decided_at: float, *,
                        end_session: bool = True) -> None:
        model = self.sim.model
        if target == "ready" and agent.actions and agent.actions[0][0] == "presence":
            # Gone again before the dialer heard they were here (a break at the start of the day): log in only,
            # and let the next change say where they are.
            if agent.token is None:
                await self._login(agent)
            return
        if target == "ready":
            # The model holds the agent until the dialer says ready: keep asking (logging in again if the session
            # ended), or the agent would never take a call.
            while True:
                if agent.token is None:
                    await self._login(agent)
                asked = self.sim.now()
                status, body = await self._send(agent, "POST", "/state", {"state": "ready"})
                if status == 200:
                    break
                if status == 401:
                    agent.token = None
                await asyncio.sleep(self.config.retry_s)
        elif target == "paused":
            if agent.token is None:
                return  # never got in: the dialer already counts them out
            asked = self.sim.now()
            body = await self._call(agent, "POST", "/state", {"state": "paused", "code": code or "break"})
        else:
            if agent.token is None:
                return
            asked = self.sim.now()
            body = await self._call(agent, "POST", "/state", {"state": "logged_out"})
        at = self.sim.now()
        state = body["state"]["state"] if body else None
        agent.state = state or agent.state
        self.timeline.append({"extension": agent.extension, "login": agent.login, "state": target, "code": code,
                              "decided_at": decided_at, "asked_at": asked, "at": at, "dialer_state": state,
                              "deferred": bool(body and body.get("deferred")), "ok": body is not None})  # fmt: skip
        if target == "ready":
            model.release(agent.extension, self.sim.now())
            self.sim.kick()
        elif target == "logged_out" and end_session:
            await self._end_session(agent)

    async def _end_session(self, agent: DeskAgent) -> None:
        """After a logout: once the dispositions still being saved are in, end the token (POST /api/logout)."""
        if agent.token is None:
            return
        for task in list(agent.pending):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._call(agent, "POST", "/logout", {})
        agent.token = None

    async def _login(self, agent: DeskAgent) -> None:
        """Log in with the PIN, trying again until the dialer answers (it may start after the simulator)."""
        while agent.token is None:
            body = await self._request("POST", "/login", {"login": agent.login, "pin": self.config.pin}, None)
            if body is not None:
                agent.token = str(body["token"])
                if not self.meanings:
                    await self._read_codes(agent)
                return
            await asyncio.sleep(max(self.config.retry_s, 0.05) * 5)

    async def _read_codes(self, agent: DeskAgent) -> None:
        me = await self._call(agent, "GET", "/me", None)
        for campaign in (me or {}).get("campaigns", []):
            for d in campaign.get("dispositions", []):
                self.meanings.setdefault(str(d["code"]), str(d["meaning"]))

    # -- calls -----------------------------------------------------------------------------------------------
    async def _learn_call(self, agent: DeskAgent, call_id: str) -> None:
        """The screen-pop: which of the dialer's attempts the connected call is (the dialer already routed it)."""
        for _ in range(CALL_LOOKUPS):
            body = await self._call(agent, "GET", "/call", None)
            call = (body or {}).get("call")
            if call is not None and call.get("attempt_id") not in agent.attempts.values():
                agent.attempts[call_id] = int(call["attempt_id"])
                return
            await asyncio.sleep(self.config.retry_s)
        self.errors["call_not_shown"] += 1

    def _draw(self) -> tuple[str, str | None, bool]:
        """A disposition code from the scenario's probabilities (only the campaign's codes), its callback time in
        world seconds from now (None unless it is a call back), and whether that callback is "only me"."""
        probs = {c: p for c, p in self.config.dispositions.items() if not self.meanings or c in self.meanings}
        if not probs or sum(probs.values()) <= 0:
            probs = {"sale": 1.0}
        codes = list(probs)
        code = self.rng.choices(codes, weights=[probs[c] for c in codes])[0]
        if self.meanings.get(code) != "callback":
            return code, None, False
        delay = self.config.callback_after.sample(self.rng) / self.sim.time_scale
        when = datetime.fromtimestamp(self.sim.now() + delay, UTC).isoformat(timespec="seconds")
        return code, when, self.rng.random() < self.config.only_me

    async def _dispose(self, agent: DeskAgent, call_id: str) -> None:
        if call_id not in agent.attempts:
            body = await self._call(agent, "GET", "/call", None)
            call = (body or {}).get("call")
            if call is None:
                self.errors["disposition_without_call"] += 1
                return
            agent.attempts[call_id] = int(call["attempt_id"])
        attempt_id = agent.attempts[call_id]
        code, callback_at, only_me = self._draw()
        payload: dict[str, Any] = {"attempt_id": attempt_id, "code": code, "note": self.config.note}
        if callback_at is not None:
            payload |= {"callback_at": callback_at, "only_me": only_me}
        record = {"call_id": call_id, "attempt_id": attempt_id, "extension": agent.extension, "login": agent.login,
                  "code": code, "meaning": self.meanings.get(code), "callback_at": callback_at, "only_me": only_me,
                  "asked_at": self.sim.now(), "at": None, "status": None}  # fmt: skip
        self.dispositions.append(record)
        task = asyncio.create_task(self._save(agent, payload, record))
        agent.pending.add(task)
        task.add_done_callback(agent.pending.discard)

    async def _save(self, agent: DeskAgent, payload: dict[str, Any], record: dict[str, Any]) -> None:
        """Post the disposition; while the dialer has not yet seen the call end (422), try again."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + DISPOSITION_PATIENCE_S
        while True:
            status, body = await self._send(agent, "POST", "/disposition", payload)
            record["status"] = status
            if status == 200 or status is None or status not in (422, 503) or loop.time() > give_up:
                break
            await asyncio.sleep(self.config.retry_s)
        record["at"] = self.sim.now()
        record["answer"] = body if status != 200 else {"contact_state": (body or {}).get("contact_state")}
        if status != 200:
            self.errors[f"disposition_{status}"] += 1

    # -- HTTP ------------------------------------------------------------------------------------------------
    async def _call(self, agent: DeskAgent, method: str, path: str, body: Any) -> dict[str, Any] | None:
        status, answer = await self._send(agent, method, path, body)
        return answer if status == 200 else None

    async def _send(self, agent: DeskAgent, method: str, path: str, body: Any) -> tuple[int | None, Any]:
        headers = {"Authorization": f"Bearer {agent.token}"} if agent.token else {}
        return await self._request_status(method, path, body, headers)

    async def _request(self, method: str, path: str, body: Any, headers: dict[str, str] | None) -> Any:
        status, answer = await self._request_status(method, path, body, headers or {})
        return answer if status == 200 else None

    async def _request_status(self, method: str, path: str, body: Any,
                              headers: dict[str, str]) -> tuple[int | None, Any]:  # fmt: skip
        base = self.api_url()
        if base is None or self.client is None:
            self.errors["no_api_url"] += 1
            return None, None
        send: Callable[[], Awaitable[httpx.Response]] = (
            (lambda: self.client.get(base + path, headers=headers)) if method == "GET"  # type: ignore[union-attr]
            else (lambda: self.client.post(base + path, json=body, headers=headers))  # type: ignore[union-attr]
        )
        try:
            resp = await send()
        except httpx.HTTPError as exc:
            self.errors[type(exc).__name__] += 1
            return None, None
        try:
            answer = resp.json()
        except ValueError:
            answer = None
        if resp.status_code != 200:
            self.errors[f"{path} {resp.status_code}"] += 1
        return resp.status_code, answer

    # -- the record ------------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "agents": [{"extension": a.extension, "login": a.login, "state": a.state, "logged_in": a.token is not None}
                       for a in self.agents.values()],
            "timeline": list(self.timeline),
            "dispositions": [dict(d) for d in self.dispositions],
            "errors": dict(self.errors),
            "api_url": self.api_url(),
        }  # fmt: skip
