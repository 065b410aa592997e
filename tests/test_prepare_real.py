"""``prepare`` on real prices: skfolio's packaged daily adjusted closes of 20 S&P 500 stocks, 1990-2022.

The reference is computed without polars or factor_engine: the gzip CSV is read with the standard library and
the returns are ``close[1:] / close[:-1] - 1`` in numpy.
"""

from __future__ import annotations

import csv
import gzip
from datetime import date
from itertools import pairwise
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cli_runner import invoke
from factor_engine.panel import SEED_SECTORS, load_panel, validate_panel
from factor_engine.prepare import PreparedPanel, prepare_files
from real_data import SP500_TICKERS, sp500_prices_path, sp500_sectors, sp500_sectors_path

CHECKED_TICKERS = ("AAPL", "JPM", "XOM")


@pytest.fixture(scope="module")
def raw() -> tuple[list[date], list[str], np.ndarray]:
    """Dates, tickers and the (dates × tickers) closes of the packaged file, read with the standard library."""
    with gzip.open(sp500_prices_path(), "rt", newline="") as file:
        header, *rows = list(csv.reader(file))
    dates = [date.fromisoformat(row[0]) for row in rows]
    closes = np.array([[float(value) for value in row[1:]] for row in rows])
    return dates, header[1:], closes


@pytest.fixture(scope="module")
def prepared() -> PreparedPanel:
    return prepare_files(sp500_prices_path(), sp500_sectors_path())


def test_the_packaged_file_is_what_the_tests_expect(raw: tuple[list[date], list[str], np.ndarray]) -> None:
    dates, tickers, closes = raw
    assert tuple(tickers) == SP500_TICKERS
    assert (dates[0], dates[-1], len(dates)) == (date(1990, 1, 2), date(2022, 12, 28), 8313)
    assert np.all(np.isfinite(closes)) and np.all(closes > 0)
    assert all(earlier < later for earlier, later in pairwise(dates))
    assert set(sp500_sectors()) == set(SP500_TICKERS)
    assert set(sp500_sectors().values()) <= set(SEED_SECTORS)


def test_panel_shape_and_first_returns(prepared: PreparedPanel) -> None:
    panel = prepared.panel
    assert_frame_equal(validate_panel(panel, sectors=SEED_SECTORS), panel)
    assert panel.columns == ["date", "symbol", "asset_returns", "sector"]
    assert panel.height == 20 * 8313
    first = panel.filter(pl.col("date") == date(1990, 1, 2))
    assert first.height == 20 and first.get_column("asset_returns").null_count() == 20
    assert panel.get_column("asset_returns").null_count() == 20
    summary = prepared.summary
    assert (summary.prices_layout, summary.symbols, summary.dates, summary.rows) == ("wide", 20, 8313, 166260)
    assert (summary.first_returns, summary.gap_returns, summary.missing_days) == (20, 0, 0)
    assert summary.unmatched == {}


def test_returns_equal_numpy_on_the_raw_closes(
    prepared: PreparedPanel, raw: tuple[list[date], list[str], np.ndarray]
) -> None:
    dates, tickers, closes = raw
    for ticker in CHECKED_TICKERS:
        column = closes[:, tickers.index(ticker)]
        expected = column[1:] / column[:-1] - 1.0
        rows = prepared.panel.filter(pl.col("symbol") == ticker)
        assert rows.get_column("date").to_list() == dates
        returns = rows.get_column("asset_returns").to_numpy()
        assert np.isnan(returns[0])
        np.testing.assert_allclose(returns[1:], expected, rtol=1e-13, atol=0)
        assert set(rows.get_column("sector")) == {sp500_sectors()[ticker]}


def test_long_file_with_missing_days_follows_the_gap_rule(
    tmp_path: Path, prepared: PreparedPanel, raw: tuple[list[date], list[str], np.ndarray]
) -> None:
    """The same closes as a long gzip CSV without XOM's close on every 10th date: XOM's return after each hole is
    null; everything else equals the wide panel."""
    dates, tickers, closes = raw
    path = tmp_path / "long.csv.gz"
    with gzip.open(path, "wt", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["Date", "Ticker", "Adj Close"])
        for index, (day, closes_of_day) in enumerate(zip(dates, closes, strict=True)):
            for ticker, close in zip(tickers, closes_of_day, strict=True):
                if not (ticker == "XOM" and index % 10 == 5):
                    writer.writerow([day.isoformat(), ticker, repr(float(close))])
    long = prepare_files(path, sp500_sectors_path())
    holes = len(range(5, len(dates), 10))
    assert (long.summary.gap_returns, long.summary.missing_days) == (holes, holes)
    xom = closes[:, tickers.index("XOM")]
    expected = xom[1:] / xom[:-1] - 1.0
    expected[[i - 1 for i in range(6, len(dates), 10)]] = np.nan  # the first close after each hole
    kept = [i for i in range(1, len(dates)) if i % 10 != 5]
    returns = long.panel.filter(pl.col("symbol") == "XOM").get_column("asset_returns").to_numpy()
    np.testing.assert_allclose(returns[1:], expected[[i - 1 for i in kept]], rtol=1e-13, atol=0)
    not_xom = pl.col("symbol") != "XOM"
    assert_frame_equal(long.panel.filter(not_xom), prepared.panel.filter(not_xom), check_exact=True)


def test_cli_writes_the_library_panel(tmp_path: Path, prepared: PreparedPanel) -> None:
    out = tmp_path / "sp500.parquet"
    code, stdout, stderr = invoke(
        "prepare", "--prices", str(sp500_prices_path()), "--sectors", str(sp500_sectors_path()), "--out", str(out)
    )
    assert code == 0, stderr
    assert "panel: 166,260 rows, 20 assets, 8,313 dates, 1990-01-02 → 2022-12-28" in stdout
    assert_frame_equal(load_panel(out), prepared.panel, check_exact=True)
