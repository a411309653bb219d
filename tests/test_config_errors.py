"""Configuration and environment errors, as an unlucky operator meets them: each is one line naming the setting and
what is wrong, exit 2, never a traceback; plus a seeded fuzz over the settings' values (no traceback, ever)."""

from __future__ import annotations

import os
import random
import socket
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Cli, clean_env, invoke

CREDENTIALS = {"ZADARMA_KEY": "k" * 20, "ZADARMA_SECRET": "s" * 20}


@dataclass(frozen=True)
class Case:
    name: str
    env: dict[str, str]
    names: str  # what the one line must name
    prepare: Callable[[Path], None] | None = None


def _random_bytes(tmp: Path) -> None:
    (tmp / "junk.db").write_bytes(random.Random(1).randbytes(20_000))


def _truncated(tmp: Path) -> None:
    conn = sqlite3.connect(tmp / "full.db")
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
    conn.commit()
    conn.close()
    (tmp / "cut.db").write_bytes((tmp / "full.db").read_bytes()[:6000])


def _broken_toml(tmp: Path) -> None:
    (tmp / "dialer.toml").write_text('database_url = "sqlite:///x.db\nhttp_timeout = [\n')


CASES = [
    Case("timeout-not-a-number", {"DIALER_HTTP_TIMEOUT": "abc"}, "DIALER_HTTP_TIMEOUT"),
    Case("timeout-negative", {"DIALER_HTTP_TIMEOUT": "-5"}, "DIALER_HTTP_TIMEOUT"),
    Case("broken-toml", {"DIALER_CONFIG": "dialer.toml"}, "dialer.toml", _broken_toml),
    Case("config-missing", {"DIALER_CONFIG": "/nonexistent/dialer.toml"}, "DIALER_CONFIG"),
    Case("config-a-folder", {"DIALER_CONFIG": "/"}, "DIALER_CONFIG"),
    Case("database-url-scheme", {"DIALER_DATABASE_URL": "foo://bar"}, "DIALER_DATABASE_URL"),
    Case("database-url-garbage", {"DIALER_DATABASE_URL": "::::"}, "DIALER_DATABASE_URL"),
    Case("database-random-bytes", {"DIALER_DATABASE_URL": "sqlite:///junk.db"}, "restore from backup", _random_bytes),
    Case("database-truncated", {"DIALER_DATABASE_URL": "sqlite:///cut.db"}, "restore from backup", _truncated),
    Case("webhook-port-text", {"DIALER_WEBHOOK_PORT": "http"}, "DIALER_WEBHOOK_PORT"),
    Case("webhook-port-too-big", {"DIALER_WEBHOOK_PORT": "70000"}, "DIALER_WEBHOOK_PORT"),
]
COMMANDS = [("campaign", "list"), ("status",), ("report", "x")]


def _env(tmp: Path, case_env: dict[str, str]) -> dict[str, str | None]:
    return clean_env(**{"DIALER_DATABASE_URL": f"sqlite:///{tmp / 'dialer.db'}", **CREDENTIALS, **case_env})


def _one_line(res: object, *words: str) -> str:
    out = res.stdout + res.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in out and "unexpected error" not in out, out
    assert res.returncode == 2, out  # type: ignore[attr-defined]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr  # type: ignore[attr-defined]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("command", COMMANDS, ids=["-".join(c) for c in COMMANDS])
def test_each_configuration_error_is_one_line_exit_2(case: Case, command: tuple[str, ...], tmp_path: Path) -> None:
    if case.prepare is not None:
        case.prepare(tmp_path)
    res = invoke(command, env=_env(tmp_path, case.env), cwd=tmp_path)
    _one_line(res, case.names)


@pytest.fixture
def busy_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_webhook_port_in_use_or_out_of_range(cli: Cli, busy_port: int) -> None:
    env = {**CREDENTIALS}
    for args, words in (
        (("webhooks", "serve", "--port", str(busy_port)), ("in use", "--port")),
        (("webhooks", "serve", "--port", "99999"), ("out of range",)),
        (("run", "--webhook-port", str(busy_port)), ("in use", "--webhook-port")),
        (("run", "--webhook-port", "65536"), ("out of range",)),
    ):
        _one_line(cli(*args, env=env), *words)


def test_fuzzed_settings_never_give_a_traceback(tmp_path: Path) -> None:
    """Random values (numbers, text, paths, bytes-as-text, empty) for every setting, a few at a time: any outcome
    but a traceback or an 'unexpected error'."""
    rng = random.Random(18)
    names = ["DIALER_HTTP_TIMEOUT", "DIALER_WEBHOOK_PORT", "DIALER_DATABASE_URL", "DIALER_CONFIG",
             "DIALER_TIMEZONE", "DIALER_WEBHOOK_VERIFY", "DIALER_API_TOKEN_TTL", "ZADARMA_API_URL"]  # fmt: skip
    values = ["", "0", "-1", "1e400", "nan", "abc", "/", "/nonexistent", "sqlite:///", "sqlite:////nonexistent/x.db",
              "postgresql://", "mysql://u@h/d", "://", "ü\u202e", "1" * 400, "true", "Mars/Base", str(tmp_path)]
    codes: set[int] = set()
    for _ in range(40):
        env = {n: rng.choice(values) for n in rng.sample(names, rng.randint(1, 3))}
        res = invoke(("campaign", "list"), env=_env(tmp_path, env), cwd=tmp_path)
        out = res.stdout + res.stderr
        assert "Traceback" not in out and "unexpected error" not in out, (env, out)
        if res.returncode:
            assert len([ln for ln in res.stderr.splitlines() if ln.strip()]) == 1, (env, res.stderr)
        codes.add(res.returncode)
    assert codes <= {0, 1, 2}, codes
    assert os.path.exists(tmp_path)


def test_exit_codes_scripts_can_trust(cli: Cli, simulator: object, tmp_path: Path) -> None:
    """A reconcile that could not authenticate exits 4; a report that could not be written exits 1; both say so in
    one line."""
    wrong = {"ZADARMA_API_URL": str(simulator), "ZADARMA_KEY": "wrong-key-000000", "ZADARMA_SECRET": "nope" * 5}
    res = cli("reconcile", env=wrong)
    assert res.returncode == 4 and "Traceback" not in res.stderr, res.stdout + res.stderr
    assert "statistics could not be read" in res.stderr
    (tmp_path / "list.csv").write_text("phone\n+447911123456\n", encoding="utf-8")
    cli.ok("campaign", "load", str(tmp_path / "list.csv"), "--campaign", "c", "--from", "100")
    res = cli("report", "c", "--xlsx", "/proc/no/r.xlsx")
    assert res.returncode == 1 and res.stderr.startswith("Error: "), res.stderr
