"""The webhook receiver through a real HTTP server: echo check, signatures, malformed and multipart bodies,
unknown events, duplicates, /healthz and /metrics."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from dialer.asgi_thread import ServerThread, serve
from dialer.dialing.live import LiveState
from dialer.metrics import Metrics
from dialer.models import WebhookEvent
from dialer.outcomes.webhook_app import create_webhook_app
from dialer.zadarma.budget import RateBudget
from dialer.zadarma.signing import webhook_signature
from tests.webhooks_support import (
    SECRET,
    Seeded,
    answer,
    end,
    internal,
    make_db,
    out_end,
    out_start,
    seed,
    signed,
    start,
)

VECTOR_SIGNATURE = "NzA2MTM1YTRiMjlmZWVlYTIzMDZiNDZmY2VmN2FhOTU5M2Q4NWMzZQ=="


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[ServerThread, httpx.Client, Seeded, object]]:
    engine = make_db(tmp_path)
    seeded = seed(engine, sent_at=datetime.now(UTC))
    live = LiveState()
    metrics = Metrics(budget=RateBudget())
    app = create_webhook_app(engine, secret=SECRET, live=live, path="/zadarma", metrics=metrics)
    with serve(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield server, client, seeded, engine
    engine.dispose()


def _events(engine: object) -> list[WebhookEvent]:
    with Session(engine) as s:  # type: ignore[arg-type]
        return list(s.exec(select(WebhookEvent).order_by(WebhookEvent.id)))  # type: ignore[arg-type]


def test_zd_echo_answers_exactly_the_token(env: tuple) -> None:
    _, client, _, _ = env
    r = client.get("/zadarma", params={"zd_echo": "a1b2-C3_d4"})
    assert r.status_code == 200
    assert r.text == "a1b2-C3_d4"
    assert r.headers["content-type"].startswith("text/plain")


def test_signature_vector_from_the_docs_is_accepted(env: tuple) -> None:
    _, client, _, engine = env
    fields = {
        "event": "NOTIFY_START",
        "caller_id": "442037691880",
        "called_did": "442037691881",
        "call_start": "2024-05-01 12:00:00",
        "pbx_call_id": "in_vector",
    }
    assert webhook_signature(fields, SECRET) == VECTOR_SIGNATURE
    r = client.post("/zadarma", data=fields, headers={"Signature": VECTOR_SIGNATURE})
    assert r.status_code == 200
    assert r.json() == {}  # an unknown caller: the PBX's default routing
    stored = _events(engine)
    assert [(e.event, e.signature_ok, e.payload["caller_id"]) for e in stored] == [
        ("NOTIFY_START", True, "442037691880")
    ]


def _every_event(seeded: Seeded) -> list[dict[str, str]]:
    phone = seeded.phones[0]
    return [
        out_start(phone, "tok1"),
        start(phone, "tok1", 5),
        internal(phone, "tok1", "100", 5),
        answer(phone, "tok1", "100", 6),
        end(phone, "tok1", "100", "answered", 30, 5),
        out_end(phone, "tok1", "answered", 0, 40),
        {"event": "NOTIFY_RECORD", "pbx_call_id": "in_tok1", "call_id_with_rec": "1700000000.123"},
    ]


def test_each_event_signed_right_is_accepted_and_stored(env: tuple) -> None:
    _, client, seeded, engine = env
    events = _every_event(seeded)
    for fields in events:
        r = client.post("/zadarma", data=fields, headers=signed(fields))
        assert r.status_code == 200, (fields["event"], r.text)
    stored = _events(engine)
    assert [e.event for e in stored] == [f["event"] for f in events]
    assert all(e.signature_ok for e in stored)
    assert stored[1].payload == events[1]


@pytest.mark.parametrize("index", range(7))
def test_each_event_signed_wrong_or_unsigned_gets_403(
    env: tuple, index: int, caplog: pytest.LogCaptureFixture
) -> None:
    _, client, seeded, engine = env
    fields = _every_event(seeded)[index]
    caplog.set_level(logging.WARNING, logger="dialer.webhooks")
    wrong_secret = {"Signature": webhook_signature(fields, "another-secret-0000000") or ""}
    # Signing another event's field order (e.g. OUT rule for a START) is wrong too.
    tampered = {**fields, "pbx_call_id": fields["pbx_call_id"] + "x"}
    wrong_fields = {
        "Signature": webhook_signature({**tampered, "call_start": "1999-01-01 00:00:00"}, SECRET) or ""
    }
    for headers in ({}, wrong_secret, wrong_fields, {"Signature": "not-base64"}):
        r = client.post("/zadarma", data=fields, headers=headers)
        assert r.status_code == 403, (fields["event"], headers)
    assert _events(engine) == []
    refused = [r for r in caplog.records if "bad signature" in r.getMessage()]
    assert len(refused) == 4
    assert all(SECRET not in r.getMessage() and SECRET not in str(getattr(r, "fields", "")) for r in refused)


def test_malformed_bodies_get_400(env: tuple) -> None:
    _, client, _, engine = env
    no_event = {"caller_id": "442037691880", "call_start": "2024-05-01 12:00:00"}
    assert client.post("/zadarma", data=no_event).status_code == 400
    assert client.post("/zadarma", json={"event": "NOTIFY_START"}).status_code == 400
    assert (
        client.post(
            "/zadarma", content=b"\x00\xff garbage", headers={"content-type": "text/plain"}
        ).status_code
        == 400
    )
    broken_multipart = b'--XYZ\r\nContent-Disposition: form-data; name="event"\r\n\r\nNOTIFY_START'
    r = client.post(
        "/zadarma", content=broken_multipart, headers={"content-type": "multipart/form-data; boundary=XYZ"}
    )
    assert r.status_code == 400
    r = client.post(
        "/zadarma", content=b"event=", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 400
    assert _events(engine) == []
    metrics = client.get("/metrics").text
    assert "dialer_webhook_malformed_total 5" in metrics


def test_multipart_bodies_are_accepted(env: tuple) -> None:
    _, client, seeded, engine = env
    fields = out_start(seeded.phones[1], "mp1")
    # httpx sends multipart/form-data when files are given; the file part itself is ignored.
    r = client.post("/zadarma", data=fields, files={"attachment": ("a.txt", b"x")}, headers=signed(fields))
    assert r.status_code == 200
    # What a PBX sends: only text parts, hand-built.
    fields2 = out_start(seeded.phones[2], "mp2")
    body = (
        b"".join(
            f'--b0undary\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields2.items()
        )
        + b"--b0undary--\r\n"
    )
    headers = {"content-type": "multipart/form-data; boundary=b0undary", **signed(fields2)}
    assert client.post("/zadarma", content=body, headers=headers).status_code == 200
    stored = _events(engine)
    assert len(stored) == 2
    assert stored[0].payload == fields and stored[0].signature_ok
    assert stored[1].payload == fields2 and stored[1].signature_ok


def test_unknown_events_are_refused_never_stored_and_extra_fields_ignored(
    env: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    _, client, seeded, engine = env
    caplog.set_level(logging.WARNING, logger="dialer.webhooks")
    unknown = {"event": "SPEECH_RECOGNITION", "pbx_call_id": "in_zz", "caller_id": "442037691880", "x": "1"}
    for _ in range(3):
        assert client.post("/zadarma", data=unknown, headers={"Signature": "x"}).status_code == 403
    extra = {**out_start(seeded.phones[2], "ex1"), "calltype": "callback", "dst_e164": "+1"}
    r = client.post("/zadarma", data=extra, headers=signed(extra))
    assert r.status_code == 200
    stored = _events(engine)
    assert [e.event for e in stored] == ["NOTIFY_OUT_START"]
    assert stored[0].payload["calltype"] == "callback" and stored[0].signature_ok
    # Logged once per name, not once per request.
    assert sum("SPEECH_RECOGNITION" in str(getattr(r, "fields", "")) for r in caplog.records) == 1
    assert "dialer_webhook_unknown_events_total 3" in client.get("/metrics").text


def test_a_resent_event_is_stored_and_counted_once(env: tuple) -> None:
    _, client, seeded, engine = env
    phone = seeded.phones[0]
    for _ in range(3):
        fields = out_end(phone, "dup1", "busy", duration=0)
        assert client.post("/zadarma", data=fields, headers=signed(fields)).status_code == 200
    assert len(_events(engine)) == 1
    metrics = client.get("/metrics").text
    assert 'dialer_webhook_events_total{event="NOTIFY_OUT_END"} 1' in metrics
    assert "dialer_webhook_duplicates_total 2" in metrics


def test_notify_start_routes_over_http_and_duplicate_gets_same_answer(env: tuple) -> None:
    _, client, seeded, _ = env
    phone = seeded.phones[0]
    fields = start(phone, "r1", 3)
    first = client.post("/zadarma", data=fields, headers=signed(fields))
    assert first.status_code == 200
    assert first.json() == {"redirect": "100", "caller_name": "Customer 0"}
    again = client.post("/zadarma", data=fields, headers=signed(fields))
    assert again.json() == first.json()


def test_healthz_and_metrics(env: tuple) -> None:
    _, client, seeded, _ = env
    health = client.get("/healthz").json()
    assert health["ok"] is True and health["last_event_age_s"] is None and health["verify"] is True
    phone = seeded.phones[0]
    for fields in (out_start(phone, "m1"), out_end(phone, "m1", "no answer")):
        client.post("/zadarma", data=fields, headers=signed(fields))
    client.post("/zadarma", data=out_start(phone, "m2"), headers={"Signature": "bad"})
    health = client.get("/healthz").json()
    assert health["events"] == 2 and 0 <= health["last_event_age_s"] < 60
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert "dialer_webhook_signature_failures_total 1" in text
    assert 'dialer_webhook_events_total{event="NOTIFY_OUT_START"} 1' in text
    assert 'dialer_api_budget_remaining{group="general"} 100' in text
    assert 'dialer_api_budget_remaining{group="statistics"} 3' in text
    labels = f'{{campaign="{seeded.campaign_id}",campaign_name="spring"}}'
    assert f"dialer_live_calls_ringing{labels} 0" in text
    # The unanswered call is a call placed, not answered: the counters are read from the database.
    assert f"dialer_calls_placed_total{labels} 1" in text
    assert f"dialer_calls_answered_total{labels} 0" in text


def test_verification_off_only_explicitly_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = make_db(tmp_path)
    seeded = seed(engine)
    with pytest.raises(ValueError, match="verify=False"):
        create_webhook_app(engine, secret="", live=LiveState())
    caplog.set_level(logging.WARNING, logger="dialer.webhooks")
    app = create_webhook_app(engine, secret="", live=LiveState(), verify=False, path="hooks")
    with serve(app) as server:
        assert any("verification is OFF" in r.getMessage() for r in caplog.records)
        fields = out_start(seeded.phones[0], "nv1")
        r = httpx.post(server.url + "/hooks", data=fields, timeout=10)
        assert r.status_code == 200
        assert httpx.get(server.url + "/hooks", params={"zd_echo": "T"}, timeout=10).text == "T"
    stored = _events(engine)
    assert len(stored) == 1 and stored[0].signature_ok is False
    engine.dispose()


def test_concurrent_calls_each_in_order_are_all_folded(tmp_path: Path) -> None:
    """Many calls at once (the writer batches them): every event stored once, every outcome right."""
    from concurrent.futures import ThreadPoolExecutor

    engine = make_db(tmp_path)
    seeded = seed(engine, n=40, extensions=[str(200 + i) for i in range(40)], sent_at=datetime.now(UTC))
    app = create_webhook_app(engine, secret=SECRET, live=LiveState())

    def call(i: int, url: str) -> list[int]:
        phone, token, ext = seeded.phones[i], f"cc{i}", str(200 + i)
        if i % 2:
            seq = [out_start(phone, token), out_end(phone, token, "busy")]
        else:
            seq = [
                out_start(phone, token),
                start(phone, token),
                internal(phone, token, ext),
                answer(phone, token, ext),
                end(phone, token, ext, "answered", 30),
                out_end(phone, token, "answered", 0, 31),
            ]
        with httpx.Client(timeout=10) as c:
            codes = [c.post(url, data=f, headers=signed(f)).status_code for f in seq]
            codes.append(c.post(url, data=seq[-1], headers=signed(seq[-1])).status_code)  # a resend
        return codes

    with serve(app) as server, ThreadPoolExecutor(8) as pool:
        codes = [c for cs in pool.map(lambda i: call(i, server.url + "/zadarma"), range(40)) for c in cs]
    assert set(codes) == {200}
    assert len(_events(engine)) == 20 * 6 + 20 * 2
    with Session(engine) as s:
        from dialer.models import Attempt

        attempts = {a.phone: a for a in s.exec(select(Attempt))}
    for i, phone in enumerate(seeded.phones):
        a = attempts[phone]
        assert a.state == "completed"
        if i % 2:
            assert (a.disposition, a.answered) == ("busy", False)
        else:
            # Connected with the talk time NOTIFY_END reported.
            assert (a.connected, a.abandoned, a.talk_seconds) == (True, False, 30)
    engine.dispose()
