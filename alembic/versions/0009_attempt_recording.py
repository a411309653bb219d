"""attempt recording: the call's recording as NOTIFY_RECORD names it

Adds ``attempt.recording``: the ``call_id_with_rec`` of the call's recorded leg (``/v1/pbx/record/request/`` turns it
into a download link), so the report can show which calls have a recording. NULL for calls not recorded.

Revision ID: 0009_attempt_recording
Revises: 0008_pg_due_order
Create Date: 2026-11-29

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0009_attempt_recording"
down_revision: str | None = "0008_pg_due_order"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("attempt") as batch:
        batch.add_column(sa.Column("recording", sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempt") as batch:
        batch.drop_column("recording")
