"""one live call per phone number, across campaigns

Replaces the per-contact live-attempt index with one per number: the same number loaded into two campaigns
could be rung by both at once. (One Zadarma account per database today; with several accounts the key
becomes (account, phone).)

Revision ID: 0002_number_lock
Revises: 0001_initial
Create Date: 2026-11-29

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002_number_lock"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out, not imported: a revision must keep meaning what it meant when it was written.
LIVE = "state IN ('placing', 'placed', 'uncertain')"


def upgrade() -> None:
    _refuse_numbers_in_two_live_calls()
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.create_index(
            "uq_attempt_live_phone",
            ["phone"],
            unique=True,
            sqlite_where=sa.text(LIVE),
            postgresql_where=sa.text(LIVE),
        )
        batch_op.drop_index(
            "uq_attempt_live_contact",
            sqlite_where=sa.text(LIVE),
            postgresql_where=sa.text(LIVE),
        )


def downgrade() -> None:
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.create_index(
            "uq_attempt_live_contact",
            ["contact_id"],
            unique=True,
            sqlite_where=sa.text(LIVE),
            postgresql_where=sa.text(LIVE),
        )
        batch_op.drop_index(
            "uq_attempt_live_phone",
            sqlite_where=sa.text(LIVE),
            postgresql_where=sa.text(LIVE),
        )


def _refuse_numbers_in_two_live_calls() -> None:
    """A database written before this revision may hold a number in two live attempts (the bug this fixes).
    Deciding which of them is the real call is reconciliation's job, not a migration's: say so and change
    nothing (the upgrade is one transaction)."""
    rows = (
        op.get_bind()
        .execute(sa.text(f"SELECT phone, COUNT(*) FROM attempt WHERE {LIVE} GROUP BY phone HAVING COUNT(*) > 1"))
        .all()
    )
    if rows:
        example = ", ".join(str(r[0]) for r in rows[:3])
        raise RuntimeError(
            f"{len(rows)} numbers are in more than one live call attempt (e.g. {example}), so the one-live-call-"
            "per-number index cannot be built. Let those calls settle first: with the dialer version that wrote "
            "this database, run `dialer reconcile` until they are completed, then run `dialer db upgrade` again."
        )
