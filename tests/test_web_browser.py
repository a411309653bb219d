"""The web console in a real browser (Debian's Chromium driven by Playwright): an agent's shift at the desk, a
supervisor at the wallboard, and escaping. Each test serves the console as `dialer run --web-port` does, and the
calls come in as the PBX's webhooks to the daemon's webhook app."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlmodel import col, select

from dialer.db import session_scope
from dialer.dialing.status import STATUS_KEY, DaemonState
from dialer.dialing.why import Reason, Verdict
from dialer.dialing.why_store import record
from dialer.kv import put_value
from dialer.models import Attempt, Callback, Contact, utcnow
from dialer.outcomes.states import AgentState, CallbackState, ContactState
from tests.agent_api_support import EXTENSIONS, PINS, CallCentre, seed
from tests.web_support import PASSWORD, SUPERVISOR, Site, chromium, site
from tests.webhooks_support import answer, end, start

XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
VIEWPORT = {"width": 1366, "height": 768}


@pytest.fixture
def centre(tmp_path: Path) -> Iterator[CallCentre]:
    c = seed(tmp_path, calls=3)
    try:
        yield c
    finally:
        c.db.dispose()


def _hook(s: Site, fields: dict[str, str]) -> None:
    r = httpx.post(s.hooks.url + "/zadarma", data=fields, timeout=30)
    assert r.status_code == 200, r.text


def _agent_login(page: Any, url: str, who: str) -> None:
    page.goto(url + "/agent")
    assert page.url.startswith(url + "/agent/login")  # no session: off to the login page
    page.fill("#login", who)
    page.fill("#pin", PINS[who])
    page.keyboard.press("Enter")  # keyboard only
    page.wait_for_url(url + "/agent")


def test_agent_logs_in_goes_ready_takes_a_call_saves_a_disposition_by_hotkey_and_schedules_a_callback(
    centre: CallCentre,
) -> None:
    with site(centre) as s, chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT, timezone_id="Europe/Berlin")
        _agent_login(page, s.url, "alice")
        page.click("#ready")
        page.wait_for_selector("#state[data-state=ready]")
        page.wait_for_function("document.getElementById('call') && true")
        # A routed call: the record appears without reloading the page, pushed by the agent's event feed.
        sent = time.perf_counter()
        _hook(s, start(centre.phones[0], "w0"))
        page.wait_for_selector(f"#call [data-attempt='{centre.attempt_ids[0]}']", timeout=10_000)
        pop_s = time.perf_counter() - sent
        call = page.inner_text("#call")
        assert "Customer 0" in call and "A-00000" in call and "gold" in call
        assert "Hello Customer 0, this is about account A-00000 (gold)." in call  # the script, filled in
        assert "America/New_York" in call  # the contact's zone, beside their local time
        _hook(s, answer(centre.phones[0], "w0", EXTENSIONS["alice"]))
        page.wait_for_selector("#state[data-state=talking]")
        _hook(s, end(centre.phones[0], "w0", EXTENSIONS["alice"]))
        page.wait_for_selector("#state[data-state=wrapup]")
        page.locator("body").press("1")  # the hotkey of "sale"
        page.wait_for_selector("text=Saved: sale")
        with session_scope(centre.db, write=False) as db:
            assert db.get(Attempt, centre.attempt_ids[0]).agent_disposition == "sale"

        # The second call ends in a call-back, in the contact's zone, kept for this agent.
        _hook(s, start(centre.phones[1], "w1"))
        page.wait_for_selector(f"#call [data-attempt='{centre.attempt_ids[1]}']", timeout=10_000)
        _hook(s, answer(centre.phones[1], "w1", EXTENSIONS["alice"]))
        _hook(s, end(centre.phones[1], "w1", EXTENSIONS["alice"]))
        page.wait_for_selector("#state[data-state=wrapup]")
        page.locator("body").press("3")  # call back, without a time yet: the picker gets the focus
        assert page.evaluate("document.activeElement.id") == "callback-at"
        day = (utcnow().astimezone(ZoneInfo("America/New_York")) + timedelta(days=2)).date()
        wanted = datetime.combine(day, dtime(10, 30), ZoneInfo("America/New_York")).astimezone(UTC)
        page.fill("#callback-at", f"{day.isoformat()}T10:30")
        page.check("#only-me")
        page.keyboard.press("Escape")
        page.locator("body").press("3")
        page.wait_for_selector("text=Saved: callback")
        with session_scope(centre.db, write=False) as db:
            cb = db.exec(select(Callback).where(col(Callback.contact_id) == centre.contact_ids[1])).one()
            assert cb.state == CallbackState.SCHEDULED and cb.agent_id is not None
            assert cb.due_at == wanted  # 10:30 in the contact's zone, whatever the browser's

            assert db.get(Contact, centre.contact_ids[1]).state == ContactState.CALLBACK
        assert "Customer 1" in page.inner_text(".callbacks")
        page.select_option("#pause-code", "lunch")
        page.click("#pause")
        page.wait_for_selector("#state[data-state=paused]")
        print(f"screen-pop in the browser {pop_s * 1000:.0f} ms after the routing webhook was sent")
        assert pop_s < 5.0  # the goal is 1 s; this bound only allows for a loaded machine


def test_supervisor_sees_why_not_dialling_change_pauses_uploads_with_bad_rows_and_downloads_rejects(
    centre: CallCentre, tmp_path: Path
) -> None:
    now = utcnow()
    with session_scope(centre.db) as db:  # a daemon's heartbeat, so the stored verdicts are the engine's
        put_value(db, STATUS_KEY, {"state": DaemonState.RUNNING, "pid": 1, "updated_at": now.isoformat()})
    opens = now + timedelta(minutes=5)
    record(centre.db, centre.campaign_id, Verdict(Reason.OUTSIDE_WINDOW, until=opens), now)
    with site(centre) as s, chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(s.url + "/")
        assert page.url.startswith(s.url + "/login")
        page.fill("#name", SUPERVISOR)
        page.fill("#password", PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_url(s.url + "/")
        why = page.locator("tr[data-campaign=spring] .why")
        assert why.get_attribute("data-reason") == Reason.OUTSIDE_WINDOW
        # The window opens: the engine stores its new verdict and the wallboard follows without a reload.
        with session_scope(centre.db) as db:
            put_value(db, STATUS_KEY, {"state": DaemonState.RUNNING, "pid": 1, "updated_at": utcnow().isoformat()})
        record(centre.db, centre.campaign_id, Verdict(Reason.DIALLING), utcnow())
        page.wait_for_selector(f"tr[data-campaign=spring] .why[data-reason={Reason.DIALLING}]", timeout=10_000)
        # An agent logs in elsewhere: the wallboard shows them ready.
        with httpx.Client(base_url=s.hooks.url) as api:
            token = api.post("/api/login", json={"login": "bob", "pin": PINS["bob"]}).json()["token"]
            api.post("/api/state", json={"state": "ready"}, headers={"Authorization": f"Bearer {token}"})
        page.wait_for_selector(f"tr[data-agent=bob][data-state={AgentState.READY}]", timeout=10_000)

        page.click("button[aria-label='pause spring']")
        page.wait_for_selector("text=now paused")
        page.wait_for_selector("tr[data-campaign=spring] .campaign-paused")

        rows = ["phone,name,note", "+12125550199,Good One,ok", "not a number,Bad Row,x",
                f"+12125550198,{XSS.replace(',', ' ')},y", ",Empty,z"]  # fmt: skip
        upload = tmp_path / "more.csv"
        upload.write_text("\n".join(rows) + "\n", encoding="utf-8")
        page.click("a[href='/campaigns/spring']")
        page.set_input_files("#file", str(upload))
        page.click("button:text-is('Upload')")
        counts = page.inner_text("#load-counts")
        assert "Read 4 rows: loaded 2, rejected 2." in counts, counts
        with page.expect_download() as got:
            page.click("#rejects")
        text = Path(got.value.path()).read_text(encoding="utf-8-sig")
        assert "not a number" in text and "3" in text  # the bad row, with its line number
        with page.expect_download() as got:
            page.click("#report-xlsx")
        assert Path(got.value.path()).read_bytes()[:2] == b"PK"


def test_a_script_in_a_csv_field_shows_as_text_on_the_desk(centre: CallCentre) -> None:
    with session_scope(centre.db) as db:
        contact = db.get(Contact, centre.contact_ids[2])
        contact.name = XSS
        contact.fields = {"account": XSS, "plan": "<b>bold</b>"}
        db.add(contact)
    with site(centre) as s, chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        _agent_login(page, s.url, "alice")
        page.click("#ready")
        page.wait_for_selector("#state[data-state=ready]")
        _hook(s, start(centre.phones[2], "x2"))
        page.wait_for_selector(f"#call [data-attempt='{centre.attempt_ids[2]}']", timeout=10_000)
        text = page.inner_text("#call")
        assert XSS in text and "<b>bold</b>" in text  # shown as typed
        assert page.evaluate("window.pwned === undefined")
        assert page.locator("#call b").count() == 0 and page.locator("#call img").count() == 0
