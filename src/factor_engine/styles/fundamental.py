"""Barra USE4's fundamental styles, declared from descriptors (:mod:`factor_engine.styles.composite`).

Definitions and weights follow Menchero, Orr and Wang, "The Barra US Equity Model (USE4): Methodology Notes"
(MSCI, 2011), Appendix A. Each descriptor is a point-in-time panel column (the value known on the date,
:mod:`factor_engine.panel`); each is trimmed at 3σ and standardized (cap-weighted mean 0, equal-weighted
std 1), the descriptors are combined with their weights (renormalized over those an asset has) and the style
is standardized again. None is orthogonalized.

* **Earnings yield** (``ey_score``): 0.68 EPIBS (``forecast_earnings_price``, analysts' 12-month forward
  earnings / price) + 0.21 ETOP (``earnings_price``, trailing 12-month earnings / price) + 0.11 CETOP
  (``cf_price``, cash flow / price). Needs ``earnings_price``; EPIBS and CETOP enter when their columns exist.
* **Growth** (``growth_score``): 0.18 EGRLF (``forecast_growth``, analysts' long-term earnings growth) + 0.24
  EGRO (``earnings_growth``, 5-year EPS growth) + 0.47 SGRO (``sales_growth``, 5-year sales-per-share
  growth). USE4's fourth descriptor, EGRSF (analysts' short-term earnings growth, weight 0.11), has no column
  in the data contract, so the other three weights are renormalized (they sum to 0.89). Needs
  ``earnings_growth`` or ``sales_growth``.
* **Leverage** (``lev_score``): 0.38 MLEV (``market_leverage``, (ME + PE + LD) / ME) + 0.35 DTOA
  (``debt_to_assets``, total debt / total assets) + 0.27 BLEV (``book_leverage``, (BE + PE + LD) / BE). Needs
  one of the three.
* **Dividend yield** (``divyld_score``): DYLD (``dividend_yield``, trailing 12-month dividends per share /
  price).
* **Book-to-price** (``btop_score``): BTOP (``book_price``). It duplicates the book-to-price part of toraniko's
  value style, so it is left out of the default styles when ``value`` is used (it is in the ``use4`` preset).

USE4 also describes growth descriptors as regression slopes of five fiscal years of per-share values over time
divided by their average: the panel columns hold those growth rates (fractions per year) as the data source
computed them.
"""

from __future__ import annotations

import polars as pl

from factor_engine.panel import (
    BOOK_LEVERAGE,
    DEBT_TO_ASSETS,
    DIVIDEND_YIELD,
    EARNINGS_GROWTH,
    EARNINGS_PRICE,
    FORECAST_EARNINGS_PRICE,
    FORECAST_GROWTH,
    MARKET_LEVERAGE,
    SALES_GROWTH,
)
from factor_engine.styles.composite import Descriptor

__all__ = [
    "BTOP_DESCRIPTORS",
    "BTOP_SCORE",
    "DIVIDEND_YIELD_DESCRIPTORS",
    "DIVIDEND_YIELD_SCORE",
    "EARNINGS_YIELD_DESCRIPTORS",
    "EARNINGS_YIELD_SCORE",
    "GROWTH_ANY_OF",
    "GROWTH_DESCRIPTORS",
    "GROWTH_SCORE",
    "LEVERAGE_ANY_OF",
    "LEVERAGE_DESCRIPTORS",
    "LEVERAGE_SCORE",
]

BOOK_PRICE = "book_price"
CF_PRICE = "cf_price"

EARNINGS_YIELD_SCORE = "ey_score"
GROWTH_SCORE = "growth_score"
LEVERAGE_SCORE = "lev_score"
DIVIDEND_YIELD_SCORE = "divyld_score"
BTOP_SCORE = "btop_score"

#: Earnings yield: EPIBS 0.68, ETOP 0.21, CETOP 0.11 (ETOP required).
EARNINGS_YIELD_DESCRIPTORS = (
    Descriptor("EPIBS", 0.68, pl.col(FORECAST_EARNINGS_PRICE), optional=True),
    Descriptor("ETOP", 0.21, pl.col(EARNINGS_PRICE)),
    Descriptor("CETOP", 0.11, pl.col(CF_PRICE), optional=True),
)
#: Growth: EGRLF 0.18, EGRO 0.24, SGRO 0.47 (USE4's EGRSF 0.11 has no column; weights renormalized).
GROWTH_DESCRIPTORS = (
    Descriptor("EGRLF", 0.18, pl.col(FORECAST_GROWTH), optional=True),
    Descriptor("EGRO", 0.24, pl.col(EARNINGS_GROWTH), optional=True),
    Descriptor("SGRO", 0.47, pl.col(SALES_GROWTH), optional=True),
)
#: Growth needs at least one of these columns.
GROWTH_ANY_OF = (EARNINGS_GROWTH, SALES_GROWTH)
#: Leverage: MLEV 0.38, DTOA 0.35, BLEV 0.27.
LEVERAGE_DESCRIPTORS = (
    Descriptor("MLEV", 0.38, pl.col(MARKET_LEVERAGE), optional=True),
    Descriptor("DTOA", 0.35, pl.col(DEBT_TO_ASSETS), optional=True),
    Descriptor("BLEV", 0.27, pl.col(BOOK_LEVERAGE), optional=True),
)
#: Leverage needs at least one of these columns.
LEVERAGE_ANY_OF = (MARKET_LEVERAGE, DEBT_TO_ASSETS, BOOK_LEVERAGE)
#: Dividend yield: DYLD alone.
DIVIDEND_YIELD_DESCRIPTORS = (Descriptor("DYLD", 1.0, pl.col(DIVIDEND_YIELD)),)
#: Book-to-price: BTOP alone.
BTOP_DESCRIPTORS = (Descriptor("BTOP", 1.0, pl.col(BOOK_PRICE)),)
