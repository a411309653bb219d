"""The console's web application: sessions, forms, templates and the routes of the desk and the wallboard.

``Console`` holds what every page needs (the database, the session cookie, the agents' event feed, the wrong-PIN
limiter, the templates) and builds the Starlette app; the pages are in ``desk`` (agents) and ``board``
(supervisors). Database work runs on worker threads, never on the event loop.

Invariants: every page but the login pages needs a session of the right kind (a GET without one is sent to its
login page, anything else refused); every POST carries the session's CSRF token (403 without); templates escape
every value (autoescape on: a contact called ``<script>`` shows as text), and the Content-Security-Policy allows
only the console's own scripts, so an injected inline script would not run either.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from dialer.agents.feed import AgentFeed
from dialer.agents.tokens import DEFAULT_TTL_S, LoginLimiter
from dialer.logs import log_event
from dialer.models import utcnow
from dialer.web.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    Kind,
    Sessions,
    Who,
    anonymous,
    check_csrf,
    console_secret,
)

log = logging.getLogger("dialer.web")

STATIC = Path(__file__).parent / "static"
MAX_FORM_BYTES = 64 * 1024
DEFAULT_UPLOAD_LIMIT = 20 * 1024 * 1024
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Redirect(Exception):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


def _fmt_time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%H:%M UTC") if value else ""


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value else ""


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


class Console:
    """The console over one database. ``feed``: the agents' event streams to share (the daemon's, which the
    webhooks wake); ``on_team_change``: told of the campaigns whose team an agent changed (the daemon ticks them).
    """

    def __init__(
        self,
        db: Engine,
        *,
        feed: AgentFeed | None = None,
        limiter: LoginLimiter | None = None,
        on_team_change: Callable[[Collection[int]], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
        token_ttl_s: float = DEFAULT_TTL_S,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        board_poll_s: float = 0.25,
        secure_cookies: bool = False,
        work_dir: Path | None = None,
    ) -> None:
        from dialer.web.board import Board
        from dialer.web.files import Files

        self.db = db
        self._own_feed = feed is None
        self.feed = feed or AgentFeed(db, poll_s=0.5, clock=clock)
        self.limiter = limiter or LoginLimiter()
        self.on_team_change = on_team_change
        self.clock = clock
        self.token_ttl_s = token_ttl_s
        self.sessions = Sessions(console_secret(db), max_age_s=token_ttl_s, secure=secure_cookies)
        self.templates = Environment(loader=PackageLoader("dialer.web", "templates"),
                                     autoescape=select_autoescape(default=True, default_for_string=True))  # fmt: skip
        self.templates.filters.update(clock=_fmt_time, iso=_iso, percent=_percent)
        self.files = Files(self, upload_limit=upload_limit, work_dir=work_dir)
        self.board = Board(self, poll_s=board_poll_s)
        self.app = Starlette(
            routes=self._routes(),
            exception_handlers={Redirect: self._redirect, HTTPException: self._http_error},  # type: ignore[dict-item]
        )
        self.app.add_middleware(_Headers)

    def _routes(self) -> list[BaseRoute]:
        from dialer.web.board import board_routes
        from dialer.web.desk import desk_routes

        return [*desk_routes(self), *board_routes(self), Mount("/static", StaticFiles(directory=STATIC), name="static")]

    def attach(self, processor: Any) -> None:
        """Wake the wallboard after each webhook batch that changed an agent (their own feed hears it already)."""
        processor.agent_listeners.append(lambda _agents: self.board.wake())

    def close(self) -> None:
        self.board.close()
        self.files.close()
        if self._own_feed:
            self.feed.close()

    # --- sessions and forms --------------------------------------------------------------------------------

    def who(self, request: Request) -> Who | None:
        return self.sessions.read(request)

    def require(self, request: Request, kind: Kind) -> Who:
        """The session of ``kind``, else off to that kind's login page (a GET) or 403 (anything else)."""
        who = self.who(request)
        if who is not None and who.kind == kind:
            return who
        if request.method in ("GET", "HEAD"):
            page = "/agent/login" if kind == Kind.AGENT else "/login"
            raise Redirect(f"{page}?next={quote(request.url.path)}")
        raise HTTPException(403, "log in first")

    async def form(self, request: Request, who: Who) -> FormData:
        """The posted form, after its CSRF token checked out (403 otherwise)."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_FORM_BYTES:
            raise HTTPException(413, "the form is too large")
        form = await request.form(max_files=0)
        if not check_csrf(who, str(form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or "")):
            log_event(log, logging.WARNING, "console form refused: missing or wrong CSRF token",
                      path=request.url.path)  # fmt: skip
            raise HTTPException(403, "the form's security token is missing or stale: reload the page and try again")
        return form

    def check_header_csrf(self, request: Request, who: Who, sent: str | None) -> None:
        if not check_csrf(who, sent):
            log_event(log, logging.WARNING, "console request refused: missing or wrong CSRF token",
                      path=request.url.path)  # fmt: skip
            raise HTTPException(403, "the form's security token is missing or stale: reload the page and try again")

    def page(self, template: str, who: Who | None, *, status: int = 200, **context: Any) -> HTMLResponse:
        """A rendered page; a visitor without a session gets an anonymous one (the login forms' CSRF token)."""
        fresh = who is None
        who = who or anonymous()
        html = self.templates.get_template(template).render(who=who, csrf=who.csrf, **context)
        response = HTMLResponse(html, status_code=status)
        if fresh:
            self.sessions.write(response, who)
        return response

    def fragment(self, template: str, **context: Any) -> str:
        return self.templates.get_template(template).render(**context)

    def redirect(self, url: str, who: Who | None = None) -> Response:
        response = RedirectResponse(url, status_code=303)
        if who is not None:
            self.sessions.write(response, who)
        return response

    async def run(self, work: Callable[..., Any], *args: Any) -> Any:
        return await run_in_threadpool(work, *args)

    # --- errors ---------------------------------------------------------------------------------------------

    async def _redirect(self, request: Request, exc: Redirect) -> Response:
        return RedirectResponse(exc.url, status_code=303)

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        texts = {404: "There is no such page.", 405: "That page does not take this kind of request."}
        message = texts.get(exc.status_code, str(exc.detail))
        return self.page("error.html", self.who(request), status=exc.status_code, code=exc.status_code,
                         message=message)  # fmt: skip


class _Headers:
    """Security headers on every answer (pure ASGI, so server-sent streams pass through unbuffered)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _ in headers}
                for name, value in _HEADERS.items():
                    if name.lower().encode() not in have:
                        headers.append((name.lower().encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
