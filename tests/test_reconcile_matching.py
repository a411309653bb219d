"""Matching hand-made statistics rows to attempts (Reconciler.store_rows + match, no HTTP): clid spellings,
"call failed"/"failed", the account timezone, one-to-one matching, idempotency, and what the bulk writes store."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from dialer.db import open_database, session_scope
from dialer.ingest import campaigns
from dialer.models import Attempt, Contact, StatRow
from dialer.outcomes.reconcile import ReconcileConfig, Reconciler

PBX = "442037691880"
T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
# The account's clock is an hour ahead of UTC: statistics dates are written in it.
OFFSET = timedelta(hours=1)
PHONES = {
    "named": "+48539923725",  # PBX leg clid "Name (48539923725)", its token unknown
    "plus": "+48539923726",  # PBX leg clid "+48539923726"
    "bare": "+48539923727",  # PBX leg clid "48539923727"
    "callfailed": "+48539923728",  # customer leg "call failed"
    "failed": "+48539923729",  # customer leg "failed" (the webhook spelling)
    "abandoned": "+48539923730",  # answered, PBX leg "no answer": nobody took it
    "twice": "+48539923731",  # called twice, 10 minutes apart
}


def _acct(moment: datetime) -> str:
    return (moment + OFFSET).strftime("%Y-%m-%d %H:%M:%S")


def _setup(tmp_path: Path) -> tuple[Engine, int, dict[str, list[int]]]:
    db = open_database(f"sqlite:///{tmp_path / 'm.db'}")
    ids: dict[str, list[int]] = {}
    with session_scope(db) as s:
        c = campaigns.create_campaign(s, "m", PBX, agents=2, max_attempts=3, retry_failed_s="15m",
                                      retry_abandoned_s="3d")
        assert c.id is not None
        for i, (name, phone) in enumerate(PHONES.items()):
            contact = Contact(campaign_id=c.id, phone=phone, state="dialing", attempts=2 if name == "twice" else 1)
            s.add(contact)
            s.flush()
            sends = [T0 + timedelta(seconds=10 * i)]
            if name == "twice":
                sends = [T0 - timedelta(minutes=10), T0 + timedelta(seconds=10 * i)]
            for j, sent in enumerate(sends):
                last = j == len(sends) - 1
                a = Attempt(campaign_id=c.id, contact_id=contact.id or 0, phone=phone,
                            state="placed" if last else "completed", created_at=sent, sent_at=sent,
                            placed_at=sent, live=last,
                            disposition=None if last else "busy", answered=None if last else False)
                s.add(a)
                s.flush()
                ids.setdefault(name, []).append(a.id or 0)
        return db, c.id, ids


def _leg(kind: str, token: str, at: datetime, clid: str, destination: str, disposition: str,
         seconds: int = 0) -> dict[str, Any]:
    return {"call_id": f"{int(at.timestamp())}.{token}{kind}", "sip": "", "callstart": _acct(at), "clid": clid,
            "destination": destination, "disposition": disposition, "seconds": seconds, "is_recorded": "false",
            "pbx_call_id": f"{kind}_{token}"}


def _rows() -> list[dict[str, Any]]:
    rows = []
    for i, (name, phone) in enumerate(PHONES.items()):
        at = T0 + timedelta(seconds=10 * i + 1)
        digits = phone[1:]
        token = f"tok{i}"
        if name in ("callfailed", "failed"):
            rows.append(_leg("out", token, at, PBX, digits, "call failed" if name == "callfailed" else "failed"))
            continue
        if name == "twice":
            # The earlier call's row as well: it must stay with the earlier (busy) attempt.
            rows.append(_leg("out", "old" + token, T0 - timedelta(minutes=10) + timedelta(seconds=2), PBX, digits,
                             "busy"))
            rows.append(_leg("out", token, at, PBX, digits, "no answer"))
            continue
        rows.append(_leg("out", token, at, PBX, digits, "answered"))
        clid = {"named": f"Name ({digits})", "plus": "+" + digits}.get(name, digits)
        # A PBX-leg token that does not repeat the customer leg's: matching must fall back on the number.
        in_token = "x" + token if name == "named" else token
        if name == "abandoned":
            rows.append(_leg("in", in_token, at + timedelta(seconds=6), clid, "100", "no answer"))
        else:
            rows.append(_leg("in", in_token, at + timedelta(seconds=6), clid, "101", "answered", 42 + i))
    return rows


def _attempts(db: Engine) -> dict[int, Attempt]:
    with Session(db) as s:
        return {a.id or 0: a for a in s.exec(select(Attempt)).all()}


def _contacts(db: Engine) -> dict[str, Contact]:
    with Session(db) as s:
        return {c.phone: c for c in s.exec(select(Contact)).all()}


def test_clid_formats_failed_spellings_and_timezone(tmp_path: Path) -> None:
    db, _, ids = _setup(tmp_path)
    rec = Reconciler(db, None, account_offset=OFFSET, config=ReconcileConfig(pbx_leg_grace_s=60))
    rows = _rows()
    assert rec.store_rows("pbx", rows) == len(rows)
    assert rec.store_rows("pbx", rows) == 0  # stored once, whatever is re-read
    now = T0 + timedelta(minutes=5)
    result = rec.match(now)
    assert result.completed == len(PHONES)
    assert result.matched == len(rows)  # the earlier call's row too, linked to its (already completed) attempt

    att = _attempts(db)
    contacts = _contacts(db)
    for name in ("named", "plus", "bare"):
        a = att[ids[name][-1]]
        i = list(PHONES).index(name)
        assert (a.state, a.disposition, a.answered, a.connected, a.abandoned) == (
            "completed", "answered", True, True, False), name
        assert a.agent == "101" and a.talk_seconds == 42 + i and a.ring_seconds == 6
        # The account-time callstart, read back as UTC.
        assert a.placed_at == T0 + timedelta(seconds=10 * i)  # ours, kept
        assert a.finished_at == T0 + timedelta(seconds=10 * i + 7 + 42 + i)
        assert a.pbx_call_id == f"out_tok{i}" and not a.live
        assert contacts[PHONES[name]].state == "done" and contacts[PHONES[name]].last_disposition == "answered"

    for name in ("callfailed", "failed"):
        a = att[ids[name][-1]]
        assert (a.state, a.disposition, a.answered, a.connected) == ("completed", "call failed", False, False)
        c = contacts[PHONES[name]]
        assert (c.state, c.last_disposition) == ("retry", "call failed")
        assert c.next_attempt_at == now + timedelta(minutes=15)

    a = att[ids["abandoned"][-1]]
    assert (a.answered, a.connected, a.abandoned, a.agent) == (True, False, True, None)
    c = contacts[PHONES["abandoned"]]
    assert (c.state, c.last_disposition, c.next_attempt_at) == ("retry", "abandoned", now + timedelta(days=3))

    old, new = (att[i] for i in ids["twice"])
    assert (old.state, old.disposition) == ("completed", "busy")
    assert (new.state, new.disposition) == ("completed", "no answer")
    with Session(db) as s:
        linked = {r.pbx_call_id: r.attempt_id for r in s.exec(select(StatRow)).all()}
    i = list(PHONES).index("twice")
    assert linked[f"out_oldtok{i}"] == old.id and linked[f"out_tok{i}"] == new.id
    assert linked["in_xtok0"] == ids["named"][-1]
    assert contacts[PHONES["twice"]].state == "retry"


def test_second_match_changes_nothing_and_bulk_writes_store_the_orm_format(tmp_path: Path) -> None:
    db, _, _ = _setup(tmp_path)
    rec = Reconciler(db, None, account_offset=OFFSET)
    rec.store_rows("pbx", _rows())
    now = T0 + timedelta(minutes=5)
    rec.match(now)

    def dump() -> list[tuple[Any, ...]]:
        with db.connect() as conn:
            return [tuple(r) for t in ("attempt", "contact", "stat_row")
                    for r in conn.exec_driver_sql(f"SELECT * FROM {t} ORDER BY id")]

    before = dump()
    again = rec.match(now + timedelta(minutes=1))
    assert (again.matched, again.completed, again.not_placed) == (0, 0, 0)
    assert dump() == before

    # Times written by the bulk path are in the text format SQLAlchemy itself writes on SQLite (SQLite compares
    # them as text), so ORM queries on them keep working.
    with db.connect() as conn:
        texts = [r[0] for r in conn.exec_driver_sql(
            "SELECT finished_at FROM attempt UNION ALL SELECT next_attempt_at FROM contact "
            "UNION ALL SELECT callstart FROM stat_row UNION ALL SELECT created_at FROM attempt") if r[0] is not None]
    assert texts and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", t) for t in texts), texts[:5]
    with Session(db) as s:
        due = s.exec(select(Contact).where(Contact.next_attempt_at == now + timedelta(minutes=15))).all()
        assert {c.phone for c in due} == {PHONES["callfailed"], PHONES["failed"]}


def test_cost_rows_attach_to_their_attempt(tmp_path: Path) -> None:
    db, _, ids = _setup(tmp_path)
    rec = Reconciler(db, None, account_offset=OFFSET)
    rec.store_rows("pbx", _rows())
    i = list(PHONES).index("bare")
    at = T0 + timedelta(seconds=10 * i + 1)
    cost = [{"id": "c1", "sip": "", "callstart": _acct(at), "from": PBX, "to": PHONES["bare"][1:],
             "description": "UK", "disposition": "answered", "billseconds": 48, "cost": 0.01, "billcost": 0.0123,
             "currency": "USD"}]
    assert rec.store_rows("calls", cost) == 1
    rec.match(T0 + timedelta(minutes=5))
    att = _attempts(db)
    assert att[ids["bare"][-1]].cost == pytest.approx(0.0123)
    assert all(a.cost is None for aid, a in att.items() if aid != ids["bare"][-1])
    with db.connect() as conn:
        linked = conn.execute(sa.text("SELECT attempt_id FROM stat_row WHERE source = 'calls'")).scalar()
    assert linked == ids["bare"][-1]


def test_a_row_of_an_earlier_call_never_ends_a_later_call_to_the_number(tmp_path: Path) -> None:
    """Two campaigns ring one number within a second: the first call is over (its row arrives), the second still
    rings. Start times have whole seconds, so by time alone the row fits the second attempt as well as (here
    better than) the first; the customer-leg id the webhooks gave each attempt decides, and the ringing call
    stays live, keeping the number locked."""
    db = open_database(f"sqlite:///{tmp_path / 'm.db'}")
    phone = "+48539923799"
    with session_scope(db) as s:
        ids = []
        for name in ("first", "second"):
            c = campaigns.create_campaign(s, name, PBX)
            contact = Contact(campaign_id=c.id or 0, phone=phone, state="dialing", attempts=1)
            s.add(contact)
            s.flush()
            first = name == "first"
            # The first answer carried no time (our clock, late in the second); the second's did (whole second).
            placed = T0 + timedelta(seconds=0.8) if first else T0
            a = Attempt(campaign_id=c.id or 0, contact_id=contact.id or 0, phone=phone,
                        state="completed" if first else "placed", created_at=placed, sent_at=placed,
                        placed_at=placed, live=not first, disposition="busy" if first else None,
                        answered=False if first else None, pbx_call_id="out_one" if first else "out_two")
            s.add(a)
            s.flush()
            ids.append(a.id or 0)
    rec = Reconciler(db, None, account_offset=OFFSET)
    rec.store_rows("pbx", [_leg("out", "one", T0, PBX, phone[1:], "busy")])
    rec.match(T0 + timedelta(minutes=1))
    att = _attempts(db)
    assert (att[ids[1]].state, att[ids[1]].live) == ("placed", True)
    with Session(db) as s:
        assert [r.attempt_id for r in s.exec(select(StatRow)).all()] == [ids[0]]
