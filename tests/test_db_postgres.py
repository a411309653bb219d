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
        assert "priority DESC" in idx[0] and "NULLS FIRST, id)" in idx[0] and "WHERE" in idx[1]

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

        # A big load leaves the table analysed: the planner knows its size before autovacuum comes round.
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'contact'"
                                        ).scalar() is None
        big = tmp_path / "big.csv"
        big.write_text("phone\n" + "".join(f"+44207946{i:04d}\n" for i in range(loader.ANALYZE_AFTER_ROWS)))
        assert loader.load_file(engine, big, "pg").loaded == loader.ANALYZE_AFTER_ROWS
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'contact'"
                                        ).scalar() is not None
    finally:
        engine.dispose()


def test_postgres_due_query_reads_the_index_in_order_without_sorting(pg_url: str) -> None:
    """The due query's order (priority DESC, next attempt NULLS FIRST, id) is the index's own on PostgreSQL
    (migration 0008): the tick reads `limit` rows off the index instead of sorting every due contact."""
    engine = db.open_database(pg_url)
    try:
        with db.session_scope(engine) as s:
            camp = campaigns.create_campaign(s, "big", "100", region="GB")
            cid = camp.id
        now = utcnow()
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO contact (campaign_id, phone, fields, timezones, state, priority, attempts, created_at,"
                " updated_at, next_attempt_at) SELECT :c, '+4420' || lpad(g::text, 8, '0'), '{}', '[]',"
                " CASE WHEN g % 3 = 0 THEN 'retry' ELSE 'pending' END, g % 4, 0, :t, :t,"
                " CASE WHEN g % 3 = 0 THEN CAST(:t AS timestamptz) - interval '1 minute' END"
                " FROM generate_series(1, 20000) g"), {"c": cid, "t": now})
            conn.exec_driver_sql("ANALYZE contact")
        seen: list[tuple[str, object]] = []

        def grab(_conn: object, _cur: object, statement: str, params: object, _ctx: object, _many: bool) -> None:
            if "FROM contact" in statement:
                seen.append((statement, params))

        sa.event.listen(engine, "before_cursor_execute", grab)
        try:
            with db.session_scope(engine, write=False) as s:
                got = campaigns.next_due_contacts(s, cid or 0, now, 10)
        finally:
            sa.event.remove(engine, "before_cursor_execute", grab)
        assert len(got) == 10 and all(c.priority == 3 for c in got)
        statement, params = seen[-1]
        with engine.connect() as conn:
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, params))  # type: ignore[arg-type]
        # Each due state is an ordered index range cut at `limit`; only their merge (2 x 10 rows) is sorted.
        assert plan.count("Index Scan using ix_contact_due") == 2 and plan.count("Sort Key") == 1, plan
    finally:
        engine.dispose()
