"""web users: the people who log in to the web console with a password (supervisors)

Adds ``web_user`` (name, role, the scrypt hash of the password, when it was made and disabled). Existing data is
untouched: nobody has a console login until `dialer user add` makes one.

Revision ID: 0006_web_users
Revises: 0005_agent_api
Create Date: 2026-12-05

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0006_web_users"
down_revision: str | None = "0005_agent_api"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text() -> sa.types.TypeEngine[str]:
    return sqlmodel.sql.sqltypes.AutoString()


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "web_user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", _text(), nullable=False),
        sa.Column("role", _text(), nullable=False),
        sa.Column("password_hash", _text(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("disabled_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_user")),
        sa.UniqueConstraint("name", name=op.f("uq_web_user_name")),
    )


def downgrade() -> None:
    op.drop_table("web_user")
