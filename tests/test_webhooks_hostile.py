"""A hostile sender against the webhook receiver (real HTTP server, real SQLite): forged events of every kind are
never stored, never move the liveness clock, never add a /metrics series, and cost bounded logging; genuine events
keep getting through during the flood."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from dialer.asgi_thread import ServerThread, serve
from dialer.dialing.live import LiveState
from dialer.models import WebhookEvent
from dialer.outcomes.webhook_app import create_webhook_app
from dialer.outcomes.webhook_guard import FailureGuard, LogBudget, TokenBuckets
from tests.webhooks_support import SECRET, Seeded, make_db, out_end, out_start, seed, signed


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[ServerThread, httpx.Client, Seeded, object, LiveState]]:
    engine = make_db(tmp_path)
    seeded = seed(engine, n=3)
    live = LiveState()
    # No tarpit here (test_over_budget_refusals_are_held checks it): the flood below is sent one by one.
    guard = FailureGuard(delay_s=0)
    app = create_webhook_app(engine, secret=SECRET, live=live, path="/zadarma", guard=guard)
    with serve(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield server, client, seeded, engine, live
    engine.dispose()


def _stored(engine: object) -> list[WebhookEvent]:
    with Session(engine) as s:  # type: ignore[arg-type]
        return list(s.exec(select(WebhookEvent)))


def forged(rng: random.Random, phone: str, i: int) -> tuple[dict[str, str], dict[str, str]]:
    """One forged post: an unknown name, a known name unsigned or signed wrong, sometimes padded to ~60 KB."""
    kind = i % 4
    if kind == 0:
        fields = {"event": f"NOTIFY_ANYTHING_{rng.randrange(10**6)}", "pbx_call_id": f"f{i}"}
    else:
        fields = out_start(phone, f"forged{i}")
    if rng.random() < 0.2:
        fields["pad"] = "x" * 60_000
    headers = {} if kind in (0, 1) else {"Signature": "Zm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2Vk"}
    return fields, headers


def test_forged_flood_stores_nothing_and_leaves_liveness_alone(
    env: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    _, client, seeded, engine, live = env
    caplog.set_level(logging.WARNING, logger="dialer.webhooks")
    rng = random.Random(7)
    statuses: dict[int, int] = {}
    for i in range(600):
        fields, headers = forged(rng, seeded.phones[0], i)
        status = client.post("/zadarma", data=fields, headers=headers).status_code
        statuses[status] = statuses.get(status, 0) + 1
    assert set(statuses) <= {403, 429}, statuses
    assert statuses.get(429, 0) > 0  # the failure budget ran out
    assert _stored(engine) == []
    assert live.last_event_at is None and live.events_seen == 0
    health = client.get("/healthz").json()
    assert health["last_event_age_s"] is None and health["events"] == 0
    # Bounded: no series per forged name, and far fewer warnings than requests.
    text = client.get("/metrics").text
    assert "NOTIFY_ANYTHING" not in text
    assert len(caplog.records) < 100
    # A genuine event still gets through, and only it moves the liveness clock.
    good = out_end(seeded.phones[1], "genuine", "busy", duration=0)
    assert client.post("/zadarma", data=good, headers=signed(good)).status_code == 200
    assert [e.pbx_call_id for e in _stored(engine)] == ["out_genuine"]
    assert live.events_seen == 1 and live.last_event_at is not None


def test_over_budget_refusals_are_held(tmp_path: Path) -> None:
    """A sender over its failure budget waits for each refusal (a tarpit); a genuine event does not."""
    engine = make_db(tmp_path)
    seeded = seed(engine, n=2)
    guard = FailureGuard(source_burst=2, per_source=0.001, delay_s=1.0)
    app = create_webhook_app(engine, secret=SECRET, live=LiveState(), guard=guard)
    try:
        with serve(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            bad = out_start(seeded.phones[0], "tarpit")
            for _ in range(2):
                assert client.post("/zadarma", data=bad).status_code == 403
            big = {**bad, "pad": "x" * 10_000}
            for fields in (bad, big):
                r = client.post("/zadarma", data=fields)
                assert r.status_code == 429 and r.elapsed.total_seconds() >= 0.5
            good = out_end(seeded.phones[1], "ok", "busy", duration=0)
            r = client.post("/zadarma", data=good, headers=signed(good))
            assert r.status_code == 200 and r.elapsed.total_seconds() < 0.5
    finally:
        engine.dispose()


def test_token_buckets_refill_and_forget_old_keys() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=1.0, burst=2, max_keys=2, clock=lambda: now[0])
    assert buckets.take("a") and buckets.take("a") and not buckets.take("a")
    now[0] = 1.0
    assert buckets.take("a") and not buckets.take("a")
    buckets.take("b")
    buckets.take("c")  # "a" is the least recently used: forgotten, it starts full again
    assert buckets.take("a") and buckets.take("a")


def test_failure_guard_per_source_and_overall() -> None:
    now = [0.0]
    guard = FailureGuard(per_source=1, source_burst=3, overall=1, overall_burst=5, clock=lambda: now[0])
    assert all(guard.failed("10.0.0.1") for _ in range(3))
    assert not guard.failed("10.0.0.1") and guard.exhausted("10.0.0.1")
    assert guard.failed("10.0.0.2") and not guard.exhausted("10.0.0.3")
    assert not guard.failed("10.0.0.3") or not guard.failed("10.0.0.4")  # everyone together: 5 failures
    assert guard.exhausted("10.0.0.9")


def test_log_budget_says_how_many_lines_were_left_out() -> None:
    now = [0.0]
    logs = LogBudget(burst=2, every_s=10, max_keys=1, clock=lambda: now[0])
    assert logs.allow("a") == 0 and logs.allow("a") == 0
    assert logs.allow("a") is None and logs.allow("a") is None
    now[0] = 10.0
    assert logs.allow("a") == 2
    assert logs.allow("b") == 0 and logs.allow("c") == 0  # "b" and "c" share "other"
    assert logs.allow("d") is None
