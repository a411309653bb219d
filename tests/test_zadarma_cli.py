"""`dialer api` through the command line: output, exit codes and that the secret never shows. In-process, but for
one real subprocess: `python -m dialer --help` as a user types it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dialer.asgi_thread import serve
from tests.conftest import KEY, SECRET, clean_env, invoke
from tests.test_zadarma_client import Behaviour, scripted_app


def run(args: list[str], url: str, secret: str = SECRET) -> subprocess.CompletedProcess[str]:
    env = clean_env(ZADARMA_KEY=KEY, ZADARMA_SECRET=secret, ZADARMA_API_URL=url)
    return invoke(args, env=env, cwd=Path("/"))


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    b = Behaviour()
    with serve(scripted_app(b)) as srv:
        yield srv.url, b
        b.release.set()


def test_help_works() -> None:
    out = subprocess.run([sys.executable, "-m", "dialer", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout
    for args in (["api", "--help"], ["api", "sip", "--help"]):
        res = invoke(args, env=clean_env(), cwd=Path("/"))
        assert res.returncode == 0, res.stderr
        assert "Usage" in res.stdout


def test_balance_json(server: tuple[str, Behaviour]) -> None:
    url, _ = server
    out = run(["api", "balance", "--json"], url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"status": "success", "balance": 10.34, "currency": "USD"}


def test_missing_credentials_is_a_clear_error(server: tuple[str, Behaviour]) -> None:
    _url, _ = server
    out = invoke(["api", "balance"], env=clean_env(), cwd=Path("/"))
    assert out.returncode == 2
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
