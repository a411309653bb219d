"""`dialer db` commands: schema upgrades and checks, and the `open_db` every database command uses.

SQLAlchemy, Alembic and the settings are imported inside the functions: other commands import this module
for `open_db`, and `dialer --help` must not pay for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from dialer.commands.common import EXIT_ERROR, fail, print_json

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

app = typer.Typer(help="The database: upgrade its schema, show its version, check models against migrations.\n\n"
                  "Example: dialer db upgrade",
                  no_args_is_help=True)  # fmt: skip

EXIT_SCHEMA = 6


def database_url() -> str:
    from dialer.settings import load_settings

    return load_settings().database_url


def open_db() -> Engine:
    """The engine every command uses: creates a new database, refuses one that is behind or ahead (exit 6)."""
    from dialer import db

    try:
        return db.open_database(database_url())
    except db.DatabaseVersionError as exc:
        fail(str(exc), EXIT_SCHEMA)


@app.command("upgrade")
def upgrade(revision: str = typer.Argument("head", help="Target revision (default: the newest).")) -> None:
    """Bring the database schema up to date (back up the database first).

    Example: DIALER_DATABASE_URL=sqlite:///dialer.db dialer db upgrade
    """
    from dialer import db

    engine = db.make_engine(database_url())
    try:
        before, after = db.upgrade(engine, revision)
    except db.DatabaseVersionError as exc:
        fail(str(exc), EXIT_SCHEMA)
    except Exception as exc:
        fail(f"upgrade failed: {exc}", EXIT_ERROR)
    finally:
        engine.dispose()
    if before == after:
        typer.echo(f"Database already at {after}.")
    else:
        typer.echo(f"Upgraded database from {before or '(empty)'} to {after}.")


@app.command("current")
def current(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the database's schema revision and whether it matches this dialer.

    Example: dialer db current --json
    """
    from dialer import db

    engine = db.make_engine(database_url())
    try:
        with db.reader(engine).connect() as conn:
            status, rev = db.schema_status(conn)
    except Exception as exc:
        fail(f"cannot read the database: {exc}", EXIT_ERROR)
    finally:
        engine.dispose()
    head = db.head_revision()
    if json_out:
        print_json({"revision": rev, "head": head, "status": status})
    else:
        notes = {
            "new": "empty database; it is created on first use",
            "current": "up to date",
            "behind": "run `dialer db upgrade`",
            "ahead": "written by a newer dialer",
            "foreign": "not a dialer database",
        }
        typer.echo(f"{rev or '(none)'} (head {head}): {notes[status]}")
    if status in ("behind", "ahead", "foreign"):
        raise typer.Exit(EXIT_SCHEMA)


@app.command("check")
def check() -> None:
    """Check that the models and the migrations agree (the project's `alembic check`); exit 1 if not.

    Example: dialer db check
    """
    from dialer import db

    diffs = db.check_models_match_migrations()
    if diffs:
        typer.echo("Models and migrations differ; write a migration "
                   "(alembic revision --autogenerate -m '...'):", err=True)  # fmt: skip
        for d in diffs:
            typer.echo(f"  {d}", err=True)
        raise typer.Exit(EXIT_ERROR)
    typer.echo(f"Models and migrations agree (head {db.head_revision()}).")
