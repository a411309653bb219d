"""The database layer: SQLite pragmas, BEGIN IMMEDIATE, the schema gate, the live-attempt index, UTC times."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from dialer import db
from dialer.models import Attempt, Campaign, Contact, utcnow
from tests.conftest import Cli


def _url(tmp_path: Path, name: str = "t.db") -> str:
    return f"sqlite:///{tmp_path / name}"


def test_new_database_is_created_at_head_with_wal_and_foreign_keys(tmp_path: Path) -> None:
    engine = db.open_database(_url(tmp_path))
    try:
        with engine.connect() as conn:
            assert db.current_revision(conn) == db.head_revision()
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.BUSY_TIMEOUT_MS
            tables = set(sa.inspect(conn).get_table_names())
        assert {"campaign", "contact", "attempt", "dnc_entry", "webhook_event", "stat_row", "key_value",
                "event_log"} <= tables  # fmt: skip
    finally:
        engine.dispose()


def test_write_sessions_take_the_write_lock_at_begin_and_readers_do_not(tmp_path: Path) -> None:
    engine = db.open_database(_url(tmp_path))
    other = sqlite3.connect(tmp_path / "t.db", timeout=0.2, isolation_level=None)
    try:
        with db.session_scope(engine) as s:
            s.execute(sa.select(1))  # a read inside a write session: BEGIN IMMEDIATE already holds the lock
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        with db.session_scope(engine, write=False) as s:
            s.execute(sa.select(Campaign)).all()
            other.execute("BEGIN IMMEDIATE")  # a reader holds no write lock
            other.execute("ROLLBACK")
    finally:
        other.close()
        engine.dispose()


def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    engine = db.open_database(_url(tmp_path))
    try:
        with pytest.raises(IntegrityError), db.session_scope(engine) as s:
            s.add(Contact(campaign_id=999, phone="+447700900123"))
    finally:
        engine.dispose()


def test_one_live_attempt_per_contact_is_enforced_by_the_database(tmp_path: Path) -> None:
    engine = db.open_database(_url(tmp_path))
    try:
        with db.session_scope(engine) as s:
            c = Campaign(name="c", from_number="100")
            s.add(c)
            s.flush()
            ct = Contact(campaign_id=c.id or 0, phone="+447700900123")
            s.add(ct)
            s.flush()
            s.add(Attempt(campaign_id=c.id or 0, contact_id=ct.id or 0, phone=ct.phone, state="completed"))
            s.add(Attempt(campaign_id=c.id or 0, contact_id=ct.id or 0, phone=ct.phone, state="placing"))
            cid, ctid = c.id or 0, ct.id or 0
        for state in ("placing", "placed", "uncertain"):
            with pytest.raises(IntegrityError), db.session_scope(engine) as s:
                s.add(Attempt(campaign_id=cid, contact_id=ctid, phone="+447700900123", state=state))
        with db.session_scope(engine) as s:  # a finished one is always allowed
            s.add(Attempt(campaign_id=cid, contact_id=ctid, phone="+447700900123", state="failed"))
    finally:
        engine.dispose()


def test_datetimes_are_stored_utc_and_come_back_aware(tmp_path: Path) -> None:
    engine = db.open_database(_url(tmp_path))
    try:
        moscow = datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=3)))
        with db.session_scope(engine) as s:
            c = Campaign(name="c", from_number="100")
            s.add(c)
            s.flush()
            s.add(Contact(campaign_id=c.id or 0, phone="+447700900123", next_attempt_at=moscow))
        with db.session_scope(engine, write=False) as s:
            got = s.execute(sa.select(Contact.next_attempt_at)).scalar_one()
            assert got == datetime(2026, 3, 1, 9, 0, tzinfo=UTC) and got.tzinfo is not None
            created = s.execute(sa.select(Campaign.created_at)).scalar_one()
            assert abs(created - utcnow()) < timedelta(minutes=5)
        with db.session_scope(engine, write=False) as s:
            raw = s.execute(sa.text("SELECT next_attempt_at FROM contact")).scalar_one()
            assert str(raw).startswith("2026-03-01 09:00:00")
        with pytest.raises(Exception, match="naive"), db.session_scope(engine) as s:
            s.add(Contact(campaign_id=1, phone="+447700900124", next_attempt_at=datetime(2026, 3, 1, 12)))
    finally:
        engine.dispose()


def test_due_index_is_descending_on_priority(tmp_path: Path) -> None:
    engine = db.open_database(_url(tmp_path))
    try:
        with engine.connect() as conn:
            cols = conn.exec_driver_sql("PRAGMA index_xinfo('ix_contact_due')").all()
        keyed = [(r[2], r[3]) for r in cols if r[5] == 1]  # (column name, desc) of key columns
        assert keyed == [("campaign_id", 0), ("state", 0), ("priority", 1), ("next_attempt_at", 0)]
    finally:
        engine.dispose()


def test_models_and_migrations_agree() -> None:
    assert db.check_models_match_migrations() == []


def test_cli_db_check_current_and_upgrade(cli: Cli) -> None:
    chk = cli("db", "check")
    assert chk.returncode == 0, chk.stderr
    assert "agree" in chk.stdout
    cur = cli("db", "current", "--json")
    assert cur.returncode == 0 and '"status": "new"' in cur.stdout
    up = cli("db", "upgrade")
    assert up.returncode == 0 and db.head_revision() in up.stdout
    again = cli("db", "upgrade")
    assert again.returncode == 0 and "already" in again.stdout


def test_a_database_from_a_newer_dialer_is_refused_with_a_clear_message(tmp_path: Path, cli: Cli) -> None:
    url = _url(tmp_path)
    db.open_database(url).dispose()
    con = sqlite3.connect(tmp_path / "t.db")
    con.execute("UPDATE alembic_version SET version_num = 'zz99_from_the_future'")
    con.commit()
    con.close()
    with pytest.raises(db.DatabaseVersionError, match="newer dialer"):
        db.open_database(url)
    res = cli("campaign", "list", env={"DIALER_DATABASE_URL": url})
    assert res.returncode == 6
    assert "newer dialer" in res.stderr and "Traceback" not in res.stderr
    assert cli("db", "current", env={"DIALER_DATABASE_URL": url}).returncode == 6


def test_a_database_behind_is_refused_until_upgraded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = _url(tmp_path)
    db.open_database(url).dispose()  # at this dialer's head
    head = db.head_revision()
    # A newer dialer: the same migrations plus one more revision.
    newer = tmp_path / "alembic"
    shutil.copytree(db.ALEMBIC_DIR, newer, ignore=shutil.ignore_patterns("__pycache__"))
    (newer / "versions" / "9999_test.py").write_text(
        "import sqlalchemy as sa\nfrom alembic import op\n"
        f"revision = '9999_test'\ndown_revision = '{head}'\nbranch_labels = None\ndepends_on = None\n"
        "def upgrade():\n    op.create_table('extra', sa.Column('id', sa.Integer, primary_key=True))\n"
        "def downgrade():\n    op.drop_table('extra')\n"
    )
    monkeypatch.setattr(db, "ALEMBIC_DIR", newer)
    with pytest.raises(db.DatabaseVersionError, match="dialer db upgrade"):
        db.open_database(url)
    engine = db.make_engine(url)
    try:
        before, after = db.upgrade(engine)
        assert (before, after) == (head, "9999_test")
    finally:
        engine.dispose()
    db.open_database(url).dispose()


def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "t.db")
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(db.DatabaseVersionError, match="not a dialer database"):
        db.open_database(_url(tmp_path))
