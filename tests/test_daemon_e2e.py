"""The daemon end to end: simulator and `dialer run` as real subprocesses, a real SQLite file."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.e2e import Stack, stack
from tests.invariants import check_invariants, real_calls, truth_totals

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _finish_and_check(st: Stack, name: str, *, dnc: frozenset[str] = frozenset()) -> dict[str, object]:
    truth = st.wait_truth_settled()
    pairs = check_invariants(truth, st.attempts(), st.contacts(), st.campaign(name), dnc=dnc,
                             rate_limited=int(st.sim_stats()["rate_limited_total"]))
    assert st.campaign(name).state == "finished"
    return {"truth": truth, "pairs": pairs}


def _assert_report_matches_truth(st: Stack, name: str, truth: list[dict[str, object]]) -> None:
    report = st.report_json(name)
    expected = truth_totals(truth)
    calls = report.get("calls", report)
    assert calls["answered"] == expected["answered"]
    assert calls["connected"] == expected["connected"]
    assert calls["abandoned"] == expected["abandoned"]
    # Agent time is counted in the simulated world's seconds (`--time-scale`), like the talk time.
    assert 0.05 < float(calls["occupancy"]) <= 1.0
    talk = float(calls["talk_seconds"])
    assert abs(talk - expected["talk_seconds"]) <= 0.01 * max(1.0, expected["talk_seconds"])


@pytest.mark.parametrize("webhooks", [True, False], ids=["webhooks", "statistics-only"])
def test_campaign_runs_to_finished_and_agrees_with_truth(tmp_path: Path, webhooks: bool) -> None:
    with stack(tmp_path, webhooks=webhooks) as st:
        # Without webhooks outcomes arrive only through statistics, so keep more lines going.
        # More lines than agents keeps the run short and makes some customers wait for an agent.
        phones = st.make_campaign("e2e", 300, agents=5, pacing="ratio:3",
                                  extra=["--abandon-action", "ivr_play:1"])
        dnc = frozenset(phones[:3])
        st.cli("dnc", "add", *dnc)
        st.run_daemon(900, start="e2e")
        result = _finish_and_check(st, "e2e", dnc=dnc)
        truth = result["truth"]
        assert isinstance(truth, list)
        assert len(real_calls(truth)) >= 297
        _assert_report_matches_truth(st, "e2e", truth)
        log = st.daemon_log()
        if not webhooks:
            assert "running without real-time events" in log


def _kill_daemons(st: Stack, rng: random.Random, times: int, *, start: str | None = None) -> None:
    """Start a daemon and SIGKILL it, ``times`` times. Each dies after a random number of its callbacks (0: while
    it starts), not of seconds, so the kills land at the same points of the campaign on a busy machine. ``start``
    names a campaign to start once the simulator has verified the first daemon's webhook URL."""
    for _ in range(times):
        target = int(st.sim_stats()["callbacks"]) + rng.randint(0, 30)
        proc = st.start_daemon()
        if start is not None:
            wait_for(lambda p=proc: p.poll() is not None or st.sim_stats()["webhooks"]["verified"],
                     timeout=120, what="the simulator to verify the webhook URL")
            st.cli("campaign", "start", start)
            start = None
        wait_for(lambda p=proc, n=target: p.poll() is not None or int(st.sim_stats()["callbacks"]) >= n,
                 timeout=300, what=f"{target} callbacks", every=0.02)
        assert proc.poll() is None, st.daemon_log()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)


def test_sigkill_five_times_loses_nothing_and_calls_nobody_twice(tmp_path: Path) -> None:
    rng = random.Random(5)
    with stack(tmp_path, webhooks=False) as st:
        st.make_campaign("crash", 300, agents=5, pacing="ratio:3")
        st.cli("campaign", "start", "crash")
        _kill_daemons(st, rng, 5)
        st.run_daemon(900)
        result = _finish_and_check(st, "crash")
        truth = result["truth"]
        assert isinstance(truth, list)
        # Every real call belongs to exactly one attempt: nobody was called twice for one attempt.
        assert len(result["pairs"]) == len(real_calls(truth))  # type: ignore[arg-type]
        assert "now uncertain" in st.daemon_log() or "recovered" in st.daemon_log()


def test_crash_soak_with_webhooks_and_ambiguous_timeouts_logs_no_traceback(tmp_path: Path) -> None:
    """The soak that found deadlocks on PostgreSQL (issue 19): webhooks on, 8% of callbacks time out after Zadarma
    processed them, six SIGKILLs. Every invariant holds, and no daemon logged a traceback or an event it could not
    fold (run it on both engines: `pytest -m e2e --db postgres`)."""
    rng = random.Random(19)
    with stack(tmp_path, faults=["timeout-after-processing=0.08"]) as st:
        st.make_campaign("soak", 200, agents=5, pacing="ratio:3")
        _kill_daemons(st, rng, 6, start="soak")
        st.run_daemon(900)
        result = _finish_and_check(st, "soak")
        assert len(result["pairs"]) == len(real_calls(result["truth"]))  # type: ignore[arg-type]
        log = st.daemon_log()
        bad = [ln for ln in log.splitlines()
               if "Traceback" in ln or "folding failed" in ln or "given up" in ln or "level=error" in ln]
        assert not bad, bad[:5]


def test_faults_ambiguous_timeouts_and_5xx_all_resolve(tmp_path: Path) -> None:
    faults = ["timeout-after-processing=0.1", "server-error-rate=0.05"]
    with stack(tmp_path, webhooks=False, faults=faults) as st:
        st.make_campaign("faults", 150, agents=5, pacing="ratio:3")
        st.cli("campaign", "start", "faults")
        st.run_daemon(900)
        result = _finish_and_check(st, "faults")
        attempts = st.attempts()
        # Some callbacks really were ambiguous, and every one was resolved by reconciliation.
        resolved = [a for a in attempts if a.error and ("may have been processed" in a.error or "server error" in a.error
                                                        or "did not happen" in a.error)]
        assert resolved, "the fault injection produced no ambiguous callbacks"
        assert all(a.state in ("completed", "not_placed") for a in resolved)
        assert len(result["pairs"]) == len(real_calls(result["truth"]))  # type: ignore[arg-type]


def test_sigterm_during_busy_campaign_exits_fast_with_nothing_placing(tmp_path: Path) -> None:
    with stack(tmp_path, webhooks=False, faults=["slow-ms=300"]) as st:
        st.make_campaign("term", 300, agents=20, pacing="ratio:2")
        st.cli("campaign", "start", "term")
        proc = st.start_daemon()
        wait_for(lambda: proc.poll() is not None or len(st.truth()) >= 20, timeout=300,
                 what="the campaign to get busy", every=0.2)
        assert len(st.truth()) >= 20, "the campaign never got busy"
        # `dialer status` reads what the daemon is doing from the database while it runs.
        status = json.loads(st.cli("status", "--json").stdout)
        assert status["daemon"]["state"] == "running"
        assert status["campaigns"][0]["name"] == "term" and status["campaigns"][0]["calls_placed"] >= 20
        assert status["daemon"]["budget"]["general"]["limit"] > 0
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)  # longer than the bound below, so a slow stop is reported as such
        elapsed = time.monotonic() - started
        assert elapsed < 10, f"took {elapsed:.1f}s to stop"
        assert proc.returncode == 0
        assert not [a for a in st.attempts() if a.state == "placing"]
        assert json.loads(st.cli("status", "--json").stdout)["daemon"]["state"] == "stopped"
