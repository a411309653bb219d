"""The HTTP simulator: signatures, rate limits, formats, statistics legs, faults (real servers on free ports)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx
import pytest

from dialer.sim.harness import RunningSimulator, run_simulator
from dialer.sim.scenario import Scenario
from dialer.zadarma.parsing import parse_xml
from dialer.zadarma.signing import params_string, sign, sign_string
from tests.conftest import KEY, SECRET


def _get(
    url: str,
    path: str,
    params: dict[str, Any],
    *,
    key: str = KEY,
    secret: str = SECRET,
    client: httpx.Client | None = None,
) -> httpx.Response:
    query = params_string(params)
    headers = {"Authorization": f"{key}:{sign(path, params, secret)}"}
    c = client or httpx
    return c.get(f"{url}{path}?{query}" if query else f"{url}{path}", headers=headers, timeout=10)  # type: ignore[union-attr]


def _send(url: str, verb: str, path: str, params: dict[str, Any]) -> httpx.Response:
    body = params_string(params)
    headers = {
        "Authorization": f"{KEY}:{sign(path, params, SECRET)}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return httpx.request(verb, url + path, content=body, headers=headers, timeout=10)


def test_signature_checked_exactly_raw_digest_rejected(simulator: RunningSimulator) -> None:
    sim = simulator
    ok = _get(sim.url, "/v1/info/balance/", {"format": "json"})
    assert ok.status_code == 200
    assert ok.json() == {"status": "success", "balance": 100.0, "currency": "USD"}
    # The documented test vector, byte for byte.
    vec = httpx.get(
        sim.url + "/v1/info/balance/?format=json",
        headers={
            "Authorization": "k0k1k2k3k4k5k6k7k8k9:NWU4NGFjNzk1ZGMxMDEzYWYxMTU1NmM1NjUxMDM2ZGE4Zjk5ZTdiMQ=="
        },
    )
    assert vec.status_code == 200
    # The common mistake: base64 of the raw 20-byte digest instead of the hex string.
    query = "format=json"
    sign_str = "/v1/info/balance/" + query + hashlib.md5(query.encode()).hexdigest()
    raw = base64.b64encode(hmac.new(SECRET.encode(), sign_str.encode(), hashlib.sha1).digest()).decode()
    bad = httpx.get(sim.url + "/v1/info/balance/?format=json", headers={"Authorization": f"{KEY}:{raw}"})
    assert bad.status_code == 401
    assert bad.json() == {"status": "error", "message": "Not authorized"}
    # Signed for other parameters than those sent, a wrong key, no header at all.
    assert (
        httpx.get(
            sim.url + "/v1/info/balance/?format=xml",
            headers={"Authorization": f"{KEY}:{sign('/v1/info/balance/', {'format': 'json'}, SECRET)}"},
        ).status_code
        == 401
    )
    assert _get(sim.url, "/v1/info/balance/", {}, key="x" * 20).status_code == 401
    assert httpx.get(sim.url + "/v1/info/balance/").status_code == 401
    # Form bodies are signed as sent (POST / PUT).
    sms = _send(
        sim.url, "POST", "/v1/sms/send/", {"number": "447700900123", "message": "hi", "format": "json"}
    )
    assert sms.status_code == 200 and sms.json()["messages"] == 1
    put = _send(sim.url, "PUT", "/v1/sip/callerid/", {"id": "00001", "number": "442037691880"})
    assert put.json() == {"status": "success", "sip": "00001", "new_caller_id": "442037691880"}
    assert sim.stats()["unauthorized"] == 4


def test_parameters_in_the_callers_order_signed_sorted_are_accepted(simulator: RunningSimulator) -> None:
    """What Zadarma's official PHP and Python clients do: sign the parameters sorted by key (RFC 1738) but send
    them in the caller's order. Zadarma verifies the canonical form; so does the simulator. Signing the unsorted
    string, or other values than those sent, is still refused."""
    sim = simulator
    path = "/v1/sms/send/"
    params = {"number": "447700900123", "message": "Привет, мир ~ 100%", "format": "json"}
    unsorted = urlencode(list(params.items()))
    assert unsorted != params_string(params)

    def post(body: str, signature: str) -> httpx.Response:
        return httpx.post(sim.url + path, content=body, timeout=10, headers={
            "Authorization": f"{KEY}:{signature}", "Content-Type": "application/x-www-form-urlencoded"})

    ok = post(unsorted, sign(path, params, SECRET))
    assert ok.status_code == 200 and ok.json()["messages"] == 1, ok.text
    # PHP writes "~" as %7E in what it signs and sends; Python leaves it bare: both are the same parameters.
    php = params_string(params).replace("~", "%7E")
    assert post(unsorted.replace("~", "%7E"), sign_string(path, php, SECRET)).status_code == 200
    assert post(unsorted, sign_string(path, unsorted, SECRET)).status_code == 401
    tampered = unsorted.replace("447700900123", "447700900124")
    assert post(tampered, sign(path, params, SECRET)).status_code == 401
    # GET with the query in another order, signed sorted.
    r = httpx.get(sim.url + "/v1/info/price/?number=447700900123&format=json", timeout=10, headers={
        "Authorization": f"{KEY}:{sign('/v1/info/price/', {'format': 'json', 'number': '447700900123'}, SECRET)}"})
    assert r.status_code == 200, r.text
    assert sim.stats()["unauthorized"] == 2


def test_rate_limits_per_key_shared_by_clients_with_headers() -> None:
    # A window of ~11 days: no window boundary can fall in the middle of the test.
    sc = Scenario.from_dict({"limits": {"window_s": 1_000_000}})
    other_key, other_secret = "o" * 20, "p" * 20
    with (
        run_simulator(sc, key=KEY, secret=SECRET, extra_keys={other_key: other_secret}) as sim,
        httpx.Client() as a,
        httpx.Client() as b,
    ):
        reset = (int(time.time()) // 1_000_000 + 1) * 1_000_000
        for i in range(100):
            r = _get(sim.url, "/v1/info/balance/", {"format": "json"}, client=a if i % 2 else b)
            assert r.status_code == 200, i
            assert r.headers["X-Zadarma-Method"] == "/v1/info/balance/"
            assert r.headers["X-RateLimit-Limit"] == "100"
            assert r.headers["X-RateLimit-Remaining"] == str(99 - i)
            assert r.headers["X-RateLimit-Reset"] == str(reset)
        over = _get(sim.url, "/v1/info/timezone/", {"format": "json"}, client=a)
        assert over.status_code == 429
        assert over.json() == {"status": "error", "message": "You exceeded the rate limit"}
        assert over.headers["X-RateLimit-Remaining"] == "0"
        assert over.headers["X-RateLimit-Limit"] == "100"
        assert over.headers["X-RateLimit-Reset"] == str(reset)
        assert over.headers["X-Zadarma-Method"] == "/v1/info/timezone/"
        assert int(over.headers["Retry-After"]) == pytest.approx(reset - time.time(), abs=2)
        # Statistics have their own bucket of 3, shared by every statistics method.
        stats_paths = ["/v1/statistics/pbx/", "/v1/statistics/", "/v1/statistics/pbx/"]
        for i, path in enumerate(stats_paths):
            r = _get(sim.url, path, {"format": "json"}, client=b)
            assert r.status_code == 200, r.text
            assert r.headers["X-RateLimit-Limit"] == "3"
            assert r.headers["X-RateLimit-Remaining"] == str(2 - i)
        fourth = _get(sim.url, "/v1/statistics/", {"format": "json"}, client=a)
        assert fourth.status_code == 429 and fourth.headers["X-RateLimit-Limit"] == "3"
        # Another key has its own budget.
        r = _get(sim.url, "/v1/info/balance/", {}, key=other_key, secret=other_secret)
        assert r.status_code == 200 and r.headers["X-RateLimit-Remaining"] == "99"
        st = sim.stats()
        assert st["rate_limited"] == {KEY: 2}


def test_xml_format_and_validation_errors(simulator: RunningSimulator) -> None:
    sim = simulator
    r = _get(sim.url, "/v1/info/balance/", {"format": "xml"})
    assert r.text.startswith('<?xml version="1.0"?><answer>')
    assert parse_xml(r.text) == {"status": "success", "balance": "100.0", "currency": "USD"}
    r = _get(
        sim.url, "/v1/request/callback/", {"format": "xml", "from": "442037691880", "to": "not-a-number"}
    )
    assert parse_xml(r.text) == {"status": "error", "message": "Check phone number"}
    r = _get(sim.url, "/v1/pbx/internal/", {"format": "xml"})
    assert parse_xml(r.text)["numbers"] == [str(n) for n in range(100, 110)]
    r = _get(sim.url, "/v1/pbx/internal/101/status/", {"format": "json"})
    assert r.json() == {"status": "success", "pbx_id": 1234, "number": 101, "is_online": "true"}
    r = _get(sim.url, "/v1/info/price/", {"number": "442037691881", "format": "json"})
    assert r.json()["info"] == {
        "prefix": "4420",
        "description": "United Kingdom, London",
        "price": "0.009",
        "currency": "USD",
    }
    r = _get(sim.url, "/v1/sip/redirection/", {"format": "json"})
    assert r.json()["info"][0]["sip_id"] == "00001"
    r = _get(sim.url, "/v1/sip/", {"format": "json"})
    assert r.json()["sips"] == [{"id": "00001", "display_name": "00001", "lines": 5}]
    assert sim.calls() == []


def test_every_callback_yields_statistics_legs_in_account_time_paged_exactly_once() -> None:
    sc = Scenario.from_dict(
        {
            "seed": 4,
            "timezone": "Asia/Kolkata",
            "agents": {"count": 2},
            "calls": {
                "answer_probability": 0.5,
                "p_busy": 0.15,
                "p_failed": 0.05,
                "p_unallocated": 0.05,
                "talk_time": 60,
                "ring_time": {"dist": "uniform", "low": 2, "high": 6},
            },
            "limits": {"statistics_per_window": 1000, "general_per_window": 1000},
            "statistics": {"lag_s": 10},
        }
    )
    tz = ZoneInfo("Asia/Kolkata")
    with run_simulator(sc, key=KEY, secret=SECRET, time_scale=100) as sim:
        tzr = _get(sim.url, "/v1/info/timezone/", {"format": "json"}).json()
        assert tzr["timezone"] == "UTC+5:30"
        assert tzr["datetime"] == datetime.fromtimestamp(tzr["unixtime"], tz).strftime("%Y-%m-%d %H:%M:%S")
        for i in range(30):
            r = _get(
                sim.url,
                "/v1/request/callback/",
                {"format": "json", "from": "442037691880", "to": f"+4420700{i:05d}", "predicted": 1},
            )
            body = r.json()
            assert body["status"] == "success" and body["to"] == int(f"4420700{i:05d}")
        truth = sim.wait_calls_ended(timeout=30)
        assert len(truth) == 30
        start = datetime.fromtimestamp(time.time() - 3600, tz).strftime("%Y-%m-%d %H:%M:%S")
        end = datetime.fromtimestamp(time.time() + 60, tz).strftime("%Y-%m-%d %H:%M:%S")
        base = {"format": "json", "start": start, "end": end, "version": 2}
        everything = _get(sim.url, "/v1/statistics/pbx/", base).json()["stats"]
        paged: list[dict[str, Any]] = []
        skip = 0
        while True:
            page = _get(sim.url, "/v1/statistics/pbx/", {**base, "skip": skip, "limit": 7}).json()["stats"]
            paged.extend(page)
            skip += 7
            if len(page) < 7:
                break
        assert paged == everything
        answered = [c for c in truth if c["answered"]]
        assert len(everything) == 30 + len(answered)
        assert len({(r["pbx_call_id"], r["call_id"]) for r in paged}) == len(paged)
        assert any(c["abandoned"] for c in truth) and any(c["connected"] for c in truth)
        by_id = {r["pbx_call_id"]: r for r in everything}
        for c in truth:
            out = by_id[c["pbx_call_id"]]
            assert out["pbx_call_id"].startswith("out_")
            assert out["clid"] == "442037691880"
            assert out["destination"] == c["to"].lstrip("+")
            assert out["disposition"] == c["disposition"]
            assert out["callstart"] == datetime.fromtimestamp(int(c["placed_at"]), tz).strftime(
                "%Y-%m-%d %H:%M:%S"
            )
            assert float(out["call_id"]) > 0
            if c["answered"]:
                leg = by_id[c["pbx_call_id_in"]]
                assert leg["clid"] == c["to"].lstrip("+")
                if c["connected"]:
                    assert leg["disposition"] == "answered" and leg["destination"] == c["agent"]
                    assert leg["seconds"] == round(c["talk_seconds"]) == out["seconds"]
                else:
                    assert leg["disposition"] == "no answer" and leg["seconds"] == 0
            else:
                assert c["pbx_call_id_in"] is None and out["seconds"] == 0
        assert {c["disposition"] for c in truth} >= {"answered", "busy", "no answer"}
        # Cost rows, one per customer leg; the balance fell by their sum.
        cost = _get(sim.url, "/v1/statistics/", base).json()["stats"]
        assert len(cost) == 30
        billed = sum(r["billcost"] for r in cost)
        assert billed > 0
        bal = _get(sim.url, "/v1/info/balance/", {"format": "json"}).json()["balance"]
        assert bal == pytest.approx(100 - billed, abs=1e-3)
        # A period that ends before the calls has none; a period over a month is cut to 30 days.
        early = datetime.fromtimestamp(time.time() - 7200, tz).strftime("%Y-%m-%d %H:%M:%S")
        earlier = datetime.fromtimestamp(time.time() - 9000, tz).strftime("%Y-%m-%d %H:%M:%S")
        r = _get(sim.url, "/v1/statistics/pbx/", {**base, "start": earlier, "end": early}).json()
        assert r["stats"] == []
        old = datetime.fromtimestamp(time.time() - 60 * 86400, tz)
        r = _get(sim.url, "/v1/statistics/pbx/", {**base, "start": old.strftime("%Y-%m-%d %H:%M:%S")}).json()
        assert r["end"] == datetime.fromtimestamp(old.timestamp() + 30 * 86400, tz).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
        assert r["stats"] == []


def test_rows_appear_only_after_the_call_ended_plus_lag() -> None:
    sc = Scenario.from_dict(
        {
            "agents": {"count": 1},
            "calls": {"talk_time": 100, "ring_time": 1},
            "fixed_numbers": {"442070000001": "answered"},
            "statistics": {"lag_s": 100},
            "limits": {"statistics_per_window": 100},
        }
    )
    with run_simulator(sc, key=KEY, secret=SECRET, time_scale=100) as sim:
        _get(sim.url, "/v1/request/callback/", {"from": "100", "to": "442070000001", "predicted": 1})
        day_ago = datetime.fromtimestamp(time.time() - 86400, ZoneInfo("Europe/London"))
        q = {"format": "json", "start": day_ago.strftime("%Y-%m-%d %H:%M:%S")}
        seen_empty_after_end = False
        deadline = time.monotonic() + 120  # rows are due ~2 s after the callback; this only bounds a hang
        while time.monotonic() < deadline:
            rows = _get(sim.url, "/v1/statistics/pbx/", q).json()["stats"]
            call = sim.calls()[0]
            if rows:
                assert call["ended_at"] is not None and time.time() >= call["ended_at"] + 1.0 - 0.01
                break
            if call["ended_at"] is not None:
                seen_empty_after_end = True
            time.sleep(0.05)
        assert rows and seen_empty_after_end
        assert [r["pbx_call_id"][:3] for r in rows] in (["out", "in_"], ["in_", "out"])


def test_faults_server_errors_and_errors_do_not_place_calls(start_simulator: Callable[..., RunningSimulator]) -> None:
    sim = start_simulator(faults={"server_error_rate": 1.0})
    r = _get(sim.url, "/v1/request/callback/", {"from": "100", "to": "442070000001"})
    assert r.status_code in (500, 502)
    assert sim.calls() == []
    sim = start_simulator(faults={"error_rate": 1.0})
    r = _get(sim.url, "/v1/request/callback/", {"from": "100", "to": "442070000001"})
    assert r.status_code == 200 and r.json()["status"] == "error"
    assert sim.calls() == []


def test_timeout_after_processing_places_the_call_but_never_answers() -> None:
    n = 100
    with run_simulator(
        key=KEY,
        secret=SECRET,
        time_scale=100,
        faults={"timeout_after_processing": 0.1},
        scenario=Scenario.from_dict({"limits": {"general_per_window": 1000}}),
    ) as sim:

        async def fire() -> list[str]:
            async with httpx.AsyncClient(timeout=120) as client:

                async def one(i: int) -> str:
                    params = {
                        "format": "json",
                        "from": "442037691880",
                        "to": f"4420700{i:05d}",
                        "predicted": 1,
                    }
                    path = "/v1/request/callback/"
                    r = await client.get(
                        f"{sim.url}{path}?{urlencode(sorted(params.items()))}",
                        headers={"Authorization": f"{KEY}:{sign(path, params, SECRET)}"},
                    )
                    # A held request is answered only when released, and then with a 504.
                    return "held" if r.status_code == 504 else str(r.json()["status"])

                tasks = [asyncio.create_task(one(i)) for i in range(n)]
                # Once every answer that is coming has come, the rest are held: release them. No client timeout
                # decides which is which, so a busy machine cannot turn a slow answer into a "held" one.
                deadline = time.monotonic() + 120
                while True:
                    stats = (await client.get(sim.url + "/_sim/stats")).json()
                    held = stats["faults_injected"].get("timeout_after_processing", 0)
                    if sum(t.done() for t in tasks) + held >= n:
                        break
                    assert time.monotonic() < deadline, "the simulator did not answer every request"
                    await asyncio.sleep(0.02)
                assert not any(t.done() and t.result() == "held" for t in tasks)
                sim.release_held()
                return list(await asyncio.gather(*tasks))

        results = asyncio.run(fire())
        truth = sim.calls()
        held = results.count("held")
        assert results.count("success") + held == n
        assert 3 <= held <= 20
        assert len(truth) == n  # every callback happened, answered or not
        silent = {c["to"] for c in truth if not c["responded"]}
        assert len(silent) == held
        assert sim.stats()["faults_injected"]["timeout_after_processing"] == held


def test_statistics_lag_fault_delays_rows() -> None:
    sc = Scenario.from_dict({"statistics": {"lag_s": 10}, "fixed_numbers": {"442070000001": "busy"}})
    with run_simulator(sc, key=KEY, secret=SECRET, time_scale=100, faults={"statistics-lag": 40}) as sim:
        _get(sim.url, "/v1/request/callback/", {"from": "100", "to": "442070000001"})
        call = sim.wait_calls_ended(timeout=120)[0]
        assert call["disposition"] == "busy"
        assert call["stats_due_at"] - call["ended_at"] == pytest.approx((10 + 40) / 100)
        assert sim.stats()["faults"] == {"statistics_lag_s": 40.0}
