"""The agent's desk (``/agent``): log in with login and PIN, ready, pause with a code, log out, the call routed to
you with its record (pushed by the agents' event feed), dispositions with hotkeys, call-backs and your callbacks.

The same library the agents' API calls does the work (``agents.sessions``, ``outcomes.dispositions``,
``agents.views``), with the API's session token kept in the signed cookie: so the desk, the API and the CLI agree on
every rule, and the wrong-PIN limit is the API's (``agents.tokens.LoginLimiter``). The page works as plain forms;
``desk.js`` adds the live parts (the record appears when the feed says a call was routed, the timer, hotkeys).

Invariants: an agent sees only their own session, calls and callbacks (``views.call_for_agent`` refuses another's);
a refused action changes nothing and says why on the page.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus
from zoneinfo import ZoneInfo

from sqlmodel import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from dialer.agents.accounts import AgentError, authenticate, campaign_ids_of, normalise_login
from dialer.agents.api_models import CallRecord
from dialer.agents.callbacks import CallbackTimeError, callback_time_for
from dialer.agents.feed import parse_last_event_id
from dialer.agents.sessions import set_presence
from dialer.agents.tokens import check_token, issue_token, revoke_token
from dialer.agents.views import call_for_agent, campaigns_out, current_attempt, my_callbacks, state_out
from dialer.db import session_scope
from dialer.logs import log_event
from dialer.models import Agent, Attempt
from dialer.outcomes.agent_states import changed_agents
from dialer.outcomes.dispositions import DispositionError, save_disposition
from dialer.outcomes.states import AgentState, Presence
from dialer.web.security import Kind, Who

if TYPE_CHECKING:
    from dialer.web.app import Console

log = logging.getLogger("dialer.web")
_PRESENCE = {p.value: p for p in (Presence.READY, Presence.PAUSE)}


class Refused(Exception):
    """An action the agent asked for that cannot be done: shown on the desk."""


@dataclass(frozen=True)
class _Done:
    changed: set[int]
    campaigns: list[int]
    note: str = ""


def desk_routes(console: Console) -> list[BaseRoute]:
    desk = Desk(console)
    return [
        Route("/agent/login", desk.login_page, methods=["GET"]),
        Route("/agent/login", desk.login, methods=["POST"]),
        Route("/agent", desk.page, methods=["GET"]),
        Route("/agent/panel", desk.panel, methods=["GET"]),
        Route("/agent/state", desk.state, methods=["POST"]),
        Route("/agent/disposition", desk.disposition, methods=["POST"]),
        Route("/agent/logout", desk.logout, methods=["POST"]),
        Route("/agent/events", desk.events, methods=["GET"]),
    ]


class Desk:
    def __init__(self, console: Console) -> None:
        self.c = console

    # --- logging in and out ---------------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        who = self.c.who(request)
        if who is not None and who.kind == Kind.AGENT:
            return self.c.redirect("/agent")
        return self.c.page("agent_login.html", who, error=None, login="")

    async def login(self, request: Request) -> Response:
        who = self.c.who(request)
        if who is None:
            raise HTTPException(403, "the form's security token is missing or stale: reload the page and try again")
        form = await self.c.form(request, who)
        login, pin = normalise_login(str(form.get("login") or "")), str(form.get("pin") or "")
        client = request.client.host if request.client is not None else "?"
        wait = self.c.limiter.retry_after(login, client)
        if wait > 0:
            return self.c.page("agent_login.html", who, status=429, login=login,
                               error=f"Too many wrong PINs: try again in {int(wait) + 1} s.")  # fmt: skip
        agent = await self.c.run(self._authenticate, login, pin)
        if agent is None:
            self.c.limiter.failed(login, client)
            log_event(log, logging.WARNING, "desk login refused: wrong login or PIN", login=login[:40], client=client)
            return self.c.page("agent_login.html", who, status=401, login=login, error="Wrong agent id or PIN.")
        self.c.limiter.succeeded(login)
        token = await self.c.run(self._issue, agent.id or 0, client)
        log_event(log, logging.INFO, "agent logged in to the desk", login=login, client=client)
        return self.c.redirect("/agent", Who(Kind.AGENT, who.csrf, agent_id=agent.id or 0, token=token,
                                             name=agent.login))  # fmt: skip

    def _authenticate(self, login: str, pin: str) -> Agent | None:
        with session_scope(self.c.db, write=False) as s:
            return authenticate(s, login, pin)

    def _issue(self, agent_id: int, client: str) -> str:
        with session_scope(self.c.db) as s:
            agent = s.get(Agent, agent_id)
            assert agent is not None
            return issue_token(s, agent, self.c.clock(), ttl_s=self.c.token_ttl_s, client=client).token

    async def logout(self, request: Request) -> Response:
        who = self.c.require(request, Kind.AGENT)
        await self.c.form(request, who)

        def work(s: Session, agent: Agent, now: datetime) -> str:
            note = ""
            if agent.state != AgentState.LOGGED_OUT:
                deferred = set_presence(s, agent.login, Presence.LOGOUT, now).deferred
                note = "You will be logged out when this call ends." if deferred else ""
            found = check_token(s, who.token, now)
            if found is not None and not note:
                revoke_token(s, found[1].id or 0, now)
            return note

        try:
            note = await self._act(who, work)
        except Refused:
            note = ""
        if note:
            return self.c.redirect("/agent?note=" + _q(note))
        response = self.c.redirect("/agent/login")
        self.c.sessions.clear(response)
        return response

    # --- the desk -------------------------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        who = self.c.require(request, Kind.AGENT)
        view = await self.c.run(self._view, who)
        if view is None:
            return self._ended()
        return self.c.page("agent.html", who, note=request.query_params.get("note", "")[:200],
                           error=request.query_params.get("error", "")[:300], **view)  # fmt: skip

    async def panel(self, request: Request) -> Response:
        """The call panel alone, for the page's script to swap in when a call is routed."""
        who = self.c.require(request, Kind.AGENT)
        view = await self.c.run(self._view, who)
        if view is None:
            return Response(status_code=401)
        html = self.c.fragment("agent_call.html", csrf=who.csrf, **view)
        return Response(html, media_type="text/html")

    def _view(self, who: Who) -> dict[str, Any] | None:
        now = self.c.clock()
        with session_scope(self.c.db, write=False) as s:
            found = check_token(s, who.token, now)
            if found is None:
                return None
            agent = found[0]
            attempt_id = current_attempt(agent, now)
            call: CallRecord | None = None
            if attempt_id is not None:
                try:
                    call = call_for_agent(s, agent, attempt_id, now)
                except DispositionError:
                    call = None
            campaigns = campaigns_out(s, agent)
            codes = list(dict.fromkeys(p.code for c in campaigns for p in c.pause_codes))
            return {"agent": agent, "state": state_out(agent, now), "call": call, "campaigns": campaigns,
                    "pause_codes": codes, "callbacks": my_callbacks(s, agent, now, 50), "now": now,
                    "contact_local": _local(call.contact.zone, now) if call is not None else ""}  # fmt: skip

    def _ended(self) -> Response:
        response = self.c.redirect("/agent/login")
        self.c.sessions.clear(response)
        return response

    # --- actions --------------------------------------------------------------------------------------------

    async def state(self, request: Request) -> Response:
        who = self.c.require(request, Kind.AGENT)
        form = await self.c.form(request, who)
        wanted = _PRESENCE.get(str(form.get("state") or ""))
        code = str(form.get("code") or "").strip() or None
        if wanted is None:
            raise HTTPException(422, "choose ready or pause")

        def work(s: Session, agent: Agent, now: datetime) -> str:
            if agent.state == AgentState.LOGGED_OUT:
                set_presence(s, agent.login, Presence.LOGIN, now)
                if wanted == Presence.READY:
                    return ""
            result = set_presence(s, agent.login, wanted, now, code if wanted == Presence.PAUSE else None)
            return "Your pause starts when this call ends." if result.deferred else ""

        return await self._answer(who, work)

    async def disposition(self, request: Request) -> Response:
        who = self.c.require(request, Kind.AGENT)
        form = await self.c.form(request, who)
        text = str(form.get("attempt_id") or "")
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            raise HTTPException(422, "no call to save a disposition for")
        attempt_id, code = int(text), str(form.get("code") or "")
        note = str(form.get("note") or "")[:2000]
        at_text = str(form.get("callback_at") or "").strip()
        only_me = form.get("only_me") in ("1", "on", "yes")

        def work(s: Session, agent: Agent, now: datetime) -> str:
            attempt = s.get(Attempt, attempt_id)
            if attempt is None or attempt.agent_id != agent.id:
                raise Refused(f"call {attempt_id} was not routed to you")
            try:
                when = callback_time_for(s, attempt_id, at_text, now) if at_text else None
            except CallbackTimeError as exc:
                raise Refused(str(exc)) from None
            result = save_disposition_for(s, attempt_id, code, agent, now, note, when, only_me)
            return f"Saved: {result}."

        return await self._answer(who, work)

    async def _answer(self, who: Who, work: Any) -> Response:
        try:
            note = await self._act(who, work)
        except Refused as exc:
            return self.c.redirect("/agent?error=" + _q(str(exc)))
        return self.c.redirect("/agent" + ("?note=" + _q(note) if note else ""))

    async def _act(self, who: Who, work: Any) -> str:
        """``work(session, agent, now)`` for the cookie's agent in one transaction; then wake whoever listens."""

        def run() -> tuple[str, _Done]:
            now = self.c.clock()
            with session_scope(self.c.db) as s:
                found = check_token(s, who.token, now)
                if found is None:
                    raise Refused("your session ended: log in again")
                agent = found[0]
                try:
                    note = work(s, agent, now)
                except (AgentError, DispositionError) as exc:
                    raise Refused(str(exc)) from None
                changed = changed_agents(s)
                return note, _Done(changed, campaign_ids_of(s, agent.id or 0) if changed else [])

        note, done = await self.c.run(run)
        if done.changed:
            self.c.feed.agents_changed(done.changed)
            self.c.board.wake()
            if done.campaigns and self.c.on_team_change is not None:
                try:
                    self.c.on_team_change(done.campaigns)
                except Exception as exc:  # committed; pacing catches up at its next tick
                    log_event(log, logging.ERROR, "telling the daemon of an agent change failed",
                              error=f"{type(exc).__name__}: {exc}")  # fmt: skip
        return note

    # --- the live feed --------------------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        who = self.c.require(request, Kind.AGENT)
        last = parse_last_event_id(request.headers.get("last-event-id"))
        return StreamingResponse(self.c.feed.stream(who.agent_id, who.token, last), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip


def save_disposition_for(s: Session, attempt_id: int, code: str, agent: Agent, now: datetime, note: str,
                         when: datetime | None, only_me: bool) -> str:  # fmt: skip
    r = save_disposition(s, attempt_id, code, now=now, agent_id=agent.id, note=note or None, callback_at=when,
                         only_me=only_me)  # fmt: skip
    said = r.code.replace("_", " ")
    if r.callback_next_try_at is not None:
        said += f", call back at {r.callback_next_try_at.strftime('%Y-%m-%d %H:%M')} UTC"
    return said


def _local(zone: str, now: datetime) -> str:
    try:
        return now.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")
    except Exception:  # a zone this system lacks: the record already says UTC then
        return now.strftime("%Y-%m-%d %H:%M")


def _q(text: str) -> str:
    return quote_plus(text[:300])

