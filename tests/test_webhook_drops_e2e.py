"""Lost webhooks end to end: with 30% of the PBX's events dropped (simulator fault), the campaign still finishes
at the pace of the no-drop run, the soak invariants hold and the report equals the simulator's truth. Before the
live state healed itself, 20% drops left phantom calls ringing and agents talking, and the same campaign had placed
109 of its ~250 calls after 15 minutes instead of finishing in one (benchmarks/bench_webhook_drops.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e import stack
from tests.invariants import check_invariants, truth_totals

pytestmark = pytest.mark.slow


def _run(tmp: Path, faults: list[str]) -> tuple[float, str]:
    tmp.mkdir()
    with stack(tmp, time_scale=30, webhooks=True, faults=faults) as st:
        st.make_campaign("drops", 80, agents=5, extra=["--abandon-action", "ivr_play:1"])
        t0 = time.perf_counter()
        st.run_daemon(900, start="drops")
        wall = time.perf_counter() - t0
        truth = st.wait_truth_settled()
        check_invariants(truth, st.attempts(), st.contacts(), st.campaign("drops"),
                         rate_limited=int(st.sim_stats()["rate_limited_total"]))  # fmt: skip
        report = st.report_json("drops")
        calls = report.get("calls", report)
        expected = truth_totals(truth)
        for key in ("answered", "connected", "abandoned"):
            assert calls[key] == expected[key], (key, calls[key], expected[key])
        return wall, st.daemon_log()


def test_a_third_of_the_webhooks_lost_costs_little_time_and_no_truth(tmp_path: Path) -> None:
    base, _ = _run(tmp_path / "none", [])
    dropped, log = _run(tmp_path / "drops", ["webhook-drop=0.3"])
    print(f"no drops {base:.1f} s, 30% dropped {dropped:.1f} s ({dropped / base:.2f}x)")
    assert "live calls closed from the database" in log
    # 1.5x is the goal (met by a wide margin when the machine is quiet); the bound here only has to catch a stall.
    assert dropped <= 3 * base + 10, (base, dropped)
