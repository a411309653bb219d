"""`dialer api` as a real subprocess: output, exit codes and that the secret never shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from dialer.asgi_thread import serve
from tests.test_zadarma_client import KEY, SECRET, Behaviour, scripted_app


def run(args: list[str], url: str, secret: str = SECRET) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ZADARMA_KEY": KEY, "ZADARMA_SECRET": secret, "ZADARMA_API_URL": url}
    env.pop("DIALER_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "dialer", *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    b = Behaviour()
    with serve(scripted_app(b)) as srv:
        yield srv.url, b


def test_help_works() -> None:
    for args in (["--help"], ["api", "--help"], ["api", "sip", "--help"]):
        out = subprocess.run([sys.executable, "-m", "dialer", *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "Usage" in out.stdout


def test_balance_json(server: tuple[str, Behaviour]) -> None:
    url, _ = server
    out = run(["api", "balance", "--json"], url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"status": "success", "balance": 10.34, "currency": "USD"}


def test_missing_credentials_is_a_clear_error(server: tuple[str, Behaviour]) -> None:
    _url, _ = server
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZADARMA_")}
    out = subprocess.run([sys.executable, "-m", "dialer", "api", "balance"], capture_output=True, text=True,
                         env=env, timeout=60, cwd="/")
    assert out.returncode == 3
    assert "ZADARMA_KEY" in out.stderr and "Traceback" not in out.stderr


def test_secret_never_in_output_even_with_debug_logging(server: tuple[str, Behaviour]) -> None:
    url, b = server
    outputs = []
    b.script = ["500", "429"]
    outputs.append(run(["-vv", "api", "balance"], url))
    b.script = ["500"]
    outputs.append(run(["-vv", "api", "callback", "100", "442037691881", "--predicted"], url))
    outputs.append(run(["-vv", "--log-json", "api", "balance", "--json"], url))
    outputs.append(run(["-vv", "api", "balance"], url, secret="wrongwrongwrongwrong"))
    assert outputs[0].returncode == 0 and "retrying" in outputs[0].stderr
    assert outputs[1].returncode == 5 and "may have been carried out" in outputs[1].stderr
    assert outputs[3].returncode == 4 and "Not authorized" in outputs[3].stderr
    for out in outputs:
        assert SECRET not in out.stdout + out.stderr
        assert "wrongwrongwrongwrong" not in out.stdout + out.stderr
        assert "Traceback" not in out.stderr
