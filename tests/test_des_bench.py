"""The discrete-event pacing simulator: common random numbers, the API budget, metrics, the CLI (in-process)."""

from __future__ import annotations

import json
from pathlib import Path

from dialer.pacing import Observation, RatioPolicy, make_policy
from dialer.sim.des import load_bench_scenario, mean_ci, run_days
from tests.conftest import clean_env, invoke

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "benchmarks" / "scenarios"


def test_same_seed_same_world_and_common_random_numbers(tmp_path: Path) -> None:
    bench = load_bench_scenario(SCENARIOS / "anchor-n10.toml")
    a = run_days(bench, "progressive", seed=5, days=1, hours=0.25)
    b = run_days(bench, "progressive", seed=5, days=1, hours=0.25)
    assert a[0].to_dict() == b[0].to_dict()
    c = run_days(bench, "progressive", seed=6, days=1, hours=0.25)
    assert c[0].to_dict() != a[0].to_dict()
    # Two policies place different numbers of calls, but the k-th call of the day has the same fate.
    fates: dict[str, dict[str, tuple[bool, float]]] = {}
    # ratio:2 bare, not inside the abandon governor (which holds it to progressive until slack builds up).
    for spec, policy in (("progressive", "progressive"), ("ratio:2", RatioPolicy(2))):
        seen: dict[str, tuple[bool, float]] = {}

        def rec(o: Observation, n: int, seen: dict[str, tuple[bool, float]] = seen) -> None:
            for call in o.finished:
                seen[call.call_id] = (call.answered, call.ring_s)

        run_days(bench, policy, seed=5, days=1, hours=0.25, recorder=rec)
        fates[spec] = seen
    common = fates["progressive"].keys() & fates["ratio:2"].keys()
    assert len(common) > 100
    assert all(fates["progressive"][k] == fates["ratio:2"][k] for k in common)
    assert len(fates["ratio:2"]) > len(fates["progressive"])


def test_progressive_never_abandons_and_metrics_are_consistent() -> None:
    bench = load_bench_scenario(SCENARIOS / "anchor-n20.toml")
    (day,) = run_days(bench, "progressive", seed=1, days=1, hours=1.0)
    assert day.abandoned == 0
    assert day.logged_in_s == 20 * 3600
    assert 0.5 < day.occupancy < 0.8
    assert day.u_star == 1.0
    assert day.rejected_429 == 0


def test_budget_is_enforced_and_excess_counted_as_429() -> None:
    bench = load_bench_scenario(SCENARIOS / "rate-bound-n100-p015.toml")
    assert bench.callbacks_per_window == 97
    (ratio,) = run_days(bench, "ratio:3", seed=1, days=1, hours=0.5)
    assert ratio.placed == 97 * 30 and ratio.rejected_429 == 0  # every policy clips itself to the budget

    class Greedy:
        name = "greedy"

        def decide(self, obs: Observation) -> int:
            return 10  # ignores the budget, like a naive dialer

    (greedy,) = run_days(bench, Greedy(), seed=1, days=1, hours=0.5)
    assert greedy.placed == 97 * 30
    # Asked every second (and on events) for 10: everything beyond the budget is a would-be 429.
    assert greedy.rejected_429 >= 1800 * 10 - 97 * 30
    (pred,) = run_days(bench, "predictive", seed=1, days=1, hours=0.5)
    assert pred.rejected_429 == 0
    assert pred.budget_use > 0.9
    assert abs(pred.u_star - 97 / 60 * 0.15 * 180 / 100) < 1e-9


def test_upper_bound_follows_schedule_and_answer_rate() -> None:
    bench = load_bench_scenario(SCENARIOS / "day-shape.toml")
    (day,) = run_days(bench, "progressive", seed=1, days=1)
    # Two lunch waves of 10 agents for an hour each: 20 agents x 8 h minus 2 x 10 agent-hours.
    # (agents finish their call before logging out, so a little more).
    assert (20 * 8 - 20) * 3600 <= day.logged_in_s < (20 * 8 - 20) * 3600 * 1.01
    assert day.u_star == 1.0  # rate limit not binding here


def test_no_webhooks_policy_sees_only_its_calls_and_lagged_statistics() -> None:
    bench = load_bench_scenario(SCENARIOS / "no-webhooks-n20.toml")
    seen: list[Observation] = []
    run_days(bench, "predictive", seed=2, days=1, hours=0.2, recorder=lambda o, n: seen.append(o))
    assert all(not o.live and o.talking_since == () and o.waiting == 0 for o in seen)
    delays = [o.now - c.ended_at for o in seen for c in o.finished]
    assert delays and min(delays) >= 30.0


def test_mean_ci() -> None:
    m, h = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and 2.4 < h < 2.5
    assert mean_ci([5.0]) == (5.0, 0.0)


def test_cli_bench_pacing_writes_table_json_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    png = tmp_path / "r.png"
    proc = invoke(
        [
            "bench",
            "pacing",
            "--scenario",
            str(SCENARIOS / "anchor-n10.toml"),
            "--policy",
            "progressive",
            "--policy",
            "predictive",
            "--seeds",
            "2",
            "--days",
            "1",
            "--hours",
            "0.3",
            "--jobs",
            "2",
            "--json",
            str(out),
            "--plot",
            str(png),
        ],
        env=clean_env(),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| anchor-n10 | predictive |" in proc.stdout
    data = json.loads(out.read_text())
    assert {c["policy"] for c in data["cells"]} == {"progressive", "predictive"}
    assert len(data["cells"][0]["per_day"]) == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bench_pacing_rejects_bad_input(tmp_path: Path) -> None:
    proc = invoke(
        ["bench", "pacing", "--scenario", str(SCENARIOS / "anchor-n10.toml"), "--policy", "turbo"],
        env=clean_env(),
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "unknown pacing" in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[calls]\nanswer_probability = 7\n")
    proc = invoke(["bench", "pacing", "--scenario", str(bad)], env=clean_env(), cwd=ROOT)
    assert proc.returncode == 2 and "answer_probability" in proc.stderr


def test_make_policy_objects_are_independent() -> None:
    a, b = make_policy("predictive"), make_policy("predictive")
    assert a is not b
