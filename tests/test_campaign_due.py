"""next_due_contacts: the query the daemon claims from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dialer import db
from dialer.ingest import campaigns
from dialer.models import Contact

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _setup(tmp_path: Path) -> tuple[Engine, int]:
    engine = db.open_database(f"sqlite:///{tmp_path / 'd.db'}")
    with db.session_scope(engine) as s:
        c = campaigns.create_campaign(s, "c", "100", max_attempts="3")
        other = campaigns.create_campaign(s, "other", "100")
        cid, oid = c.id or 0, other.id or 0
        rows = [
            # phone, state, priority, next_attempt_at, attempts
            ("+441", "pending", 0, None, 0),
            ("+442", "pending", 5, None, 0),
            ("+443", "retry", 5, NOW - timedelta(minutes=1), 1),
            ("+444", "retry", 5, NOW - timedelta(hours=1), 1),
            ("+445", "retry", 9, NOW + timedelta(minutes=1), 1),  # not due yet
            ("+446", "retry", 9, NOW - timedelta(hours=2), 3),  # attempt cap reached
            ("+447", "dialing", 9, None, 1),
            ("+448", "done", 9, None, 1),
            ("+449", "dnc", 9, None, 0),
            ("+4410", "pending", 9, None, 0),  # on the DNC list but not yet marked
            ("+4411", "pending", 1, NOW, 0),  # due exactly now
        ]
        for phone, state, prio, nxt, att in rows:
            s.add(
                Contact(
                    campaign_id=cid,
                    phone=phone,
                    state=state,
                    priority=prio,
                    next_attempt_at=nxt,
                    attempts=att,
                )
            )
        s.add(Contact(campaign_id=oid, phone="+4499", priority=100))
        s.execute(
            sa.text(
                "INSERT INTO dnc_entry (phone, campaign_id, created_at) VALUES ('+4410', NULL, '2026-01-01')"
            )
        )
    return engine, cid


def test_due_contacts_are_filtered_and_ordered(tmp_path: Path) -> None:
    engine, cid = _setup(tmp_path)
    try:
        with db.session_scope(engine) as s:
            due = campaigns.next_due_contacts(s, cid, NOW, 50)
            assert [c.phone for c in due] == ["+442", "+444", "+443", "+4411", "+441"]
            assert [c.phone for c in campaigns.next_due_contacts(s, cid, NOW, 2)] == ["+442", "+444"]
            assert campaigns.next_due_contacts(s, cid, NOW, 0) == []
            later = campaigns.next_due_contacts(s, cid, NOW + timedelta(minutes=5), 50)
            assert later[0].phone == "+445"
            assert all(c.next_attempt_at is None or c.next_attempt_at.tzinfo is not None for c in later)
    finally:
        engine.dispose()


def test_dnc_added_after_loading_is_never_claimed(tmp_path: Path) -> None:
    engine, cid = _setup(tmp_path)
    try:
        with db.session_scope(engine) as s:
            added, marked = campaigns.add_dnc(s, ["+442", "+444"], reason="asked")
            assert (added, marked) == (2, 2)
        with db.session_scope(engine) as s:
            assert [c.phone for c in campaigns.next_due_contacts(s, cid, NOW, 50)] == [
                "+443",
                "+4411",
                "+441",
            ]
            states = dict(
                s.execute(sa.select(Contact.phone, Contact.state).where(Contact.campaign_id == cid)).all()
            )
            assert states["+442"] == states["+444"] == "dnc"
            # Removing the entry does not bring a marked contact back by itself.
            assert campaigns.remove_dnc(s, ["+442"]) == 1
        with db.session_scope(engine) as s:
            assert "+442" not in [c.phone for c in campaigns.next_due_contacts(s, cid, NOW, 50)]
    finally:
        engine.dispose()


def test_campaign_scoped_dnc_only_affects_that_campaign(tmp_path: Path) -> None:
    engine, cid = _setup(tmp_path)
    try:
        with db.session_scope(engine) as s:
            other = campaigns.get_campaign(s, "other")
            s.add(Contact(campaign_id=cid, phone="+4499"))
            s.flush()
            assert campaigns.add_dnc(s, ["+4499"], campaign=other) == (1, 1)
        with db.session_scope(engine) as s:
            assert campaigns.next_due_contacts(s, other.id or 0, NOW, 5) == []
            assert "+4499" in [c.phone for c in campaigns.next_due_contacts(s, cid, NOW, 50)]
    finally:
        engine.dispose()


def test_the_due_query_reads_the_due_index(tmp_path: Path) -> None:
    engine, cid = _setup(tmp_path)
    try:
        with engine.connect() as conn:
            plan = conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT id FROM contact WHERE campaign_id = ? AND state = 'pending' "
                "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) ORDER BY priority DESC, "
                "next_attempt_at ASC NULLS FIRST LIMIT 50",
                (cid, "2026-11-26 12:00:00.000000"),
            ).all()
        text = " ".join(str(r[-1]) for r in plan)
        assert "ix_contact_due" in text and "TEMP B-TREE" not in text, text
    finally:
        engine.dispose()
