"""The one abandon governor around every policy: over-dialling only as far as the campaign's abandon slack pays for
it, progressive otherwise; pure (observations in, decisions out), and end to end against the simulator's truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialer.pacing import AbandonGovernor, FinishedCall, Observation, RatioPolicy, make_policy
from dialer.sim.des import load_bench_scenario, run_days
from tests.e2e import stack
from tests.invariants import check_invariants, real_calls, truth_totals

ROOT = Path(__file__).resolve().parent.parent


def _obs(now: float = 100.0, *, idle: int = 5, ringing: int = 0, answered: int = 0, abandoned: int = 0,
         finished: tuple[FinishedCall, ...] = ()) -> Observation:
    return Observation(now=now, time_of_day=36_000, agents_logged_in=5, idle=idle,
                       ringing_since=tuple([now - 1] * ringing), answered_window=answered,
                       abandoned_window=abandoned, finished=finished)  # fmt: skip


def test_no_slack_means_progressive() -> None:
    gov = AbandonGovernor(RatioPolicy(3), 0.03)
    assert gov.decide(_obs()) == 5  # one call per idle agent, not 15
    assert gov.throttled and "abandon governor" in gov.explain_hold(_obs())
    assert gov.decide(_obs(ringing=5)) == 0


def test_slack_pays_for_over_dialling_and_abandons_since_the_counts_spend_it() -> None:
    gov = AbandonGovernor(RatioPolicy(3), 0.03)
    # 3% of 2,000 answers = 60 abandons allowed; 10 used: room for many over-dialled calls.
    assert gov.decide(_obs(answered=2000, abandoned=10)) == 15
    # Abandons the database does not count yet (finished since its last read) spend the slack at once.
    dropped = tuple(FinishedCall(90, 99, True, False, True, 5.0) for _ in range(50))
    assert gov.decide(_obs(answered=2000, abandoned=10, finished=dropped)) == 5
    assert gov.throttled


def test_a_policy_that_stays_progressive_is_untouched() -> None:
    gov = make_policy("progressive")
    assert gov.decide(_obs()) == 5 and not gov.throttled


def test_ratio_3_keeps_the_cap_in_the_discrete_event_simulator() -> None:
    bench = load_bench_scenario(ROOT / "benchmarks/scenarios/small-team-n5.toml")
    days = run_days(bench, "ratio:3", seed=3, days=1, hours=2)
    answered = sum(d.answered for d in days)
    abandoned = sum(d.abandoned for d in days)
    assert answered > 100 and abandoned <= 0.03 * answered
    ungoverned = run_days(bench, RatioPolicy(3), seed=3, days=1, hours=2)
    assert sum(d.abandoned for d in ungoverned) > 0.2 * sum(d.answered for d in ungoverned)  # what it stops


@pytest.mark.slow
def test_ratio_3_campaign_keeps_the_cap_against_the_simulators_truth(tmp_path: Path) -> None:
    with stack(tmp_path, time_scale=30, webhooks=True) as st:
        st.make_campaign("r3", 200, agents=5, pacing="ratio:3", extra=["--abandon-action", "ivr_play:1"])
        st.run_daemon(900, start="r3")
        truth = st.wait_truth_settled()
        check_invariants(truth, st.attempts(), st.contacts(), st.campaign("r3"),
                         rate_limited=int(st.sim_stats()["rate_limited_total"]))  # fmt: skip
        totals = truth_totals(truth)
        report = st.report_json("r3")
    calls = report.get("calls", report)
    assert len(real_calls(truth)) >= 200 and totals["answered"] > 30
    assert totals["abandoned"] <= 0.03 * totals["answered"], totals
    assert calls["abandoned"] == totals["abandoned"] and calls["answered"] == totals["answered"]
    print(f"ratio:3 in the simulator: answered {totals['answered']:.0f}, abandoned {totals['abandoned']:.0f} "
          f"({totals['abandoned'] / totals['answered']:.2%})")
