"""Throwaway PostgreSQL databases on the server at 127.0.0.1:5432 (trust auth): one per test, dropped after it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

ADMIN_URLS = (
    "postgresql+psycopg://root@127.0.0.1:5432/test",
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
)


def admin_engine() -> sa.Engine | None:
    """An AUTOCOMMIT engine on the server's ``test`` database, or None when no server answers."""
    for url in ADMIN_URLS:
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return engine
        except Exception:
            engine.dispose()
    return None


def create_database(admin: sa.Engine) -> str:
    """A new empty database; returns its URL in the form a user writes (``postgresql://``)."""
    name = f"dialer_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    return admin.url.set(database=name).render_as_string(hide_password=False).replace("+psycopg", "")


def drop_database(admin: sa.Engine, url: str) -> None:
    name = sa.engine.make_url(url).database
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def bench_database(engine: str, folder: Path) -> Iterator[str]:
    """A database URL for a benchmark: a SQLite file in ``folder``, or a throwaway PostgreSQL database."""
    if engine == "sqlite":
        yield f"sqlite:///{folder / 'bench.db'}"
        return
    admin = admin_engine()
    if admin is None:
        raise SystemExit("no PostgreSQL server at 127.0.0.1:5432")
    url = create_database(admin)
    try:
        yield url
    finally:
        drop_database(admin, url)
        admin.dispose()
