"""Engine and session setup, and the schema-version gate every command passes through.

SQLite is the embedded default: WAL (readers never block the writer), a 30 s busy timeout, foreign keys on, and
write transactions opened with ``BEGIN IMMEDIATE`` so two writers queue at BEGIN instead of one failing with
"database is locked" half way through a claim. PostgreSQL uses the same ``DIALER_DATABASE_URL``
(``postgresql+psycopg://...``; plain ``postgresql://`` is mapped to psycopg 3).

``open_database(url)`` is the only way commands get an engine: it creates the schema of a new database and refuses
one whose schema is behind or ahead of this dialer's migrations.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

import dialer

BUSY_TIMEOUT_MS = 30_000
PG_STATEMENT_TIMEOUT_MS = 60_000
PG_LOCK_TIMEOUT_MS = 20_000
ALEMBIC_DIR = Path(dialer.__file__).resolve().parent.parent / "alembic"
# Any constant works: it only has to be the same in every dialer process sharing a PostgreSQL database.
_PG_MIGRATION_LOCK = 7_349_011
_BEGIN_OPTION = "dialer_begin"
# Indexes with DESC columns: Alembic cannot reflect them on SQLite, so the comparison skips them and
# tests/test_db_migrations.py checks them directly.
EXPRESSION_INDEXES = frozenset({"ix_contact_due"})


class DatabaseVersionError(Exception):
    """The database schema does not match this dialer's migrations; the message says what to do."""


def normalize_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the dialer's connection rules; no schema checks (use ``open_database`` for that)."""
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        kwargs.setdefault("pool_pre_ping", True)
        if url.startswith("postgresql"):
            # Sized for the daemon's threads: 8 scheduler workers, the webhook writer, the agents' API.
            kwargs.setdefault("pool_size", 10)
            kwargs.setdefault("max_overflow", 10)
            # A stuck statement or a lock held by a stalled process must not stall the pacing tick for ever.
            connect_args = dict(kwargs.pop("connect_args", {}))
            connect_args.setdefault("options", f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}"
                                               f" -c lock_timeout={PG_LOCK_TIMEOUT_MS}")
            kwargs["connect_args"] = connect_args
        return _create_engine(url, **kwargs)

    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("timeout", BUSY_TIMEOUT_MS / 1000)
    engine = _create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from sqlite3 so our own BEGIN (below) is the only one.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "IMMEDIATE")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")

    return engine


def _create_engine(url: str, **kwargs: Any) -> Engine:
    """``sa.create_engine``, with a URL it cannot use reported as the setting it came from."""
    from dialer.settings import ConfigError

    try:
        return sa.create_engine(url, **kwargs)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError, ValueError) as exc:
        scheme = url.split(":", 1)[0] if ":" in url else url[:40]
        raise ConfigError(
            f"DIALER_DATABASE_URL: cannot use a {scheme!r} URL ({type(exc).__name__}); "
            "use sqlite:///path/to/dialer.db or postgresql://user@host/db"
        ) from None


def reader(engine: Engine) -> Engine:
    """The same engine, but its transactions start as plain (deferred) BEGIN: for read-only work, so a CLI
    listing never queues behind the daemon's write lock."""
    return engine.execution_options(**{_BEGIN_OPTION: "DEFERRED"})


@contextmanager
def session_scope(engine: Engine, *, write: bool = True) -> Iterator[Session]:
    """A session that commits when the block ends normally and rolls back on an exception."""
    session = Session(engine if write else reader(engine), expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# --- migrations -------------------------------------------------------------------------------------------


def alembic_config(url: str, connection: Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _script() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def head_revision() -> str:
    heads = _script().get_heads()
    if len(heads) != 1:  # pragma: no cover - a packaging mistake, not a user one
        raise RuntimeError(f"migrations have {len(heads)} heads: {heads}")
    return str(heads[0])


def current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    heads = MigrationContext.configure(conn).get_current_heads()
    return str(heads[0]) if heads else None


def _user_tables(conn: Connection) -> list[str]:
    return [t for t in sa.inspect(conn).get_table_names() if t != "alembic_version"]


def _known(revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return _script().get_revision(revision) is not None
    except (CommandError, KeyError, Exception):
        return False


def schema_status(conn: Connection) -> tuple[str, str | None]:
    """("new" | "current" | "behind" | "ahead" | "foreign", current revision)."""
    rev = current_revision(conn)
    if rev is None:
        return ("foreign" if _user_tables(conn) else "new"), None
    if rev == head_revision():
        return "current", rev
    return ("behind" if _known(rev) else "ahead"), rev


def _lock_for_migration(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Runs pending migrations in one transaction; returns (revision before, revision after)."""
    from alembic import command

    with engine.begin() as conn:
        _lock_for_migration(conn)
        before = current_revision(conn)
        if before is not None and not _known(before):
            raise DatabaseVersionError(_ahead_message(before))
        command.upgrade(alembic_config(str(engine.url), conn), revision)
        after = current_revision(conn)
    return before, after or ""


def _ahead_message(rev: str) -> str:
    return (
        f"the database schema is at revision {rev}, which this dialer does not know: it was written by a newer "
        f"dialer (this one's newest is {head_revision()}). Upgrade dialer, or use another database."
    )


def check_schema(engine: Engine) -> str:
    """Creates a new database's schema; returns the revision; raises DatabaseVersionError otherwise."""
    with reader(engine).connect() as conn:
        status, rev = schema_status(conn)
    if status == "new":
        # Re-check under the write lock: two commands may race to create the same new database.
        with engine.begin() as conn:
            _lock_for_migration(conn)
            status, rev = schema_status(conn)
            if status == "new":
                from alembic import command

                command.upgrade(alembic_config(str(engine.url), conn), "head")
                return head_revision()
    if status == "current":
        return str(rev)
    if status == "behind":
        raise DatabaseVersionError(
            f"the database schema is at revision {rev} but this dialer needs {head_revision()}: "
            "run `dialer db upgrade` (back up the database first)."
        )
    if status == "ahead":
        raise DatabaseVersionError(_ahead_message(str(rev)))
    raise DatabaseVersionError(
        "the database has tables but no dialer schema version: it is not a dialer database "
        "(set DIALER_DATABASE_URL to another database)."
    )


def open_database(url: str, **kwargs: Any) -> Engine:
    """The engine for ``url``, with its schema created (new database) or verified (existing one)."""
    engine = make_engine(url, **kwargs)
    try:
        check_schema(engine)
    except DatabaseVersionError:
        engine.dispose()
        raise
    except sa.exc.OperationalError as exc:
        engine.dispose()
        fallback = _read_only(url, **kwargs)
        if fallback is not None:
            return fallback
        raise DatabaseVersionError(f"cannot open the database {_safe_url(url)}: {exc.orig}") from None
    return engine


def _read_only(url: str, **kwargs: Any) -> Engine | None:
    """A read-only engine for a SQLite file this user cannot write (a read-only mount, a backup), or None.

    Read-only commands (report, status) must work on it. A WAL database whose directory is read-only cannot be
    opened at all unless SQLite is told it is ``immutable``; that is tried last, after ``mode=ro`` (which still
    sees a running writer's WAL when its -shm file exists). Writes on the engine fail as "readonly database"."""
    import os

    path = sa.engine.make_url(normalize_url(url)).database if url.startswith("sqlite") else None
    if not path or path == ":memory:" or not os.path.isfile(path):
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if os.access(path, os.W_OK) and os.access(folder, os.W_OK):
        return None
    for mode in ("ro", "ro&immutable=1"):
        engine = make_engine(f"sqlite:///file:{os.path.abspath(path)}?mode={mode}&uri=true", **kwargs)
        try:
            check_schema(engine)
        except (sa.exc.OperationalError, DatabaseVersionError):
            engine.dispose()
            continue
        logging.getLogger("dialer.db").info("database opened read-only (%s): %s", mode, path)
        return engine
    return None


def _safe_url(url: str) -> str:
    try:
        return sa.engine.make_url(normalize_url(url)).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic ``include_object`` hook shared by env.py and the check."""
    return not (type_ == "index" and name in EXPRESSION_INDEXES)


def check_models_match_migrations() -> list[str]:
    """Differences between the models and the migrations at head (empty list: they agree).

    The project's ``alembic check``: build a scratch SQLite database from the migrations, then let Alembic's
    autogenerate compare it with ``SQLModel.metadata``.
    """
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    import dialer.models  # noqa: F401  (registers the tables)

    quiet = logging.getLogger("alembic")
    level = quiet.level
    # Alembic warns that it cannot compare DESC indexes; include_object already leaves them out.
    quiet.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'check.db'}")
        try:
            upgrade(engine)
            with engine.connect() as conn:
                ctx = MigrationContext.configure(
                    conn,
                    opts={"compare_type": True, "render_as_batch": True, "include_object": include_object},
                )
                diffs = compare_metadata(ctx, SQLModel.metadata)
        finally:
            engine.dispose()
            quiet.setLevel(level)
    return [repr(d) for d in diffs]
