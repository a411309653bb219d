"""agent API: session tokens of the agents' HTTP API, and a campaign's call script

Adds ``agent_token`` (one row per API session: the SHA-256 of a random token, never the token itself, when it
expires and when it was revoked) and ``campaign.script`` (the text an agent reads to the customer, shown with the
contact's record). Existing data is untouched: no agent has a token yet and no campaign a script.

Revision ID: 0005_agent_api
Revises: 0004_agents
Create Date: 2026-12-03

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0005_agent_api"
down_revision: str | None = "0004_agents"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text() -> sa.types.TypeEngine[str]:
    return sqlmodel.sql.sqltypes.AutoString()


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agent_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", _text(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("expires_at", _time(), nullable=False),
        sa.Column("revoked_at", _time(), nullable=True),
        sa.Column("client", _text(), nullable=True),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], name=op.f("fk_agent_token_agent_id_agent"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_agent_token_token_hash")),
    )
    with op.batch_alter_table("agent_token", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agent_token_agent_id"), ["agent_id"], unique=False)
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.add_column(sa.Column("script", _text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_column("script")
    op.drop_table("agent_token")
