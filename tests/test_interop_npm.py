"""A Zadarma client nobody here wrote: the npm package ``zadarma`` (pinned in tests/interop/package.json,
installed from the npm registry into a test-local folder) calls ``dialer sim serve`` as a real subprocess.

The package signs the parameters sorted by key and sends them in the same order; every call must succeed, with
a Cyrillic SMS body and a PUT among them (issue 16: the simulator verifies the canonical form as Zadarma does)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dialer.sim.credentials import DEMO_KEY, DEMO_SECRET

ROOT = Path(__file__).resolve().parent.parent
INTEROP = ROOT / "tests" / "interop"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def npm_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package installed from the lock file into a fresh folder (``npm ci``: the pinned versions only)."""
    npm = shutil.which("npm")
    assert npm is not None and shutil.which("node") is not None, "Node.js and npm are needed (see README)"
    folder = tmp_path_factory.mktemp("npm")
    for name in ("package.json", "package-lock.json", "zadarma_calls.js"):
        shutil.copy(INTEROP / name, folder / name)
    out = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return folder


@pytest.fixture
def sim_url() -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZADARMA_", "DIALER_"))}
    env["DIALER_CONFIG"] = os.devnull
    proc = subprocess.Popen([sys.executable, "-m", "dialer", "sim", "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
    try:
        assert proc.stdout is not None
        url = ""
        for _ in range(40):
            line = proc.stdout.readline()
            if "ZADARMA_API_URL=" in line:
                url = line.split("=", 1)[1].strip()
                break
        assert url.startswith("http://127.0.0.1:"), "the simulator did not print its address"
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_npm_zadarma_client_succeeds_on_every_method(npm_client: Path, sim_url: str) -> None:
    env = {**os.environ, "ZADARMA_USER_KEY": DEMO_KEY, "ZADARMA_SECRET_KEY": DEMO_SECRET}
    out = subprocess.run(["node", "zadarma_calls.js", sim_url], cwd=npm_client, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    results = {line["name"]: line["result"] for line in map(json.loads, out.stdout.splitlines())}
    assert list(results) == ["balance", "price", "callback", "sms", "callerid", "pbx_statistics", "pbx_internal"]
    failed = {name: r for name, r in results.items() if not isinstance(r, dict) or r.get("status") != "success"}
    assert not failed, failed
    assert results["balance"]["balance"] == 100
    assert results["callback"]["to"] == 447700900123
    assert results["sms"]["messages"] >= 1
    assert results["callerid"]["new_caller_id"] == "442037691880"
    assert isinstance(results["pbx_statistics"]["stats"], list)
    assert results["pbx_internal"]["numbers"]
