"""The web console end to end: a real `dialer run --web-port` against `dialer sim serve`; an agent works calls at
the desk in Chromium (record, hotkey disposition) while a supervisor watches the wallboard, which must show the
agent's calls. Screenshots of both are kept in docs/img/ (shown in the README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialer.asgi_thread import free_port
from tests.conftest import clean_env, invoke, wait_for
from tests.e2e import stack
from tests.web_support import PASSWORD, SHOTS, SUPERVISOR, chromium

pytestmark = pytest.mark.slow
VIEWPORT = {"width": 1366, "height": 768}


def test_dialer_run_serves_the_console_and_an_agent_works_simulated_calls_in_the_browser(tmp_path: Path) -> None:
    with stack(tmp_path, time_scale=30, webhooks=True) as st:
        st.make_campaign("web", 30, agents=2, pacing="progressive")
        settings = clean_env(**{k: v for k, v in st.env.items() if k.startswith(("ZADARMA_", "DIALER_"))})
        for login, ext in (("alice", "100"), ("bob", "101")):
            added = invoke(["agent", "add", login, "--name", login.title(), "--extension", ext, "--campaign", "web",
                            "--pin-stdin"], env=settings, cwd=st.tmp, input="4821\n")  # fmt: skip
            assert added.returncode == 0, added.stderr
        added = invoke(["user", "add", SUPERVISOR, "--role", "supervisor", "--password-stdin"], env=settings,
                       cwd=st.tmp, input=PASSWORD + "\n")  # fmt: skip
        assert added.returncode == 0, added.stderr
        st.cli("campaign", "set", "web", "script=Hello {name}, this is about account {account}.")
        web_port = free_port()
        proc = st.start_daemon("--web-port", str(web_port))
        url = f"http://127.0.0.1:{web_port}"
        with chromium() as browser:
            desk = browser.new_page(viewport=VIEWPORT)
            wait_for(lambda: proc.poll() is not None or _opens(desk, url + "/agent/login"), timeout=120,
                     what="the console to answer")  # fmt: skip
            assert proc.poll() is None, st.daemon_log()[-3000:]
            desk.fill("#login", "alice")
            desk.fill("#pin", "4821")
            desk.keyboard.press("Enter")
            desk.wait_for_url(url + "/agent")
            desk.click("#ready")
            desk.wait_for_selector("#state[data-state=ready]")
            board = browser.new_page(viewport=VIEWPORT)
            board.goto(url + "/login")
            board.fill("#name", SUPERVISOR)
            board.fill("#password", PASSWORD)
            board.keyboard.press("Enter")
            board.wait_for_url(url + "/")
            st.cli("campaign", "start", "web")
            saved = 0
            while saved < 2:
                desk.wait_for_selector("#call [data-attempt]", timeout=120_000)
                assert "Hello " in desk.inner_text("#call")
                if saved == 0:
                    board.wait_for_selector("tr[data-agent=alice][data-state=talking], "
                                            "tr[data-agent=alice][data-state=wrapup]", timeout=60_000)
                    board.screenshot(path=str(SHOTS / "wallboard.png"), full_page=True)
                    desk.screenshot(path=str(SHOTS / "agent-desk.png"))
                desk.wait_for_selector("#state[data-state=wrapup], #state[data-state=ready]", timeout=120_000)
                if desk.locator("#disposition").count() and desk.get_attribute("#state", "data-state") == "wrapup":
                    desk.locator("body").press("1")
                    desk.wait_for_selector("text=Saved: sale", timeout=30_000)
                    saved += 1
                else:  # the customer hung up before the agent answered: nothing to save
                    desk.reload()
            board.wait_for_selector("tr[data-agent=alice] td:nth-child(5):not(:text-is('0'))", timeout=60_000)
        st.stop()


def _opens(page: object, url: str) -> bool:
    try:
        response = page.goto(url)  # type: ignore[attr-defined]
    except Exception:  # not listening yet
        return False
    return response is not None and response.status == 200
