"""Shared by the store, service and CLI tests: a synthetic panel with every USE4 input, the frame a store load
gives back for given rows, and an isolated database migrated to a given Alembic revision."""

from __future__ import annotations

import functools

import polars as pl
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from db_fixtures import IsolatedDatabase
from factor_engine.panel import OPTIONAL_COLUMNS, validate_panel
from factor_engine.storage import resolve_database_url
from factor_engine.storage.database import MIGRATIONS, create_store_engine
from factor_engine.synthetic import generate_market

#: The synthetic styles whose characteristics give a panel every USE4 input (liquidity's from volume and
#: shares outstanding: the generator writes no turnover column).
USE4_MARKET_STYLES: tuple[str, ...] = (
    "momentum",
    "value",
    "size",
    "beta",
    "liquidity",
    "earnings_yield",
    "growth",
    "leverage",
    "dividend_yield",
)


@functools.cache
def use4_panel(n_assets: int, n_dates: int, seed: int) -> pl.DataFrame:
    """A validated synthetic panel with the USE4 trading and fundamental columns (cached: frames are immutable)."""
    return validate_panel(generate_market(n_assets, n_dates, seed=seed, styles=USE4_MARKET_STYLES).panel)


def as_loaded(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` as a store load gives it back: without the optional columns none of its rows fills."""
    return frame.select(
        c for c in frame.columns if c not in OPTIONAL_COLUMNS or frame.get_column(c).null_count() < frame.height
    )


def migrate_to(database: IsolatedDatabase, revision: str, *, down: bool = False) -> sa.Engine:
    """The isolated database migrated up (or down) to ``revision``; the engine is the caller's to dispose."""
    engine = create_store_engine(resolve_database_url(database.url), database.schema)
    with engine.begin() as connection:
        if database.schema is not None:
            connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{database.schema}"')
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        config.attributes["schema"] = database.schema
        (command.downgrade if down else command.upgrade)(config, revision)
    return engine
