"""Done-means 1: the daemon-style path (a plain loop feeding recorded observations to a fresh policy from
``make_policy``) makes exactly the decisions the benchmark's policy made."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialer.pacing import Observation, make_policy
from dialer.sim.des import load_bench_scenario, run_days

SCENARIOS = Path(__file__).resolve().parents[1] / "benchmarks" / "scenarios"


@pytest.mark.parametrize(
    ("scenario", "spec"),
    [
        ("anchor-n10.toml", "predictive"),
        ("anchor-n10.toml", "vicidial"),
        ("no-webhooks-n20.toml", "predictive"),
        ("day-shape.toml", "predictive"),
    ],
)
def test_recorded_observations_replay_to_the_same_decisions(scenario: str, spec: str) -> None:
    bench = load_bench_scenario(SCENARIOS / scenario)
    recorded: list[tuple[Observation, int]] = []
    run_days(bench, spec, seed=3, days=1, hours=0.5, recorder=lambda o, n: recorded.append((o, n)))
    assert len(recorded) > 1800
    assert sum(n for _, n in recorded) > 100
    # What the daemon does: make_policy(campaign.pacing) once, then decide(obs) every tick.
    policy = make_policy(spec)
    replayed = [policy.decide(o) for o, _ in recorded]
    assert replayed == [n for _, n in recorded]
