"""Alembic environment for the dialer.

Used three ways: by `dialer db ...` and `open_database` (which pass an open connection in
``config.attributes["connection"]``), and by the `alembic` command line (URL from DIALER_DATABASE_URL).
"""

from __future__ import annotations

import os
from typing import Any

from sqlmodel import SQLModel

import dialer.models
from alembic import context
from dialer.db import include_object, make_engine, normalize_url

config = context.config
target_metadata = SQLModel.metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    # Revisions must not import dialer.models (it changes over time): render our column type as what it stores.
    if type_ == "type" and isinstance(obj, dialer.models.UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        render_item=render_item,
        include_object=include_object,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    return normalize_url(
        os.environ.get("DIALER_DATABASE_URL") or config.get_main_option("sqlalchemy.url") or ""
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    try:
        with engine.begin() as conn:
            _configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
