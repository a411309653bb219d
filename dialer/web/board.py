"""The supervisors' pages: log in with a password, the wallboard (``/``) kept live over server-sent events, and the
campaign actions: start, pause, resume, stop, agents and pacing settings (``ingest.campaigns``, as the CLI).

The live part of the wallboard is one HTML fragment (``board_live.html``) rendered on the server and pushed whole
when it changes: a stream re-reads it when woken (an agent changed: the webhooks or the desk) and at least every
``poll_s`` (changes made by the daemon or the CLI in another process), and sends it only if it differs from what
that stream sent last. Concurrent streams share one read per ``poll_s`` (``Board.fragment``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from dialer.db import session_scope
from dialer.ingest import campaigns as svc
from dialer.logs import log_event
from dialer.outcomes.states import CAMPAIGN_ACTIONS
from dialer.web.security import Kind, Who
from dialer.web.users import active_user, authenticate_user, normalise_name
from dialer.web.wallboard import BoardReader

if TYPE_CHECKING:
    from dialer.web.app import Console

log = logging.getLogger("dialer.web")
# What the settings form may change, each checked by the campaign settings parser.
SETTINGS = ("agents", "pacing", "abandon_target", "window", "wrapup_s")
# The campaign actions the wallboard offers (deleting stays a deliberate CLI command).
ACTIONS = ("start", "pause", "resume", "stop")


def board_routes(console: Console) -> list[BaseRoute]:
    b = console.board
    return [
        Route("/login", b.login_page, methods=["GET"]),
        Route("/login", b.login, methods=["POST"]),
        Route("/logout", b.logout, methods=["POST"]),
        Route("/", b.page, methods=["GET"]),
        Route("/board/live", b.live, methods=["GET"]),
        Route("/board/events", b.events, methods=["GET"]),
        Route("/campaigns/{name}", b.campaign_page, methods=["GET"]),
        Route("/campaigns/{name}/action", b.action, methods=["POST"]),
        Route("/campaigns/{name}/settings", b.settings, methods=["POST"]),
        *console.files.routes(),
    ]


class Board:
    def __init__(self, console: Console, *, poll_s: float) -> None:
        self.c = console
        self.poll_s = poll_s
        self.reader = BoardReader(console.db)
        self._lock = threading.Lock()
        self._cached: tuple[float, str] = (0.0, "")
        self._events: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._closed = False

    # --- logging in -----------------------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        who = self.c.who(request)
        if who is not None and who.kind == Kind.SUPERVISOR:
            return self.c.redirect("/")
        return self.c.page("login.html", who, error=None, name="")

    async def login(self, request: Request) -> Response:
        who = self.c.who(request)
        if who is None:
            raise HTTPException(403, "the form's security token is missing or stale: reload the page and try again")
        form = await self.c.form(request, who)
        name, password = normalise_name(str(form.get("name") or "")), str(form.get("password") or "")
        client = request.client.host if request.client is not None else "?"
        wait = self.c.limiter.retry_after("user:" + name, client)
        if wait > 0:
            return self.c.page("login.html", who, status=429, name=name,
                               error=f"Too many wrong passwords: try again in {int(wait) + 1} s.")  # fmt: skip

        def check() -> tuple[int, str] | None:
            with session_scope(self.c.db, write=False) as s:
                user = authenticate_user(s, name, password)
                return (user.id or 0, user.name) if user is not None else None

        found = await self.c.run(check)
        if found is None:
            self.c.limiter.failed("user:" + name, client)
            log_event(log, logging.WARNING, "console login refused", user=name[:64], client=client)
            return self.c.page("login.html", who, status=401, name=name, error="Wrong name or password.")
        self.c.limiter.succeeded("user:" + name)
        log_event(log, logging.INFO, "supervisor logged in to the console", user=name, client=client)
        return self.c.redirect("/", Who(Kind.SUPERVISOR, who.csrf, user_id=found[0], name=found[1]))

    async def logout(self, request: Request) -> Response:
        who = self.c.who(request)
        if who is None:
            raise HTTPException(403, "log in first")
        await self.c.form(request, who)
        response = self.c.redirect("/login")
        self.c.sessions.clear(response)
        return response

    async def _user(self, request: Request) -> Who:
        """The supervisor's session, checked against the users table (a disabled user is refused)."""
        who = self.c.require(request, Kind.SUPERVISOR)

        def check() -> bool:
            with session_scope(self.c.db, write=False) as s:
                return active_user(s, who.user_id) is not None

        if not await self.c.run(check):
            raise HTTPException(403, "this login was disabled: ask for a new one")
        return who

    # --- the wallboard --------------------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        who = self.c.who(request)
        if who is not None and who.kind == Kind.AGENT:
            return self.c.redirect("/agent")
        who = await self._user(request)
        live = await self.fragment(0.0)
        names = await self.c.run(self._campaign_names)
        return self.c.page("board.html", who, live=live, campaigns=names, actions=ACTIONS,
                           note=request.query_params.get("note", "")[:300],
                           error=request.query_params.get("error", "")[:300])  # fmt: skip

    async def live(self, request: Request) -> Response:
        await self._user(request)
        return Response(await self.fragment(0.0), media_type="text/html")

    def _campaign_names(self) -> list[tuple[str, str]]:
        with session_scope(self.c.db, write=False) as s:
            return [(c.name, c.state) for c in svc.list_campaigns(s)]

    async def fragment(self, max_age_s: float) -> str:
        """The live part, read at most once per ``max_age_s`` whoever asks."""
        at, html = self._cached
        if html and time.monotonic() - at <= max_age_s:
            return html
        return await self.c.run(self._render)

    def _render(self) -> str:
        with self._lock:
            started = time.monotonic()
            view = self.reader.read(self.c.clock())
            html = self.c.fragment("board_live.html", b=view)
            self._cached = (started, html)
            return html

    def wake(self) -> None:
        """Something changed: every stream re-reads now."""
        self._cached = (0.0, self._cached[1])
        for loop, event in list(self._events):
            with contextlib.suppress(RuntimeError):  # that stream's loop has closed
                loop.call_soon_threadsafe(event.set)

    def close(self) -> None:
        self._closed = True
        self.wake()

    async def events(self, request: Request) -> Response:
        await self._user(request)
        return StreamingResponse(self._stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip

    async def _stream(self) -> AsyncIterator[str]:
        entry = (asyncio.get_running_loop(), asyncio.Event())
        self._events.add(entry)
        last = ""
        try:
            yield "retry: 2000\n\n"
            while not self._closed:
                html = await self.fragment(self.poll_s / 2)
                if html != last:
                    last = html
                    yield "event: board\n" + "".join(f"data: {line}\n" for line in html.splitlines()) + "\n"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(entry[1].wait(), self.poll_s)
                entry[1].clear()
        finally:
            self._events.discard(entry)

    # --- campaign actions -----------------------------------------------------------------------------------

    async def campaign_page(self, request: Request) -> Response:
        who = await self._user(request)
        name = request.path_params["name"]

        def read() -> dict[str, object] | None:
            with session_scope(self.c.db, write=False) as s:
                c = svc.find_campaign(s, name)
                if c is None:
                    return None
                return {"campaign": c, "counts": svc.contact_counts(s, c.id or 0)}

        found = await self.c.run(read)
        if found is None:
            raise HTTPException(404, f"no campaign named {name!r}")
        return self.c.page("campaign.html", who, settings=SETTINGS, note=request.query_params.get("note", "")[:300],
                           error=request.query_params.get("error", "")[:300], result=None,
                           **found)  # fmt: skip

    async def action(self, request: Request) -> Response:
        who = await self._user(request)
        form = await self.c.form(request, who)
        name, action = request.path_params["name"], str(form.get("action") or "")
        if action not in ACTIONS or action not in CAMPAIGN_ACTIONS:
            raise HTTPException(422, f"unknown action {action!r}")

        def work() -> str:
            with session_scope(self.c.db) as s:
                reason = f"paused by {who.name} (console)" if action == "pause" else None
                c = svc.change_state(s, name, action, reason)
                return f"Campaign {c.name}: {action} done, now {c.state}."

        return await self._answer(work, "/", f"campaign {action}", who, name)

    async def settings(self, request: Request) -> Response:
        who = await self._user(request)
        form = await self.c.form(request, who)
        name = request.path_params["name"]
        values = {k: str(form.get(k) or "").strip() for k in SETTINGS if str(form.get(k) or "").strip()}

        def work() -> str:
            with session_scope(self.c.db) as s:
                svc.change_settings(s, name, values)
            return f"Updated {name}: " + ", ".join(f"{k}={v}" for k, v in values.items())

        return await self._answer(work, f"/campaigns/{name}", "campaign settings", who, name)

    async def _answer(self, work: Callable[[], str], back: str, what: str, who: Who, name: str) -> Response:
        back = back if back == "/" else "/campaigns/" + quote(name, safe="")
        try:
            note = await self.c.run(work)
        except (svc.CampaignError, svc.SettingsError, ValueError) as exc:
            return self.c.redirect(f"{back}?error=" + quote_plus(str(exc)[:300]))
        log_event(log, logging.INFO, f"{what} from the console", user=who.name, campaign=name)
        self.wake()
        return self.c.redirect(f"{back}?note=" + quote_plus(note[:300]))
