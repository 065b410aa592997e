"""Run leases: the worker that holds a queued or running build and until when (see ModelStore.renew_leases).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``worker`` and ``lease_expires_at`` to ``model_runs`` (null on runs from before: no lease)."""
    with op.batch_alter_table("model_runs") as batch:
        batch.add_column(sa.Column("worker", sa.String(128)))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    """Drop the lease columns."""
    with op.batch_alter_table("model_runs") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("worker")
