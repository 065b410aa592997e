"""Real public data shipped inside an installed package, for tests that run without a network.

skfolio (BSD-3-Clause, a ``dev`` extra) ships ``skfolio/datasets/data/sp500_dataset.csv.gz``: daily adjusted
closes of 20 S&P 500 constituents from 1990-01-02 to 2022-12-28, wide (a ``Date`` column and one column per
ticker). ``tests/data/sp500_sectors.csv`` maps those tickers to the seed's sector names
(:data:`factor_engine.panel.SEED_SECTORS`). The file is located through the package metadata, so skfolio (and
its heavy imports) is never imported.
"""

from __future__ import annotations

from importlib.metadata import distribution
from pathlib import Path

import polars as pl

SP500_PRICES_IN_PACKAGE = "skfolio/datasets/data/sp500_dataset.csv.gz"
SP500_SECTORS = Path(__file__).resolve().parent / "data" / "sp500_sectors.csv"
SP500_TICKERS = (
    "AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO",
    "LLY", "MRK", "MSFT", "PEP", "PFE", "PG", "RRC", "UNH", "WMT", "XOM",
)  # fmt: skip


def sp500_prices_path() -> Path:
    """Path of skfolio's packaged S&P 500 prices (wide, gzip CSV; adjusted closes in USD)."""
    path = Path(str(distribution("skfolio").locate_file(SP500_PRICES_IN_PACKAGE)))
    if not path.is_file():
        raise FileNotFoundError(f"skfolio is installed but {SP500_PRICES_IN_PACKAGE} is not in it: {path}")
    return path


def sp500_sectors_path() -> Path:
    """Path of the sector map (symbol, sector) of the 20 tickers, in the seed's sector names."""
    return SP500_SECTORS


def sp500_sectors() -> dict[str, str]:
    """The sector map of the 20 tickers as ``{symbol: sector}``."""
    frame = pl.read_csv(SP500_SECTORS)
    return dict(zip(frame.get_column("symbol").to_list(), frame.get_column("sector").to_list(), strict=True))
