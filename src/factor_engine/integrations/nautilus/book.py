"""The trader's book as weights: positions (and open orders) from a NautilusTrader cache, valued at the last
daily closes, per unit of equity — the form :mod:`factor_engine.portfolio` takes."""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nautilus_trader.model.currencies import USD
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.identifiers import InstrumentId, Venue
from nautilus_trader.model.objects import Currency

from factor_engine.integrations.nautilus.market import bar_type, date_of

__all__ = ["BookState", "book_state"]


@dataclass(frozen=True)
class BookState:
    """Holdings valued at the last closes.

    Attributes
    ----------
    date: the date of the latest close among ``prices`` (None when there is no price).
    equity: cash plus the positions' market value (cash account) or the balance plus their unrealized
        profit (margin account), account currency.
    cash: the account's total balance.
    quantities: symbol → signed shares held (plus what open orders still buy or sell, when counted).
    prices: symbol → the last close (every held symbol with a bar, and those asked for).
    price_dates: symbol → the date of that close.
    """

    date: datetime.date | None
    equity: float
    cash: float
    quantities: dict[str, float]
    prices: dict[str, float]
    price_dates: dict[str, datetime.date]

    def weights(self, quantities: Mapping[str, float] | None = None) -> dict[str, float]:
        """Market value / equity per symbol of ``quantities`` (default the book's), zero holdings left out."""
        held = self.quantities if quantities is None else quantities
        if not self.equity > 0:
            raise ValueError(f"the book's equity is {self.equity:g}: weights need a positive equity")
        return {symbol: qty * self.prices[symbol] / self.equity for symbol, qty in held.items() if qty != 0}

    def after(self, trades: Mapping[str, float]) -> dict[str, float]:
        """Shares per symbol once the signed share ``trades`` are done (at the last closes)."""
        result = dict(self.quantities)
        for symbol, shares in trades.items():
            result[symbol] = result.get(symbol, 0.0) + shares
        return {symbol: qty for symbol, qty in result.items() if qty != 0}


def book_state(
    cache: object,
    venue: Venue,
    *,
    currency: Currency = USD,
    include_open_orders: bool = True,
    also_price: Iterable[InstrumentId] = (),
) -> BookState:
    """The book of every strategy at ``venue`` from a NautilusTrader ``cache`` (an actor's ``self.cache``).

    An instrument's symbol (``InstrumentId.symbol``) is its model symbol, as :mod:`.market` makes them.

    Parameters
    ----------
    cache: the cache (positions, open orders, the account and the last bars).
    venue: the venue whose account and positions count.
    currency: the account currency.
    include_open_orders: add what the open orders still buy (+) or sell (−) to the positions.
    also_price: instruments to price even when not held (e.g. those an order may trade); one without a bar
        is left out of ``prices``.
    """
    account = cache.account_for_venue(venue)  # type: ignore[attr-defined]
    if account is None:
        raise ValueError(f"no account at venue {venue}: register the venue before reading the book")
    cash = float(account.balance_total(currency).as_double())
    positions = [p for p in cache.positions_open(venue=venue) if p.signed_qty != 0]  # type: ignore[attr-defined]
    orders = list(cache.orders_open(venue=venue)) if include_open_orders else []  # type: ignore[attr-defined]
    prices: dict[str, float] = {}
    price_dates: dict[str, datetime.date] = {}
    held = {*(p.instrument_id for p in positions), *(o.instrument_id for o in orders)}
    for instrument_id in {*held, *also_price}:
        bar = cache.bar(bar_type(instrument_id))  # type: ignore[attr-defined]
        if bar is None and instrument_id in held:
            raise ValueError(f"no bar yet for {instrument_id}: cannot value the book")
        if bar is not None:
            prices[instrument_id.symbol.value] = float(bar.close)
            price_dates[instrument_id.symbol.value] = date_of(bar.ts_event)
    quantities: dict[str, float] = {}
    unrealized = []
    for position in positions:
        symbol, shares = position.instrument_id.symbol.value, float(position.signed_qty)
        quantities[symbol] = quantities.get(symbol, 0.0) + shares
        unrealized.append(shares * (prices[symbol] - float(position.avg_px_open)))
    if account.is_cash_account:
        equity = cash + math.fsum(shares * prices[symbol] for symbol, shares in quantities.items())
    else:
        equity = cash + math.fsum(unrealized)
    # an open order fills at the market: it changes the holdings, not the equity
    for order in orders:
        sign = 1.0 if order.side == OrderSide.BUY else -1.0
        symbol = order.instrument_id.symbol.value
        quantities[symbol] = quantities.get(symbol, 0.0) + sign * float(order.leaves_qty)
    return BookState(
        date=max(price_dates.values()) if price_dates else None,
        equity=equity,
        cash=cash,
        quantities={symbol: qty for symbol, qty in quantities.items() if qty != 0},
        prices=prices,
        price_dates=price_dates,
    )
