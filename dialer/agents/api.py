"""The agents' HTTP API under ``/api`` on the daemon's webhook port: log in with a PIN, change state, the call routed
to you with its record (the screen-pop), dispositions, your callbacks, and a server-sent-events stream of your own
events. The endpoints, their bodies and answers are listed once, in ``dialer.agents.openapi``.

Request path: the body is read (at most 64 KiB) and validated on the event loop; the token check and the work run
in one database session on a worker thread (never on the loop the webhooks share), and a write commits before the
answer; after it, the agents' streams are woken and, inside the daemon, the live state and the pacing job of the
agent's campaigns are told (``on_team_change``).

Invariants: every answer is JSON, every error ``{"error": "...", "detail": ...}`` with a 4xx status for anything
the client sent (a 500 means a bug, and is logged); a refused request writes nothing (the session rolls back); an
agent reads and changes only their own session, calls and callbacks.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from dialer.agents.accounts import AgentError, authenticate, campaign_ids_of, normalise_login
from dialer.agents.api_models import (
    CallbacksOut,
    CallOut,
    DispositionBody,
    DispositionOut,
    LoginBody,
    LoginOut,
    LogoutOut,
    MeOut,
    StateBody,
    StateChangeOut,
)
from dialer.agents.callbacks import CallbackTimeError, callback_time_for, list_callbacks
from dialer.agents.feed import AgentFeed, parse_last_event_id
from dialer.agents.openapi import ENDPOINTS, Endpoint, openapi_document
from dialer.agents.sessions import set_presence
from dialer.agents.tokens import DEFAULT_TTL_S, LoginLimiter, check_token, issue_token, revoke_token
from dialer.agents.views import (
    agent_out,
    call_for_agent,
    callback_out,
    campaigns_out,
    current_attempt,
    my_callbacks,
    state_out,
)
from dialer.db import session_scope
from dialer.logs import log_event
from dialer.models import Agent, AgentToken, Attempt, utcnow
from dialer.outcomes.agent_states import changed_agents
from dialer.outcomes.dispositions import DispositionError, ErrorKind, save_disposition
from dialer.outcomes.states import AgentState, Presence

log = logging.getLogger("dialer.api")

MAX_BODY_BYTES = 64 * 1024
_STATUS = {ErrorKind.NOT_FOUND: 404, ErrorKind.FORBIDDEN: 403, ErrorKind.CONFLICT: 409, ErrorKind.INVALID: 422}
M = TypeVar("M", bound=BaseModel)
_ENUM_REPR = re.compile(r"<\w+\.\w+: ('[^']*')>")


class ApiError(Exception):
    """An answer other than 200: its status, message and detail."""

    def __init__(self, status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def error_response(status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> Response:
    # ASCII-escaped: a message may quote what the client sent, whatever it was.
    body = json.dumps({"error": error, "detail": detail}, ensure_ascii=True, default=str)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _refused(exc: AgentError | DispositionError) -> ApiError:
    return ApiError(_STATUS[exc.kind], str(exc))


@dataclass(frozen=True)
class _Caller:
    agent: Agent
    token: AgentToken


_UNAUTHORISED = {"WWW-Authenticate": "Bearer"}


class AgentApi:
    """The API over one database. ``app`` is the Starlette app (mount it with ``mount()``); ``feed`` the event
    streams (``attach`` it to the webhook processor so calls wake them; ``close`` ends them)."""

    def __init__(
        self,
        db: Engine,
        *,
        token_ttl_s: float = DEFAULT_TTL_S,
        limiter: LoginLimiter | None = None,
        on_team_change: Callable[[Collection[int]], None] | None = None,
        poll_s: float = 2.0,
        keepalive_s: float = 15.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.token_ttl_s = token_ttl_s
        self.limiter = limiter or LoginLimiter()
        self.on_team_change = on_team_change
        self.clock = clock
        self.feed = AgentFeed(db, poll_s=poll_s, keepalive_s=keepalive_s, clock=clock)
        self._document = openapi_document()
        self.app = Starlette(
            routes=[Route(e.path, self._handler(e), methods=[e.method], name=e.name) for e in ENDPOINTS],
            exception_handlers={HTTPException: self._http_error, Exception: self._crash},  # type: ignore[dict-item]
        )

    def mount(self, path: str = "/api") -> Mount:
        return Mount(path, app=self.app)

    def attach(self, processor: Any) -> None:
        """Wake the agents' streams after each webhook batch that changed their sessions."""
        processor.agent_listeners.append(self.feed.agents_changed)

    def close(self) -> None:
        self.feed.close()

    # --- plumbing -------------------------------------------------------------------------------------------

    def _handler(self, endpoint: Endpoint) -> Callable[[Request], Any]:
        work = getattr(self, "_" + endpoint.name)

        async def handle(request: Request) -> Response:
            try:
                body = await self._body(request, endpoint)
                return await work(request, body)
            except ApiError as exc:
                return error_response(exc.status, exc.error, exc.detail, exc.headers)

        return handle

    async def _body(self, request: Request, endpoint: Endpoint) -> BaseModel | None:
        if endpoint.body is None:
            return None
        length = request.headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
        if not raw.strip():
            if not endpoint.body_optional:
                raise ApiError(400, "the body is empty: send a JSON object")
            raw = bytearray(b"{}")
        return parse_body(endpoint.body, bytes(raw))

    async def _run(self, request: Request, work: Callable[[Session, _Caller, datetime], M], *,
                   write: bool = True, query_token: bool = False) -> M:  # fmt: skip
        """``work`` with the caller's agent, in one session on a worker thread; then tell who needs to know."""
        token = bearer_token(request, allow_query=query_token)

        def run() -> tuple[M, set[int], list[int]]:
            now = self.clock()
            with session_scope(self.db, write=write) as s:
                found = check_token(s, token, now)
                if found is None:
                    raise ApiError(401, "the token is unknown, expired or revoked: log in again (POST /api/login)",
                                   headers=_UNAUTHORISED)  # fmt: skip
                caller = _Caller(*found)
                result = work(s, caller, now)
                changed = changed_agents(s)
                campaigns = campaign_ids_of(s, caller.agent.id or 0) if changed else []
            return result, changed, campaigns

        result, changed, campaigns = await run_in_threadpool(run)
        self._tell(changed, campaigns)
        return result

    def _tell(self, changed: set[int], campaigns: Sequence[int]) -> None:
        if changed:
            self.feed.agents_changed(changed)
        if changed and campaigns and self.on_team_change is not None:
            try:
                self.on_team_change(campaigns)
            except Exception as exc:  # the change is committed; pacing catches up at its next tick anyway
                log_event(log, logging.ERROR, "telling the daemon of an agent change failed",
                          error=f"{type(exc).__name__}: {exc}")  # fmt: skip

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        text = {404: "no such endpoint (see /api/openapi.json)", 405: "method not allowed for this endpoint"}
        return error_response(exc.status_code, text.get(exc.status_code, str(exc.detail)), None,
                              dict(exc.headers) if exc.headers else None)  # fmt: skip

    async def _crash(self, request: Request, exc: Exception) -> Response:
        log_event(log, logging.ERROR, "agent API request failed", path=request.url.path,
                  error=f"{type(exc).__name__}: {exc}")  # fmt: skip
        return error_response(500, "internal error (logged)")

    # --- endpoints ------------------------------------------------------------------------------------------

    async def _login(self, request: Request, body: LoginBody) -> Response:
        login, client = normalise_login(body.login), client_address(request)
        wait = self.limiter.retry_after(login, client)
        if wait > 0:
            seconds = int(wait) + 1
            raise ApiError(429, "too many wrong PINs: wait before trying again", {"retry_after_s": seconds},
                           {"Retry-After": str(seconds)})  # fmt: skip

        def check() -> Agent | None:
            # The PIN check (a deliberately slow hash) runs outside any write transaction.
            with session_scope(self.db, write=False) as s:
                return authenticate(s, login, body.pin)

        agent = await run_in_threadpool(check)
        if agent is None:
            self.limiter.failed(login, client)
            log_event(log, logging.WARNING, "agent login refused: wrong login or PIN", login=login[:40],
                      client=client)  # fmt: skip
            raise ApiError(401, "wrong login or PIN", headers=_UNAUTHORISED)
        self.limiter.succeeded(login)

        def issue() -> LoginOut:
            now = self.clock()
            with session_scope(self.db) as s:
                fresh = s.get(Agent, agent.id)
                if fresh is None or fresh.removed_at is not None:
                    raise ApiError(401, "wrong login or PIN", headers=_UNAUTHORISED)
                issued = issue_token(s, fresh, now, ttl_s=self.token_ttl_s, client=client)
                return LoginOut(token=issued.token, expires_at=issued.expires_at, agent=agent_out(fresh),
                                state=state_out(fresh, now))  # fmt: skip

        out = await run_in_threadpool(issue)
        log_event(log, logging.INFO, "agent logged in to the API", login=login, client=client)
        return json_response(out)

    async def _logout(self, request: Request, _body: BaseModel) -> Response:
        def work(s: Session, caller: _Caller, now: datetime) -> LogoutOut:
            deferred = False
            if caller.agent.state != AgentState.LOGGED_OUT:
                deferred = self._presence(s, caller.agent, Presence.LOGOUT, now)
            revoke_token(s, caller.token.id or 0, now)
            return LogoutOut(state=state_out(caller.agent, now), deferred=deferred)

        return json_response(await self._run(request, work))

    async def _me(self, request: Request, _body: None) -> Response:
        def work(s: Session, caller: _Caller, now: datetime) -> MeOut:
            return MeOut(agent=agent_out(caller.agent), state=state_out(caller.agent, now),
                         campaigns=campaigns_out(s, caller.agent), token_expires_at=caller.token.expires_at)

        return json_response(await self._run(request, work, write=False))

    async def _state(self, request: Request, body: StateBody) -> Response:
        target = body.state
        if body.code is not None and target not in (AgentState.PAUSED, "pause"):
            raise ApiError(422, "a pause code goes with the state paused", {"code": body.code})

        def work(s: Session, caller: _Caller, now: datetime) -> StateChangeOut:
            agent = caller.agent
            if target in (AgentState.LOGGED_OUT, "logout"):
                if agent.state == AgentState.LOGGED_OUT:
                    return StateChangeOut(state=state_out(agent, now), deferred=False)  # already: nothing to do
                request_ = Presence.LOGOUT
            elif target in (AgentState.PAUSED, "pause"):
                if body.code is None:
                    raise ApiError(422, "a pause needs a pause code (see GET /api/me for your campaigns' codes)")
                if agent.state == AgentState.LOGGED_OUT:
                    self._presence(s, agent, Presence.LOGIN, now)
                request_ = Presence.PAUSE
            else:
                request_ = Presence.LOGIN if agent.state == AgentState.LOGGED_OUT else Presence.READY
            deferred = self._presence(s, agent, request_, now, body.code)
            return StateChangeOut(state=state_out(agent, now), deferred=deferred)

        return json_response(await self._run(request, work))

    @staticmethod
    def _presence(s: Session, agent: Agent, request: Presence, now: datetime, code: str | None = None) -> bool:
        try:
            result = set_presence(s, agent.login, request, now, code)
        except AgentError as exc:
            raise _refused(exc) from None
        return result.deferred

    async def _call(self, request: Request, _body: None) -> Response:
        wanted = int_query(request, "attempt_id", 1, 2**62)

        def work(s: Session, caller: _Caller, now: datetime) -> CallOut:
            attempt_id = wanted if wanted is not None else current_attempt(caller.agent, now)
            if attempt_id is None:
                return CallOut(call=None)
            try:
                return CallOut(call=call_for_agent(s, caller.agent, attempt_id, now))
            except DispositionError as exc:
                raise _refused(exc) from None

        return json_response(await self._run(request, work, write=False))

    async def _disposition(self, request: Request, body: DispositionBody) -> Response:
        def work(s: Session, caller: _Caller, now: datetime) -> DispositionOut:
            agent = caller.agent
            attempt = s.get(Attempt, body.attempt_id)
            if attempt is None:
                raise ApiError(404, f"no call attempt {body.attempt_id}")
            if attempt.agent_id != agent.id:
                raise ApiError(403, f"call attempt {body.attempt_id} was not routed to you")
            try:
                when = callback_time_for(s, attempt.id or 0, body.callback_at, now) if body.callback_at else None
                r = save_disposition(s, attempt.id or 0, body.code, now=now, agent_id=agent.id, note=body.note,
                                     callback_at=when, only_me=body.only_me)  # fmt: skip
            except CallbackTimeError as exc:
                raise ApiError(422, str(exc), {"callback_at": body.callback_at}) from None
            except DispositionError as exc:
                raise _refused(exc) from None
            placed = list_callbacks(s, ids=[r.callback_id]) if r.callback_id is not None else []
            callback = callback_out(placed[0], now) if placed else None
            return DispositionOut(attempt_id=r.attempt_id, code=r.code, meaning=r.meaning.value,
                                  contact_id=r.contact_id, contact_state=r.contact_state, contact_moved=r.contact_moved,
                                  callback=callback, dnc_added=r.dnc_added, state=state_out(agent, now))  # fmt: skip

        return json_response(await self._run(request, work))

    async def _callbacks(self, request: Request, _body: None) -> Response:
        limit = int_query(request, "limit", 1, 1000) or 100

        def work(s: Session, caller: _Caller, now: datetime) -> CallbacksOut:
            return CallbacksOut(callbacks=my_callbacks(s, caller.agent, now, limit))

        return json_response(await self._run(request, work, write=False))

    async def _events(self, request: Request, _body: None) -> Response:
        last = parse_last_event_id(request.headers.get("last-event-id"))

        def work(s: Session, caller: _Caller, now: datetime) -> MeOut:
            return MeOut(agent=agent_out(caller.agent), state=state_out(caller.agent, now), campaigns=[],
                         token_expires_at=caller.token.expires_at)

        me = await self._run(request, work, write=False, query_token=True)
        token = bearer_token(request, allow_query=True)
        if request.method == "HEAD":  # a stream has no end for a HEAD to wait for
            return Response(media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return StreamingResponse(self.feed.stream(me.agent.id, token, last), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip

    async def _openapi(self, request: Request, _body: None) -> Response:
        return JSONResponse(self._document)


# --- helpers ----------------------------------------------------------------------------------------------------


def parse_body(model: type[M], raw: bytes) -> M:
    """``raw`` as ``model``; ApiError 400 (not JSON) or 422 (each field and what is wrong with it)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise ApiError(400, "the body is not valid JSON") from None
        if any(e["type"] == "model_type" and not e["loc"] for e in errors):
            raise ApiError(422, "the body must be a JSON object") from None
        # A choice of enum members reads "<AgentState.READY: 'ready'>": people and clients want 'ready'.
        detail = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)",
                   "problem": _ENUM_REPR.sub(r"\1", e["msg"])[:200]} for e in errors[:20]]  # fmt: skip
        raise ApiError(422, "the body is not valid: " + "; ".join(f"{d['field']}: {d['problem']}" for d in detail[:3]),
                       detail) from None  # fmt: skip


def bearer_token(request: Request, *, allow_query: bool = False) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if allow_query and request.query_params.get("access_token"):
        return request.query_params["access_token"].strip()
    raise ApiError(401, "no token: send 'Authorization: Bearer <token>' from POST /api/login",
                   headers=_UNAUTHORISED)  # fmt: skip


def int_query(request: Request, name: str, lo: int, hi: int) -> int | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    value = text.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or not lo <= int(value) <= hi:
        raise ApiError(422, f"{name} must be a whole number from {lo} to {hi}", {name: text[:100]})
    return int(value)


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "?"


def json_response(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")
