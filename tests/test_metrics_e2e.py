"""/metrics after a real run (simulator and `dialer run` as subprocesses): the call counters equal the database,
campaign by campaign, across a daemon killed mid-run and restarted (its counts are not in any process's memory)."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_for
from tests.e2e import Stack, stack, write_contacts
from tests.invariants import real_calls, truth_totals
from tests.test_metrics import samples

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

METRICS = {
    "dialer_calls_placed_total": "calls",
    "dialer_calls_answered_total": "answered",
    "dialer_calls_connected_total": "connected",
    "dialer_calls_abandoned_total": "abandoned",
}


def _campaign(st: Stack, name: str, n: int, start: int) -> None:
    """A campaign of ``n`` numbers of its own (from ``start``), set up as ``Stack.make_campaign`` does."""
    csv_path = st.tmp / f"{name}.csv"
    write_contacts(csv_path, n, start=start)
    s = st.time_scale
    st.cli("campaign", "create", name, "--from", "442037691880", "--agents", "3", "--extensions", "100,101,102",
           "--pacing", "ratio:2", "--window", "00:00-23:59", "--weekdays", "mon-sun",
           "--retry-busy", f"{max(1, round(60 / s))}s", "--retry-no-answer", f"{max(1, round(90 / s))}s",
           "--retry-failed", f"{max(1, round(30 / s))}s", "--retry-abandoned", f"{max(1, round(120 / s))}s",
           "--timezone", "Europe/London")  # fmt: skip
    st.cli("campaign", "load", str(csv_path), "--campaign", name)


def _database_counts(st: Stack, names: list[str]) -> dict[tuple[str, str], float]:
    """(metric, campaign name) -> the count the report's definitions give, from the attempts table."""
    attempts = st.attempts()
    out: dict[tuple[str, str], float] = {}
    for name in names:
        cid = st.campaign(name).id
        calls = [a for a in attempts if a.campaign_id == cid and a.state == "completed"]
        counts = {
            "calls": len(calls),
            "answered": sum(bool(a.answered) for a in calls),
            "connected": sum(bool(a.connected) for a in calls),
            "abandoned": sum(bool(a.abandoned) for a in calls),
        }
        for metric, field in METRICS.items():
            out[(metric, name)] = counts[field]
    return out


def test_metrics_equal_the_database_after_a_run_across_a_restart(tmp_path: Path) -> None:
    names = ["alpha", "beta"]
    with stack(tmp_path) as st:
        _campaign(st, "alpha", 60, 0)
        _campaign(st, "beta", 40, 5000)
        st.cli("campaign", "create", "idle", "--from", "442037691880")  # never started: zeros
        url = f"http://127.0.0.1:{st.webhook_port}/metrics"

        first = st.start_daemon()
        # Started once the simulator has verified the webhook URL: calls placed before then get no events, and
        # the live view would count them as ringing for two minutes (a stalled, slow run).
        wait_for(lambda: st.sim_stats()["webhooks"]["verified"], timeout=120, what="the webhook URL verified")
        for name in names:
            st.cli("campaign", "start", name)
        wait_for(lambda: len(real_calls(st.truth())) >= 15, timeout=120, what="the first calls")
        first.send_signal(signal.SIGKILL)  # whatever it counted in memory is gone
        first.wait(10)

        second = st.start_daemon()
        wait_for(lambda: all(st.campaign(n).state == "finished" for n in names), timeout=240,
                 what="both campaigns to finish")  # fmt: skip
        truth = st.wait_truth_settled()
        # Late outcomes arrive by reconciliation; once the database has them all, /metrics shows the same.
        wait_for(lambda: _database_counts(st, names)[("dialer_calls_answered_total", "alpha")]
                 + _database_counts(st, names)[("dialer_calls_answered_total", "beta")]
                 == truth_totals(truth)["answered"], timeout=60, what="reconciliation to finish")  # fmt: skip
        expected = _database_counts(st, names)
        got = samples(httpx.get(url, timeout=10).text)
        assert second.poll() is None, "the daemon exited before the scrape"
        assert {k: got.get(k) for k in expected} == expected
        assert expected[("dialer_calls_placed_total", "alpha")] >= 60
        assert sum(expected[("dialer_calls_placed_total", n)] for n in names) == len(real_calls(truth))
        assert all(got[(metric, "idle")] == 0 for metric in METRICS)
        # The silence warning waits for the silence period: events flowed from the first calls on.
        assert "no webhook events lately" not in st.daemon_log()
