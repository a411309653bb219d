"""Against the simulator: real signed webhooks over HTTP decide every call's outcome as the simulator's truth says,
the agent our redirect names is the one who talks, and replaying the stored events into a fresh database rebuilds
the same outcomes."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from dialer.asgi_thread import serve
from dialer.dialing.live import LiveState
from dialer.models import Attempt, Contact, WebhookEvent
from dialer.outcomes.events import replay_events
from dialer.outcomes.webhook_app import create_webhook_app
from dialer.sim.harness import run_simulator
from dialer.sim.scenario import Scenario
from dialer.zadarma.client import ZadarmaClient
from tests.conftest import KEY, SECRET, wait_for
from tests.webhooks_support import PBX_NUMBER, make_db, seed

BASE = 442070001000
# Four customers answer at once for two agents: two are routed, two get the abandon message.
BEHAVIOUR = ["answered", "answered", "answered", "answered", "busy", "no_answer", "failed"]
PHONES = [f"+{BASE + i + 1}" for i in range(len(BEHAVIOUR))]


def _scenario() -> Scenario:
    return Scenario.from_dict(
        {
            "agents": {"count": 2},
            "calls": {"talk_time": 40, "ring_time": 4, "connect_grace_s": 40, "max_ring_s": 10},
            "webhooks": {"profile": "full", "notify_start_timeout_s": 20},
            "fixed_numbers": {p.lstrip("+"): b for p, b in zip(PHONES, BEHAVIOUR, strict=True)},
            "statistics": {"lag_s": 0},
        }
    )


def _outcomes(engine: Any) -> dict[str, tuple[Any, ...]]:
    with Session(engine) as s:
        rows = s.exec(select(Attempt, Contact).where(Attempt.contact_id == Contact.id)).all()
        return {
            a.phone: (
                a.state,
                a.disposition,
                a.answered,
                a.connected,
                a.abandoned,
                a.agent,
                a.talk_seconds,
                a.ring_seconds,
                c.state,
                c.last_disposition,
            )
            for a, c in rows
        }


def test_outcomes_follow_the_simulator_and_replay_rebuilds_them(tmp_path: Path) -> None:
    sent_at = datetime.now(UTC)
    live_db = make_db(tmp_path, "live.db")
    fresh_db = make_db(tmp_path, "fresh.db")
    kwargs = {
        "n": len(PHONES),
        "extensions": ["100", "101"],
        "abandon_action": "ivr_play:55",
        "phone_base": BASE,
    }
    seeded = seed(live_db, sent_at=sent_at, **kwargs)  # type: ignore[arg-type]
    seed(fresh_db, sent_at=sent_at, **kwargs)  # type: ignore[arg-type]
    assert seeded.phones == PHONES

    live = LiveState()
    app = create_webhook_app(live_db, secret=SECRET, live=live)
    with (
        serve(app) as hooks,
        run_simulator(
            _scenario(), key=KEY, secret=SECRET, time_scale=20, webhook_url=hooks.url + "/zadarma"
        ) as sim,
    ):
        assert sim.wait_webhook_verified(timeout=120)
        with ZadarmaClient(KEY, SECRET, base_url=sim.url) as client:
            for attempt_id, phone in zip(seeded.attempt_ids, PHONES, strict=True):
                live.call_placed(seeded.campaign_id, attempt_id, phone, sent_at.timestamp())
                client.callback(PBX_NUMBER, phone)
        truth = {"+" + c["to"].lstrip("+"): c for c in sim.wait_calls_ended(timeout=120)}
        wait_for(lambda: all(o[0] == "completed" for o in _outcomes(live_db).values()), timeout=120,
                 what="every outcome to arrive by webhook")

    got = _outcomes(live_db)
    assert set(truth) == set(PHONES)
    for phone in PHONES:
        t, o = truth[phone], got[phone]
        assert (o[2], o[3], o[4]) == (t["answered"], t["connected"], t["abandoned"]), (phone, t, o)
        disposition = "call failed" if t["disposition"] in ("failed", "call failed") else t["disposition"]
        assert o[1] == disposition
        if t["connected"]:
            # The agent our redirect named is the one who talked, and we recorded them.
            assert t["webhook_answer"]["redirect"] == t["agent"] == o[5]
            assert t["webhook_answer"]["caller_name"].startswith("Customer ")
    assert sum(1 for o in got.values() if o[4]) == 2 and sum(1 for o in got.values() if o[3]) == 2
    assert sorted(o[5] for o in got.values() if o[3]) == ["100", "101"]
    view = live.view(seeded.campaign_id, time.time())
    assert view.idle == 2 and view.ringing_since == () and view.waiting == 0
    finished = live.drain_finished(seeded.campaign_id)
    assert len(finished) == len(PHONES)

    # Replay: the raw events, in received order, into a database holding only the pre-outcome attempts.
    with Session(live_db) as s:
        events = list(s.exec(select(WebhookEvent).order_by(WebhookEvent.id)))  # type: ignore[arg-type]
    assert len(events) >= 20
    assert _outcomes(fresh_db) != got
    result = replay_events(fresh_db, events)
    assert result.events == len(events) and result.duplicates == 0 and result.completed == len(PHONES)
    assert _outcomes(fresh_db) == got
    # Replaying again changes nothing: every event is a duplicate now.
    again = replay_events(fresh_db, events)
    assert again.duplicates == len(events) and _outcomes(fresh_db) == got
    live_db.dispose()
    fresh_db.dispose()
