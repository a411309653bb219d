"""why a campaign is (not) dialling, and each contact's source file

Adds the campaign's current dial reason (code, detail, until, since), written by the engine when it changes and
shown by `dialer status` and /metrics, and the name of the file each contact was loaded from (for
`dialer campaign remove --source`). Contacts loaded before this revision have no source file.

Revision ID: 0003_dial_reason
Revises: 0002_number_lock
Create Date: 2026-11-29

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0003_dial_reason"
down_revision: str | None = "0002_number_lock"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dial_reason", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(
            sa.Column("dial_reason_detail", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )
        batch_op.add_column(sa.Column("dial_reason_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("dial_reason_since", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_file", sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.drop_column("source_file")
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_column("dial_reason_since")
        batch_op.drop_column("dial_reason_until")
        batch_op.drop_column("dial_reason_detail")
        batch_op.drop_column("dial_reason")
