"""Simulator webhooks: zd_echo verification, signatures, event order, NOTIFY_START answers honoured."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from dialer.asgi_thread import serve
from dialer.sim.harness import run_simulator
from dialer.sim.scenario import Scenario
from dialer.zadarma.signing import params_string, sign, verify_webhook
from tests.conftest import KEY, SECRET, wait_for

CUSTOMERS = {"442070000101": "101", "442070000102": "102", "442070000103": "hangup", "442070000104": None}


class Receiver:
    """A little PBX-notification endpoint, as the engine's webhook server would be."""

    def __init__(self, *, echo_right: bool = True) -> None:
        self.echo_right = echo_right
        self.events: list[tuple[dict[str, str], bool]] = []
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["GET", "POST"])])

    async def hook(self, request: Request) -> Response:
        if request.method == "GET":
            token = request.query_params.get("zd_echo", "")
            return PlainTextResponse(token if self.echo_right else token + "x")
        fields = {k: str(v) for k, v in (await request.form()).items()}
        ok = verify_webhook(fields, request.headers.get("Signature"), SECRET)
        with self.lock:
            self.events.append((fields, ok))
        if fields["event"] == "NOTIFY_START":
            choice = CUSTOMERS.get(fields["caller_id"])
            if choice == "hangup":
                return JSONResponse({"hangup": 1})
            if choice:
                return JSONResponse({"redirect": choice, "caller_name": f"Customer {choice}"})
        return PlainTextResponse("ok")

    def of(self, pbx_suffix: str) -> list[dict[str, str]]:
        with self.lock:
            return [f for f, _ in self.events if f["pbx_call_id"].endswith(pbx_suffix)]


def _callback(url: str, to: str) -> httpx.Response:
    path = "/v1/request/callback/"
    params = {"format": "json", "from": "442037691880", "to": to, "predicted": 1}
    return httpx.get(
        f"{url}{path}?{params_string(params)}",
        headers={"Authorization": f"{KEY}:{sign(path, params, SECRET)}"},
        timeout=10,
    )


SCENARIO = {
    "agents": {"count": 3},
    # Generous grace and NOTIFY_START timeout (2 s / 1 s wall at 20x) so a loaded machine cannot flip the routing.
    "calls": {"talk_time": 20, "ring_time": 4, "connect_grace_s": 40},
    "webhooks": {"profile": "full", "notify_start_timeout_s": 20},
    "fixed_numbers": {n: "answered" for n in CUSTOMERS} | {"442070000199": "busy"},
    "statistics": {"lag_s": 0},
    "limits": {"statistics_per_window": 100},
}


def _wait(predicate: Any) -> None:
    wait_for(predicate, timeout=120, what="the webhooks")


def test_signed_events_in_order_and_redirect_answer_routes_the_call() -> None:
    receiver = Receiver()
    with (
        serve(receiver.app) as hook_server,
        run_simulator(
            Scenario.from_dict(SCENARIO),
            key=KEY,
            secret=SECRET,
            time_scale=20,
            webhook_url=hook_server.url + "/hook",
        ) as sim,
    ):
        assert sim.wait_webhook_verified(timeout=120)
        for to in ["442070000101", "442070000102", "442070000103", "442070000104", "442070000199"]:
            assert _callback(sim.url, to).json()["status"] == "success"
        truth = {c["to"]: c for c in sim.wait_calls_ended(timeout=120)}
        _wait(lambda: sum(1 for f, _ in receiver.events if f["event"].endswith("_END")) >= 12)

        assert receiver.events and all(ok for _, ok in receiver.events)
        # redirect "101" and "102": those agents took the calls (the PBX alone would pick the longest idle, 100).
        assert truth["442070000101"]["agent"] == "101" and truth["442070000101"]["routed_by_webhook"]
        assert truth["442070000102"]["agent"] == "102"
        assert truth["442070000101"]["caller_name"] == "Customer 101"
        # hangup: the PBX ended the call, not an abandon; no answer JSON: the PBX's default routing.
        hung = truth["442070000103"]
        assert hung["hangup"] == "hangup" and not hung["connected"] and hung["abandoned"]
        assert hung["pbx_disposition"] == "cancel"
        assert truth["442070000104"]["agent"] == "100"

        token = truth["442070000101"]["pbx_call_id"][4:]
        events = [f["event"] for f in receiver.of(token)]
        assert events == [
            "NOTIFY_OUT_START",
            "NOTIFY_START",
            "NOTIFY_INTERNAL",
            "NOTIFY_ANSWER",
            "NOTIFY_INTERNAL_END",
            "NOTIFY_END",
            "NOTIFY_OUT_END",
        ] or events == [
            "NOTIFY_OUT_START",
            "NOTIFY_START",
            "NOTIFY_INTERNAL",
            "NOTIFY_ANSWER",
            "NOTIFY_OUT_END",
            "NOTIFY_INTERNAL_END",
            "NOTIFY_END",
        ] or events == [
            "NOTIFY_OUT_START",
            "NOTIFY_START",
            "NOTIFY_INTERNAL",
            "NOTIFY_ANSWER",
            "NOTIFY_INTERNAL_END",
            "NOTIFY_OUT_END",
            "NOTIFY_END",
        ]
        fields = {f["event"]: f for f in receiver.of(token)}
        assert fields["NOTIFY_START"]["caller_id"] == "442070000101"
        assert fields["NOTIFY_START"]["called_did"] == "442037691880"
        assert fields["NOTIFY_ANSWER"]["destination"] == "101"
        assert (
            fields["NOTIFY_END"]["disposition"] == "answered" and fields["NOTIFY_END"]["is_recorded"] == "0"
        )
        assert fields["NOTIFY_OUT_END"]["destination"] == "442070000101"
        assert len(fields["NOTIFY_START"]["call_start"]) == 19
        busy = [f for f in receiver.of(truth["442070000199"]["pbx_call_id"][4:])]
        assert [f["event"] for f in busy] == ["NOTIFY_OUT_START", "NOTIFY_OUT_END"]
        assert busy[1]["disposition"] == "busy" and busy[1]["status_code"] == "17"
        hung_end = [f for f in receiver.of(hung["pbx_call_id"][4:]) if f["event"] == "NOTIFY_END"]
        assert hung_end[0]["disposition"] == "cancel"

        # The caller name shows in the PBX leg's clid.
        path = "/v1/statistics/pbx/"
        params = {"format": "json"}
        rows = httpx.get(
            f"{sim.url}{path}?format=json", headers={"Authorization": f"{KEY}:{sign(path, params, SECRET)}"}
        ).json()["stats"]
        leg = next(r for r in rows if r["pbx_call_id"] == "in_" + token)
        assert leg["clid"] == "Customer 101 (442070000101)" and leg["destination"] == "101"


def test_unverified_url_gets_no_events_and_calls_still_happen() -> None:
    receiver = Receiver(echo_right=False)
    with (
        serve(receiver.app) as hook_server,
        run_simulator(
            Scenario.from_dict(SCENARIO),
            key=KEY,
            secret=SECRET,
            time_scale=20,
            webhook_url=hook_server.url + "/hook",
        ) as sim,
    ):
        _wait(lambda: sim.stats()["webhooks"]["verify_attempts"] >= 1)
        assert _callback(sim.url, "442070000101").json()["status"] == "success"
        truth = sim.wait_calls_ended(timeout=120)
        assert truth[0]["connected"] and truth[0]["agent"] == "100"  # no NOTIFY_START answer: default routing
        st = sim.stats()["webhooks"]
        # Nothing sent and nothing on its way: an unverified URL gets no event queued at all.
        assert st["verified"] is False and st["sent"] == 0 and st["in_flight_calls"] == 0
        assert st["verify_failures"] >= 1
        assert receiver.events == []
        # Pointing it at a URL that answers correctly turns events on.
        receiver.echo_right = True
        httpx.post(sim.url + "/_sim/webhook", data={"url": hook_server.url + "/hook"})
        assert sim.wait_webhook_verified(timeout=120)
        _callback(sim.url, "442070000102")
        sim.wait_calls_ended(timeout=120)
        _wait(lambda: any(f["event"] == "NOTIFY_OUT_END" for f, _ in receiver.events))
        assert all(ok for _, ok in receiver.events)
