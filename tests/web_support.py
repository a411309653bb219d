"""Shared helpers for the web console's tests: the seeded call centre of the agents' API tests, served as
`dialer run --web-port` serves it (the daemon's webhook app with /api, and the console on its own port sharing
the agents' event feed), a supervisor login, and Chromium driven by Playwright."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dialer.agents.tokens import LoginLimiter
from dialer.asgi_thread import ServerThread
from dialer.db import session_scope
from dialer.models import utcnow
from dialer.web.app import Console
from dialer.web.users import Role, add_user
from tests.agent_api_support import CallCentre, make_app

SUPERVISOR, PASSWORD = "carol", "correct horse battery"
CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "docs" / "img"


@dataclass
class Site:
    centre: CallCentre
    console: Console
    web: ServerThread
    hooks: ServerThread

    @property
    def url(self) -> str:
        return self.web.url


@contextmanager
def site(centre: CallCentre, **console_kw: Any) -> Iterator[Site]:
    """The daemon's webhook app and the console beside it, as `dialer run --web-port` wires them."""
    with session_scope(centre.db) as s:
        add_user(s, SUPERVISOR, PASSWORD, Role.SUPERVISOR, utcnow())
    app, api = make_app(centre.db)
    console_kw.setdefault("limiter", LoginLimiter(per_login=1000, per_client=1000))
    console = Console(centre.db, feed=api.feed, **console_kw)
    console.attach(app.state.processor)
    hooks = ServerThread(app).start()
    try:
        web = ServerThread(console.app).start()
        try:
            yield Site(centre, console, web, hooks)
        finally:
            console.close()
            web.stop(timeout=5)
    finally:
        api.close()
        hooks.stop(timeout=5)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def logged_in(url: str, *, agent: str | None = None, pin: str = "") -> httpx.Client:
    """An HTTP client with a console session: the supervisor's, or ``agent``'s."""
    client = httpx.Client(base_url=url, timeout=30)
    page = "/agent/login" if agent else "/login"
    token = csrf_of(client.get(page).text)
    data = {"login": agent, "pin": pin} if agent else {"name": SUPERVISOR, "password": PASSWORD}
    r = client.post(page, data={**data, "csrf": token})
    assert r.status_code == 303, r.text
    return client


@contextmanager
def chromium() -> Iterator[Any]:
    """A Chromium browser (Debian's, via Playwright), or the test is skipped where there is none."""
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        pytest.skip("no /usr/bin/chromium: install it with apt-get install -y chromium (.ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()
