"""initial schema

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-26

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "campaign",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("from_number", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("sip", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("agents", sa.Integer(), nullable=False),
        sa.Column("agent_extensions", sa.JSON(), nullable=False),
        sa.Column("pacing", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("abandon_target", sa.Float(), nullable=False),
        sa.Column("abandon_window", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("retry_busy_s", sa.Integer(), nullable=False),
        sa.Column("retry_no_answer_s", sa.Integer(), nullable=False),
        sa.Column("retry_failed_s", sa.Integer(), nullable=False),
        sa.Column("retry_abandoned_s", sa.Integer(), nullable=False),
        sa.Column("window_start", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("window_end", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("weekdays", sa.JSON(), nullable=False),
        sa.Column("holidays", sa.JSON(), nullable=False),
        sa.Column("default_region", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("timezone", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("abandon_action", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("pause_reason", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign")),
        sa.UniqueConstraint("name", name=op.f("uq_campaign_name")),
    )
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaign_state"), ["state"], unique=False)

    op.create_table(
        "key_value",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_key_value")),
    )
    op.create_table(
        "webhook_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("pbx_call_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("dedup_key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("signature_ok", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_event")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_webhook_event_dedup_key")),
    )
    with op.batch_alter_table("webhook_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhook_event_event"), ["event"], unique=False)
        batch_op.create_index(batch_op.f("ix_webhook_event_pbx_call_id"), ["pbx_call_id"], unique=False)

    op.create_table(
        "contact",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("phone", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("timezones", sa.JSON(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_disposition", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("source_line", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaign.id"], name=op.f("fk_contact_campaign_id_campaign"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact")),
        sa.UniqueConstraint("campaign_id", "phone", name=op.f("uq_contact_campaign_id_phone")),
    )
    with op.batch_alter_table("contact", schema=None) as batch_op:
        # Autogenerate cannot compare expression indexes on SQLite, so this one is written by hand (see models.py).
        batch_op.create_index(
            "ix_contact_due",
            ["campaign_id", "state", sa.text("priority DESC"), "next_attempt_at"],
            unique=False,
        )

    op.create_table(
        "dnc_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("phone", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
            name=op.f("fk_dnc_entry_campaign_id_campaign"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dnc_entry")),
        sa.UniqueConstraint("phone", "campaign_id", name=op.f("uq_dnc_entry_phone_campaign_id")),
    )
    op.create_table(
        "event_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("level", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("message", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
            name=op.f("fk_event_log_campaign_id_campaign"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_log")),
    )
    with op.batch_alter_table("event_log", schema=None) as batch_op:
        batch_op.create_index("ix_event_log_campaign_at", ["campaign_id", "at"], unique=False)

    op.create_table(
        "attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("phone", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("disposition", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("answered", sa.Boolean(), nullable=True),
        sa.Column("connected", sa.Boolean(), nullable=True),
        sa.Column("abandoned", sa.Boolean(), nullable=True),
        sa.Column("agent", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("ring_seconds", sa.Float(), nullable=True),
        sa.Column("talk_seconds", sa.Float(), nullable=True),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("pbx_call_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("live", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaign.id"], name=op.f("fk_attempt_campaign_id_campaign"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contact.id"], name=op.f("fk_attempt_contact_id_contact"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempt")),
    )
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.create_index("ix_attempt_campaign_state", ["campaign_id", "state"], unique=False)
        batch_op.create_index(batch_op.f("ix_attempt_contact_id"), ["contact_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_attempt_pbx_call_id"), ["pbx_call_id"], unique=False)
        batch_op.create_index("ix_attempt_phone_created", ["phone", "created_at"], unique=False)
        batch_op.create_index(
            "uq_attempt_live_contact",
            ["contact_id"],
            unique=True,
            sqlite_where=sa.text("state IN ('placing', 'placed', 'uncertain')"),
            postgresql_where=sa.text("state IN ('placing', 'placed', 'uncertain')"),
        )

    op.create_table(
        "stat_row",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("row_key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("callstart", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pbx_call_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("clid", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("destination", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("disposition", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("seconds", sa.Integer(), nullable=True),
        sa.Column("sip", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("raw", sa.JSON(), nullable=False),
        sa.Column("attempt_id", sa.Integer(), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["attempt_id"], ["attempt.id"], name=op.f("fk_stat_row_attempt_id_attempt"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stat_row")),
        sa.UniqueConstraint("source", "row_key", name=op.f("uq_stat_row_source_row_key")),
    )
    with op.batch_alter_table("stat_row", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stat_row_attempt_id"), ["attempt_id"], unique=False)
        batch_op.create_index("ix_stat_row_callstart", ["callstart"], unique=False)
        batch_op.create_index(batch_op.f("ix_stat_row_destination"), ["destination"], unique=False)
        batch_op.create_index(batch_op.f("ix_stat_row_pbx_call_id"), ["pbx_call_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("stat_row", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stat_row_pbx_call_id"))
        batch_op.drop_index(batch_op.f("ix_stat_row_destination"))
        batch_op.drop_index("ix_stat_row_callstart")
        batch_op.drop_index(batch_op.f("ix_stat_row_attempt_id"))

    op.drop_table("stat_row")
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_attempt_live_contact",
            sqlite_where=sa.text("state IN ('placing', 'placed', 'uncertain')"),
            postgresql_where=sa.text("state IN ('placing', 'placed', 'uncertain')"),
        )
        batch_op.drop_index("ix_attempt_phone_created")
        batch_op.drop_index(batch_op.f("ix_attempt_pbx_call_id"))
        batch_op.drop_index(batch_op.f("ix_attempt_contact_id"))
        batch_op.drop_index("ix_attempt_campaign_state")

    op.drop_table("attempt")
    with op.batch_alter_table("event_log", schema=None) as batch_op:
        batch_op.drop_index("ix_event_log_campaign_at")

    op.drop_table("event_log")
    op.drop_table("dnc_entry")
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_due")

    op.drop_table("contact")
    with op.batch_alter_table("webhook_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_event_pbx_call_id"))
        batch_op.drop_index(batch_op.f("ix_webhook_event_event"))

    op.drop_table("webhook_event")
    op.drop_table("key_value")
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaign_state"))

    op.drop_table("campaign")
