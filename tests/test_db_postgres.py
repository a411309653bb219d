"""PostgreSQL through the same URL setting: migrations, load and the due query in a throwaway database."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from dialer import db
from dialer.ingest import campaigns, loader
from dialer.models import utcnow
from tests import pg


@pytest.fixture()
def pg_url() -> object:
    admin = pg.admin_engine()
    if admin is None:
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432")
    url = pg.create_database(admin)
    try:
        yield url
    finally:
        pg.drop_database(admin, url)
        admin.dispose()


def test_postgres_migrations_load_and_due_query(pg_url: str, tmp_path: Path) -> None:
    assert pg_url.startswith("postgresql://")  # plain URLs are mapped to psycopg 3
    engine = db.open_database(pg_url)
    try:
        assert engine.dialect.name == "postgresql"
        with engine.connect() as conn:
            assert db.current_revision(conn) == db.head_revision()
            idx = (
                conn.exec_driver_sql(
                    "SELECT indexdef FROM pg_indexes WHERE indexname IN ('ix_contact_due', 'uq_attempt_live_phone') "
                    "ORDER BY indexname"
                )
                .scalars()
                .all()
            )
        assert "priority DESC" in idx[0] and "WHERE" in idx[1]

        csv = tmp_path / "list.csv"
        csv.write_text("phone,name,city\n+44 7911 123456,Ann,London\n07911 123457,Bob,Leeds\nbad,Cy,X\n"
                       "+447911123456,Ann again,London\n", encoding="utf-8")  # fmt: skip
        with db.session_scope(engine) as s:
            camp = campaigns.create_campaign(s, "pg", "100", region="GB")
            cid = camp.id or 0
        res = loader.load_file(engine, csv, "pg")
        assert (res.rows_read, res.loaded, res.rejected) == (4, 2, 2)

        with db.session_scope(engine) as s:
            s.execute(sa.text("UPDATE contact SET priority = 5 WHERE phone = '+447911123457'"))
        with db.session_scope(engine) as s:
            due = campaigns.next_due_contacts(s, cid, utcnow(), 10, lock=True)
            assert [c.phone for c in due] == ["+447911123457", "+447911123456"]
            assert due[0].fields == {"city": "Leeds"} and "Europe/London" in due[0].timezones
            assert due[0].created_at.tzinfo is not None
            later = campaigns.next_due_contacts(s, cid, utcnow() - timedelta(days=1), 10)
            assert len(later) == 2
        with db.session_scope(engine) as s:
            added, marked = campaigns.add_dnc(s, ["+447911123457"])
            assert (added, marked) == (1, 1)
        with db.session_scope(engine) as s:
            assert [c.phone for c in campaigns.next_due_contacts(s, cid, utcnow(), 10)] == ["+447911123456"]
        assert db.check_models_match_migrations() == []
    finally:
        engine.dispose()
