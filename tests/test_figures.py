"""One definition per figure: the report, the SQLite export's views and the engine's pacing window agree.

The data sits on the edges that used to split them: calls exactly at a window's start, a fraction of a second
before and after it, a call whose Zadarma placing time is missing (sent time counts), one that finished long after
it was placed (the window goes by call time, not end time), and a report time with microseconds.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dialer.db import open_database, session_scope
from dialer.dialing import observing
from dialer.dialing.engine import Engine
from dialer.models import Attempt, Campaign, Contact, KeyValue
from dialer.outcomes.states import AttemptState, CampaignState, ContactState
from dialer.reporting.figures import agent_seconds_key, window_start
from dialer.reporting.reports import build_report
from dialer.reporting.sqlite_export import export_sqlite
from dialer.zadarma import ZadarmaClient

NOW = datetime(2026, 11, 26, 12, 0, 0, 700_000, tzinfo=UTC)


def _sample(tmp_path: Path, window: str) -> tuple[object, int]:
    engine = open_database(f"sqlite:///{tmp_path / 'fig.db'}")
    start24 = window_start(NOW, "24h")
    start30 = window_start(NOW, "30d")
    # (placed_at, sent_at, finished_at, answered, connected, abandoned, talk, state)
    rows = [
        (start24, None, NOW, True, False, True, None, AttemptState.COMPLETED),  # exactly at the 24 h edge: inside
        (start24 - timedelta(microseconds=1), None, NOW, True, False, True, None, AttemptState.COMPLETED),  # outside
        (start24 + timedelta(milliseconds=400), None, NOW, True, True, False, 61.5, AttemptState.COMPLETED),
        (None, start24 - timedelta(seconds=1), NOW, True, False, True, None, AttemptState.COMPLETED),  # by sent time
        (start30, None, NOW - timedelta(hours=1), True, True, False, 30.0, AttemptState.COMPLETED),
        (start30 - timedelta(seconds=1), None, NOW, True, False, True, None, AttemptState.COMPLETED),
        (NOW - timedelta(hours=2), None, NOW, False, False, False, None, AttemptState.COMPLETED),
        (NOW - timedelta(hours=3), None, NOW, True, True, False, 120.0, AttemptState.COMPLETED),
        (NOW - timedelta(minutes=5), None, None, None, None, None, None, AttemptState.PLACED),  # not a call yet
        (NOW - timedelta(days=40), None, NOW, True, False, True, None, AttemptState.COMPLETED),
    ]
    with session_scope(engine) as s:
        camp = Campaign(name="edges", from_number="100", agents=2, timezone="Europe/London",
                        state=CampaignState.RUNNING, abandon_window=window)
        s.add(camp)
        s.flush()
        assert camp.id is not None
        for i, (placed, sent, finished, answered, connected, abandoned, talk, state) in enumerate(rows):
            contact = Contact(campaign_id=camp.id, phone=f"+4420790000{i:02d}", state=ContactState.RETRY,
                              attempts=1)
            s.add(contact)
            s.flush()
            created = placed or sent or NOW
            s.add(Attempt(campaign_id=camp.id, contact_id=contact.id or 0, phone=contact.phone, state=state,
                          created_at=created, sent_at=sent or created, placed_at=placed, finished_at=finished,
                          answered=answered, connected=connected, abandoned=abandoned, talk_seconds=talk,
                          live=state != AttemptState.COMPLETED))
        s.add(KeyValue(key=agent_seconds_key(camp.id), value=4000.0))
        return engine, camp.id


@pytest.mark.parametrize("window", ["24h", "30d"])
def test_report_sqlite_views_and_engine_agree(tmp_path: Path, window: str) -> None:
    engine, cid = _sample(tmp_path, window)
    report = build_report(engine, "edges", now=NOW)

    path = export_sqlite(engine, report, tmp_path / "report.sqlite")
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        kpi = dict(db.execute("SELECT * FROM kpi_summary").fetchone())
        periods = {r["period"]: dict(r) for r in db.execute("SELECT * FROM kpi_abandon_rate_windows")}

    client = ZadarmaClient("k" * 20, "s" * 20, "http://127.0.0.1:9")
    dialing = Engine(engine, client, clock=lambda: NOW.timestamp())
    try:
        with session_scope(engine, write=False) as s:
            campaign = s.get(Campaign, cid)
        assert campaign is not None
        rt = dialing.runtime(campaign)
        observing.refresh_counts(engine, campaign, rt, NOW.timestamp(), dialing.config.counts_refresh_s)
    finally:
        dialing.close(timeout=0)

    # The hand count: the edge call is in, the one a microsecond earlier is out, in both windows.
    assert (report.answered_24h, report.abandoned_24h) == (3, 1)
    assert (report.answered_30d, report.abandoned_30d) == (6, 3)
    for period, answered, abandoned in (("24h", report.answered_24h, report.abandoned_24h),
                                        ("30d", report.answered_30d, report.abandoned_30d)):
        assert (periods[period]["answered"], periods[period]["abandoned"]) == (answered, abandoned)
    legal = (report.answered_24h, report.abandoned_24h) if window == "24h" else (
        report.answered_30d, report.abandoned_30d)
    assert (rt.answered_window, rt.abandoned_window) == legal

    assert kpi["calls_placed"] == report.calls_placed == 9
    assert kpi["answered"] == report.answered == 8
    assert kpi["abandoned"] == report.abandoned == 5
    assert kpi["answer_rate"] == pytest.approx(report.answer_rate)
    assert kpi["abandon_rate"] == pytest.approx(report.abandon_rate)
    assert kpi["abandon_rate_24h"] == pytest.approx(report.abandon_rate_24h)
    assert kpi["abandon_rate_30d"] == pytest.approx(report.abandon_rate_30d)
    assert kpi["talk_seconds"] == pytest.approx(report.talk_seconds) == 211.5
    assert kpi["occupancy"] == pytest.approx(report.occupancy) == pytest.approx(211.5 / 4000.0)
