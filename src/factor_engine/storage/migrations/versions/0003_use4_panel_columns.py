"""The panel keeps the USE4 columns of the data contract: trading (liquidity) and fundamentals (earnings yield,
growth, leverage, dividend yield).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The columns as this revision added them (not imported from the package: a migration is frozen in time).
COLUMNS = (
    "volume",
    "shares_outstanding",
    "turnover",
    "earnings_price",
    "forecast_earnings_price",
    "dividend_yield",
    "earnings_growth",
    "sales_growth",
    "forecast_growth",
    "market_leverage",
    "book_leverage",
    "debt_to_assets",
)


def upgrade() -> None:
    """Add the nullable float64 columns to ``panel`` (null on the stored rows; no table rewrite on PostgreSQL
    or SQLite: both add a nullable column without a default in place)."""
    with op.batch_alter_table("panel") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Float(53)))


def downgrade() -> None:
    """Drop the USE4 columns (their values are lost; the rest of each row is kept)."""
    with op.batch_alter_table("panel") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
