"""Every API method of zadarma-api.md §4 through the client, against the simulator, in JSON and in XML."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from dialer.sim.harness import RunningSimulator, run_simulator
from dialer.sim.scenario import Scenario
from dialer.zadarma import RejectedError, ZadarmaClient


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    scenario = Scenario.from_dict({"seed": 3, "timezone": "Europe/Berlin", "agents": {"count": 3},
                                   "calls": {"answer_probability": 1.0, "p_busy": 0, "p_failed": 0,
                                             "p_unallocated": 0},
                                   "statistics": {"lag_s": 0},
                                   "limits": {"statistics_per_window": 1000, "general_per_window": 1000}})
    with run_simulator(scenario, time_scale=200) as running:
        yield running


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_every_method(sim: RunningSimulator, fmt: str) -> None:
    with ZadarmaClient(sim.key, sim.secret, sim.url, response_format=fmt) as c:
        balance = c.balance()
        assert balance.balance > 0 and balance.currency
        price = c.price("+442037691881")
        assert price.info.price > 0 and price.info.prefix
        tz = c.timezone()
        assert tz.timezone.startswith("UTC+") and abs(tz.unixtime - time.time()) < 5
        sips = c.sip_list()
        assert sips.sips and sips.sips[0].id
        sip_id = sips.sips[0].id
        assert c.set_caller_id(sip_id, "+442037691880").new_caller_id == "442037691880"
        redirection = c.sip_redirection(sip_id)
        assert redirection.info and redirection.info[0].sip_id == sip_id
        assert c.set_redirection(sip_id, on=False).current_status == "off"
        assert c.set_redirection(sip_id, number="442037691880").destination == "442037691880"
        sms = c.send_sms(["442037691881", "442037691882"], "Мы звонили: перезвоните, пожалуйста")
        assert sms.messages == 2
        internal = c.pbx_internal()
        assert internal.numbers
        status = c.pbx_internal_status(internal.numbers[0])
        assert status.number == internal.numbers[0] and isinstance(status.is_online, bool)
        placed = c.callback("442037691880", "+442079460123", predicted=True)
        assert placed.to == "442079460123" and placed.time > 0
        with pytest.raises(RejectedError):
            c.callback("442037691880", "not-a-number", predicted=True)
        # The call ends within seconds at this speed; then both of its legs are in the statistics.
        sim.wait_calls_ended(timeout=30)
        local_now = datetime.strptime(c.timezone().datetime, "%Y-%m-%d %H:%M:%S")
        start = (local_now - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
        end = (local_now + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
        pbx = c.pbx_statistics(start, end)
        legs = [r for r in pbx.stats if "442079460123" in (r.destination + r.clid)]
        assert {r.pbx_call_id[:3] for r in legs} >= {"out", "in_"}
        stats = c.statistics(start, end)
        assert any(r.to == "442079460123" for r in stats.stats)
        # Paging: one row at a time gives the same rows.
        paged = [c.pbx_statistics(start, end, skip=i, limit=1).stats for i in range(len(pbx.stats))]
        assert [p[0].call_id for p in paged] == [r.call_id for r in pbx.stats]
