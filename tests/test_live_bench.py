"""`dialer bench live`: the benchmark world served by `dialer sim serve` and paced by `dialer run` (real processes,
HTTP, webhooks on), measured from the simulator's truth beside the discrete-event figure for the same world."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from dialer.live_bench import _abandon_causes, contacts_needed, world_toml
from dialer.sim.des import load_bench_scenario
from dialer.sim.scenario import Scenario
from tests.conftest import clean_env, invoke

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "benchmarks" / "scenarios"


@pytest.mark.parametrize("name", sorted(p.name for p in SCENARIOS.glob("*.toml")))
def test_every_benchmark_world_is_served_as_the_des_runs_it(name: str) -> None:
    bench = load_bench_scenario(SCENARIOS / name)
    data = tomllib.loads(world_toml(SCENARIOS / name, time_scale=30))
    assert "bench" not in data
    served = Scenario.from_dict(data)
    # The same world, except the routing wait: a wall second, whatever the speed-up.
    assert served.notify_start_timeout_s == 30.0
    assert served == replace(bench.scenario, notify_start_timeout_s=30.0, source=None)
    assert contacts_needed(bench, 1.0) > bench.scenario.agent_count * 20 / 3


def test_abandon_causes_tell_a_late_view_from_a_missed_grace() -> None:
    def call(answered: float, connected: float | None, ended: float | None, abandoned: bool = False) -> dict:
        return {"answered_at": answered, "connected_at": connected, "ended_at": ended, "abandoned": abandoned}

    talking = [call(0, 0, 10), call(0, 0, 20.05)]
    calls = [*talking, call(5, None, 6, abandoned=True), call(20, None, 21, abandoned=True),
             call(30, None, 31, abandoned=True)]  # fmt: skip
    # At 5 both agents talk, nobody frees within 0.1: a true abandon. At 20 one agent is idle (the view was late);
    # at 30 nobody is busy either.
    assert _abandon_causes(calls, agents=2, grace=0.1) == (2, 0)
    assert _abandon_causes([*talking, call(9.95, None, 11, abandoned=True)], agents=2, grace=0.1) == (0, 1)


@pytest.mark.slow
def test_bench_live_runs_both_processes_and_prints_live_beside_des(tmp_path: Path) -> None:
    out = tmp_path / "live.json"
    proc = invoke(["bench", "live", "--scenario", str(SCENARIOS / "small-team-n5.toml"), "--hours", "0.1",
                   "--time-scale", "30", "--des-seeds", "2", "--dir", str(tmp_path / "work"), "--json", str(out)],
                  env=clean_env(), cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "| small-team-n5 | 1 | predictive |" in proc.stdout
    (result,) = json.loads(out.read_text())
    live, des = result["live"], result["des"]
    assert live["placed"] > 0 and live["answered"] > 0 and 0 < live["occupancy"] <= 1
    # Five agents for 0.1 simulated hours at 30x: 60 agent-seconds of wall time logged in.
    assert live["logged_in_s"] == pytest.approx(5 * 0.1 * 3600 / 30, rel=0.05)
    assert live["webhooks_sent"] > 0 and live["webhooks_failed"] == 0
    assert live["webhook_delay_ms_p50"] is not None and live["callback_delay_ms_p50"] is not None
    assert des["seeds"] == 2 and 0 < des["occupancy"] <= 1
    assert result["occupancy_ratio"] == pytest.approx(live["occupancy"] / des["occupancy"])
    # It left its logs, and every process it started is gone.
    work = tmp_path / "work" / "0-small-team-n5"
    assert {p.name for p in work.iterdir()} >= {"sim.log", "daemon.log", "bench.db"}
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and str(work) in _cmdline(pid)]


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
