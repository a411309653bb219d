"""`dialer sim serve` and `dialer sim scenario` as a user runs them: the server as a real subprocess stopped by
SIGTERM, the other commands in-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from dialer.sim.credentials import DEMO_KEY, DEMO_SECRET
from dialer.sim.model import CallModel
from dialer.sim.scenario import load_scenario
from tests.conftest import clean_env, invoke

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "campaigns" / "scenarios").glob("*.toml"))


def _dialer(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return invoke(args, env=clean_env(**env), cwd=ROOT)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZADARMA_", "DIALER_"))}
    env["DIALER_CONFIG"] = os.devnull
    return env


def test_serve_answers_dialer_api_balance_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dialer",
            "sim",
            "serve",
            "--port",
            "0",
            "--time-scale",
            "10",
            "--fault",
            "timeout-after-processing=0.1",
            "--scenario",
            str(ROOT / "campaigns/scenarios/small-team.toml"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_clean_env(),
    )
    try:
        assert proc.stdout is not None
        lines = []
        url = ""
        for _ in range(20):
            line = proc.stdout.readline()
            lines.append(line)
            if "ZADARMA_API_URL=" in line:
                url = line.split("=", 1)[1].strip()
            if "ZADARMA_KEY=" in line:
                break
        assert url.startswith("http://127.0.0.1:"), lines
        assert any(f"ZADARMA_KEY={DEMO_KEY}" in line for line in lines)
        out = _dialer("api", "balance", "--json", ZADARMA_API_URL=url, ZADARMA_KEY=DEMO_KEY, ZADARMA_SECRET=DEMO_SECRET)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["balance"] == 100
        stats = httpx.get(url + "/_sim/stats").json()
        assert stats["faults"] == {"timeout_after_processing": 0.1}
        assert stats["time_scale"] == 10 and stats["scenario"] == "small-team"
        assert stats["by_method"] == {"/v1/info/balance/": 1}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("simulator did not stop on SIGTERM")
    assert proc.returncode == 0
    assert proc.stdout is not None and "simulator stopped" in proc.stdout.read()


def test_bad_options_get_clear_errors() -> None:
    out = _dialer("sim", "serve", "--fault", "explode=1")
    assert out.returncode == 2 and "unknown fault" in out.stderr and "Traceback" not in out.stderr
    out = _dialer("sim", "serve", "--fault", "error-rate")
    assert out.returncode == 2 and "name=value" in out.stderr


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_example_scenarios_load(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.name == path.stem and sc.agent_count > 0
    CallModel(sc, 0.0).advance(3600.0)


def test_scenario_command_prints_a_summary() -> None:
    out = _dialer("sim", "scenario", str(ROOT / "campaigns/scenarios/lunch-waves.toml"), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["name"] == "lunch-waves" and summary["agents"] == 20
    assert summary["answer_schedule"] == [{"at": "09:00", "p": 0.35}, {"at": "17:00", "p": 0.15}]


def test_invalid_scenario_is_reported_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[calls]\nanswer_probability = 0.9\np_busy = 0.3\n")
    out = _dialer("sim", "scenario", str(bad))
    assert out.returncode == 2 and "exceed 1" in out.stderr and "Traceback" not in out.stderr
    out = _dialer("sim", "scenario", str(tmp_path / "missing.toml"))
    assert out.returncode == 2 and "cannot read scenario" in out.stderr
