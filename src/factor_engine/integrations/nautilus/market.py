"""A panel as a NautilusTrader market: one :class:`Equity` per symbol on one venue and daily bars whose prices
follow the panel's returns.

Prices: each symbol starts at :data:`START_PRICE` on its first date in the panel and compounds its daily
returns, ``close_t = close_{t−1} · (1 + r_t)``; a null return leaves the price unchanged. A bar's open is the
previous close (its first bar opens at the start price), high and low are the larger and smaller of open and
close, so a market order sent after a close fills at that close, which is also the next bar's open. Bars are
stamped at :data:`CLOSE_TIME` (UTC) of their date; a symbol has bars from its first to its last panel date.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import polars as pl
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar, BarSpecification, BarType
from nautilus_trader.model.enums import AggregationSource
from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
from nautilus_trader.model.instruments import Equity
from nautilus_trader.model.objects import Price, Quantity

from factor_engine.panel import DATE, RETURNS, SYMBOL

__all__ = [
    "BAR_SPEC",
    "CLOSE_TIME",
    "PRICE_PRECISION",
    "START_PRICE",
    "PanelMarket",
    "bar_type",
    "date_of",
    "panel_market",
]

#: Price of every symbol on its first date (currency units).
START_PRICE = 100.0
#: Decimals of the prices (a tick of 0.0001 keeps rounding far below daily moves).
PRICE_PRECISION = 4
#: When a daily bar closes (UTC); bars carry this time on their date.
CLOSE_TIME = datetime.time(21, 0)
#: The bars' specification: one bar per day from the last trade prices.
BAR_SPEC = "1-DAY-LAST"
# every bar's volume (shares): ample, so a fill never waits for volume
_BAR_VOLUME = 1e12
_NANOS = 1_000_000_000


def bar_type(instrument_id: InstrumentId) -> BarType:
    """The daily external bar type of an instrument (``<id>-1-DAY-LAST-EXTERNAL``)."""
    return BarType(instrument_id, BarSpecification.from_str(BAR_SPEC), AggregationSource.EXTERNAL)


def date_of(ts_ns: int) -> datetime.date:
    """The UTC calendar date of a UNIX timestamp in nanoseconds."""
    return datetime.datetime.fromtimestamp(ts_ns / _NANOS, tz=datetime.UTC).date()


def _close_ns(dates: pl.Series) -> np.ndarray:
    start = datetime.datetime.combine(datetime.date(1970, 1, 1), CLOSE_TIME, tzinfo=datetime.UTC)
    offset_ns = int(start.timestamp()) * _NANOS
    days = dates.cast(pl.Int64).to_numpy()  # days since the epoch
    return (days * 86_400 * _NANOS + offset_ns).astype(np.uint64)


@dataclass(frozen=True)
class PanelMarket:
    """The instruments and bars of a panel (see the module docstring).

    Attributes
    ----------
    venue: the one venue of every instrument.
    instruments: symbol → :class:`Equity` (USD, integer shares, no fees).
    bars: every bar, sorted by time (then symbol).
    closes: ``date, symbol, close`` (currency units): the close of each bar, before rounding to the tick.
    dates: the sorted distinct bar dates.
    """

    venue: Venue
    instruments: dict[str, Equity]
    bars: list[Bar]
    closes: pl.DataFrame
    dates: pl.Series

    def symbol_of(self) -> dict[InstrumentId, str]:
        """Instrument id → panel symbol."""
        return {instrument.id: symbol for symbol, instrument in self.instruments.items()}


def _instrument(symbol: str, venue: Venue, fee: Decimal) -> Equity:
    return Equity(
        instrument_id=InstrumentId(Symbol(symbol), venue),
        raw_symbol=Symbol(symbol),
        currency=USD,
        price_precision=PRICE_PRECISION,
        price_increment=Price(10.0**-PRICE_PRECISION, PRICE_PRECISION),
        lot_size=Quantity.from_int(1),
        ts_event=0,
        ts_init=0,
        maker_fee=fee,
        taker_fee=fee,
    )


def panel_market(panel: pl.DataFrame, *, venue: str = "SIM", fee: float = 0.0) -> PanelMarket:
    """The instruments and daily bars of ``panel`` (``date, symbol, asset_returns``; see the module docstring).

    Parameters
    ----------
    panel: a validated panel (one row per date and symbol; returns as fractions).
    venue: the venue name of every instrument.
    fee: commission as a fraction of the traded value (0.0005 is 5 bp), maker and taker.
    """
    missing = [column for column in (DATE, SYMBOL, RETURNS) if column not in panel.columns]
    if missing:
        raise ValueError(f"the panel needs the columns {missing} to make bars from its returns")
    if panel.height == 0:
        raise ValueError("the panel has no rows: no bars to make")
    closes = (
        panel.lazy()
        .select(DATE, pl.col(SYMBOL).cast(pl.String), pl.col(RETURNS).cast(pl.Float64))
        .sort(SYMBOL, DATE)
        .with_columns(
            (START_PRICE * (1.0 + pl.col(RETURNS).fill_null(0.0)).cum_prod().over(SYMBOL)).alias("close"),
        )
        .with_columns(pl.col("close").shift(1, fill_value=START_PRICE).over(SYMBOL).alias("open"))
        .collect()
    )
    bad = closes.filter(~pl.col("close").is_finite() | (pl.col("close") <= 0.0))
    if bad.height:
        first = bad.row(0, named=True)
        raise ValueError(
            f"{bad.height} price(s) are not finite and positive, first {first[SYMBOL]} on {first[DATE]}: "
            "returns must be finite and > -1"
        )
    where = Venue(venue)
    instruments: dict[str, Equity] = {}
    bars: list[Bar] = []
    for (symbol,), rows in closes.group_by(SYMBOL, maintain_order=True):
        instrument = _instrument(str(symbol), where, Decimal(str(fee)))
        instruments[str(symbol)] = instrument
        opens = rows.get_column("open").to_numpy().copy()  # writable: the bar factory takes memoryviews
        close = rows.get_column("close").to_numpy().copy()
        stamps = _close_ns(rows.get_column(DATE))
        bars.extend(
            Bar.from_raw_arrays_to_list(
                bar_type(instrument.id),
                PRICE_PRECISION,
                0,
                opens,
                np.maximum(opens, close),
                np.minimum(opens, close),
                close,
                np.full(close.size, _BAR_VOLUME),
                stamps,
                stamps,
            )
        )
    bars.sort(key=lambda bar: bar.ts_init)  # stable: symbols stay in order within a close
    return PanelMarket(
        venue=where,
        instruments=instruments,
        bars=bars,
        closes=closes.select(DATE, SYMBOL, "close").sort(DATE, SYMBOL),
        dates=closes.get_column(DATE).unique().sort(),
    )
