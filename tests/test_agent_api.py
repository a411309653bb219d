"""The agents' HTTP API: login with a PIN and its limits, tokens that expire and end, state changes that reach the
daemon, the screen-pop over server-sent events within a second of the routing webhook, the call record, dispositions
and callbacks, and each refusal's status and message.

Each test runs the daemon's HTTP app (webhooks plus /api, wired as `dialer run` wires them) on a real uvicorn server
on a free port of 127.0.0.1, over a real SQLite file; the webhooks are posted as the PBX would post them.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlmodel import col, select

from dialer.agents.tokens import LoginLimiter
from dialer.db import session_scope
from dialer.models import AgentEvent, AgentToken, Attempt, Callback, Contact, DncEntry
from dialer.outcomes.states import AgentState, CallbackState, ContactState
from tests.agent_api_support import (
    EXTENSIONS,
    PINS,
    CallCentre,
    SseReader,
    iso,
    login,
    seed,
    serve,
    webhook,
)
from tests.conftest import Cli
from tests.webhooks_support import answer, end, internal, start


@pytest.fixture
def centre(tmp_path: Path) -> Iterator[CallCentre]:
    c = seed(tmp_path)
    yield c
    c.db.dispose()


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=10)


def _route_and_talk(http: httpx.Client, centre: CallCentre, i: int, ext: str) -> None:
    """Customer ``i`` answers, is routed to ``ext`` (our answer must name it), and the agent answers."""
    phone = centre.phones[i]
    assert webhook(http, start(phone, f"c{i}")).json() == {"redirect": ext, "caller_name": f"Customer {i}"}
    webhook(http, answer(phone, f"c{i}", ext))


# --- sessions -------------------------------------------------------------------------------------------------


def test_login_state_changes_and_logout(centre: CallCentre) -> None:
    told: list[list[int]] = []
    with serve(centre.db, on_team_change=lambda ids: told.append(sorted(ids))) as (server, _api), \
            _client(server.url) as http:  # fmt: skip
        h = login(http, "alice")
        me = http.get("/api/me", headers=h).json()
        assert me["agent"]["login"] == "alice" and me["state"]["state"] == AgentState.LOGGED_OUT
        assert [c["name"] for c in me["campaigns"]] == ["spring"]
        assert {p["code"] for p in me["campaigns"][0]["pause_codes"]} >= {"lunch", "break"}
        # Logging in to the API changes nothing; `ready` logs the agent in.
        r = http.post("/api/state", json={"state": "ready"}, headers=h)
        assert r.status_code == 200 and r.json()["state"]["state"] == AgentState.READY, r.text
        assert told == [[centre.campaign_id]], "the daemon must hear of the change (live state and pacing)"
        r = http.post("/api/state", json={"state": "paused", "code": "lunch"}, headers=h)
        assert r.json()["state"] == {**r.json()["state"], "state": "paused", "pause_code": "lunch"}
        r = http.post("/api/state", json={"state": "paused", "code": "nap"}, headers=h)
        assert r.status_code == 422 and "unknown pause code 'nap'" in r.json()["error"]
        assert http.post("/api/state", json={"state": "paused"}, headers=h).status_code == 422
        assert http.post("/api/state", json={"state": "ready", "code": "lunch"}, headers=h).status_code == 422
        r = http.post("/api/logout", headers=h)
        assert r.status_code == 200 and r.json()["state"]["state"] == AgentState.LOGGED_OUT
        # The token ended with the logout.
        r = http.get("/api/me", headers=h)
        assert r.status_code == 401 and "log in again" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
    with session_scope(centre.db, write=False) as s:
        moves = [(e.from_state, e.to_state, e.pause_code) for e in s.exec(select(AgentEvent)).all()]
        tokens = s.exec(select(AgentToken)).all()
    assert moves == [("logged_out", "ready", None), ("ready", "paused", "lunch"), ("paused", "logged_out", None)]
    assert len(tokens) == 1 and tokens[0].revoked_at is not None
    assert PINS["alice"] not in tokens[0].token_hash and len(tokens[0].token_hash) == 64  # a SHA-256, not the token


def test_pause_from_logged_out_logs_in_first_and_a_failed_one_writes_nothing(centre: CallCentre) -> None:
    with serve(centre.db) as (server, _api), _client(server.url) as http:
        h = login(http, "bob")
        assert http.post("/api/state", json={"state": "pause", "code": "nap"}, headers=h).status_code == 422
        with session_scope(centre.db, write=False) as s:
            assert s.exec(select(AgentEvent)).all() == []  # the login before the refused pause rolled back
        r = http.post("/api/state", json={"state": "pause", "code": "break"}, headers=h)
        assert r.json()["state"]["state"] == AgentState.PAUSED
        # Logging out twice is no error.
        for _ in range(2):
            assert http.post("/api/state", json={"state": "logout"}, headers=h).status_code == 200


def test_wrong_pins_are_401_then_limited_per_login_and_per_address(centre: CallCentre) -> None:
    limiter = LoginLimiter(per_login=3, per_client=5, window_s=600)
    with serve(centre.db, limiter=limiter) as (server, _api), _client(server.url) as http:
        for _ in range(3):
            r = http.post("/api/login", json={"login": "alice", "pin": "0000"})
            assert r.status_code == 401 and r.json() == {"error": "wrong login or PIN", "detail": None}
        r = http.post("/api/login", json={"login": "alice", "pin": PINS["alice"]})
        assert r.status_code == 429, "the right PIN too must wait once a login is locked"
        assert 0 < r.json()["detail"]["retry_after_s"] <= 601 and int(r.headers["retry-after"]) > 0
        # Bob is not locked by Alice's failures; an unknown login counts against the address like a wrong PIN.
        assert http.post("/api/login", json={"login": "bob", "pin": PINS["bob"]}).status_code == 200
        assert http.post("/api/login", json={"login": "nobody", "pin": "1111"}).status_code == 401
        assert http.post("/api/login", json={"login": "carol", "pin": "1111"}).status_code == 401
        r = http.post("/api/login", json={"login": "bob", "pin": PINS["bob"]})
        assert r.status_code == 429, "five failures from one address lock it for every login"


def test_tokens_expire_and_end_when_the_pin_changes(centre: CallCentre) -> None:
    clock = [datetime.now(UTC)]
    with serve(centre.db, token_ttl_s=3600, clock=lambda: clock[0]) as (server, _api), _client(server.url) as http:
        h = login(http, "alice")
        assert http.get("/api/me", headers=h).status_code == 200
        clock[0] += timedelta(seconds=3601)
        assert http.get("/api/me", headers=h).status_code == 401
        h = login(http, "alice")
        from dialer.agents.accounts import update_agent

        with session_scope(centre.db) as s:
            update_agent(s, "alice", clock[0], pin="9876")
        assert http.get("/api/me", headers=h).status_code == 401
        for bad in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"},
                    {"Authorization": "Bearer " + "x" * 5000}):  # fmt: skip
            r = http.get("/api/me", headers=bad)
            assert r.status_code == 401 and r.json()["error"], bad


# --- the screen-pop -------------------------------------------------------------------------------------------


def test_screen_pop_reaches_the_agent_within_a_second_of_the_routing_webhook(centre: CallCentre) -> None:
    delays = []
    with serve(centre.db) as (server, _api), _client(server.url) as http:
        h = login(http, "alice")
        http.post("/api/state", json={"state": "ready"}, headers=h)
        sse = SseReader(server.url + "/api/events", h).start()
        assert sse.status == 200
        assert sse.next("state").data["state"]["state"] == AgentState.READY
        for i in range(3):
            phone = centre.phones[i]
            sent = time.perf_counter()
            assert webhook(http, start(phone, f"c{i}")).json()["redirect"] == EXTENSIONS["alice"]
            pop = sse.next("call", timeout=5)
            delays.append(pop.at - sent)
            record = pop.data
            assert record["attempt_id"] == centre.attempt_ids[i] and record["contact"]["phone"] == phone
            assert record["contact"]["fields"] == {"account": f"A-{i:05d}", "plan": "gold"}
            webhook(http, answer(phone, f"c{i}", "101"))
            webhook(http, end(phone, f"c{i}", "101"))
            ended = sse.next("call_ended")
            assert ended.data["attempt_id"] == centre.attempt_ids[i] and ended.data["next_state"] == "wrapup"
            wrap = sse.next("wrapup_timer")
            assert 25 <= wrap.data["seconds"] <= 30
            r = http.post("/api/disposition", json={"attempt_id": centre.attempt_ids[i], "code": "sale"}, headers=h)
            assert r.status_code == 200, r.text
            assert sse.next("state").data["state"]["state"] == AgentState.READY
        sse.stop()
    print(f"screen-pop delay after the routing webhook was sent: median {statistics.median(delays) * 1000:.1f} ms,"
          f" max {max(delays) * 1000:.1f} ms")  # fmt: skip
    # The goal is 1 s; the deadline only bounds a loaded machine.
    assert max(delays) < 5.0


def test_a_call_the_pbx_rings_an_agent_for_pops_up_too(centre: CallCentre) -> None:
    """Our NOTIFY_START answer lost (the PBX routed by itself): NOTIFY_INTERNAL ringing the agent's extension."""
    with serve(centre.db) as (server, _api), _client(server.url) as http:
        h = login(http, "bob")
        http.post("/api/state", json={"state": "ready"}, headers=h)
        sse = SseReader(server.url + "/api/events", h).start()
        webhook(http, internal(centre.phones[1], "pbx", EXTENSIONS["bob"]))
        pop = sse.next("call")
        assert pop.data["attempt_id"] == centre.attempt_ids[1] and pop.data["agent_state"] == AgentState.RINGING
        sse.stop()


def test_call_record_has_the_contact_its_history_local_time_and_script(centre: CallCentre) -> None:
    with session_scope(centre.db) as s:  # an earlier call of contact 0, dispositioned by bob
        earlier = Attempt(campaign_id=centre.campaign_id, contact_id=centre.contact_ids[0], phone=centre.phones[0],
                          state="completed", connected=True, disposition="answered", agent_disposition="callback",
                          agent_note="call after 5", created_at=datetime.now(UTC) - timedelta(days=1))  # fmt: skip
        s.add(earlier)
    with serve(centre.db) as (server, _api), _client(server.url) as http:
        h = login(http, "alice")
        assert http.get("/api/call", headers=h).json() == {"call": None}
        http.post("/api/state", json={"state": "ready"}, headers=h)
        _route_and_talk(http, centre, 0, "101")
        record = http.get("/api/call", headers=h).json()["call"]
    assert record["agent_state"] == AgentState.TALKING and record["campaign"] == "spring"
    assert record["script"] == "Hello Customer 0, this is about account A-00000 (gold). {unknown} stays."
    contact = record["contact"]
    assert contact["name"] == "Customer 0" and contact["zone"] == "America/New_York"
    local = iso(contact["local_time"])
    assert local.utcoffset() == datetime.now(ZoneInfo("America/New_York")).utcoffset()
    assert abs((local - datetime.now(UTC)).total_seconds()) < 60
    history = record["history"]
    assert [h["current"] for h in history] == [True, False]
    assert history[1]["disposition"] == "callback" and history[1]["note"] == "call after 5"
    assert [d["code"] for d in record["dispositions"]][:2] == ["sale", "not_interested"]


def test_refusals_another_agents_call_unknown_attempt_and_disposition(centre: CallCentre) -> None:
    with serve(centre.db) as (server, _api), _client(server.url) as http:
        alice, bob = login(http, "alice"), login(http, "bob")
        http.post("/api/state", json={"state": "ready"}, headers=alice)
        _route_and_talk(http, centre, 0, "101")
        mine = centre.attempt_ids[0]
        r = http.get(f"/api/call?attempt_id={mine}", headers=bob)
        assert r.status_code == 403 and "not routed to you" in r.json()["error"]
        assert http.get("/api/call?attempt_id=999999", headers=bob).status_code == 404
        assert http.get("/api/call?attempt_id=abc", headers=bob).status_code == 422
        r = http.post("/api/disposition", json={"attempt_id": mine, "code": "sale"}, headers=bob)
        assert r.status_code == 403
        r = http.post("/api/disposition", json={"attempt_id": mine, "code": "sale"}, headers=alice)
        assert r.status_code == 422 and "once the call has ended" in r.json()["error"]
        webhook(http, end(centre.phones[0], "c0", "101"))
        r = http.post("/api/disposition", json={"attempt_id": mine, "code": "bought_a_boat"}, headers=alice)
        assert r.status_code == 422 and "unknown disposition 'bought_a_boat'" in r.json()["error"]
        assert "sale (1)" in r.json()["error"]
        r = http.post("/api/disposition", json={"attempt_id": 999999, "code": "sale"}, headers=alice)
        assert r.status_code == 404 and r.json()["error"] == "no call attempt 999999"
        r = http.post("/api/disposition", json={"attempt_id": mine, "code": "callback",
                                                "callback_at": "next tuesday"}, headers=alice)  # fmt: skip
        assert r.status_code == 422 and "'14:30'" in r.json()["error"]
        assert http.post("/api/disposition", json={"attempt_id": mine, "code": "1"}, headers=alice).status_code == 200
        r = http.post("/api/disposition", json={"attempt_id": mine, "code": "sale"}, headers=alice)
        assert r.status_code == 409 and "already has the disposition 'sale'" in r.json()["error"]
        r = http.get("/api/nowhere", headers=alice)
        assert r.status_code == 404 and r.json()["error"].startswith("no such endpoint")
        assert http.delete("/api/me", headers=alice).status_code == 405


def test_call_back_only_me_in_the_contacts_zone_and_the_callbacks_list(centre: CallCentre) -> None:
    zone = ZoneInfo("America/New_York")
    when = (datetime.now(zone) + timedelta(days=2)).replace(hour=14, minute=30, second=0, microsecond=0)
    with serve(centre.db) as (server, _api), _client(server.url) as http:
        h = login(http, "alice")
        http.post("/api/state", json={"state": "ready"}, headers=h)
        _route_and_talk(http, centre, 1, "101")
        webhook(http, end(centre.phones[1], "c1", "101"))
        body = {"attempt_id": centre.attempt_ids[1], "code": "callback", "note": "after payday",
                "callback_at": when.strftime("%Y-%m-%d %H:%M"), "only_me": True}  # fmt: skip
        r = http.post("/api/disposition", json=body, headers=h)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["contact_state"] == ContactState.CALLBACK and out["state"]["state"] == AgentState.READY
        assert out["callback"]["only_agent"] == "alice" and out["callback"]["due_local"] == when.strftime("%Y-%m-%d %H:%M")
        listed = http.get("/api/callbacks", headers=h).json()["callbacks"]
        assert [c["id"] for c in listed] == [out["callback"]["id"]] and listed[0]["due"] is False
        assert iso(listed[0]["due_at"]) == when.astimezone(UTC)
        assert http.get("/api/callbacks", headers=login(http, "bob")).json() == {"callbacks": []}
        assert http.get("/api/callbacks?limit=0", headers=h).status_code == 422
    with session_scope(centre.db, write=False) as s:
        cb = s.exec(select(Callback)).one()
        assert cb.state == CallbackState.SCHEDULED and cb.note == "after payday"


def test_do_not_call_from_the_api_puts_the_number_on_the_list_at_once(centre: CallCentre) -> None:
    with serve(centre.db) as (server, _api), _client(server.url) as http:
        h = login(http, "alice")
        http.post("/api/state", json={"state": "ready"}, headers=h)
        _route_and_talk(http, centre, 2, "101")
        webhook(http, end(centre.phones[2], "c2", "101"))
        r = http.post("/api/disposition", json={"attempt_id": centre.attempt_ids[2], "code": "dnc"}, headers=h)
        assert r.json()["dnc_added"] is True and r.json()["contact_state"] == ContactState.DNC
    with session_scope(centre.db, write=False) as s:
        assert s.exec(select(DncEntry.phone)).all() == [centre.phones[2]]
        assert s.get(Contact, centre.contact_ids[2]).state == ContactState.DNC  # type: ignore[union-attr]


# --- the event stream -----------------------------------------------------------------------------------------


def test_event_stream_resumes_after_last_event_id_and_ends_at_logout(centre: CallCentre) -> None:
    with serve(centre.db, poll_s=0.2) as (server, _api), _client(server.url) as http:
        h = login(http, "alice")
        first = SseReader(server.url + "/api/events", h).start()
        assert first.next("state").data["state"]["state"] == AgentState.LOGGED_OUT
        http.post("/api/state", json={"state": "ready"}, headers=h)
        ready = first.next("state")
        assert ready.data["from_state"] == "logged_out" and ready.id is not None
        first.stop()
        # Changes made while disconnected (here by another process's way: the CLI library) are replayed.
        from dialer.agents.sessions import set_presence
        from dialer.outcomes.states import Presence

        with session_scope(centre.db) as s:
            set_presence(s, "alice", Presence.PAUSE, datetime.now(UTC), "break")
        again = SseReader(server.url + "/api/events", {**h, "Last-Event-ID": ready.id}).start()
        replayed = again.next("state")
        assert replayed.data["state"]["pause_code"] == "break" and replayed.data["from_state"] == "ready"
        # EventSource cannot send headers: the token in the query works too, for this endpoint only.
        token = h["Authorization"].split()[1]
        third = SseReader(server.url + f"/api/events?access_token={token}", {}).start()
        assert third.status == 200 and third.next("state").data["state"]["state"] == AgentState.PAUSED
        assert http.get(f"/api/me?access_token={token}").status_code == 401
        assert http.head("/api/events", headers=h).status_code == 200  # answers, rather than streaming forever
        http.post("/api/logout", headers=h)
        assert "logged out" in again.next("end", timeout=10).data["reason"]
        r = http.get("/api/events", headers=h)
        assert r.status_code == 401


def test_a_pause_asked_for_during_a_call_is_told_and_starts_at_the_end(centre: CallCentre) -> None:
    with serve(centre.db) as (server, _api), _client(server.url) as http:
        h = login(http, "alice")
        http.post("/api/state", json={"state": "ready"}, headers=h)
        sse = SseReader(server.url + "/api/events", h).start()
        _route_and_talk(http, centre, 3, "101")
        sse.next("call")
        r = http.post("/api/state", json={"state": "paused", "code": "lunch"}, headers=h)
        assert r.json()["deferred"] is True and r.json()["state"]["pending_change"] == "paused:lunch"
        told = sse.next("state")
        while told.data["state"]["pending_change"] is None:
            told = sse.next("state")
        assert told.data["state"]["state"] == AgentState.TALKING
        webhook(http, end(centre.phones[3], "c3", "101"))
        assert sse.next("call_ended").data["next_state"] == AgentState.PAUSED
        sse.stop()
    with session_scope(centre.db, write=False) as s:
        last = s.exec(select(AgentEvent).order_by(col(AgentEvent.id).desc())).first()
        assert last is not None and (last.to_state, last.pause_code) == ("paused", "lunch")


# --- the pieces -----------------------------------------------------------------------------------------------


def test_the_wrong_pin_window_slides_and_a_good_login_clears_its_count() -> None:
    now = [1000.0]
    limiter = LoginLimiter(per_login=2, per_client=3, window_s=60, clock=lambda: now[0])
    limiter.failed("alice", "10.0.0.1")
    limiter.failed("alice", "10.0.0.1")
    assert limiter.retry_after("alice", "10.0.0.2") == pytest.approx(60)
    now[0] += 30
    limiter.failed("bob", "10.0.0.1")
    assert limiter.retry_after("carol", "10.0.0.1") == pytest.approx(30)  # the address's oldest leaves first
    now[0] += 30.5
    assert limiter.retry_after("alice", "10.0.0.1") == 0
    limiter.failed("bob", "10.0.0.9")
    limiter.succeeded("bob")
    assert limiter.retry_after("bob", "10.0.0.9") == 0


def test_a_campaign_script_is_set_from_a_file_and_shown_as_typed(cli: Cli) -> None:
    cli.ok("campaign", "create", "spring", "--from", "100")
    (cli.cwd / "script.txt").write_text("\ufeffHello {name},\r\nthis is Acme.\r\n", encoding="utf-8")
    cli.ok("campaign", "set", "spring", "script=@script.txt")
    shown = json.loads(cli.ok("campaign", "show", "spring", "--json"))
    assert shown["script"] == "Hello {name},\nthis is Acme." and shown["typed"]["script"] == shown["script"]
    res = cli("campaign", "set", "spring", "script=@missing.txt")
    assert res.returncode == 2 and "cannot read the file" in res.stderr
    res = cli("campaign", "set", "spring", "script=" + "x" * 20_001)
    assert res.returncode != 0 and "at most 20,000" in res.stderr
    cli.ok("campaign", "set", "spring", "script=")
    assert json.loads(cli.ok("campaign", "show", "spring", "--json"))["script"] is None
