"""agents: accounts, sessions and their state events, pause codes, dispositions, scheduled callbacks

Adds the people in the loop (issue 14): ``agent`` (login, name, PBX extension, hashed PIN, current session state),
``agent_campaign`` (which campaigns each works), ``agent_event`` (every state change, for exact time in state),
per-campaign ``pause_code`` and ``disposition_code`` lists (a campaign without rows uses the defaults),
``callback`` (scheduled callbacks), the attempt's agent and the agent's disposition and note, and the campaign's
wrap-up limit ``wrapup_s`` (60 s for existing campaigns). Existing data is untouched: no campaign has agents yet,
so every campaign keeps pacing for its configured agent count.

Revision ID: 0004_agents
Revises: 0003_dial_reason
Create Date: 2026-12-02

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0004_agents"
down_revision: str | None = "0003_dial_reason"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out, not imported: a revision must keep meaning what it meant when it was written.
ACTIVE_AGENT = "removed_at IS NULL"


def _text() -> sa.types.TypeEngine[str]:
    return sqlmodel.sql.sqltypes.AutoString()


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("login", _text(), nullable=False),
        sa.Column("name", _text(), nullable=False),
        sa.Column("extension", _text(), nullable=False),
        sa.Column("pin_hash", _text(), nullable=False),
        sa.Column("state", _text(), nullable=False),
        sa.Column("pause_code", _text(), nullable=True),
        sa.Column("state_since", _time(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("attempt_id", sa.Integer(), nullable=True),
        sa.Column("wrapup_until", _time(), nullable=True),
        sa.Column("pending_state", _text(), nullable=True),
        sa.Column("pending_code", _text(), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.Column("removed_at", _time(), nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], name=op.f("fk_agent_campaign_id_campaign"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent")),
    )
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agent_extension"), ["extension"], unique=False)
        batch_op.create_index("uq_agent_login", ["login"], unique=True, sqlite_where=sa.text(ACTIVE_AGENT),
                              postgresql_where=sa.text(ACTIVE_AGENT))

    op.create_table(
        "disposition_code",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("code", _text(), nullable=False),
        sa.Column("label", _text(), nullable=False),
        sa.Column("hotkey", sa.Integer(), nullable=False),
        sa.Column("meaning", _text(), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"],
                                name=op.f("fk_disposition_code_campaign_id_campaign"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disposition_code")),
        sa.UniqueConstraint("campaign_id", "code", name=op.f("uq_disposition_code_campaign_id_code")),
        sa.UniqueConstraint("campaign_id", "hotkey", name=op.f("uq_disposition_code_campaign_id_hotkey")),
    )
    op.create_table(
        "pause_code",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("code", _text(), nullable=False),
        sa.Column("label", _text(), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], name=op.f("fk_pause_code_campaign_id_campaign"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pause_code")),
        sa.UniqueConstraint("campaign_id", "code", name=op.f("uq_pause_code_campaign_id_code")),
    )
    op.create_table(
        "agent_campaign",
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], name=op.f("fk_agent_campaign_agent_id_agent"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"],
                                name=op.f("fk_agent_campaign_campaign_id_campaign"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("agent_id", "campaign_id", name=op.f("pk_agent_campaign")),
    )
    with op.batch_alter_table("agent_campaign", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agent_campaign_campaign_id"), ["campaign_id"], unique=False)

    op.create_table(
        "agent_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("at", _time(), nullable=False),
        sa.Column("from_state", _text(), nullable=False),
        sa.Column("to_state", _text(), nullable=False),
        sa.Column("pause_code", _text(), nullable=True),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("attempt_id", sa.Integer(), nullable=True),
        sa.Column("reason", _text(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], name=op.f("fk_agent_event_agent_id_agent"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["attempt_id"], ["attempt.id"], name=op.f("fk_agent_event_attempt_id_attempt"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], name=op.f("fk_agent_event_campaign_id_campaign"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_event")),
    )
    with op.batch_alter_table("agent_event", schema=None) as batch_op:
        batch_op.create_index("ix_agent_event_agent_at", ["agent_id", "at"], unique=False)
        batch_op.create_index(batch_op.f("ix_agent_event_at"), ["at"], unique=False)

    op.create_table(
        "callback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("due_at", _time(), nullable=False),
        sa.Column("next_try_at", _time(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        sa.Column("state", _text(), nullable=False),
        sa.Column("from_attempt_id", sa.Integer(), nullable=True),
        sa.Column("attempt_id", sa.Integer(), nullable=True),
        sa.Column("note", _text(), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], name=op.f("fk_callback_agent_id_agent"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["attempt_id"], ["attempt.id"], name=op.f("fk_callback_attempt_id_attempt"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], name=op.f("fk_callback_campaign_id_campaign"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["contact_id"], ["contact.id"], name=op.f("fk_callback_contact_id_contact"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["from_attempt_id"], ["attempt.id"],
                                name=op.f("fk_callback_from_attempt_id_attempt"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback")),
    )
    with op.batch_alter_table("callback", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_callback_agent_id"), ["agent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_callback_attempt_id"), ["attempt_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_callback_contact_id"), ["contact_id"], unique=False)
        batch_op.create_index("ix_callback_due", ["campaign_id", "state", "next_try_at"], unique=False)

    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("agent_disposition", _text(), nullable=True))
        batch_op.add_column(sa.Column("agent_note", _text(), nullable=True))
        batch_op.add_column(sa.Column("disposition_at", _time(), nullable=True))
        batch_op.create_index(batch_op.f("ix_attempt_agent_id"), ["agent_id"], unique=False)
        batch_op.create_foreign_key(batch_op.f("fk_attempt_agent_id_agent"), "agent", ["agent_id"], ["id"],
                                    ondelete="SET NULL")

    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wrapup_s", sa.Integer(), server_default="60", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_column("wrapup_s")
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_attempt_agent_id_agent"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_attempt_agent_id"))
        batch_op.drop_column("disposition_at")
        batch_op.drop_column("agent_note")
        batch_op.drop_column("agent_disposition")
        batch_op.drop_column("agent_id")
    op.drop_table("callback")
    op.drop_table("agent_event")
    op.drop_table("agent_campaign")
    op.drop_table("pause_code")
    op.drop_table("disposition_code")
    op.drop_table("agent")
