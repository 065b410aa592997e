"""Model updates: the update state stored with a model, update jobs among the runs, a model's last update time.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``model_state`` (one ``.npz`` blob per model and state component) and, on ``model_runs``, ``kind``
    (``build`` on the runs from before), ``model_id`` (the model an update run extends) and ``updated_at``
    (when dates were last appended to the run's model; null on the models from before)."""
    op.create_table(
        "model_state",
        sa.Column("model_id", sa.String(32), sa.ForeignKey("model_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("component", sa.String(64), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    with op.batch_alter_table("model_runs") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="build"))
        batch.add_column(sa.Column("model_id", sa.String(32)))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True)))
    op.create_index("ix_model_runs_model_id", "model_runs", ["model_id"])
    if op.get_bind().dialect.name == "postgresql":
        _compress_state()


def _compress_state() -> None:
    """lz4 for the state blobs (the eigenfactor paths' sums reach tens of MB), as for the model's blobs."""
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("ALTER TABLE model_state ALTER COLUMN data SET COMPRESSION lz4")
    except sa.exc.DBAPIError:
        bind.exec_driver_sql("ALTER TABLE model_state ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    """Delete the update runs (job records), drop the update columns and ``model_state`` (the states are lost;
    the models keep the dates appended to them)."""
    op.execute("DELETE FROM model_runs WHERE kind = 'update'")
    op.drop_index("ix_model_runs_model_id", table_name="model_runs")
    # in place (SQLite ≥ 3.35 drops a column without recreating the table, which would delete the models'
    # rows by cascade)
    for name in ("updated_at", "model_id", "kind"):
        op.drop_column("model_runs", name)
    op.drop_table("model_state")
