"""webhook refold: an event that could not be folded when it arrived is marked, and folded again later

Adds ``webhook_event.fold_error`` (why folding failed; NULL once folded) and ``fold_tries``, with a partial index
over the unfolded events so the daemon finds them without scanning every event. Existing events count as folded.

Revision ID: 0007_webhook_refold
Revises: 0006_web_users
Create Date: 2026-11-29

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0007_webhook_refold"
down_revision: str | None = "0006_web_users"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNFOLDED = "fold_error IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("webhook_event") as batch:
        batch.add_column(sa.Column("fold_error", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.add_column(sa.Column("fold_tries", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_webhook_event_unfolded", "webhook_event", ["id"], unique=False,
                    sqlite_where=sa.text(_UNFOLDED), postgresql_where=sa.text(_UNFOLDED))


def downgrade() -> None:
    op.drop_index("ix_webhook_event_unfolded", table_name="webhook_event")
    with op.batch_alter_table("webhook_event") as batch:
        batch.drop_column("fold_tries")
        batch.drop_column("fold_error")
