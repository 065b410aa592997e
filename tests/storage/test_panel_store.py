"""Panel ingest and load on SQLite and PostgreSQL: exact round trips, partial batches, idempotency, filters."""

from __future__ import annotations

import datetime

import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa
from polars.testing import assert_frame_equal

from factor_engine.panel import PanelError, validate_panel
from factor_engine.storage import InvalidValue, Store
from factor_engine.synthetic import generate_market
from stored_panels import as_loaded

VALUE_COLUMNS = ("asset_returns", "market_cap", "sector", "book_price", "sales_price", "cf_price")


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    """40 assets × 80 days, with some null returns and fundamentals planted."""
    frame = validate_panel(generate_market(40, 80, seed=1).panel)
    rng = np.random.default_rng(7)
    holes = pl.Series(rng.random(frame.height) < 0.05)
    return frame.with_columns(
        pl.when(holes).then(None).otherwise(pl.col("book_price")).alias("book_price"),
        pl.when(holes.shift(1, fill_value=False)).then(None).otherwise(pl.col("cf_price")).alias("cf_price"),
    )


def _count(store: Store) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM panel")).scalar_one())


def test_round_trip_is_exact(store: Store, panel: pl.DataFrame) -> None:
    result = store.ingest_panel(panel)
    assert (result.rows, result.inserted, result.updated) == (panel.height, panel.height, 0)
    assert result.symbols == 40
    assert (result.first_date, result.last_date) == (panel["date"].min(), panel["date"].max())
    loaded = store.load_panel()
    assert loaded.null_count().row(0) == panel.null_count().row(0)
    assert_frame_equal(loaded, panel, check_exact=True)
    for name in ("asset_returns", "market_cap", "book_price"):  # bit for bit, not just ==
        assert np.array_equal(loaded[name].to_numpy().view(np.int64), panel[name].to_numpy().view(np.int64))
    assert _count(store) == panel.height


def test_reingest_is_idempotent(store: Store, panel: pl.DataFrame) -> None:
    store.ingest_panel(panel)
    again = store.ingest_panel(panel)
    assert (again.rows, again.inserted, again.updated) == (panel.height, 0, panel.height)
    assert _count(store) == panel.height
    assert_frame_equal(store.load_panel(), panel, check_exact=True)


def test_partial_batch_leaves_other_columns(store: Store, panel: pl.DataFrame) -> None:
    store.ingest_panel(panel)
    last = panel["date"].max()
    # new returns for the existing rows of the first 10 dates, plus returns-only rows for a new date
    changed = panel.filter(pl.col("date") <= panel["date"].unique().sort()[9]).select(
        "date", "symbol", (pl.col("asset_returns").fill_null(0.0) + 0.001).alias("asset_returns")
    )
    new_day = last + datetime.timedelta(days=3)
    fresh = pl.DataFrame({"date": [new_day, new_day], "symbol": ["S00001", "ZZZ"], "asset_returns": [0.01, -0.02]})
    batch = pl.concat([changed, fresh.with_columns(pl.col("date").cast(pl.Date))])
    result = store.ingest_panel(batch)
    assert (result.rows, result.inserted, result.updated) == (batch.height, 2, changed.height)

    # reference, by explicit dictionary updates on the rows
    expected_rows = {(r["date"], r["symbol"]): dict(r) for r in panel.iter_rows(named=True)}
    for row in batch.iter_rows(named=True):
        key = (row["date"], row["symbol"])
        base = expected_rows.get(key, {"date": row["date"], "symbol": row["symbol"], **dict.fromkeys(VALUE_COLUMNS)})
        base["asset_returns"] = row["asset_returns"]
        expected_rows[key] = base
    expected = pl.DataFrame([expected_rows[key] for key in sorted(expected_rows)], schema=panel.schema, orient="row")
    assert_frame_equal(store.load_panel(), expected, check_exact=True)
    summary = store.panel_summary()
    assert summary.rows == panel.height + 2
    assert summary.symbols == 41
    assert summary.last_date == new_day


def test_negative_zero_replaces_zero(store: Store, panel: pl.DataFrame) -> None:
    """PostgreSQL stores values bit for bit: a re-ingest of -0.0 over 0.0 is a change, and it lands. SQLite
    stores an integral REAL as an integer and reads -0.0 back as 0.0 (documented in the panel_store module)."""
    first = panel.head(5).with_columns(pl.lit(0.0).alias("asset_returns"))
    store.ingest_panel(first)
    second = first.with_columns(pl.lit(-0.0).alias("asset_returns"))
    result = store.ingest_panel(second.select("date", "symbol", "asset_returns"))
    assert (result.inserted, result.updated) == (0, 5)
    stored = store.load_panel()["asset_returns"].to_numpy()
    assert list(np.signbit(stored)) == [store.dialect == "postgresql"] * 5


def test_fundamentals_only_batch_and_summary_columns(store: Store, panel: pl.DataFrame) -> None:
    store.ingest_panel(panel.select("date", "symbol", "book_price"))
    summary = store.panel_summary()
    assert summary.columns == ("book_price",)
    assert (summary.rows, summary.symbols) == (panel.height, 40)
    assert (summary.first_date, summary.last_date) == (panel["date"].min(), panel["date"].max())
    loaded = store.load_panel()
    # the required columns come back null; the optional ones no row fills (market_cap, ...) are left out
    assert loaded.columns == ["date", "symbol", "asset_returns", "sector", "book_price"]
    assert loaded.select("date", "symbol", "book_price").equals(panel.select("date", "symbol", "book_price"))
    assert loaded.select(pl.col("asset_returns", "sector").null_count()).row(0) == (panel.height,) * 2
    assert loaded.schema == panel.select(loaded.columns).schema


def test_load_panel_filters(store: Store, panel: pl.DataFrame) -> None:
    store.ingest_panel(panel)
    dates = panel["date"].unique().sort()
    start, end = dates[10], dates[20]
    chosen = ["S00003", "S00017", "S00031", "NOPE"]
    expected = panel.filter(pl.col("symbol").is_in(chosen), pl.col("date").is_between(start, end))
    assert_frame_equal(store.load_panel(symbols=chosen, start=start, end=end), expected, check_exact=True)
    assert_frame_equal(store.load_panel(start=dates[-3]), panel.filter(pl.col("date") >= dates[-3]))
    assert_frame_equal(store.load_panel(end=dates[0]), panel.filter(pl.col("date") <= dates[0]))
    empty = store.load_panel(symbols=["NOPE"])
    assert empty.height == 0
    assert empty.schema == panel.select("date", "symbol", "asset_returns", "sector").schema
    assert store.symbols() == sorted(panel["symbol"].unique().to_list())


def test_empty_store_summary(store: Store) -> None:
    summary = store.panel_summary()
    assert (summary.rows, summary.symbols, summary.first_date, summary.last_date, summary.columns) == (
        0,
        0,
        None,
        None,
        (),
    )
    assert store.symbols() == []


def test_ingest_rejects_what_the_table_cannot_hold(store: Store, panel: pl.DataFrame) -> None:
    with pytest.raises(PanelError, match=r"column\(s\) \['beta'\] are not stored"):
        store.ingest_panel(panel.with_columns(beta=pl.lit(1.0)))
    with pytest.raises(PanelError, match=r"lacks the key column\(s\) \['symbol'\]"):
        store.ingest_panel(panel.drop("symbol"))
    with pytest.raises(
        PanelError, match=r"duplicate \(date, symbol\) rows, e.g. \(datetime.date\(2015, 1, 2\), 'S00001'\)"
    ):
        store.ingest_panel(pl.concat([panel.head(1), panel.head(1)]))
    with pytest.raises(PanelError, match="the panel is empty"):
        store.ingest_panel(panel.head(0))
    assert _count(store) == 0


def _plant_failure(store: Store, symbol: str, event: str = "INSERT") -> None:
    """A trigger that aborts any ``event`` (INSERT or DELETE) of a ``symbol`` row of the panel (a failure in
    the middle of a write)."""
    row = "NEW" if event == "INSERT" else "OLD"
    with store.engine.begin() as connection:
        if store.dialect == "sqlite":
            connection.exec_driver_sql(
                f"CREATE TRIGGER planted BEFORE {event} ON panel WHEN {row}.symbol = '{symbol}' "
                "BEGIN SELECT RAISE(ABORT, 'planted failure'); END"
            )
        else:
            connection.exec_driver_sql(
                "CREATE FUNCTION planted() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$BEGIN IF {row}.symbol = '{symbol}' THEN RAISE EXCEPTION 'planted failure'; END IF; "
                f"RETURN {row}; END$$"
            )
            connection.exec_driver_sql(
                f"CREATE TRIGGER planted BEFORE {event} ON panel FOR EACH ROW EXECUTE FUNCTION planted()"
            )


def test_failed_ingest_writes_nothing(store: Store, panel: pl.DataFrame) -> None:
    first = panel.filter(pl.col("date") < panel["date"].unique().sort()[40])
    store.ingest_panel(first)
    _plant_failure(store, "S00039")  # the last symbol of each date: rows before it are written first
    rest = panel.filter(pl.col("date") >= panel["date"].unique().sort()[30]).with_columns(
        (pl.col("market_cap") * 2).alias("market_cap")
    )
    with pytest.raises(Exception, match="planted failure"):
        store.ingest_panel(rest)
    assert_frame_equal(store.load_panel(), first, check_exact=True)
    with pytest.raises(PanelError, match=r"1 row\(s\) with a null date or symbol"):
        store.ingest_panel(
            panel.head(3).with_columns(
                pl.when(pl.int_range(pl.len()) == 2).then(None).otherwise(pl.col("symbol")).alias("symbol")
            )
        )


def _labelled(panel: pl.DataFrame) -> pl.DataFrame:
    """The panel relabelled with the user's own sector labels: seed names, an arbitrary label ("Widgets"), a
    GICS code ("4510") and, for S00005, a change of label half-way (counted under both)."""
    dates = panel["date"].unique().sort()
    middle = dates[len(dates) // 2]
    number = pl.col("symbol").str.slice(1).cast(pl.Int64)
    label = (
        pl.when(number % 4 == 0)
        .then(pl.lit("Technology"))
        .when(number % 4 == 1)
        .then(pl.lit("Consumer Cyclical"))
        .when(number % 4 == 2)
        .then(pl.lit("Widgets"))
        .otherwise(pl.lit("4510"))
    )
    label = (
        pl.when((pl.col("symbol") == "S00005") & (pl.col("date") >= middle)).then(pl.lit("Widgets")).otherwise(label)
    )
    return panel.with_columns(label.alias("sector"))


def _sectors_by_hand(panel: pl.DataFrame) -> list[tuple[str, int, int, datetime.date, datetime.date]]:
    """The reference: a plain loop over the rows."""
    seen: dict[str, tuple[set[str], int, datetime.date, datetime.date]] = {}
    for row in panel.select("date", "symbol", "sector").iter_rows():
        day, symbol, sector = row
        if sector is None:
            continue
        symbols, rows, first, last = seen.get(sector, (set(), 0, day, day))
        seen[sector] = (symbols | {symbol}, rows + 1, min(first, day), max(last, day))
    return [(name, len(s), n, first, last) for name, (s, n, first, last) in sorted(seen.items())]


def test_panel_sectors_are_the_stored_labels(store: Store, panel: pl.DataFrame) -> None:
    assert store.panel_sectors() == []
    labelled = _labelled(panel)
    store.ingest_panel(labelled)
    # a returns-only row of a new symbol has no sector: left out
    store.ingest_panel(pl.DataFrame({"date": [panel["date"].max()], "symbol": ["NOSECTOR"], "asset_returns": [0.01]}))
    got = [(s.sector, s.symbols, s.rows, s.first_date, s.last_date) for s in store.panel_sectors()]
    assert got == _sectors_by_hand(labelled)
    assert [name for name, *_ in got] == ["4510", "Consumer Cyclical", "Technology", "Widgets"]
    widgets = next(s for s in store.panel_sectors() if s.sector == "Widgets")
    assert widgets.symbols == 11  # the 10 symbols numbered 2 mod 4, and S00005 after its change


def _delete_cases(panel: pl.DataFrame) -> list[tuple[dict[str, object], pl.Expr]]:
    dates = panel["date"].unique().sort()
    start, end = dates[10], dates[20]
    return [
        ({"symbols": "S00003"}, pl.col("symbol") == "S00003"),
        ({"symbols": ["S00003", "S00017", "NOPE"]}, pl.col("symbol").is_in(["S00003", "S00017"])),
        ({"start": start, "end": end}, pl.col("date").is_between(start, end)),
        ({"start": dates[-3]}, pl.col("date") >= dates[-3]),
        ({"end": dates[0]}, pl.col("date") <= dates[0]),
        (
            {"symbols": ["S00003", "S00017"], "start": start, "end": end},
            pl.col("symbol").is_in(["S00003", "S00017"]) & pl.col("date").is_between(start, end),
        ),
        ({"all": True}, pl.lit(True)),
    ]


def test_delete_panel_rows(store: Store, panel: pl.DataFrame) -> None:
    for selector, deleted in _delete_cases(panel):
        store.delete_panel(all=True)
        store.ingest_panel(panel)
        expected = panel.filter(~deleted)
        assert store.delete_panel(**selector) == panel.height - expected.height > 0, selector  # type: ignore[arg-type]
        assert_frame_equal(store.load_panel(), as_loaded(expected), check_exact=True)
        assert _count(store) == expected.height
    assert store.delete_panel(all=True) == 0  # nothing left
    assert store.delete_panel(symbols="S00001") == 0


def test_delete_panel_needs_a_selector(store: Store, panel: pl.DataFrame) -> None:
    store.ingest_panel(panel)
    dates = panel["date"].unique().sort()
    with pytest.raises(ValueError, match=r"say which rows to delete \(symbols, start and/or end\), or pass all=True"):
        store.delete_panel()
    with pytest.raises(ValueError, match="all=True deletes every row and cannot be combined with symbols, end"):
        store.delete_panel(all=True, symbols=["S00001"], end=dates[3])
    with pytest.raises(ValueError, match="symbols is empty; name at least one symbol"):
        store.delete_panel(symbols=[])
    with pytest.raises(ValueError, match=f"start {dates[5]} is after end {dates[2]}"):
        store.delete_panel(start=dates[5], end=dates[2])
    assert _count(store) == panel.height


def test_failed_delete_deletes_nothing(store: Store, panel: pl.DataFrame) -> None:
    store.ingest_panel(panel)
    _plant_failure(store, "S00039", "DELETE")  # the last symbol of each date: rows before it go first
    dates = panel["date"].unique().sort()
    with pytest.raises(Exception, match="planted failure"):
        store.delete_panel(start=dates[10])
    assert_frame_equal(store.load_panel(), panel, check_exact=True)


def test_text_the_database_cannot_hold_is_an_invalid_value(store: Store, panel: pl.DataFrame) -> None:
    """PostgreSQL text cannot hold NUL: a clear InvalidValue (the service answers 422), the store unchanged;
    SQLite keeps such text as it is."""
    store.ingest_panel(panel)
    odd = panel.head(1).with_columns(pl.lit("S\x00X").alias("symbol"))
    if store.dialect == "postgresql":
        with pytest.raises(InvalidValue, match=r"^the database cannot take a value: .*0x00"):
            store.ingest_panel(odd)
        with pytest.raises(InvalidValue, match=r"PostgreSQL text fields cannot contain NUL \(0x00\) bytes"):
            store.delete_panel(symbols=["S\x00X"])
    else:
        store.ingest_panel(odd)
        assert store.delete_panel(symbols=["S\x00X"]) == 1
    assert_frame_equal(store.load_panel(), panel, check_exact=True)
