"""Every PBX notification Zadarma sends (docs/webhooks.md): the fields each one signs, the simulator's events verified
by the project's verifier, the daemon's receiver taking each one urlencoded and multipart, and what folding each
one does (NOTIFY_INTERNAL_END ends the agent's call, NOTIFY_RECORD stores the recording, NOTIFY_IVR only links).

The events are built by the simulator's own builders (``dialer.sim.webhooks``) for a simulated call, so what is
checked is what ``dialer sim serve`` sends; the receiver is the daemon's app on a real uvicorn server over a real
SQLite file. The slow test runs the simulator and the daemon as processes with multipart bodies and recording on;
the last one checks NOTIFY_IVR against a receiver that answers ``ivr_play``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, col, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from dialer.asgi_thread import serve
from dialer.dialing.live import LiveState
from dialer.models import AgentEvent, Attempt, WebhookEvent
from dialer.outcomes.states import AgentState, AttemptState
from dialer.outcomes.webhook_app import create_webhook_app
from dialer.sim import webhooks as wh
from dialer.sim.harness import run_simulator
from dialer.sim.model import SimCall
from dialer.sim.records import AccountClock, CallRecord
from dialer.sim.scenario import Scenario
from dialer.zadarma.signing import (
    WEBHOOK_SIGNED_FIELDS,
    params_string,
    sign,
    verify_webhook,
    webhook_signature,
)
from tests.agent_api_support import EXTENSIONS, login, seed, webhook
from tests.agent_api_support import serve as serve_centre
from tests.conftest import KEY, PBX_NUMBER, SECRET, wait_for
from tests.e2e import scenario_text, stack
from tests.webhooks_support import answer, make_db, start

CUSTOMER = "+442079460123"
T_PLACED = 1_780_000_000.0


def _call() -> tuple[SimCall, CallRecord]:
    call = SimCall("7", 7, CUSTOMER, PBX_NUMBER, T_PLACED, "answered", 5.0, 60.0, 0.0)
    call.answered_at, call.connected_at, call.ended_at = T_PLACED + 5, T_PLACED + 6, T_PLACED + 66
    call.agent, call.disposition, call.pbx_disposition, call.ivr = "101", "answered", "answered", "1"
    rec = CallRecord("7", "k", T_PLACED, PBX_NUMBER, CUSTOMER, None, True, "tok7")
    return call, rec


def _events() -> dict[str, dict[str, str]]:
    call, rec = _call()
    clock = AccountClock("Europe/London")
    return {
        "NOTIFY_START": wh.pbx_start(call, rec, clock, PBX_NUMBER),
        "NOTIFY_INTERNAL": wh.pbx_internal(call, rec, clock, PBX_NUMBER),
        "NOTIFY_ANSWER": wh.pbx_answer(call, rec, clock),
        "NOTIFY_END": wh.pbx_end(call, rec, clock, PBX_NUMBER, recorded=True),
        "NOTIFY_OUT_START": wh.out_start(call, rec, clock),
        "NOTIFY_OUT_END": wh.out_end(call, rec, clock),
        "NOTIFY_INTERNAL_END": wh.pbx_internal_end(call, rec, clock, PBX_NUMBER),
        "NOTIFY_RECORD": wh.record(call, rec),
        "NOTIFY_IVR": wh.pbx_ivr(call, rec, clock, PBX_NUMBER),
    }


# The table of docs/webhooks.md: what each event signs, written out by hand.
SIGNED: dict[str, Callable[[dict[str, str]], str]] = {
    "NOTIFY_START": lambda f: f["caller_id"] + f["called_did"] + f["call_start"],
    "NOTIFY_INTERNAL": lambda f: f["caller_id"] + f["called_did"] + f["call_start"],
    "NOTIFY_ANSWER": lambda f: f["caller_id"] + f["destination"] + f["call_start"],
    "NOTIFY_END": lambda f: f["caller_id"] + f["called_did"] + f["call_start"],
    "NOTIFY_OUT_START": lambda f: f["internal"] + f["destination"] + f["call_start"],
    "NOTIFY_OUT_END": lambda f: f["internal"] + f["destination"] + f["call_start"],
    "NOTIFY_INTERNAL_END": lambda f: f["caller_id"] + f["called_did"] + f["call_start"],
    "NOTIFY_RECORD": lambda f: f["pbx_call_id"] + f["call_id_with_rec"],
    "NOTIFY_IVR": lambda f: f["caller_id"] + f["called_did"] + f["call_start"],
}
EVENTS = sorted(SIGNED)


def test_the_table_covers_every_event_the_verifier_knows() -> None:
    assert set(WEBHOOK_SIGNED_FIELDS) == set(SIGNED) == set(_events())
    docs = (Path(__file__).resolve().parents[1] / "docs" / "webhooks.md").read_text(encoding="utf-8")
    for event, fields in WEBHOOK_SIGNED_FIELDS.items():
        assert f"| {event} |" in docs and " + ".join(fields) in docs, event


@pytest.mark.parametrize("event", EVENTS)
def test_each_event_is_signed_on_its_documented_fields(event: str) -> None:
    fields = _events()[event]
    assert fields["event"] == event
    expected = base64.b64encode(
        hmac.new(SECRET.encode(), SIGNED[event](fields).encode(), hashlib.sha1).hexdigest().encode()
    ).decode()
    signature = webhook_signature(fields, SECRET)
    assert signature == expected and len(signature) == 56
    assert verify_webhook(fields, signature, SECRET)
    signed_field = WEBHOOK_SIGNED_FIELDS[event][0]
    assert not verify_webhook({**fields, signed_field: fields[signed_field] + "9"}, signature, SECRET)


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, object]]:
    engine = make_db(tmp_path_factory.mktemp("events"))
    app = create_webhook_app(engine, secret=SECRET, live=LiveState(), path="/zadarma")
    with serve(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield client, engine
    engine.dispose()


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
@pytest.mark.parametrize("event", EVENTS)
def test_the_receiver_takes_each_event_urlencoded_and_multipart(
    receiver: tuple[httpx.Client, object], event: str, encoding: str
) -> None:
    client, engine = receiver
    # A call of its own per case: the receiver stores a resent event once.
    fields = {**_events()[event], "pbx_call_id": f"in_{event}_{encoding}"}
    headers = {"Signature": webhook_signature(fields, SECRET) or ""}

    def post(body_fields: dict[str, str], hdrs: dict[str, str]) -> httpx.Response:
        if encoding == "multipart":
            body, hdrs["Content-Type"] = wh.multipart_body(body_fields)
            return client.post("/zadarma", content=body, headers=hdrs)
        return client.post("/zadarma", data=body_fields, headers=hdrs)

    tampered = {**fields, WEBHOOK_SIGNED_FIELDS[event][0]: "0"}
    assert post(tampered, dict(headers)).status_code == 403
    r = post(fields, dict(headers))
    assert r.status_code == 200, r.text
    with Session(engine) as s:  # type: ignore[call-overload]
        stored = s.exec(select(WebhookEvent).where(WebhookEvent.pbx_call_id == fields["pbx_call_id"])).all()
    assert [(e.event, e.signature_ok, e.payload) for e in stored] == [(event, True, fields)]


def test_internal_end_frees_an_unanswered_extension_and_record_stores_the_recording(tmp_path: Path) -> None:
    centre = seed(tmp_path)
    alice = EXTENSIONS["alice"]
    try:
        with serve_centre(centre.db) as (server, _api), httpx.Client(base_url=server.url, timeout=10) as http:
            h = login(http, "alice")

            def state() -> str:
                return str(http.get("/api/me", headers=h).json()["state"]["state"])

            assert http.post("/api/state", json={"state": "ready"}, headers=h).status_code == 200
            # Customer 0 is routed to alice, whose phone rings out: her leg's end makes her ready again.
            p0 = centre.phones[0]
            assert webhook(http, start(p0, "c0")).json()["redirect"] == alice
            assert state() == AgentState.RINGING
            webhook(http, {**start(p0, "c0"), "event": "NOTIFY_INTERNAL_END", "internal": alice})
            assert state() == AgentState.READY
            # Customer 1 talks to her: her leg's end leaves the call to NOTIFY_END, which completes the attempt as
            # it moves her to wrap-up (a disposition saved on call_ended then finds the attempt complete).
            p1 = centre.phones[1]
            assert webhook(http, start(p1, "c1")).json()["redirect"] == alice
            webhook(http, answer(p1, "c1", alice))
            ended = {**start(p1, "c1"), "event": "NOTIFY_INTERNAL_END", "internal": alice}
            webhook(http, ended)
            assert state() == AgentState.TALKING
            end = {**ended, "event": "NOTIFY_END", "duration": "60", "disposition": "answered",
                   "last_internal": alice, "is_recorded": "1", "call_id_with_rec": "1780000005.72"}  # fmt: skip
            webhook(http, end)
            assert state() == AgentState.WRAPUP
            record = {"event": "NOTIFY_RECORD", "pbx_call_id": "in_c1", "call_id_with_rec": "1780000005.72"}
            webhook(http, record)
            # The abandon message played to a customer nobody could take: linked, nothing more.
            webhook(http, {**start(centre.phones[2], "c2"), "event": "NOTIFY_IVR"})
        with Session(centre.db) as s:
            attempts = {a.id: a for a in s.exec(select(Attempt))}
            moves = [(e.from_state, e.to_state) for e in s.exec(select(AgentEvent).order_by(col(AgentEvent.id)))]
        talked, ivr = attempts[centre.attempt_ids[1]], attempts[centre.attempt_ids[2]]
        assert talked.state == AttemptState.COMPLETED and talked.connected and talked.recording == "1780000005.72"
        assert moves[-4:] == [(AgentState.RINGING, AgentState.READY), (AgentState.READY, AgentState.RINGING),
                              (AgentState.RINGING, AgentState.TALKING), (AgentState.TALKING, AgentState.WRAPUP)]
        assert ivr.state == AttemptState.PLACED and ivr.pbx_call_id == "in_c2" and ivr.recording is None
    finally:
        centre.db.dispose()


def test_a_record_after_the_live_state_forgot_the_call_finds_its_attempt(tmp_path: Path) -> None:
    from tests.webhooks_support import end, signed
    from tests.webhooks_support import seed as seed_calls

    engine = make_db(tmp_path)
    seeded = seed_calls(engine)
    phone = seeded.phones[0]
    app = create_webhook_app(engine, secret=SECRET, live=LiveState(), path="/zadarma")
    with serve(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        for fields in (start(phone, "r1"), end(phone, "r1", "100")):
            assert client.post("/zadarma", data=fields, headers=signed(fields)).status_code == 200
    # A new receiver (a restarted daemon) has no live state: the stored NOTIFY_START names the customer.
    app = create_webhook_app(engine, secret=SECRET, live=LiveState(), path="/zadarma")
    record = {"event": "NOTIFY_RECORD", "pbx_call_id": "in_r1", "call_id_with_rec": "1780000100.12"}
    with serve(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post("/zadarma", data=record, headers=signed(record)).status_code == 200
    with Session(engine) as s:
        attempt = s.get(Attempt, seeded.attempt_ids[0])
        assert attempt is not None and attempt.recording == "1780000100.12"
    engine.dispose()


@pytest.mark.slow
def test_simulator_and_daemon_exchange_every_event_multipart_with_recording(tmp_path: Path) -> None:
    """Two agents, ten customers who all answer. The abandon governor keeps so small a campaign from abandoning
    anyone, so NOTIFY_IVR is the next test's."""
    world = (
        scenario_text(agents=2)
        .replace('profile = "full"', 'profile = "full"\nencoding = "multipart"\nrecording = true')
        .replace("answer_probability = 0.35", "answer_probability = 1.0")
    )
    for name in ("p_busy", "p_failed", "p_unallocated"):
        world = re.sub(rf"{name} = [0-9.]+", f"{name} = 0.0", world)
    with stack(tmp_path, time_scale=30.0, scenario=world) as st:
        st.make_campaign("events", 10, agents=2, pacing="ratio:3", max_attempts=1,
                         extra=["--abandon-action", "ivr_play:1"])  # fmt: skip
        st.run_daemon(240, start="events")
        st.wait_truth_settled()
        hooks = st.sim_stats()["webhooks"]
        assert hooks["encoding"] == "multipart" and hooks["failed"] == 0
        with st.db() as s:
            stored = list(s.exec(select(WebhookEvent)))
        kinds = {e.event for e in stored}
        assert kinds == set(EVENTS) - {"NOTIFY_IVR"}, kinds
        assert all(e.signature_ok for e in stored)
        truth = st.truth()
        attempts = st.attempts()
        recorded = {a.phone for a in attempts if a.recording}
        assert recorded and recorded == {"+" + c["to"].lstrip("+") for c in truth if c["connected"]}
        wait_for(lambda: all(a.state == AttemptState.COMPLETED for a in st.attempts()), timeout=120,
                 what="every attempt completed")
        # The report shows which calls have a recording.
        st.cli("report", "events", "--csv", str(tmp_path / "report"))
        with (tmp_path / "report" / "attempts.csv").open(encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
        assert {r["phone"] for r in rows if r["recording"]} == recorded


def test_the_simulator_says_when_the_abandon_message_has_played() -> None:
    """A receiver that answers NOTIFY_START with ``ivr_play``: the simulated PBX plays the file, sends NOTIFY_IVR,
    then ends the call; every event multipart and signed."""
    got: list[tuple[dict[str, str], bool, str]] = []

    async def hook(request: Request) -> Response:
        if request.method == "GET":
            return PlainTextResponse(request.query_params.get("zd_echo", ""))
        fields = {k: str(v) for k, v in (await request.form()).items()}
        got.append((fields, verify_webhook(fields, request.headers.get("Signature"), SECRET),
                    request.headers.get("content-type", "")))  # fmt: skip
        return JSONResponse({"ivr_play": "7"}) if fields["event"] == "NOTIFY_START" else PlainTextResponse("ok")

    world = Scenario.from_dict({"agents": {"count": 1}, "fixed_numbers": {"442079460123": "answered"},
                                "calls": {"ring_time": 4, "ivr_message_s": 8}, "statistics": {"lag_s": 0},
                                "webhooks": {"encoding": "multipart", "notify_start_timeout_s": 40}})  # fmt: skip
    app = Starlette(routes=[Route("/hook", hook, methods=["GET", "POST"])])
    with serve(app) as hooks, run_simulator(world, key=KEY, secret=SECRET, time_scale=20,
                                            webhook_url=hooks.url + "/hook") as sim:  # fmt: skip
        assert sim.wait_webhook_verified(timeout=120)
        path, params = "/v1/request/callback/", {"format": "json", "from": PBX_NUMBER, "to": "442079460123",
                                                   "predicted": 1}  # fmt: skip
        r = httpx.get(f"{sim.url}{path}?{params_string(params)}",
                      headers={"Authorization": f"{KEY}:{sign(path, params, SECRET)}"}, timeout=10)  # fmt: skip
        assert r.json()["status"] == "success"
        (call,) = sim.wait_calls_ended(timeout=120)
        wait_for(lambda: any(f["event"] == "NOTIFY_END" for f, _, _ in got), timeout=120, what="NOTIFY_END")
    assert call["ivr"] == "7" and call["abandoned"] and not call["connected"]
    pbx = [f["event"] for f, _, _ in got if f["pbx_call_id"].startswith("in_")]
    assert pbx == ["NOTIFY_START", "NOTIFY_IVR", "NOTIFY_END"]
    ivr = next(f for f, _, _ in got if f["event"] == "NOTIFY_IVR")
    assert ivr["caller_id"] == "442079460123" and ivr["called_did"] == PBX_NUMBER and ivr["ivr_play"] == "7"
    assert all(ok and ctype.startswith("multipart/form-data") for _, ok, ctype in got)
