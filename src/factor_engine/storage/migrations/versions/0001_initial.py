"""The initial tables: panel, model_runs and the model tables (see factor_engine.storage.tables).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _model_id() -> sa.Column[str]:
    return sa.Column("model_id", sa.String(32), sa.ForeignKey("model_runs.id", ondelete="CASCADE"), primary_key=True)


def upgrade() -> None:
    """Create every table; on PostgreSQL the big blob columns are compressed with lz4."""
    op.create_table(
        "panel",
        sa.Column("date", sa.Date, primary_key=True),
        sa.Column("symbol", sa.String, primary_key=True),
        sa.Column("asset_returns", sa.Float(53)),
        sa.Column("market_cap", sa.Float(53)),
        sa.Column("sector", sa.String),
        sa.Column("book_price", sa.Float(53)),
        sa.Column("sales_price", sa.Float(53)),
        sa.Column("cf_price", sa.Float(53)),
    )
    op.create_table(
        "model_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("stage", sa.String),
        sa.Column("progress", sa.Float(53), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("timings", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("model_meta", sa.JSON),
        sa.Column("forecast_dates", sa.LargeBinary),
    )
    op.create_index("ix_model_runs_status", "model_runs", ["status"])
    op.create_index("ix_model_runs_created_at", "model_runs", ["created_at"])
    op.create_table(
        "model_symbols",
        _model_id(),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("symbol", sa.String, nullable=False),
    )
    op.create_table(
        "model_factor_returns",
        _model_id(),
        sa.Column("date", sa.Date, primary_key=True),
        sa.Column("factor", sa.String, primary_key=True),
        sa.Column("value", sa.Float(53)),
    )
    op.create_table(
        "model_covariances",
        _model_id(),
        sa.Column("date", sa.Date, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    for name in ("model_exposures", "model_specific_risk", "model_residuals"):
        op.create_table(
            name,
            _model_id(),
            sa.Column("date", sa.Date, primary_key=True),
            sa.Column("positions", sa.LargeBinary, nullable=False),
            sa.Column("data", sa.LargeBinary, nullable=False),
        )
    op.create_table("model_diagnostics", _model_id(), sa.Column("data", sa.LargeBinary, nullable=False))
    if op.get_bind().dialect.name == "postgresql":
        _compress_blobs()


def _compress_blobs() -> None:
    """lz4 for the big blobs: as fast to write as no compression (measured: 4.4 s for 2,247 × 360 kB exposure
    blobs either way, 11.6 s with the default pglz) and 3.3× smaller; uncompressed storage where the server
    lacks lz4."""
    bind = op.get_bind()
    for name in ("model_exposures", "model_specific_risk", "model_residuals"):
        try:
            with bind.begin_nested():
                bind.exec_driver_sql(f"ALTER TABLE {name} ALTER COLUMN data SET COMPRESSION lz4")
        except sa.exc.DBAPIError:
            bind.exec_driver_sql(f"ALTER TABLE {name} ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    """Drop every table."""
    for name in (
        "model_diagnostics",
        "model_residuals",
        "model_specific_risk",
        "model_exposures",
        "model_covariances",
        "model_factor_returns",
        "model_symbols",
        "model_runs",
        "panel",
    ):
        op.drop_table(name)
