"""build_report on a small campaign made through the models: every KPI checked by hand.

The campaign runs in America/New_York (UTC-5 in November), and its last night's calls straddle local midnight.
``build_sample`` is shared with the export and CLI tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from dialer.db import open_database, session_scope
from dialer.models import Attempt, Campaign, Contact, KeyValue
from dialer.reporting.figures import agent_seconds_key
from dialer.reporting.reports import CampaignNotFound, build_report

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
TZ = "America/New_York"
CAMPAIGN = "winter"
EVIL_NAME = '=HYPERLINK("http://x","y")'


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@dataclass
class Sample:
    url: str
    engine: Engine
    campaign_id: int


def build_sample(tmp_path: Path, *, agent_seconds: float | None = 1000.0) -> Sample:
    url = f"sqlite:///{tmp_path / 'dialer.db'}"
    engine = open_database(url)
    with session_scope(engine) as s:
        camp = Campaign(name=CAMPAIGN, from_number="100", agents=2, timezone=TZ, state="running")
        s.add(camp)
        s.add(Campaign(name="other", from_number="101", timezone="UTC"))
        s.flush()
        assert camp.id is not None
        cid = camp.id

        def contact(phone: str, name: str | None, state: str, attempts: int, **fields: object) -> Contact:
            c = Contact(
                campaign_id=cid,
                phone=phone,
                name=name,
                state=state,
                attempts=attempts,
                fields=dict(fields),
                source_line=len(phone),
            )
            s.add(c)
            return c

        c1 = contact("+12025550101", EVIL_NAME, "done", 1, account="A-1", city="Boston")
        c2 = contact("+12025550102", "Bob", "done", 2, account="=1+2", city="@SUM(A1)")
        c3 = contact("+12025550103", "Carol", "exhausted", 2, account="-2+3", note="x")
        c4 = contact("+12025550104", "Dan", "done", 2, account="A-4", memo=" a & b <c>\x01", score=7)
        c5 = contact("+12025550105", None, "invalid", 1)
        c6 = contact("+12025550106", "Eve", "dialing", 1, account="A-6")
        contact("+12025550107", "Fay", "pending", 0, account="A-7")
        contact("+12025550108", "Gus", "dnc", 0)
        s.flush()

        def attempt(c: Contact, state: str, at: datetime | None, **kw: object) -> None:
            assert c.id is not None
            s.add(
                Attempt(
                    campaign_id=cid,
                    contact_id=c.id,
                    phone=c.phone,
                    state=state,
                    placed_at=at,
                    created_at=kw.pop("created_at", at or NOW),
                    live=state == "placing",
                    **kw,
                )
            )

        yes = {"answered": True, "connected": True, "abandoned": False}
        drop = {"answered": True, "connected": False, "abandoned": True}
        miss = {"answered": False, "connected": False, "abandoned": False}
        # Last night: 23:30 and 23:50 local on the 25th, 00:10 and 00:40 local on the 26th.
        attempt(
            c1,
            "completed",
            utc(2026, 11, 26, 4, 30),
            disposition="answered",
            talk_seconds=120,
            cost=0.25,
            agent="100",
            **yes,
        )
        attempt(
            c2,
            "completed",
            utc(2026, 11, 26, 5, 10),
            disposition="answered",
            talk_seconds=5,
            cost=0.125,
            **drop,
        )
        attempt(
            c2,
            "completed",
            utc(2026, 11, 26, 5, 40),
            disposition="answered",
            talk_seconds=60,
            cost=0.5,
            agent="101",
            **yes,
        )
        # No Zadarma time yet: the report falls back to when we sent it.
        attempt(
            c3,
            "completed",
            None,
            sent_at=utc(2026, 11, 26, 4, 50),
            created_at=utc(2026, 11, 26, 4, 49),
            disposition="busy",
            cost=0.0,
            **miss,
        )
        # 16 days ago: inside the 30-day window, outside the 24-hour one.
        attempt(c3, "completed", utc(2026, 11, 10, 15, 0), disposition="answered", **drop)
        # 56 days ago (daylight saving time then: UTC-4): outside both windows.
        attempt(
            c4,
            "completed",
            utc(2026, 10, 1, 14, 0),
            disposition="answered",
            talk_seconds=200,
            cost=1.0,
            **yes,
        )
        attempt(c4, "completed", utc(2026, 10, 1, 14, 20), disposition="no answer", **miss)
        attempt(c5, "failed", None, created_at=utc(2026, 11, 20, 12, 0), error="bad number")
        attempt(c6, "placing", None, created_at=utc(2026, 11, 26, 11, 59))
        if agent_seconds is not None:
            s.add(KeyValue(key=agent_seconds_key(cid), value=agent_seconds))
    return Sample(url=url, engine=engine, campaign_id=cid)


@pytest.fixture
def sample(tmp_path: Path) -> Sample:
    sample = build_sample(tmp_path)
    yield sample
    sample.engine.dispose()


def test_counts_and_rates(sample: Sample) -> None:
    r = build_report(sample.engine, CAMPAIGN, now=NOW)
    assert r.campaign == CAMPAIGN and r.timezone == TZ and r.campaign_state == "running"
    assert (
        r.contacts_total,
        r.contacts_reached,
        r.contacts_exhausted,
        r.contacts_invalid,
        r.contacts_dnc,
        r.contacts_pending,
    ) == (8, 3, 1, 1, 1, 2)
    assert r.contacts_by_state["dialing"] == 1 and r.contacts_by_state["retry"] == 0
    assert r.contacts_attempted == 6
    assert r.list_penetration == 6 / 8
    assert r.attempts_total == 9
    assert r.attempts_by_state == {
        "placing": 1,
        "placed": 0,
        "uncertain": 0,
        "completed": 7,
        "not_placed": 0,
        "failed": 1,
    }
    assert (r.calls_placed, r.answered, r.connected, r.abandoned) == (7, 5, 3, 2)
    assert r.answer_rate == 5 / 7
    assert r.abandon_rate == 2 / 5
    assert (r.abandoned_24h, r.answered_24h, r.abandon_rate_24h) == (1, 3, 1 / 3)
    assert (r.abandoned_30d, r.answered_30d, r.abandon_rate_30d) == (2, 4, 2 / 4)
    assert r.abandon_window == "30d"  # the campaign's default legal window
    # Agent talk only: the abandoned call's 5 s were a customer talking to nobody.
    assert r.talk_seconds == 380
    assert r.avg_talk_seconds == 126.7  # 380 / 3, to 0.1 s
    assert r.agent_seconds == 1000 and r.occupancy == pytest.approx(0.38)  # rates stay exact
    assert r.attempts_per_reached == pytest.approx(7 / 3)
    assert r.cost == 1.88  # 1.875, to the cent
    assert r.first_call_at == utc(2026, 10, 1, 14, 0) and r.last_call_at == utc(2026, 11, 26, 5, 40)


def test_hourly_in_campaign_timezone_across_midnight(sample: Sample) -> None:
    r = build_report(sample.engine, CAMPAIGN, now=NOW)
    rows = [
        (h.hour, h.calls_placed, h.answered, h.connected, h.abandoned, h.abandon_rate, h.talk_seconds)
        for h in r.hourly
    ]
    assert rows == [
        (datetime(2026, 10, 1, 10), 2, 1, 1, 0, 0.0, 200.0),  # 14:00 UTC is 10:00 EDT
        (datetime(2026, 11, 10, 10), 1, 1, 0, 1, 1.0, 0.0),
        (datetime(2026, 11, 25, 23), 2, 1, 1, 0, 0.0, 120.0),  # 04:30 and 04:50 UTC
        (datetime(2026, 11, 26, 0), 2, 2, 1, 1, 0.5, 60.0),
    ]
    assert sum(h.calls_placed for h in r.hourly) == r.calls_placed


def test_timezone_override(sample: Sample) -> None:
    r = build_report(sample.engine, CAMPAIGN, now=NOW, tz="UTC")
    assert r.timezone == "UTC"
    assert [h.hour for h in r.hourly][-2:] == [datetime(2026, 11, 26, 4), datetime(2026, 11, 26, 5)]
    assert r.to_dict()["last_call_at"] == "2026-11-26T05:40:00+00:00"
    with pytest.raises(ValueError, match="unknown timezone"):
        build_report(sample.engine, CAMPAIGN, now=NOW, tz="Mars/Olympus")


def test_windows_follow_now(sample: Sample) -> None:
    # A day later, last night's calls are still inside 30 days but no call is inside the last 24 h.
    r = build_report(sample.engine, CAMPAIGN, now=utc(2026, 11, 27, 6, 0))
    assert (r.answered_24h, r.abandon_rate_24h) == (0, None)
    assert r.abandon_rate_30d == 2 / 4


def test_occupancy_unknown_without_agent_data(tmp_path: Path) -> None:
    sample = build_sample(tmp_path, agent_seconds=None)
    try:
        r = build_report(sample.engine, CAMPAIGN, now=NOW)
    finally:
        sample.engine.dispose()
    assert r.agent_seconds is None and r.occupancy is None
    assert r.talk_seconds == 380


def test_empty_campaign_and_unknown_name(sample: Sample) -> None:
    r = build_report(sample.engine, "other", now=NOW)
    assert (r.contacts_total, r.calls_placed, r.hourly) == (0, 0, [])
    assert r.answer_rate is None and r.abandon_rate is None and r.list_penetration is None
    assert r.first_call_at is None
    with pytest.raises(CampaignNotFound, match="other, winter"):
        build_report(sample.engine, "nope")


def test_json_has_stable_keys(sample: Sample) -> None:
    data = build_report(sample.engine, CAMPAIGN, now=NOW).to_dict()
    assert data["generated_at"] == "2026-11-26T07:00:00-05:00"
    assert data["hourly"][-1]["hour"] == "2026-11-26T00:00:00"
    assert data["contacts_reached"] == 3 and data["abandon_rate_24h"] == 1 / 3
