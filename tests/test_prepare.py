"""factor_engine.prepare and ``factor-engine prepare``: small hand-checked inputs, every error message."""

from __future__ import annotations

import gzip
import math
import re
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cli_runner import invoke
from factor_engine.panel import load_panel, validate_panel
from factor_engine.prepare import (
    PreparedPanel,
    PrepareError,
    PrepareWarning,
    prepare_files,
    prepare_panel,
    read_table,
)

D = [date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 4), date(2024, 1, 5), date(2024, 1, 8)]

# AAA trades every day; BBB has no close on 2024-01-04 (a missing day); CCC starts on 2024-01-03.
WIDE = pl.DataFrame(
    {
        "date": [d.isoformat() for d in D],
        "AAA": [10.0, 11.0, 12.1, 12.1, 6.05],
        "BBB": [20.0, 25.0, None, 30.0, 24.0],
        "CCC": [None, 5.0, 4.0, 5.0, 5.0],
    }
)
SECTORS = pl.DataFrame({"symbol": ["AAA", "BBB", "CCC"], "sector": ["Energy", "Technology", "Healthcare"]})
# (date, symbol, return) worked out by hand from WIDE
RETURNS_BY_HAND = [
    (D[0], "AAA", None),
    (D[0], "BBB", None),
    (D[1], "AAA", 0.1),
    (D[1], "BBB", 0.25),
    (D[1], "CCC", None),
    (D[2], "AAA", 0.1),
    (D[2], "CCC", -0.2),
    (D[3], "AAA", 0.0),
    (D[3], "BBB", None),  # first close after the missing day: not a one-day return
    (D[3], "CCC", 0.25),
    (D[4], "AAA", -0.5),
    (D[4], "BBB", -0.2),
    (D[4], "CCC", 0.0),
]
VALUE = ["book_price", "sales_price", "cf_price"]
SECTOR_OF = {"AAA": "Energy", "BBB": "Technology", "CCC": "Healthcare"}
# shares: AAA changes on 2024-01-04, BBB's second value is dated on a Saturday, CCC starts on its first price date
SHARES = pl.DataFrame(
    {
        "date": ["2024-01-01", "2024-01-04", "2023-12-29", "2024-01-06", "2024-01-03", "2024-01-08"],
        "symbol": ["AAA", "AAA", "BBB", "BBB", "CCC", "CCC"],
        "shares": [100.0, 200.0, 10.0, 20.0, 1000.0, 2000.0],
    }
)
# market cap = shares known on the date × close, by hand
CAPS_FROM_SHARES = {
    (D[0], "AAA"): 100 * 10.0,
    (D[1], "AAA"): 100 * 11.0,
    (D[2], "AAA"): 200 * 12.1,
    (D[3], "AAA"): 200 * 12.1,
    (D[4], "AAA"): 200 * 6.05,
    (D[0], "BBB"): 10 * 20.0,
    (D[1], "BBB"): 10 * 25.0,
    (D[3], "BBB"): 10 * 30.0,
    (D[4], "BBB"): 20 * 24.0,
    (D[1], "CCC"): 1000 * 5.0,
    (D[2], "CCC"): 1000 * 4.0,
    (D[3], "CCC"): 1000 * 5.0,
    (D[4], "CCC"): 2000 * 5.0,
}


def long_prices(wide: pl.DataFrame = WIDE) -> pl.DataFrame:
    """WIDE as long rows (date, symbol, close) without the missing closes, in a scrambled order."""
    long = wide.unpivot(index="date", variable_name="symbol", value_name="close").drop_nulls("close")
    return long.sample(fraction=1.0, shuffle=True, seed=3)


def write(frame: pl.DataFrame, path: Path) -> Path:
    """Write ``frame`` as CSV, gzip CSV or Parquet according to the suffix."""
    if path.name.endswith(".csv.gz"):
        with gzip.open(path, "wt") as file:
            file.write(frame.write_csv())
    elif path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path


def returns_frame(rows: list[tuple[date, str, float | None]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"date": pl.Date, "symbol": pl.String, "asset_returns": pl.Float64}, orient="row")


def check_contract(prepared: PreparedPanel) -> pl.DataFrame:
    """The panel passes validate_panel unchanged; returns it."""
    assert_frame_equal(validate_panel(prepared.panel), prepared.panel)
    return prepared.panel


# --------------------------------------------------------------------------------------------------
# prices and returns


def test_wide_prices_give_the_returns_worked_out_by_hand() -> None:
    prepared = prepare_panel(WIDE, SECTORS)
    panel = check_contract(prepared)
    assert panel.columns == ["date", "symbol", "asset_returns", "sector"]
    assert_frame_equal(
        panel.select("date", "symbol", "asset_returns"), returns_frame(RETURNS_BY_HAND), rel_tol=0, abs_tol=1e-15
    )
    assert panel.get_column("sector").to_list() == [SECTOR_OF[s] for s in panel.get_column("symbol")]
    summary = prepared.summary
    assert (summary.prices_layout, summary.close_column) == ("wide", None)
    assert (summary.symbols, summary.dates, summary.rows) == (3, 5, 13)
    assert (summary.first_date, summary.last_date) == (D[0], D[4])
    assert (summary.first_returns, summary.gap_returns, summary.missing_days) == (3, 1, 1)
    assert summary.market_cap_source is None
    assert summary.sources == {"prices": "prices", "sectors": "sectors"}
    assert (summary.sectors_layout, summary.sector_labels) == ("static", ("Energy", "Healthcare", "Technology"))


def test_long_prices_give_the_same_panel_as_wide() -> None:
    wide = prepare_panel(WIDE, SECTORS)
    long = prepare_panel(long_prices(), SECTORS)
    assert_frame_equal(long.panel, wide.panel, check_exact=True)
    assert (long.summary.prices_layout, long.summary.close_column) == ("long", "close")
    assert long.summary.gap_returns == 1


def slow_returns(closes: np.ndarray) -> dict[tuple[int, int], float | None]:
    """Per (day, asset) with a close: the return over the previous day's close, None if that day had none."""
    result: dict[tuple[int, int], float | None] = {}
    for asset in range(closes.shape[1]):
        for day in range(closes.shape[0]):
            if math.isnan(closes[day, asset]):
                continue
            previous = closes[day - 1, asset] if day > 0 else math.nan
            result[(day, asset)] = None if math.isnan(previous) else closes[day, asset] / previous - 1.0
    return result


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_returns_equal_a_slow_loop_with_random_gaps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_days, n_assets = 40, 6
    closes = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (n_days, n_assets)), axis=0))
    closes[rng.random((n_days, n_assets)) < 0.2] = math.nan
    closes[0, :] = 1.0 + np.arange(n_assets)
    dates = pl.date_range(date(2023, 1, 2), date(2023, 3, 31), "1d", eager=True).head(n_days)
    symbols = [f"S{i}" for i in range(n_assets)]
    wide = pl.DataFrame({"date": dates, **{s: closes[:, i] for i, s in enumerate(symbols)}})
    sectors = pl.DataFrame({"symbol": symbols, "sector": ["Energy"] * n_assets})
    panel = check_contract(prepare_panel(wide, sectors))

    assert not np.isnan(closes).all(axis=1).any()  # every date stays in the calendar
    expected = slow_returns(closes)
    rows = [(dates[day], symbols[asset], value) for (day, asset), value in expected.items()]
    assert_frame_equal(
        panel.select("date", "symbol", "asset_returns"),
        returns_frame(rows).sort("date", "symbol"),
        rel_tol=1e-14,
        abs_tol=0,
    )


def test_adjusted_close_is_preferred_and_names_are_matched_loosely() -> None:
    long = long_prices().with_columns((pl.col("close") * 2).alias("Close")).rename({"close": "Adj Close"})
    long = long.rename({"date": " Date", "symbol": "Ticker"}).with_columns(pl.lit(1).alias("Open"))
    prepared = prepare_panel(long, SECTORS)
    assert prepared.summary.close_column == "Adj Close"
    assert prepared.summary.ignored_columns == {"prices": ("Close", "Open")}
    assert_frame_equal(prepared.panel, prepare_panel(WIDE, SECTORS).panel)


def test_price_alias() -> None:
    prepared = prepare_panel(long_prices().rename({"close": "price"}), SECTORS)
    assert prepared.summary.close_column == "price"


def test_nan_and_blank_text_are_missing_closes() -> None:
    as_text = WIDE.with_columns(pl.col("BBB").cast(pl.String).fill_null(" "), pl.col("CCC").fill_null(math.nan))
    assert_frame_equal(prepare_panel(as_text, SECTORS).panel, prepare_panel(WIDE, SECTORS).panel)


def test_a_symbol_without_any_close_is_left_out_and_reported() -> None:
    prepared = prepare_panel(WIDE.with_columns(pl.lit(None, pl.Float64).alias("DDD")), SECTORS)
    assert prepared.summary.symbols_without_prices == ("DDD",)
    assert prepared.summary.symbols == 3


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet", ".pq"])
@pytest.mark.parametrize("layout", ["wide", "long"])
def test_files_give_the_panel_of_the_frames(tmp_path: Path, suffix: str, layout: str) -> None:
    prices = write(WIDE if layout == "wide" else long_prices(), tmp_path / f"prices{suffix}")
    sectors = write(SECTORS, tmp_path / f"sectors{suffix}")
    prepared = prepare_files(prices, sectors)
    assert_frame_equal(prepared.panel, prepare_panel(WIDE, SECTORS).panel, check_exact=True)
    assert prepared.summary.sources == {"prices": str(prices), "sectors": str(sectors)}


@pytest.mark.parametrize(
    "labels",
    [
        ("Energy", "Technology", "Healthcare"),  # the seed's names
        ("Energy", "Information Technology", "Health Care"),  # GICS names
        ("4510", "Widgets & Co", "Ölwerte"),  # a broker's code, free text, non-ASCII
    ],
)
def test_any_sector_taxonomy_passes_through_a_csv_sector_map(tmp_path: Path, labels: tuple[str, ...]) -> None:
    sectors = tmp_path / "sectors.csv"
    sectors.write_text("symbol,sector\n" + "".join(f"{s},{label}\n" for s, label in zip("ABC", labels, strict=True)))
    prices = write(WIDE.rename({"AAA": "A", "BBB": "B", "CCC": "C"}), tmp_path / "prices.csv")
    panel = check_contract(prepare_files(prices, sectors))
    assert dict(panel.select("symbol", "sector").unique().iter_rows()) == dict(zip("ABC", labels, strict=True))
    assert panel.schema["sector"] == pl.String  # "4510" stays a label


def test_csv_symbols_keep_leading_zeros(tmp_path: Path) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_text("date,symbol,close\n2024-01-02,0050,10\n2024-01-03,0050,11\n")
    sectors = tmp_path / "sectors.csv"
    sectors.write_text("symbol,sector\n0050,Technology\n")
    panel = prepare_files(prices, sectors).panel
    assert panel.get_column("symbol").to_list() == ["0050", "0050"]
    assert panel.get_column("asset_returns").to_list()[1] == pytest.approx(0.1)


def test_load_panel_reads_gzip_csv(tmp_path: Path) -> None:
    panel = prepare_panel(WIDE, SECTORS, shares=SHARES).panel
    path = write(panel, tmp_path / "panel.csv.gz")
    assert_frame_equal(load_panel(path), panel)


def test_load_panel_still_refuses_other_compressed_files(tmp_path: Path) -> None:
    path = tmp_path / "panel.parquet.gz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"unsupported suffix '\.gz' \(use \.parquet, \.pq, \.csv, \.csv\.gz\)"):
        load_panel(path)


# --------------------------------------------------------------------------------------------------
# sectors


def test_dated_sectors_apply_from_their_date_on() -> None:
    sectors = pl.DataFrame(
        {
            "date": ["2024-01-01", "2024-01-05", "2023-01-01", "2024-01-03"],
            "symbol": ["AAA", "AAA", "BBB", "CCC"],
            "sector": ["Energy", "Utilities", "Technology", "Healthcare"],
        }
    )
    prepared = prepare_panel(WIDE, sectors)
    panel = check_contract(prepared)
    aaa = panel.filter(pl.col("symbol") == "AAA").get_column("sector").to_list()
    assert aaa == ["Energy", "Energy", "Energy", "Utilities", "Utilities"]
    assert prepared.summary.sectors_layout == "dated"
    assert prepared.summary.sector_labels == ("Energy", "Healthcare", "Technology", "Utilities")


def test_sector_labels_are_stripped_and_integer_labels_accepted() -> None:
    sectors = pl.DataFrame({"Symbol": [" AAA", "BBB", "CCC"], "Sector": [10, 20, 30]})
    panel = prepare_panel(WIDE, sectors).panel
    assert dict(panel.select("symbol", "sector").unique().iter_rows()) == {"AAA": "10", "BBB": "20", "CCC": "30"}


def test_unmatched_tickers_are_a_warning_naming_the_file(tmp_path: Path) -> None:
    extra = pl.DataFrame({"symbol": ["ZZZ", "YYY"], "sector": ["Energy"] * 2})
    sectors = write(pl.concat([SECTORS, extra]), tmp_path / "sectors.csv")
    shares = write(pl.concat([SHARES, SHARES.head(1).with_columns(pl.lit("QQQ").alias("symbol"))]), tmp_path / "s.csv")
    with pytest.warns(PrepareWarning) as record:
        prepared = prepare_files(write(WIDE, tmp_path / "prices.csv"), sectors, shares=shares)
    messages = [str(warning.message) for warning in record]
    assert messages == [
        f"{sectors}: 2 tickers without prices, left unused: YYY, ZZZ",
        f"{shares}: 1 ticker without prices, left unused: QQQ",
    ]
    assert prepared.summary.unmatched == {"sectors": ("YYY", "ZZZ"), "shares": ("QQQ",)}


# --------------------------------------------------------------------------------------------------
# market caps


def expected_caps(caps: dict[tuple[date, str], float]) -> pl.DataFrame:
    rows = [(day, symbol, cap) for (day, symbol), cap in caps.items()]
    schema = {"date": pl.Date, "symbol": pl.String, "market_cap": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row").sort("date", "symbol")


def test_shares_are_taken_as_of_each_price_date_and_multiplied_by_the_close() -> None:
    prepared = prepare_panel(WIDE, SECTORS, shares=SHARES)
    panel = check_contract(prepared)
    assert panel.columns == ["date", "symbol", "asset_returns", "market_cap", "sector"]
    assert_frame_equal(panel.select("date", "symbol", "market_cap"), expected_caps(CAPS_FROM_SHARES), rel_tol=1e-14)
    assert prepared.summary.market_cap_source == "shares"


def test_wide_shares_give_the_same_caps() -> None:
    wide = SHARES.pivot(on="symbol", index="date", values="shares").sort("date")
    assert_frame_equal(
        prepare_panel(WIDE, SECTORS, shares=wide).panel, prepare_panel(WIDE, SECTORS, shares=SHARES).panel
    )


def test_caps_are_forward_filled_as_of_each_price_date() -> None:
    caps = pl.DataFrame(
        {
            "date": ["2024-01-02", "2024-01-03", "2024-01-05"],
            "AAA": [1000.0, None, 1500.0],
            "BBB": [200.0, None, None],
            "CCC": [None, 5000.0, None],
        }
    )
    prepared = prepare_panel(WIDE, SECTORS, caps=caps)
    by_hand = {
        (D[0], "AAA"): 1000.0, (D[1], "AAA"): 1000.0, (D[2], "AAA"): 1000.0, (D[3], "AAA"): 1500.0,
        (D[4], "AAA"): 1500.0, (D[0], "BBB"): 200.0, (D[1], "BBB"): 200.0, (D[3], "BBB"): 200.0,
        (D[4], "BBB"): 200.0, (D[1], "CCC"): 5000.0, (D[2], "CCC"): 5000.0, (D[3], "CCC"): 5000.0,
        (D[4], "CCC"): 5000.0,
    }  # fmt: skip
    assert_frame_equal(
        check_contract(prepared).select("date", "symbol", "market_cap"), expected_caps(by_hand), check_exact=True
    )
    assert prepared.summary.market_cap_source == "caps"


def test_rows_before_the_first_shares_value_can_be_dropped() -> None:
    late = SHARES.filter(pl.col("date") != "2024-01-01")  # AAA's first shares value is dated 2024-01-04
    prepared = prepare_panel(WIDE, SECTORS, shares=late, missing_caps="drop")
    panel = check_contract(prepared)
    assert prepared.summary.rows_dropped_without_cap == 2
    # AAA's first close was dropped: the nulls counted are those of the rows kept
    assert (prepared.summary.first_returns, prepared.summary.gap_returns) == (2, 1)
    assert panel.get_column("asset_returns").null_count() == 3
    assert panel.filter(pl.col("symbol") == "AAA").get_column("date").to_list() == D[2:]
    assert panel.height == 11


# --------------------------------------------------------------------------------------------------
# fundamentals


def test_raw_fundamentals_are_divided_by_the_market_cap_as_of_each_date() -> None:
    fundamentals = pl.DataFrame(
        {
            "date": ["2024-01-03", "2024-01-01"],
            "symbol": ["AAA", "BBB"],
            "book_value": [500.0, 100.0],
            "sales": [2000.0, 400.0],
            "cash_flow": [100.0, None],
        }
    )
    prepared = prepare_panel(WIDE, SECTORS, shares=SHARES, fundamentals=fundamentals)
    panel = check_contract(prepared)
    assert panel.columns == ["date", "symbol", "asset_returns", "market_cap", "sector", *VALUE]
    raw = {"AAA": (500.0, 2000.0, 100.0), "BBB": (100.0, 400.0, None)}
    for row in panel.iter_rows(named=True):
        known = raw.get(row["symbol"]) if not (row["symbol"] == "AAA" and row["date"] == D[0]) else None
        cap = CAPS_FROM_SHARES[(row["date"], row["symbol"])]
        for feature, value in zip(VALUE, known or (None, None, None), strict=True):
            if value is None:
                assert row[feature] is None, (row, feature)
            else:
                assert row[feature] == pytest.approx(value / cap, rel=1e-12), (row, feature)
    assert prepared.summary.value_features == {
        "book_price": "book_value / market_cap",
        "sales_price": "sales / market_cap",
        "cf_price": "cash_flow / market_cap",
    }


def test_ratio_fundamentals_pass_through_per_column_as_of() -> None:
    fundamentals = pl.DataFrame(
        {
            "date": ["2024-01-03", "2024-01-05"],
            "symbol": ["AAA", "AAA"],
            "Book_Price": [0.5, 0.6],
            "sales_price": [1.5, None],
            "comment": ["q3", "q4"],
        }
    )
    prepared = prepare_panel(WIDE, SECTORS, fundamentals=fundamentals)
    panel = check_contract(prepared)
    assert panel.columns == ["date", "symbol", "asset_returns", "sector", "book_price", "sales_price"]
    aaa = panel.filter(pl.col("symbol") == "AAA")
    assert aaa.get_column("book_price").to_list() == [None, 0.5, 0.5, 0.6, 0.6]
    assert aaa.get_column("sales_price").to_list() == [None, 1.5, 1.5, 1.5, 1.5]  # a null does not erase it
    assert panel.filter(pl.col("symbol") != "AAA").get_column("book_price").null_count() == 8
    assert prepared.summary.value_features == {"book_price": "book_price", "sales_price": "sales_price"}
    assert prepared.summary.ignored_columns == {"fundamentals": ("comment",)}


def test_use4_fundamentals_raw_and_ratio_as_of_each_date() -> None:
    fundamentals = pl.DataFrame(
        {
            "date": ["2024-01-03", "2024-01-01", "2024-01-05"],
            "symbol": ["AAA", "BBB", "AAA"],
            "earnings": [300.0, -50.0, None],  # BBB loses money: a negative E/P
            "forecast_earnings": [330.0, 20.0, 360.0],
            "dividends": [40.0, 0.0, 44.0],
            "earnings_growth": [0.1, -0.05, 0.12],
            "sales_growth": [0.07, 0.02, None],
            "forecast_growth": [0.09, 0.03, 0.1],
            "market_leverage": [1.4, 2.0, 1.5],
            "book_leverage": [1.8, 3.1, 1.9],
            "Debt_To_Assets": [0.3, 0.5, 0.31],
        }
    )
    prepared = prepare_panel(WIDE, SECTORS, shares=SHARES, fundamentals=fundamentals)
    panel = check_contract(prepared)
    assert panel.columns == [
        "date",
        "symbol",
        "asset_returns",
        "market_cap",
        "sector",
        "earnings_price",
        "forecast_earnings_price",
        "dividend_yield",
        "earnings_growth",
        "sales_growth",
        "forecast_growth",
        "market_leverage",
        "book_leverage",
        "debt_to_assets",
    ]
    # by hand: each value as of the row's date, currency values divided by that row's market cap
    known = {  # (symbol, first date it applies) -> raw values
        ("BBB", D[0]): {"earnings": -50.0, "forecast_earnings": 20.0, "dividends": 0.0, "sales_growth": 0.02},
        ("AAA", D[1]): {"earnings": 300.0, "forecast_earnings": 330.0, "dividends": 40.0, "sales_growth": 0.07},
        ("AAA", D[3]): {"earnings": 300.0, "forecast_earnings": 360.0, "dividends": 44.0, "sales_growth": 0.07},
    }
    for row in panel.iter_rows(named=True):
        applying = [v for (symbol, since), v in known.items() if symbol == row["symbol"] and since <= row["date"]]
        cap = CAPS_FROM_SHARES[(row["date"], row["symbol"])]
        if not applying:
            assert row["earnings_price"] is None and row["debt_to_assets"] is None, row
            continue
        raw = applying[-1]
        assert row["earnings_price"] == pytest.approx(raw["earnings"] / cap, rel=1e-12), row
        assert row["forecast_earnings_price"] == pytest.approx(raw["forecast_earnings"] / cap, rel=1e-12), row
        assert row["dividend_yield"] == pytest.approx(raw["dividends"] / cap, rel=1e-12, abs=0.0), row
        assert row["sales_growth"] == raw["sales_growth"], row  # a null does not erase the earlier value
    aaa = panel.filter(pl.col("symbol") == "AAA")
    assert aaa.get_column("debt_to_assets").to_list() == [None, 0.3, 0.3, 0.31, 0.31]
    assert aaa.get_column("market_leverage").to_list() == [None, 1.4, 1.4, 1.5, 1.5]
    assert prepared.summary.value_features == {
        "earnings_price": "earnings / market_cap",
        "forecast_earnings_price": "forecast_earnings / market_cap",
        "dividend_yield": "dividends / market_cap",
        "earnings_growth": "earnings_growth",
        "sales_growth": "sales_growth",
        "forecast_growth": "forecast_growth",
        "market_leverage": "market_leverage",
        "book_leverage": "book_leverage",
        "debt_to_assets": "debt_to_assets",
    }
    # the same as ratios: passed through as given
    ratios = fundamentals.rename({"earnings": "earnings_price", "dividends": "dividend_yield"}).drop(
        "forecast_earnings"
    )
    as_ratios = prepare_panel(WIDE, SECTORS, fundamentals=ratios).panel
    assert as_ratios.filter(pl.col("symbol") == "BBB").get_column("earnings_price").to_list() == [-50.0] * 4
    assert "forecast_earnings_price" not in as_ratios.columns


def test_use4_fundamentals_errors() -> None:
    both = pl.DataFrame({"date": ["2024-01-02"], "symbol": ["AAA"], "earnings_price": [0.05], "earnings": [100.0]})
    with raises("fundamentals: columns 'earnings_price' and 'earnings' both give earnings_price; keep one"):
        prepare_panel(WIDE, SECTORS, shares=SHARES, fundamentals=both)
    raw = pl.DataFrame({"date": ["2024-01-02"], "symbol": ["AAA"], "dividends": [10.0]})
    with raises("fundamentals: raw values ['dividends'] are divided by the market cap: give caps or shares too"):
        prepare_panel(WIDE, SECTORS, fundamentals=raw)
    infinite = pl.DataFrame({"date": ["2024-01-02"], "symbol": ["AAA"], "book_leverage": [math.inf]})
    with raises("fundamentals: column 'book_leverage' has 1 infinite value, e.g. inf at (2024-01-02, AAA)"):
        prepare_panel(WIDE, SECTORS, fundamentals=infinite)


# --------------------------------------------------------------------------------------------------
# volume and shares outstanding (liquidity)


def long_prices_with_volume() -> pl.DataFrame:
    """long_prices() with a volume per row (AAA's missing on 2024-01-05)."""
    volume = pl.col("close") * 1000.0
    volume = pl.when((pl.col("symbol") == "AAA") & (pl.col("date") == "2024-01-05")).then(None).otherwise(volume)
    return long_prices().with_columns(volume.alias("Volume"))


def test_volume_and_shares_are_kept_for_liquidity() -> None:
    prepared = prepare_panel(long_prices_with_volume(), SECTORS, shares=SHARES)
    panel = check_contract(prepared)
    assert panel.columns == [
        "date", "symbol", "asset_returns", "market_cap", "sector", "volume", "shares_outstanding"
    ]  # fmt: skip
    assert prepared.summary.trading_columns == ("volume", "shares_outstanding")
    assert "prices" not in prepared.summary.ignored_columns
    closes = long_prices().with_columns(pl.col("date").str.to_date())
    joined = panel.join(closes, on=["date", "symbol"])
    assert joined.height == panel.height == 13
    for row in joined.iter_rows(named=True):
        cap = CAPS_FROM_SHARES[(row["date"], row["symbol"])]
        assert row["shares_outstanding"] == pytest.approx(cap / row["close"], rel=1e-12)
        if row["symbol"] == "AAA" and row["date"] == D[3]:
            assert row["volume"] is None
        else:
            assert row["volume"] == row["close"] * 1000.0
    # liquidity's input: turnover = volume / shares outstanding
    from factor_engine import styles

    assert styles.get_style("liquidity").skip_reason(panel.columns) is None
    # without shares, or without volume, nothing extra is kept
    with_caps = prepare_panel(long_prices_with_volume(), SECTORS, caps=SHARES.rename({"shares": "market_cap"}))
    assert with_caps.panel.columns[-1] == "volume" and with_caps.summary.trading_columns == ("volume",)
    no_volume = prepare_panel(long_prices(), SECTORS, shares=SHARES)
    assert "shares_outstanding" not in no_volume.panel.columns and no_volume.summary.trading_columns == ()


@pytest.mark.parametrize("bad", [-5.0, math.inf])
def test_bad_volume(bad: float) -> None:
    prices = long_prices_with_volume().with_columns(
        pl.when((pl.col("symbol") == "BBB") & (pl.col("date") == "2024-01-03"))
        .then(bad)
        .otherwise("Volume")
        .alias("Volume")
    )
    with raises(f"prices: volume must be finite and ≥ 0: 1 bad row, e.g. (2024-01-03, BBB) = {bad!r}"):
        prepare_panel(prices, SECTORS)


# --------------------------------------------------------------------------------------------------
# errors


def raises(message: str) -> pytest.RaisesExc[PrepareError]:
    """Expect a PrepareError whose message contains ``message`` literally."""
    return pytest.raises(PrepareError, match=re.escape(message))


def with_value(frame: pl.DataFrame, column: str, row: int, value: object) -> pl.DataFrame:
    values = frame.get_column(column).to_list()
    values[row] = value
    return frame.with_columns(pl.Series(column, values, strict=False))


def test_symbol_without_sector() -> None:
    with raises("sectors: no sector for 1 symbol: CCC on 4 price dates 2024-01-03 → 2024-01-08 (no sector row at all)"):
        prepare_panel(WIDE, SECTORS.head(2))


def test_price_date_before_the_first_dated_sector() -> None:
    sectors = SECTORS.with_columns(pl.Series("date", ["2024-01-01", "2024-01-01", "2024-01-05"]))
    with raises(
        "sectors: no sector on or before the price dates of 1 symbol: "
        "CCC on 2 price dates 2024-01-03 → 2024-01-04 (first sector row dated 2024-01-05)"
    ):
        prepare_panel(WIDE, sectors)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf])
def test_non_positive_price_in_a_wide_file(bad: float) -> None:
    with raises(f"prices: close must be positive and finite: 1 bad row, e.g. (2024-01-03, BBB) = {bad!r}"):
        prepare_panel(with_value(WIDE, "BBB", 1, bad), SECTORS)


def test_non_positive_price_in_a_long_file(tmp_path: Path) -> None:
    prices = write(long_prices().with_columns(pl.col("close") * -1), tmp_path / "prices.csv")
    with raises(f"{prices}: close must be positive and finite: 13 bad rows, e.g. ("):
        prepare_files(prices, write(SECTORS, tmp_path / "sectors.csv"))


def test_duplicate_date_in_a_wide_file(tmp_path: Path) -> None:
    prices = write(pl.concat([WIDE, WIDE.slice(1, 1)]), tmp_path / "prices.csv")
    with raises(
        f"{prices}: date (one row per date in a wide file) must be unique: 1 key repeated, e.g. 2024-01-03 on rows 1, 5"
    ):
        prepare_files(prices, write(SECTORS, tmp_path / "sectors.csv"))


def test_duplicate_date_and_symbol_in_a_long_file() -> None:
    long = long_prices().sort("date", "symbol")
    with raises("prices: (date, symbol) must be unique: 1 key repeated, e.g. (2024-01-02, AAA) on rows 0, 13"):
        prepare_panel(pl.concat([long, long.head(1)]), SECTORS)


def test_repeated_column_in_a_csv_header(tmp_path: Path) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_text("date,AAA,AAA\n2024-01-02,1,2\n")
    with raises(f"{prices}: the header names column(s) ['AAA'] more than once"):
        read_table(prices)


def test_unparseable_date(tmp_path: Path) -> None:
    prices = write(with_value(WIDE, "date", 2, "04/01/2024"), tmp_path / "prices.csv.gz")
    with raises(
        f"{prices}: column 'date': 1 value cannot be parsed as ISO dates 'YYYY-MM-DD' (empty dates included), "
        "e.g. '04/01/2024' at row 2"
    ):
        prepare_files(prices, write(SECTORS, tmp_path / "sectors.csv"))


def test_unparseable_close(tmp_path: Path) -> None:
    prices = write(long_prices().sort("date", "symbol").cast({"close": pl.String}), tmp_path / "prices.csv")
    prices.write_text(prices.read_text().replace("2024-01-03,BBB,25.0", "2024-01-03,BBB,n/a"))
    with raises(f"{prices}: column 'close': 1 value cannot be parsed as numbers, e.g. 'n/a' at (2024-01-03, BBB)"):
        prepare_files(prices, write(SECTORS, tmp_path / "sectors.csv"))


def test_unparseable_number_in_a_wide_file() -> None:
    with raises("prices: column 'CCC': 1 value cannot be parsed as numbers, e.g. '4,0' at (2024-01-04, CCC)"):
        prepare_panel(with_value(WIDE.cast({"CCC": pl.String}), "CCC", 2, "4,0"), SECTORS)


@pytest.mark.parametrize(
    ("role", "frame", "message"),
    [
        ("prices", WIDE.rename({"date": "day"}), "prices: missing the date column (named 'date', any case)"),
        (
            "prices",
            long_prices().drop("close"),
            "prices: missing the close column (named 'adj_close' or 'adjusted_close' or 'close' or 'price', any case)",
        ),
        ("prices", WIDE.select("date"), "prices: no symbol columns: a wide file has a date column and one close"),
        ("sectors", SECTORS.drop("sector"), "sectors: missing the sector column (named 'sector', any case)"),
        (
            "sectors",
            SECTORS.drop("symbol"),
            "sectors: missing the symbol column (named 'symbol' or 'ticker', any case)",
        ),
        ("shares", SHARES.drop("shares"), "shares: missing the shares column (named 'shares' or 'shares_outstanding'"),
        ("caps", SHARES, "caps: missing the market_cap column (named 'market_cap', any case)"),
        (
            "fundamentals",
            SHARES,
            "fundamentals: no fundamentals column (named book_price, sales_price, cf_price, earnings_price, "
            "forecast_earnings_price, dividend_yield, earnings_growth, sales_growth, forecast_growth, "
            "market_leverage, book_leverage, debt_to_assets, book_value, sales, cash_flow, earnings, "
            "forecast_earnings, dividends, any case)",
        ),
        ("prices", WIDE.with_columns(pl.col("date").alias("Date")), "prices: columns ['date', 'Date'] are all read"),
    ],
)
def test_missing_or_ambiguous_columns(role: str, frame: pl.DataFrame, message: str) -> None:
    inputs = {"prices": WIDE, "sectors": SECTORS, role: frame}
    with raises(message):
        prepare_panel(inputs.pop("prices"), inputs.pop("sectors"), **inputs)


def test_unsupported_suffix(tmp_path: Path) -> None:
    with raises(f"{tmp_path / 'prices.xlsx'}: unsupported suffix '.xlsx' (use .parquet, .pq, .csv, .csv.gz)"):
        prepare_files(tmp_path / "prices.xlsx", tmp_path / "sectors.csv")


def test_missing_file(tmp_path: Path) -> None:
    prices = write(WIDE, tmp_path / "prices.csv")
    with raises(f"{tmp_path / 'sectors.csv'}: no such file"):
        prepare_files(prices, tmp_path / "sectors.csv")


def test_unreadable_file(tmp_path: Path) -> None:
    prices = tmp_path / "prices.parquet"
    prices.write_text("not parquet")
    with raises(f"{prices}: cannot read: "):
        read_table(prices)


def test_caps_and_shares_are_mutually_exclusive(tmp_path: Path) -> None:
    with raises("give market caps or shares outstanding, not both (caps, shares)"):
        prepare_panel(WIDE, SECTORS, caps=SHARES, shares=SHARES)
    caps, shares = tmp_path / "caps.csv", tmp_path / "shares.csv"
    with raises(f"give market caps or shares outstanding, not both ({caps}, {shares})"):
        prepare_files(tmp_path / "prices.csv", tmp_path / "sectors.csv", caps=caps, shares=shares)


def test_price_dates_before_the_first_shares_value() -> None:
    late = SHARES.filter(pl.col("date") != "2024-01-01").filter(pl.col("symbol") != "CCC")
    with raises(
        "shares: no shares value on or before the price dates of 2 symbols: "
        "AAA on 2 price dates 2024-01-02 → 2024-01-03 (first shares value dated 2024-01-04); "
        "CCC on 4 price dates 2024-01-03 → 2024-01-08 (no shares value at all); give values from each symbol's "
        "first price date, or drop those rows (missing_caps='drop', --drop-missing-caps)"
    ):
        prepare_panel(WIDE, SECTORS, shares=late)


def test_non_positive_shares() -> None:
    with raises("shares: shares must be positive and finite: 1 bad row, e.g. (2024-01-06, BBB) = 0.0"):
        prepare_panel(WIDE, SECTORS, shares=with_value(SHARES, "shares", 3, 0.0))


def test_every_price_row_before_a_first_cap() -> None:
    late = pl.DataFrame({"date": ["2025-01-01"] * 3, "symbol": ["AAA", "BBB", "CCC"], "market_cap": [1.0, 2.0, 3.0]})
    with raises("caps: every price row is before its symbol's first value; nothing is left"):
        prepare_panel(WIDE, SECTORS, caps=late, missing_caps="drop")


def test_raw_fundamentals_need_market_caps() -> None:
    fundamentals = pl.DataFrame({"date": ["2024-01-02"], "symbol": ["AAA"], "book_value": [5.0]})
    with raises("fundamentals: raw values ['book_value'] are divided by the market cap: give caps or shares too"):
        prepare_panel(WIDE, SECTORS, fundamentals=fundamentals)


def test_fundamentals_given_as_ratio_and_raw_value() -> None:
    fundamentals = pl.DataFrame({"date": ["2024-01-02"], "symbol": ["AAA"], "book_value": [5.0], "BOOK_PRICE": [0.5]})
    with raises("fundamentals: columns 'BOOK_PRICE' and 'book_value' both give book_price; keep one"):
        prepare_panel(WIDE, SECTORS, shares=SHARES, fundamentals=fundamentals)


def test_infinite_fundamental() -> None:
    fundamentals = pl.DataFrame({"date": ["2024-01-02"], "symbol": ["AAA"], "cf_price": ["inf"]})
    with raises("fundamentals: column 'cf_price' has 1 infinite value, e.g. inf at (2024-01-02, AAA)"):
        prepare_panel(WIDE, SECTORS, fundamentals=fundamentals)


def test_duplicate_fundamentals_row() -> None:
    fundamentals = pl.DataFrame({"date": ["2024-01-02"] * 2, "symbol": ["AAA"] * 2, "cf_price": [0.1, 0.2]})
    with raises("fundamentals: (date, symbol) must be unique: 1 key repeated, e.g. (2024-01-02, AAA) on rows 0, 1"):
        prepare_panel(WIDE, SECTORS, fundamentals=fundamentals)


def test_duplicate_symbol_in_a_static_sector_map() -> None:
    sectors = pl.concat([SECTORS, SECTORS.head(1)])
    with raises(
        "sectors: symbol (one row per symbol in a static sector map) must be unique: 1 key repeated, "
        "e.g. AAA on rows 0, 3"
    ):
        prepare_panel(WIDE, sectors)


def test_empty_sector_label() -> None:
    with raises("sectors: column 'sector' has 1 empty label, e.g. row 1"):
        prepare_panel(WIDE, with_value(SECTORS, "sector", 1, "  "))


def test_empty_symbol_in_a_long_file() -> None:
    long = long_prices().sort("date", "symbol")
    with raises("prices: column 'symbol' has 1 empty symbol, e.g. on row 4"):
        prepare_panel(with_value(long, "symbol", 4, None), SECTORS)


def test_no_closes_at_all() -> None:
    with raises("prices: no closes: every price is empty"):
        prepare_panel(WIDE.with_columns(pl.col("AAA", "BBB", "CCC").mul(math.nan)), SECTORS)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="missing_caps must be 'error' or 'drop', got 'keep'"):
        prepare_panel(WIDE, SECTORS, missing_caps="keep")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sectors must be a polars DataFrame, got dict"):
        prepare_panel(WIDE, {"AAA": "Energy"})  # type: ignore[arg-type]


def test_date_column_of_the_wrong_dtype() -> None:
    with raises("prices: column 'date' has dtype Float64, expected dates (Date, Datetime or 'YYYY-MM-DD' text)"):
        prepare_panel(WIDE.with_columns(pl.lit(1.0).alias("date")), SECTORS)


# --------------------------------------------------------------------------------------------------
# command line


@pytest.fixture
def input_files(tmp_path: Path) -> dict[str, Path]:
    return {
        "prices": write(WIDE, tmp_path / "prices.csv.gz"),
        "sectors": write(
            pl.concat([SECTORS, pl.DataFrame({"symbol": ["ZZZ"], "sector": ["Energy"]})]), tmp_path / "sectors.csv"
        ),
        "shares": write(SHARES, tmp_path / "shares.parquet"),
    }


def test_cli_writes_the_panel_of_the_library(input_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out" / "panel.parquet"
    args = [f"--{role}={path}" for role, path in input_files.items()]
    code, stdout, stderr = invoke("prepare", *args, "--out", str(out))
    assert code == 0, stderr
    with pytest.warns(PrepareWarning):
        expected = prepare_files(**input_files)  # type: ignore[arg-type]
    assert_frame_equal(load_panel(out), expected.panel)
    for text in (
        "panel: 13 rows, 3 assets, 5 dates, 2024-01-02 → 2024-01-08",
        "returns: null at 3 first closes and at 1 close after a missing day (1 missing day)",
        f"market cap: shares × close, shares from {input_files['shares']}",
        f"unmatched: {input_files['sectors']}: 1 ticker without prices, left unused: ZZZ",
        f"wrote:\n  {out}",
    ):
        assert text in stdout, stdout
    assert stderr == ""


def test_cli_writes_csv(input_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "panel.csv"
    code, _, stderr = invoke(
        "prepare", "-p", str(input_files["prices"]), "-s", str(input_files["sectors"]), "-o", str(out)
    )
    assert code == 0, stderr
    assert load_panel(out).columns == ["date", "symbol", "asset_returns", "sector"]


def test_cli_checks_the_output_suffix_before_reading(tmp_path: Path) -> None:
    code, _, stderr = invoke(
        "prepare", "--prices", str(tmp_path / "none.csv"), "--sectors", "s.csv", "--out", str(tmp_path / "panel.txt")
    )
    assert code == 1
    assert (
        stderr.strip()
        == f"error: cannot write {tmp_path / 'panel.txt'}: unsupported suffix '.txt' (use .parquet, .pq, .csv)"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--caps", "caps.csv", "--shares", "shares.csv"], "error: give market caps or shares outstanding, not both"),
        (["--fundamentals", "fund.csv"], "fund.csv: no such file"),
        (["--shares", "SECTORS"], ": missing the date column (named 'date', any case)"),
    ],
)
def test_cli_errors_are_one_red_line(
    input_files: dict[str, Path], tmp_path: Path, extra: list[str], message: str
) -> None:
    extra = [str(input_files["sectors"]) if arg == "SECTORS" else arg for arg in extra]
    out = tmp_path / "panel.parquet"
    args = ["--prices", str(input_files["prices"]), "--sectors", str(input_files["sectors"]), "--out", str(out)]
    code, stdout, stderr = invoke("prepare", *args, *extra)
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and message in lines[0], stderr
    assert "Traceback" not in stdout + stderr
    assert not out.exists()


def test_cli_drop_missing_caps(input_files: dict[str, Path], tmp_path: Path) -> None:
    late = write(SHARES.filter(pl.col("date") != "2024-01-01"), tmp_path / "late.csv")
    args = ["-p", str(input_files["prices"]), "-s", str(input_files["sectors"]), "--shares", str(late)]
    code, _, stderr = invoke("prepare", *args, "-o", str(tmp_path / "a.parquet"))
    assert code == 1 and "no shares value on or before the price dates of 1 symbol: AAA" in stderr
    code, stdout, stderr = invoke("prepare", *args, "--drop-missing-caps", "-o", str(tmp_path / "b.parquet"))
    assert code == 0, stderr
    assert "2 rows before a first value dropped" in stdout
    assert load_panel(tmp_path / "b.parquet").height == 11


def test_cli_help_shows_an_example() -> None:
    code, stdout, _ = invoke("prepare", "--help")
    assert code == 0
    assert "Example:" in stdout
    assert "factor-engine prepare --prices" in stdout
