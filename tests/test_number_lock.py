"""One person, one live call: a number is never in two live calls at once, whatever campaigns hold it.

The due query skips numbers in a live call anywhere, the unique index ``uq_attempt_live_phone`` refuses what
races past it (and a lost race costs only that contact), migration 0002 builds the index, and end to end three
campaigns loaded with the same list never ring one number twice at once (the simulator's truth).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine as DbEngine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from alembic import command
from dialer import db
from dialer.dialing import claiming
from dialer.dialing.engine import Engine
from dialer.ingest import campaigns
from dialer.models import Attempt, Campaign, Contact, StatRow, utcnow
from dialer.outcomes.states import LIVE_ATTEMPT_STATES, AttemptState, CampaignState, ContactState
from dialer.zadarma import ZadarmaClient
from tests import test_db_postgres
from tests.e2e import stack
from tests.invariants import check_invariants, digits, real_calls

pg_url = test_db_postgres.pg_url

SHARED = ["+447700900001", "+447700900002", "+447700900003"]


def _campaign(s: Session, name: str, phones: list[str]) -> int:
    c = campaigns.create_campaign(s, name, "100", window="00:00-24:00", weekdays="mon-sun", timezone="Europe/London")
    for i, phone in enumerate(phones):
        # Earlier numbers first: every campaign wants the same number at the same moment.
        s.add(Contact(campaign_id=c.id or 0, phone=phone, priority=len(phones) - i, timezones=["Europe/London"]))
    s.flush()
    return c.id or 0


def _campaign_row(dbe: DbEngine, cid: int) -> Campaign:
    with db.session_scope(dbe, write=False) as s:
        c = s.get(Campaign, cid)
        assert c is not None
        return c


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[tuple[DbEngine, Engine, list[int]]]:
    dbe = db.open_database(f"sqlite:///{tmp_path / 'n.db'}")
    with db.session_scope(dbe) as s:
        ids = [_campaign(s, "a", SHARED), _campaign(s, "b", [*SHARED, "+447700900099"]), _campaign(s, "c", SHARED)]
    # Claiming sends nothing: the client is never called.
    client = ZadarmaClient("k" * 20, "s" * 20, "http://127.0.0.1:9")
    eng = Engine(dbe, client)
    try:
        yield dbe, eng, ids
    finally:
        eng.close(timeout=0)
        client.close()
        dbe.dispose()


def test_a_number_in_a_live_call_is_not_claimed_by_another_campaign(
    world: tuple[DbEngine, Engine, list[int]],
) -> None:
    dbe, eng, (a, b, c) = world
    got_a = eng.claim(_campaign_row(dbe, a), 10)
    assert sorted(x.phone for x in got_a) == SHARED
    # Campaign b holds the same three numbers, all in a's calls now: only its own number is free.
    assert [x.phone for x in eng.claim(_campaign_row(dbe, b), 10)] == ["+447700900099"]
    assert eng.claim(_campaign_row(dbe, c), 10) == []
    with db.session_scope(dbe, write=False) as s:
        assert campaigns.next_due_contacts(s, c, utcnow(), 10) == []
        # b's contacts for those numbers wait, untouched.
        waiting = s.exec(select(Contact).where(Contact.campaign_id == b, col(Contact.phone).in_(SHARED))).all()
        assert {(w.state, w.attempts) for w in waiting} == {(ContactState.PENDING, 0)}
    # The call to the first number ends: now another campaign may ring it.
    with db.session_scope(dbe) as s:
        first = s.exec(select(Attempt).where(Attempt.phone == SHARED[0])).one()
        first.state = AttemptState.COMPLETED
        s.add(first)
    assert [x.phone for x in eng.claim(_campaign_row(dbe, b), 10)] == [SHARED[0]]
    assert eng.claim(_campaign_row(dbe, c), 10) == []


def test_the_database_refuses_a_second_live_attempt_for_a_number(
    world: tuple[DbEngine, Engine, list[int]],
) -> None:
    dbe, _, (a, b, _c) = world
    with db.session_scope(dbe) as s:
        ca, cb = (s.exec(select(Contact).where(Contact.campaign_id == cid, Contact.phone == SHARED[0])).one()
                  for cid in (a, b))  # fmt: skip
        s.add(Attempt(campaign_id=a, contact_id=ca.id or 0, phone=SHARED[0], state=AttemptState.PLACED))
    for state in LIVE_ATTEMPT_STATES:
        with pytest.raises(IntegrityError), db.session_scope(dbe) as s:
            s.add(Attempt(campaign_id=b, contact_id=cb.id or 0, phone=SHARED[0], state=state))
    with db.session_scope(dbe) as s:
        # Finished attempts of the number, and live calls to other numbers, are always allowed.
        s.add(Attempt(campaign_id=b, contact_id=cb.id or 0, phone=SHARED[0], state=AttemptState.COMPLETED))
        s.add(Attempt(campaign_id=b, contact_id=cb.id or 0, phone=SHARED[0], state=AttemptState.FAILED))
        s.add(Attempt(campaign_id=b, contact_id=cb.id or 0, phone=SHARED[1], state=AttemptState.PLACING))


def test_a_lost_race_costs_only_that_contact(
    world: tuple[DbEngine, Engine, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Campaign b's due query read before a's claim of the second number committed: the index refuses that
    one claim, b's other claims stand and its contact for the number stays due."""
    dbe, eng, (a, b, _c) = world
    with db.session_scope(dbe, write=False) as s:
        read_early = [x.id for x in campaigns.next_due_contacts(s, b, utcnow(), 10)]
    with db.session_scope(dbe) as s:
        ca = s.exec(select(Contact).where(Contact.campaign_id == a, Contact.phone == SHARED[1])).one()
        s.add(Attempt(campaign_id=a, contact_id=ca.id or 0, phone=SHARED[1], state=AttemptState.PLACING))

    def stale(s: Session, *_args: Any, **_kw: Any) -> list[Contact]:
        rows = s.exec(select(Contact).where(col(Contact.id).in_(read_early))).all()
        return sorted(rows, key=lambda r: read_early.index(r.id))

    monkeypatch.setattr(claiming, "next_due_contacts", stale)
    got = eng.claim(_campaign_row(dbe, b), 10)
    # The claimed attempts are whole and usable after the claim's session has closed.
    assert sorted(x.phone for x in got) == sorted(["+447700900099", SHARED[0], SHARED[2]])
    assert all(x.id and x.state == AttemptState.PLACING for x in got)
    with db.session_scope(dbe, write=False) as s:
        rows = {r.phone: (r.state, r.attempts) for r in s.exec(select(Contact).where(Contact.campaign_id == b))}
        live = s.exec(select(Attempt.campaign_id).where(Attempt.phone == SHARED[1])).all()
    assert rows[SHARED[1]] == (ContactState.PENDING, 0)
    assert rows[SHARED[0]] == rows[SHARED[2]] == (ContactState.DIALING, 1)
    assert live == [a]


def test_the_due_query_probes_the_live_number_index(world: tuple[DbEngine, Engine, list[int]]) -> None:
    """The in-call check must use the partial index (its predicate is literal SQL, not bound parameters)."""
    dbe, _, (a, _b, _c) = world
    seen: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        if "FROM contact" in statement and "attempt" in statement:
            seen.append((statement, params))

    event.listen(dbe, "before_cursor_execute", grab)
    try:
        with db.session_scope(dbe, write=False) as s:
            campaigns.next_due_contacts(s, a, utcnow(), 10)
    finally:
        event.remove(dbe, "before_cursor_execute", grab)
    statement, params = seen[-1]
    with dbe.connect() as conn:
        plan = " | ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))
    assert "uq_attempt_live_phone" in plan, plan
    assert "ix_contact_due" in plan and "TEMP B-TREE" not in plan.split("UNION")[0], plan


def _live_pair(conn: sa.Connection) -> None:
    """Two live attempts to one number from two campaigns: what revision 0001 allowed."""
    now = "2026-11-29 10:00:00"
    for name in ("x", "y"):
        cid = conn.execute(sa.text(
            "INSERT INTO campaign (name, from_number, agents, agent_extensions, pacing, abandon_target, abandon_window,"
            " max_attempts, retry_busy_s, retry_no_answer_s, retry_failed_s, retry_abandoned_s, window_start,"
            " window_end, weekdays, holidays, timezone, abandon_action, state, created_at, updated_at) VALUES"
            " (:n, '100', 1, '[]', 'progressive', 0.03, '30d', 3, 1, 1, 1, 1, '09:00', '20:00', '[]', '[]', 'UTC',"
            " 'hangup', 'running', :t, :t) RETURNING id"), {"n": name, "t": now}).scalar()  # fmt: skip
        ct = conn.execute(sa.text(
            "INSERT INTO contact (campaign_id, phone, fields, timezones, state, priority, attempts, created_at,"
            " updated_at) VALUES (:c, '+447700900001', '{}', '[]', 'dialing', 0, 1, :t, :t) RETURNING id"),
            {"c": cid, "t": now}).scalar()  # fmt: skip
        conn.execute(sa.text(
            "INSERT INTO attempt (campaign_id, contact_id, phone, state, created_at, live, updated_at)"
            " VALUES (:c, :ct, '+447700900001', 'placed', :t, 1, :t)"), {"c": cid, "ct": ct, "t": now})  # fmt: skip


def test_migration_0002_refuses_numbers_in_two_live_calls_then_upgrades_and_downgrades(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    dbe = db.make_engine(url)
    try:
        assert db.upgrade(dbe, "0001_initial") == (None, "0001_initial")
        with dbe.begin() as conn:
            _live_pair(conn)
        with pytest.raises(RuntimeError, match="more than one live call attempt"):
            db.upgrade(dbe, "0002_number_lock")
        with dbe.connect() as conn:
            assert db.current_revision(conn) == "0001_initial"  # the upgrade changed nothing
        with dbe.begin() as conn:
            conn.exec_driver_sql("UPDATE attempt SET state = 'completed' WHERE id = 1")
        assert db.upgrade(dbe, "0002_number_lock") == ("0001_initial", "0002_number_lock")

        def indexes() -> set[str]:
            with dbe.connect() as conn:
                return {i["name"] for i in sa.inspect(conn).get_indexes("attempt")}

        assert "uq_attempt_live_phone" in indexes() and "uq_attempt_live_contact" not in indexes()
        with dbe.begin() as conn:
            command.downgrade(db.alembic_config(url, conn), "0001_initial")
        assert "uq_attempt_live_contact" in indexes() and "uq_attempt_live_phone" not in indexes()
    finally:
        dbe.dispose()


def test_postgres_a_claim_racing_another_campaign_loses_only_that_number(pg_url: str) -> None:
    """A real race on PostgreSQL: another transaction has inserted a live call to the first number but not yet
    committed, so the due query cannot see it; the claim blocks on the index, loses that number when the other
    commits, and keeps the rest of its batch."""
    dbe = db.open_database(pg_url)
    client = ZadarmaClient("k" * 20, "s" * 20, "http://127.0.0.1:9")
    eng = Engine(dbe, client)
    try:
        with db.session_scope(dbe) as s:
            a, b = _campaign(s, "a", SHARED), _campaign(s, "b", SHARED)
            ca = s.exec(select(Contact).where(Contact.campaign_id == a, Contact.phone == SHARED[0])).one()
        other = dbe.connect()
        trans = other.begin()
        other.execute(sa.insert(Attempt).values(campaign_id=a, contact_id=ca.id, phone=SHARED[0], state="placing",
                                                created_at=utcnow(), updated_at=utcnow(), live=True))  # fmt: skip
        got: list[Attempt] = []
        claimer = threading.Thread(target=lambda: got.extend(eng.claim(_campaign_row(dbe, b), 10)))
        claimer.start()
        time.sleep(1.0)
        assert claimer.is_alive(), "the claim should wait for the other transaction on the index"
        trans.commit()
        other.close()
        claimer.join(30)
        assert sorted(x.phone for x in got) == SHARED[1:]
        with db.session_scope(dbe, write=False) as s:
            lost = s.exec(select(Contact).where(Contact.campaign_id == b, Contact.phone == SHARED[0])).one()
            assert (lost.state, lost.attempts) == (ContactState.PENDING, 0)
            assert campaigns.next_due_contacts(s, b, utcnow(), 10) == []
        with dbe.connect() as conn:
            idx = conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'uq_attempt_live_phone'"
            ).scalar_one()
        assert "UNIQUE" in idx and "(phone)" in idx and "WHERE" in idx
    finally:
        eng.close(timeout=0)
        client.close()
        dbe.dispose()


@pytest.mark.slow
@pytest.mark.e2e
def test_three_campaigns_with_one_list_never_ring_a_number_twice_at_once(tmp_path: Path) -> None:
    with stack(tmp_path) as st:
        names = ("one", "two", "three")
        for name in names:
            st.make_campaign(name, 60, agents=5, pacing="ratio:2")
        st.run_daemon(300, start=names)
        truth = st.wait_truth_settled()
        calls = real_calls(truth)
        spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for c in calls:
            spans[digits(c["to"])].append((c["placed_at"], c.get("ended_at") or c["placed_at"]))
        overlaps = []
        for number, calls_to in spans.items():
            calls_to.sort()
            overlaps += [(number, x, y) for x, y in itertools.pairwise(calls_to) if y[0] < x[1]]
        attempts, contacts = st.attempts(), st.contacts()
        if overlaps:  # what our side knew of those calls, to find how the number was let go
            seen = {n for n, _, _ in overlaps}
            ours = [(a.id, a.phone, a.campaign_id, a.state, a.pbx_call_id, a.created_at, a.sent_at, a.placed_at,
                     a.finished_at, a.disposition, a.answered, a.abandoned, a.error)
                    for a in attempts if digits(a.phone) in seen]
            theirs = [(c["pbx_call_id"], c["placed_at"], c["ended_at"], c["outcome"], c["state"]) for c in calls
                      if digits(c["to"]) in seen]
            with st.db() as s:
                rows = [(r.pbx_call_id, r.callstart, r.disposition, r.attempt_id, r.fetched_at)
                        for r in s.exec(select(StatRow)) if digits(r.destination or r.clid or "") in seen]
            log = st.daemon_log()
            lines = [ln for ln in log.splitlines() if any(n in ln for n in seen)]
            pytest.fail(f"{len(overlaps)} overlapping calls to one number, e.g. {overlaps[:3]}\n"
                        f"attempts: {ours}\ncalls: {theirs}\nrows: {rows}\nlog: {lines[-40:]}")
        # The campaigns did compete: every number was rung by all three of them over the run.
        rung_by: dict[str, set[int]] = defaultdict(set)
        for att in attempts:
            if att.state == AttemptState.COMPLETED:
                rung_by[att.phone].add(att.campaign_id)
        assert len(rung_by) == 60 and all(len(v) == 3 for v in rung_by.values()), rung_by
        check_invariants(truth, attempts, contacts, st.campaign("one"),
                         rate_limited=int(st.sim_stats()["rate_limited_total"]))
        assert {st.campaign(n).state for n in names} == {CampaignState.FINISHED}
        assert len(contacts) == 180
