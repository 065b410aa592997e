"""The store keeps every column of the data contract (USE4 trading and fundamental columns included) on SQLite
and PostgreSQL: exact round trips, loads that leave out the columns no selected row fills, extents that agree
with the loaded rows, deletes, and the migration that added the columns."""

from __future__ import annotations

import datetime

import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa
from polars.testing import assert_frame_equal

from db_fixtures import IsolatedDatabase
from factor_engine.panel import FUNDAMENTAL_COLUMNS, OPTIONAL_COLUMNS, TRADING_COLUMNS
from factor_engine.service.builds import frame_extent
from factor_engine.storage import Store, connect
from factor_engine.storage.panel_store import PANEL_COLUMNS
from stored_panels import as_loaded, migrate_to
from stored_panels import use4_panel as make_use4_panel

USE4_COLUMNS = (*TRADING_COLUMNS, *FUNDAMENTAL_COLUMNS)


@pytest.fixture(scope="module")
def use4_panel() -> pl.DataFrame:
    """200 assets × 300 days with every USE4 input (turnover aside: liquidity reads volume and shares)."""
    return make_use4_panel(200, 300, seed=1)


def test_the_table_keeps_every_contract_column() -> None:
    assert set(PANEL_COLUMNS) == {"date", "symbol", "asset_returns", "sector", *OPTIONAL_COLUMNS}


def test_use4_panel_round_trips_exactly(store: Store, use4_panel: pl.DataFrame) -> None:
    assert set(USE4_COLUMNS) - {"turnover"} <= set(use4_panel.columns)
    assert "turnover" not in use4_panel.columns
    result = store.ingest_panel(use4_panel)
    assert (result.rows, result.inserted) == (use4_panel.height, use4_panel.height)
    loaded = store.load_panel()
    assert_frame_equal(loaded, use4_panel, check_exact=True)
    for name in ("volume", "shares_outstanding", "earnings_price", "debt_to_assets"):  # bit for bit
        assert np.array_equal(loaded[name].to_numpy().view(np.int64), use4_panel[name].to_numpy().view(np.int64))
    non_keys = tuple(use4_panel.columns[2:])
    assert store.panel_summary().columns == non_keys
    assert store.panel_extent().columns == non_keys == frame_extent(loaded).columns
    again = store.ingest_panel(use4_panel)
    assert (again.inserted, again.updated) == (0, use4_panel.height)
    assert_frame_equal(store.load_panel(), use4_panel, check_exact=True)


def test_partial_use4_columns_and_the_columns_left_out(store: Store, use4_panel: pl.DataFrame) -> None:
    """Base columns on every date, USE4 columns on the first half of the dates only, turnover on some rows of
    the first 20 dates: a load returns the columns its rows fill, null where a row lacks them, and the extent
    from aggregates names the same columns."""
    dates = use4_panel["date"].unique().sort()
    middle = dates[len(dates) // 2]
    base = use4_panel.drop(*(c for c in USE4_COLUMNS if c in use4_panel.columns))
    early = use4_panel.filter(pl.col("date") < middle).select(
        "date", "symbol", *(c for c in USE4_COLUMNS if c in use4_panel.columns)
    )
    rng = np.random.default_rng(3)
    first_dates = use4_panel.filter(pl.col("date") <= dates[19])
    turnover = first_dates.filter(pl.Series(rng.random(first_dates.height) < 0.3)).select(
        "date", "symbol", (pl.col("volume") / pl.col("shares_outstanding")).alias("turnover")
    )
    store.ingest_panel(base)
    store.ingest_panel(early)
    store.ingest_panel(turnover)
    # the reference: the same updates applied by joins on the rows
    expected = (
        base.join(early, on=["date", "symbol"], how="left")
        .join(turnover, on=["date", "symbol"], how="left")
        .select(PANEL_COLUMNS)
    )
    selections: list[tuple[datetime.date | None, datetime.date | None, list[str] | None]] = [
        (None, None, None),
        (middle, None, None),
        (None, dates[10], None),
        (dates[30], dates[40], None),
        (dates[100], None, ["S00003", "S00150"]),
    ]
    for start, end, symbols in selections:
        rows = expected.filter(
            pl.col("date") >= (start or dates[0]),
            pl.col("date") <= (end or dates[-1]),
            pl.col("symbol").is_in(symbols or expected["symbol"].unique().to_list()),
        )
        loaded = store.load_panel(symbols=symbols, start=start, end=end)
        assert_frame_equal(loaded, as_loaded(rows), check_exact=True)
        assert store.panel_extent(symbols=symbols, start=start, end=end) == frame_extent(loaded)
    assert "volume" not in store.load_panel(start=middle).columns
    assert "turnover" in store.load_panel(end=dates[10]).columns
    assert "turnover" not in store.load_panel(start=dates[20]).columns


def test_delete_use4_rows(store: Store, use4_panel: pl.DataFrame) -> None:
    store.ingest_panel(use4_panel)
    dates = use4_panel["date"].unique().sort()
    deleted = store.delete_panel(symbols=["S00001", "S00002"], start=dates[100])
    kept = use4_panel.filter(~(pl.col("symbol").is_in(["S00001", "S00002"]) & (pl.col("date") >= dates[100])))
    assert deleted == use4_panel.height - kept.height == 2 * 200
    assert_frame_equal(store.load_panel(), kept, check_exact=True)


def _panel_columns(engine: sa.Engine, schema: str | None) -> list[str]:
    return [column["name"] for column in sa.inspect(engine).get_columns("panel", schema=schema)]


def test_migration_0003_adds_the_columns_and_keeps_the_rows(
    database: IsolatedDatabase, use4_panel: pl.DataFrame
) -> None:
    """A store at 0002 holding panel rows: upgraded, the rows are kept and the new columns are null (so left
    out of a load) until an ingest fills them; downgraded, the USE4 columns go and the rest stays."""
    before = use4_panel.filter(pl.col("symbol").is_in(["S00001", "S00002", "S00003"])).head(50)
    old = before.select(
        "date", "symbol", "asset_returns", "market_cap", "sector", "book_price", "sales_price", "cf_price"
    )
    engine = migrate_to(database, "0002")
    try:
        assert _panel_columns(engine, database.schema) == list(old.columns)
        with engine.begin() as connection:
            table = sa.Table("panel", sa.MetaData(), autoload_with=connection, schema=database.schema)
            connection.execute(table.insert(), old.to_dicts())
    finally:
        engine.dispose()
    store = connect(database.url, schema=database.schema)  # migrates to head
    try:
        assert_frame_equal(store.load_panel(), old, check_exact=True)
        store.ingest_panel(before.select("date", "symbol", *(c for c in USE4_COLUMNS if c in before.columns)))
        assert_frame_equal(store.load_panel(), before, check_exact=True)
    finally:
        store.close()
    engine = migrate_to(database, "0002", down=True)
    try:
        assert _panel_columns(engine, database.schema) == list(old.columns)
        with engine.connect() as connection:
            count = connection.execute(sa.text("SELECT count(*) FROM panel")).scalar_one()
        assert count == old.height
    finally:
        engine.dispose()
