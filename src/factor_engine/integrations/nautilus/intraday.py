"""Today's live factor returns across trading days, for :class:`~.actor.FactorRiskActor` on intraday bars.

:class:`IntradayFactorSession` keeps one :class:`factor_engine.live.LiveSession` for the current trading day
and rolls it at the first intraday bar of a new day:

* **The model** of day ``T`` is the model cut to the latest forecast date before ``T``
  (:meth:`.snapshots.SnapshotBook.forecast_date` of ``T − 1 day``; :meth:`~.snapshots.SnapshotBook.model_at`):
  the exposures, market caps (from the panel) and risk forecast of the previous close, never a later one.
  Before the model's first forecast there is no session and nothing is solved.
* **The closes** that today's prices are returns over: each symbol's last bar close on a date before ``T``
  (the previous day's daily bar or its last intraday bar, whichever came last; both close at the day's close).
  A symbol without any earlier bar (listed today) takes the open of its first intraday bar of ``T`` instead;
  :attr:`IntradayFactorSession.opens_as_closes` counts them.
* **The prices**: each intraday bar's close replaces its symbol's price for today; they are recorded on
  :meth:`IntradayFactorSession.price` and regressed on :meth:`IntradayFactorSession.solve`, so the figures at a
  solve are :class:`~factor_engine.live.LiveSession` on the latest bar close of every symbol so far.

The trading date of a bar is the UTC calendar date of its ``ts_event``, as for the daily bars (:mod:`.market`).
Nothing here imports nautilus_trader: the actor feeds it plain symbols, dates and prices.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from factor_engine.integrations.nautilus.snapshots import SnapshotBook
from factor_engine.live import LiveFactorReturns, LiveModel, LivePortfolio, LiveSession, live_book, live_portfolio

__all__ = ["IntradayFactorSession", "LiveBookFigures"]

_ONE_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class LiveBookFigures:
    """A book's live figures at one solve.

    Attributes
    ----------
    portfolio: :func:`factor_engine.live.live_portfolio` of the covered weights.
    weights: symbol → shares × previous close / ``equity`` for every held symbol.
    equity: cash plus Σ shares × previous close (account currency).
    uncovered_weight: Σ |w| of held symbols the model's risk snapshot does not cover (left out of ``portfolio``).
    """

    portfolio: LivePortfolio
    weights: dict[str, float]
    equity: float
    uncovered_weight: float


class IntradayFactorSession:
    """A live session per trading day on the model as of the previous close (see the module docstring).

    Parameters
    ----------
    book: the model's snapshots (the actor's).
    panel: the panel the model was built on (at least its rows of each forecast date used): its market caps
        weight the regression. Required when the model weights by cap; checked here, on the model's last
        forecast date.
    """

    def __init__(self, book: SnapshotBook, panel: pl.DataFrame | None = None) -> None:
        self.book = book
        self.panel = panel
        self._models: dict[datetime.date, LiveModel] = {}
        self.live_model(book.dates[-1])  # LiveError now, not at the first bar, when the caps are missing
        self._last: dict[str, tuple[datetime.date, float]] = {}
        self.day: datetime.date | None = None
        self.model_date: datetime.date | None = None
        self.session: LiveSession | None = None
        self.closes: dict[str, float] = {}
        self.opens_as_closes = 0
        self.bars = 0
        self._pending: dict[str, float] = {}

    def live_model(self, model_date: datetime.date) -> LiveModel:
        """The live model of the forecast date ``model_date`` (made once)."""
        live = self._models.get(model_date)
        if live is None:
            live = self._models[model_date] = LiveModel.from_model(self.book.model_at(model_date), self.panel)
        return live

    def record_close(self, symbol: str, day: datetime.date, price: float) -> None:
        """A bar of ``symbol`` closed at ``price`` on ``day`` (daily or intraday): a later day's close."""
        self._last[symbol] = (day, price)

    def start_day(self, day: datetime.date) -> bool:
        """Reset for trading date ``day``: the model of the latest forecast before it and the closes of the bars
        before it. False (no session) before the model's first forecast."""
        self.day = day
        self.bars = 0
        self.opens_as_closes = 0
        self._pending = {}
        self.model_date = self.book.forecast_date(day - _ONE_DAY)
        self.closes = {symbol: price for symbol, (last_day, price) in self._last.items() if last_day < day}
        if self.model_date is None:
            self.session = None
            return False
        self.session = LiveSession(self.live_model(self.model_date))
        self.session.set_closes(self.closes, unknown="drop")
        return True

    def price(self, symbol: str, close: float, open_: float) -> None:
        """An intraday bar of ``symbol`` today: ``close`` is its price now, ``open_`` its previous close when it
        has no earlier bar."""
        self.bars += 1
        if symbol not in self.closes:
            self.closes[symbol] = open_
            self.opens_as_closes += 1
            if self.session is not None:
                self.session.set_closes({symbol: open_}, unknown="drop")
        self._pending[symbol] = close

    def solve(self) -> LiveFactorReturns | None:
        """Today's factor returns on the latest price of every symbol so far (None without a session)."""
        if self.session is None:
            return None
        prices, self._pending = self._pending, {}
        if prices:
            self.session.apply(prices=prices, unknown="drop")
        if prices or self.session.latest is None:
            return self.session.solve()
        return self.session.latest

    def book_figures(self, quantities: Mapping[str, float], cash: float) -> LiveBookFigures | None:
        """The live figures of a book holding ``quantities`` (symbol → signed shares) and ``cash``, valued at the
        previous closes, on the latest solve (None without one). A held symbol without a close today is valued at
        its last bar's close."""
        session = self.session
        if session is None or session.latest is None:
            return None
        values = {}
        for symbol, shares in quantities.items():
            close = self.closes.get(symbol)
            if close is None:
                if symbol not in self._last:
                    raise ValueError(f"no bar yet for {symbol}: cannot value the book")
                close = self._last[symbol][1]
            values[symbol] = shares * close
        equity = cash + math.fsum(values.values())
        weights = {symbol: value / equity for symbol, value in values.items()} if equity > 0 else {}
        snapshot = session.model.snapshot
        covered_symbols = set(snapshot.symbols) if snapshot is not None else set()
        covered = {symbol: weight for symbol, weight in weights.items() if symbol in covered_symbols}
        book = live_book(session.model, covered, allow_unnormalized=True)
        return LiveBookFigures(
            portfolio=live_portfolio(session.model, book, session.latest),
            weights=weights,
            equity=equity,
            uncovered_weight=math.fsum(abs(w) for s, w in weights.items() if s not in covered),
        )
