"""`dialer webhooks serve` as a real subprocess (stopped by SIGTERM) and `dialer webhooks replay` in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlmodel import Session, select

from dialer.asgi_thread import free_port
from dialer.dialing.live import LiveState
from dialer.models import Attempt, WebhookEvent
from dialer.outcomes.events import WebhookProcessor
from tests.conftest import clean_env, invoke
from tests.webhooks_support import SECRET, at, make_db, out_end, out_start, seed, signed, start

ROOT = Path(__file__).resolve().parent.parent


def _env(db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZADARMA_", "DIALER_"))}
    config = db.parent / "empty.toml"  # no stray config file may change the settings under test
    config.write_text("")
    env.update({"DIALER_DATABASE_URL": f"sqlite:///{db}", "DIALER_CONFIG": str(config)})
    env.update(extra)
    return env


def _in_process(db: Path) -> dict[str, str | None]:
    return clean_env(DIALER_DATABASE_URL=f"sqlite:///{db}")


def test_serve_receives_signed_events(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    seeded = seed(make_db(tmp_path, "d.db"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dialer", "webhooks", "serve", "--port", str(port), "--path", "/hooks"],
        cwd=ROOT,
        env=_env(db, ZADARMA_SECRET=SECRET),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/hooks"
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(url, params={"zd_echo": "ready"}, timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        assert r.text == "ready"
        fields = out_start(seeded.phones[0], "cli1")
        assert httpx.post(url, data=fields, headers=signed(fields), timeout=5).status_code == 200
        assert httpx.post(url, data=fields, headers={"Signature": "x"}, timeout=5).status_code == 403
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert "webhook receiver on http://127.0.0.1" in err
    assert SECRET not in out + err
    engine = make_db(tmp_path, "d.db")
    with Session(engine) as s:
        events = list(s.exec(select(WebhookEvent)))
    assert [(e.event, e.signature_ok) for e in events] == [("NOTIFY_OUT_START", True)]
    engine.dispose()


def test_serve_without_secret_is_a_clear_error_and_no_verify_warns(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    r = invoke(["webhooks", "serve", "--port", str(free_port())], env=_in_process(db), cwd=ROOT)
    assert r.returncode == 2
    assert "ZADARMA_SECRET is not set" in r.stderr and "Traceback" not in r.stderr
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dialer", "webhooks", "serve", "--port", str(port), "--no-verify"],
        cwd=ROOT,
        env=_env(db),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert "verification is OFF" in err


def test_replay_command_rebuilds_outcomes(tmp_path: Path) -> None:
    src = make_db(tmp_path, "src.db")
    dst = make_db(tmp_path, "dst.db")
    s1 = seed(src, n=2)
    seed(dst, n=2)
    p = WebhookProcessor(src, LiveState())
    p.process(out_start(s1.phones[0], "q1"), at(0), True)
    p.process(out_end(s1.phones[0], "q1", "busy"), at(3), True)
    p.process(start(s1.phones[1], "q2", 5), at(5), True)
    src.dispose()
    dst.dispose()
    r = invoke(["webhooks", "replay", "--from", f"sqlite:///{tmp_path / 'src.db'}", "--json"],
               env=_in_process(tmp_path / "dst.db"), cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"events": 3, "duplicates": 0, "attempts_completed": 1}
    engine = make_db(tmp_path, "dst.db")
    with Session(engine) as s:
        attempts = {a.phone: a for a in s.exec(select(Attempt))}
    assert attempts[s1.phones[0]].disposition == "busy" and attempts[s1.phones[0]].state == "completed"
    assert attempts[s1.phones[1]].state == "placed"  # routed to an agent, not finished yet
    engine.dispose()
