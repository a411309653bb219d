"""The Sunday scenario a new user met: a campaign "running" with pending contacts, idle agents and no calls, because
the default calling days are Monday to Friday. With the engine's clock frozen on a Sunday and ticks driven by hand
against the in-process simulator: status says why and until when; widening the weekdays re-plans the contacts
(the claim had moved them to Monday 09:00) and calls start within two ticks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from dialer.db import session_scope
from dialer.dialing.engine import Engine as DialEngine
from dialer.dialing.status import STATUS_KEY, DaemonState, daemon_status
from dialer.dialing.why import Reason
from dialer.ingest import campaigns
from dialer.kv import put_value
from dialer.models import Contact
from dialer.sim.harness import RunningSimulator
from dialer.sim.scenario import Scenario
from dialer.zadarma.client import ZadarmaClient
from tests.conftest import KEY, PBX_NUMBER, SECRET

SUNDAY_NOON = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)  # Europe/London is on GMT in November
MONDAY_9 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
CONTACTS = 121


def _scenario() -> Scenario:
    return Scenario.from_dict({
        "seed": 13, "timezone": "Europe/London", "pbx_number": PBX_NUMBER, "agents": {"count": 3},
        "calls": {"answer_probability": 0.5, "ring_time": {"dist": "uniform", "low": 3, "high": 8}, "max_ring_s": 20,
                  "talk_time": {"dist": "uniform", "low": 20, "high": 60}},
        "webhooks": {"profile": "none"},
    })  # fmt: skip


def _heartbeat(db: Engine) -> None:
    """A daemon heartbeat at the frozen time: status trusts the engine's stored reason only while one runs."""
    with session_scope(db) as s:
        put_value(s, STATUS_KEY, {"state": DaemonState.RUNNING, "updated_at": SUNDAY_NOON.isoformat()})


def test_sunday_outside_the_window_is_explained_and_new_weekdays_start_calls_at_once(
    db: Engine, start_simulator: Callable[..., RunningSimulator], caplog: pytest.LogCaptureFixture
) -> None:
    with session_scope(db) as s:
        c = campaigns.create_campaign(s, "sunday", PBX_NUMBER, agents=3, timezone="Europe/London")
        assert c.weekdays == [0, 1, 2, 3, 4]  # the default: Monday to Friday
        for i in range(CONTACTS):
            s.add(Contact(campaign_id=c.id or 0, phone=f"+44207946{i:04d}", timezones=["Europe/London"]))
        campaigns.start_campaign(s, "sunday")
        cid = c.id or 0
    sim = start_simulator(_scenario(), time_scale=20)
    client = ZadarmaClient(KEY, SECRET, base_url=sim.url)
    engine = DialEngine(db, client, clock=SUNDAY_NOON.timestamp)
    caplog.set_level(logging.INFO, logger="dialer.engine")
    _heartbeat(db)
    try:
        # Sunday: pacing wants calls for the idle agents, every contact is outside its window.
        for _ in range(10):
            result = engine.tick(cid)
            assert result.claimed == 0 and result.decided > 0
        st = daemon_status(db, now=SUNDAY_NOON)["campaigns"][0]
        assert st["state"] == "running" and st["calls_placed"] == 0
        assert st["why"]["reason"] == Reason.OUTSIDE_WINDOW
        assert st["why"]["text"] == "outside calling window until Mon 09:00 Europe/London"
        # The claim moved every contact to Monday's opening: none due now, all waiting until then.
        assert (st["due_now"], st["due_later"], st["due_later_from"]) == (0, CONTACTS, MONDAY_9.isoformat())
        reasons = [r for r in caplog.records if r.getMessage().startswith("dialling reason")]
        assert len(reasons) == 1  # ten ticks, one reason, logged once

        # Calling on every day re-plans the waiting contacts at once: they are due now (12:00 is in 09:00-20:00).
        with session_scope(db) as s:
            _, replanned = campaigns.change_settings(s, "sunday", {"weekdays": "mon-sun"}, now=SUNDAY_NOON)
        assert replanned is not None and (replanned.moved, replanned.due_now) == (CONTACTS, CONTACTS)
        placed = 0
        for _ in range(2):
            placed += engine.tick(cid).placed
            if placed:
                break
        assert placed > 0, "no call within two ticks of widening the weekdays"
        assert len(sim.calls()) == placed  # the simulator's truth: the calls really left
        _heartbeat(db)
        st = daemon_status(db, now=SUNDAY_NOON)["campaigns"][0]
        assert st["why"]["reason"] == Reason.DIALLING and st["calls_placed"] == placed
        with session_scope(db, write=False) as s:
            waiting = [ct for ct in s.exec(select(Contact)).all() if ct.next_attempt_at == MONDAY_9]
        assert waiting == []
    finally:
        engine.close(timeout=1.0)
        client.close()
