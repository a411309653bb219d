"""The web console over HTTP (no browser): login everywhere, CSRF, cookie flags, headers, limits, user logins."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dialer.agents.tokens import LoginLimiter
from dialer.db import session_scope
from dialer.models import utcnow
from dialer.web.users import Role, UserError, add_user, authenticate_user, disable_user
from tests.agent_api_support import PINS, CallCentre, seed
from tests.conftest import Cli
from tests.web_support import PASSWORD, SUPERVISOR, csrf_of, logged_in, site


@pytest.fixture
def centre(tmp_path: Path) -> Iterator[CallCentre]:
    c = seed(tmp_path, calls=2)
    try:
        yield c
    finally:
        c.db.dispose()


PAGES = ["/", "/board/live", "/board/events", "/campaigns/spring", "/campaigns/spring/report.xlsx",
         "/campaigns/spring/report.zip", "/rejects/abc"]  # fmt: skip
AGENT_PAGES = ["/agent", "/agent/panel", "/agent/events"]


def test_every_page_but_the_login_pages_needs_a_login(centre: CallCentre) -> None:
    with site(centre) as s, httpx.Client(base_url=s.url) as http:
        for path in PAGES:
            r = http.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), path
        for path in AGENT_PAGES:
            r = http.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/agent/login"), path
        for path in ("/campaigns/spring/action", "/campaigns/spring/upload", "/agent/state", "/agent/disposition"):
            assert http.post(path, data={"action": "pause"}).status_code == 403, path
        assert http.get("/login").status_code == 200 and http.get("/agent/login").status_code == 200
        # An agent's session is no supervisor's.
        agent = logged_in(s.url, agent="alice", pin=PINS["alice"])
        assert agent.get("/campaigns/spring").status_code == 303
        assert agent.get("/").headers["location"] == "/agent"


def test_a_form_without_its_csrf_token_is_refused_with_403_and_changes_nothing(centre: CallCentre) -> None:
    with site(centre) as s:
        sup = logged_in(s.url)
        r = sup.post("/campaigns/spring/action", data={"action": "pause"})
        assert r.status_code == 403 and "security token" in r.text
        r = sup.post("/campaigns/spring/action", data={"action": "pause", "csrf": "forged"})
        assert r.status_code == 403
        assert 'data-campaign="spring"' in sup.get("/").text and "campaign-running" in sup.get("/board/live").text
        token = csrf_of(sup.get("/").text)
        r = sup.post("/campaigns/spring/action", data={"action": "pause", "csrf": token})
        assert r.status_code == 303 and "campaign-paused" in sup.get("/board/live").text
        agent = logged_in(s.url, agent="alice", pin=PINS["alice"])
        assert agent.post("/agent/state", data={"state": "ready"}).status_code == 403
        # The login forms need the token of the anonymous session their page handed out.
        fresh = httpx.Client(base_url=s.url)
        assert fresh.post("/login", data={"name": SUPERVISOR, "password": PASSWORD}).status_code == 403


def test_the_session_cookie_is_signed_httponly_and_samesite_and_pages_carry_security_headers(
    centre: CallCentre,
) -> None:
    with site(centre) as s, httpx.Client(base_url=s.url) as http:
        token = csrf_of(http.get("/login").text)
        r = http.post("/login", data={"name": SUPERVISOR, "password": PASSWORD, "csrf": token})
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = http.get("/")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        # A cookie changed by hand is no session.
        value = http.cookies["dialer_console"]
        http.cookies.set("dialer_console", value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
        assert http.get("/").status_code == 303


def test_wrong_pins_and_passwords_are_rate_limited(centre: CallCentre) -> None:
    with site(centre, limiter=LoginLimiter(per_login=3, per_client=100)) as s, httpx.Client(base_url=s.url) as http:
        token = csrf_of(http.get("/agent/login").text)
        codes = [http.post("/agent/login", data={"login": "alice", "pin": "0000", "csrf": token}).status_code
                 for _ in range(4)]  # fmt: skip
        assert codes == [401, 401, 401, 429]
        # Locked: even the right PIN waits.
        assert http.post("/agent/login", data={"login": "alice", "pin": PINS["alice"], "csrf": token}).status_code == 429
        codes = [http.post("/login", data={"name": SUPERVISOR, "password": "nope", "csrf": token}).status_code
                 for _ in range(4)]  # fmt: skip
        assert codes == [401, 401, 401, 429]


def test_an_upload_over_the_limit_is_refused(centre: CallCentre) -> None:
    with site(centre, upload_limit=2048) as s:
        sup = logged_in(s.url)
        token = csrf_of(sup.get("/campaigns/spring").text)
        big = b"phone,name\n" + b"+12125550100,x\n" * 500
        r = sup.post("/campaigns/spring/upload", data={"csrf": token}, files={"file": ("big.csv", big, "text/csv")})
        assert r.status_code == 413
        small = b"phone,name\n+12125550100,Ok\nbad,Bad\n"
        r = sup.post("/campaigns/spring/upload", data={"csrf": token}, files={"file": ("s.csv", small, "text/csv")})
        assert r.status_code == 200 and "loaded 1, rejected 1" in r.text
        r = sup.post("/campaigns/spring/upload", files={"file": ("s.csv", small, "text/csv")})
        assert r.status_code == 403


def test_the_desk_logs_out_and_the_session_ends(centre: CallCentre) -> None:
    with site(centre) as s:
        agent = logged_in(s.url, agent="bob", pin=PINS["bob"])
        token = csrf_of(agent.get("/agent").text)
        assert agent.post("/agent/state", data={"state": "ready", "csrf": token}).status_code == 303
        assert "state-ready" in agent.get("/agent").text
        r = agent.post("/agent/logout", data={"csrf": token})
        assert r.status_code == 303 and r.headers["location"] == "/agent/login"


def test_an_agent_sees_and_dispositions_only_their_own_calls(centre: CallCentre) -> None:
    from dialer.models import Attempt
    from tests.agent_api_support import EXTENSIONS
    from tests.webhooks_support import answer, end, start

    with site(centre) as s:
        alice = logged_in(s.url, agent="alice", pin=PINS["alice"])
        bob = logged_in(s.url, agent="bob", pin=PINS["bob"])
        alice.post("/agent/state", data={"state": "ready", "csrf": csrf_of(alice.get("/agent").text)})
        for fields in (start(centre.phones[0], "o0"), answer(centre.phones[0], "o0", EXTENSIONS["alice"]),
                       end(centre.phones[0], "o0", EXTENSIONS["alice"])):  # fmt: skip
            assert httpx.post(s.hooks.url + "/zadarma", data=fields).status_code == 200
        assert "Customer 0" in alice.get("/agent/panel").text
        assert "Customer 0" not in bob.get("/agent/panel").text and "Customer 0" not in bob.get("/agent").text
        r = bob.post("/agent/disposition", data={"attempt_id": str(centre.attempt_ids[0]), "code": "sale",
                                                 "csrf": csrf_of(bob.get("/agent").text)})  # fmt: skip
        assert r.status_code == 303 and "not+routed+to+you" in r.headers["location"]
        with session_scope(centre.db, write=False) as db:
            assert db.get(Attempt, centre.attempt_ids[0]).agent_disposition is None


def test_users_have_hashed_passwords_and_disabled_ones_cannot_log_in(centre: CallCentre) -> None:
    with session_scope(centre.db) as s:
        user = add_user(s, "Dave", "long enough pw", Role.SUPERVISOR, utcnow())
        assert user.name == "dave" and user.password_hash.startswith("scrypt$") and "long" not in user.password_hash
        with pytest.raises(UserError):
            add_user(s, "dave", "another long pw", Role.SUPERVISOR, utcnow())
        with pytest.raises(UserError):
            add_user(s, "eve", "short", Role.SUPERVISOR, utcnow())
        assert authenticate_user(s, "dave", "long enough pw") is not None
        assert authenticate_user(s, "dave", "wrong") is None
        disable_user(s, "dave", utcnow())
        assert authenticate_user(s, "dave", "long enough pw") is None


def test_user_add_from_the_command_line(cli: Cli) -> None:
    cli.ok("db", "upgrade")
    out = cli.ok("user", "add", "frank", "--role", "supervisor", "--password-stdin", input="a fine password\n")
    assert "Added supervisor 'frank'" in out
    assert "frank" in cli.ok("user", "list")
    bad = cli("user", "add", "gina", "--role", "king", "--password-stdin", input="a fine password\n")
    assert bad.returncode == 2


@pytest.mark.slow
def test_demo_with_web_serves_the_wallboard_of_the_demo_campaign_while_it_runs(tmp_path: Path) -> None:
    import re
    import subprocess
    import sys

    from tests.conftest import wait_for

    proc = subprocess.Popen([sys.executable, "-m", "dialer", "demo", "--web", "--max-seconds", "20", "--quiet",
                             "--xlsx", "out.xlsx"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        assert proc.stdout is not None
        found = None
        for _ in range(5):
            found = re.search(r"Web console: (\S+)\s+\(log in as (\S+), password (\S+)\)", proc.stdout.readline())
            if found:
                break
        assert found, "the demo printed no console address"
        url, name, password = found.group(1).rstrip("/"), found.group(2), found.group(3)

        def board() -> str | None:
            try:
                with httpx.Client(base_url=url, timeout=10) as http:
                    token = csrf_of(http.get("/login").text)
                    http.post("/login", data={"name": name, "password": password, "csrf": token})
                    text = http.get("/board/live").text
                    return text if 'data-campaign="demo"' in text and "campaign-running" in text else None
            except httpx.HTTPError:
                return None

        text = wait_for(board, timeout=60, what="the demo's wallboard with its running campaign")
        assert "Calls ringing" in text
        rest, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, rest


def test_dialer_web_serves_the_console_alone_until_stopped(cli: Cli) -> None:
    import signal
    import subprocess
    import sys

    from dialer.asgi_thread import free_port
    from tests.conftest import wait_for

    cli.ok("db", "upgrade")
    port = free_port()
    env = {**os.environ, **{k: v for k, v in cli.env.items() if v is not None}}
    proc = subprocess.Popen([sys.executable, "-m", "dialer", "web", "--port", str(port)], cwd=cli.cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/login", timeout=5).status_code == 200
            except httpx.HTTPError:
                return proc.poll() is not None

        wait_for(up, timeout=60, what="dialer web to answer")
        assert proc.poll() is None
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 303
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/" in out
