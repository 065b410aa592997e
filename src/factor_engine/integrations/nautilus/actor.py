"""``FactorRiskActor``: follows the trader's positions and the daily bars and publishes the book's factor
exposures and its total, factor and specific risk as NautilusTrader custom data and signals; on intraday bars,
today's live factor returns so far and the book's live P&L by factor, exposures and risk."""

from __future__ import annotations

import contextlib
import datetime
import math

import polars as pl
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.data import Bar, BarSpecification, BarType
from nautilus_trader.model.enums import AggregationSource
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.objects import Currency

from factor_engine._dense import single_threaded_blas
from factor_engine.integrations.nautilus.book import BookState, book_state
from factor_engine.integrations.nautilus.data import (
    EXPOSURE_DATA_TYPE,
    LIVE_FACTOR_DATA_TYPE,
    LIVE_PORTFOLIO_DATA_TYPE,
    RISK_DATA_TYPE,
    FactorExposure,
    LiveFactorReturn,
    LivePortfolioUpdate,
    PortfolioFactorRisk,
)
from factor_engine.integrations.nautilus.intraday import IntradayFactorSession
from factor_engine.integrations.nautilus.market import bar_type, date_of
from factor_engine.integrations.nautilus.snapshots import SnapshotBook, load_risk_model
from factor_engine.panel import load_panel
from factor_engine.portfolio import decompose_risk
from factor_engine.portfolio.analytics import TRADING_DAYS

__all__ = ["FactorRiskActor", "FactorRiskActorConfig"]

_UPDATE_ON = ("timer", "bar")
_BAR_SOURCES = ("EXTERNAL", "INTERNAL")
_NANOS = 1_000_000_000


class FactorRiskActorConfig(ActorConfig, frozen=True):
    """Configuration of :class:`FactorRiskActor`.

    Parameters
    ----------
    model_path: a model folder written by ``factor-engine build``; or
    model_id: a built model of the service's store at ``database_url`` (default: the service's setting).
    venue: the venue whose account and positions make the book; ``currency`` its account currency.
    update_on: ``"timer"`` (default): once a day, ``update_delay_secs`` after the first bar's close and every
        ``update_interval_secs`` after, when a new close has arrived since the last update; ``"bar"``: on
        every daily bar received.
    publish_signals: also publish the annualized risks as signals ``factor_risk_total``, ``_factor`` and
        ``_specific`` (``SignalFactorRiskTotal`` ...); with intraday bars also ``live_pnl``,
        ``live_factor_pnl``, ``live_specific_pnl`` (fractions of equity) and ``live_risk_total`` (annualized).
    intraday_bar_spec: the intraday bars to follow for live factor returns, a NautilusTrader bar specification
        such as ``"1-MINUTE-LAST"`` or ``"5-MINUTE-LAST"`` (one bar type per instrument of the venue, from
        ``intraday_bar_source``: ``"EXTERNAL"`` or ``"INTERNAL"``); None (default): no live figures.
    intraday_update_on: ``"timer"`` (default): every ``intraday_interval_secs`` on the UTC clock's multiples of
        it (with 300 s: at :00, :05, ... after the bars stamped then), when a bar has arrived since the last
        update; ``"bar"``: after every intraday bar.
    panel_path: a panel file (``.parquet``, ``.pq``, ``.csv``) the model was built on: its market caps weight
        the live regression (needed with intraday bars unless the model has no caps or ``panel`` is given).
    """

    model_path: str | None = None
    model_id: str | None = None
    database_url: str | None = None
    venue: str = "SIM"
    currency: str = "USD"
    update_on: str = "timer"
    update_delay_secs: int = 120
    update_interval_secs: int = 86_400
    publish_signals: bool = True
    intraday_bar_spec: str | None = None
    intraday_bar_source: str = "EXTERNAL"
    intraday_update_on: str = "timer"
    intraday_interval_secs: int = 60
    panel_path: str | None = None


class FactorRiskActor(Actor):
    """Publishes :class:`~.data.PortfolioFactorRisk` and one :class:`~.data.FactorExposure` per factor for the
    book of every strategy at the venue (positions valued at the last daily closes, see :func:`~.book.book_state`).

    The risk model is the snapshot as of the date of the latest close (the latest forecast date on or before
    it, so never a later one). Before the model's first forecast nothing is published. Positions the snapshot
    has no forecast for (e.g. a delisted symbol) are left out of the figures and counted in
    ``uncovered_weight``.

    With ``intraday_bar_spec`` it also publishes, during the day, :class:`~.data.LivePortfolioUpdate` and one
    :class:`~.data.LiveFactorReturn` per factor: :class:`factor_engine.live.LiveSession` on the intraday bars
    so far (:class:`~.intraday.IntradayFactorSession`: the model as of the latest forecast before the day, the
    returns of each bar's close over the symbol's previous close) and :func:`factor_engine.live.live_portfolio`
    of the positions held now, valued at the previous closes. A new trading date resets the session (the timer
    has published the day's last bars by then: it fires at the times in between, and after the data stamped at
    its own time). Days before the model's first forecast, and updates whose regression cannot be solved yet
    (too few assets priced), publish nothing. While it runs with intraday bars, BLAS is single-threaded in the
    process (:func:`factor_engine._dense.single_threaded_blas`, from ``on_start`` to ``on_stop``): the live
    regressions are small, and setting the limit around each update would cost more than the update.

    Parameters
    ----------
    config: the configuration.
    book: the model's snapshots, to share one with other components; default: loaded from the configuration.
    panel: the panel the model was built on, for the live regression's market caps (default: ``panel_path``).
    """

    def __init__(
        self, config: FactorRiskActorConfig, book: SnapshotBook | None = None, panel: pl.DataFrame | None = None
    ) -> None:
        if config.update_on not in _UPDATE_ON:
            raise ValueError(f"update_on must be one of {_UPDATE_ON}, not {config.update_on!r}")
        if config.intraday_update_on not in _UPDATE_ON:
            raise ValueError(f"intraday_update_on must be one of {_UPDATE_ON}, not {config.intraday_update_on!r}")
        if config.intraday_bar_source not in _BAR_SOURCES:
            raise ValueError(f"intraday_bar_source must be one of {_BAR_SOURCES}, not {config.intraday_bar_source!r}")
        if config.intraday_interval_secs <= 0:
            raise ValueError(f"intraday_interval_secs must be positive, not {config.intraday_interval_secs}")
        super().__init__(config)
        self.book = book or SnapshotBook(load_risk_model(config.model_path, config.model_id, config.database_url))
        self.venue = Venue(config.venue)
        self.currency = Currency.from_str(config.currency)
        self.updates = 0
        self._latest_close_ns = 0
        self._updated_close_ns = 0
        self.intraday: IntradayFactorSession | None = None
        self._intraday_spec: BarSpecification | None = None
        self.live_updates = 0
        self._live_latest_ns = 0
        self._live_updated_ns = 0
        self._blas = contextlib.ExitStack()
        if config.intraday_bar_spec is not None:
            self._intraday_spec = BarSpecification.from_str(config.intraday_bar_spec)
            if panel is None and config.panel_path is not None:
                panel = load_panel(config.panel_path)
            self.intraday = IntradayFactorSession(self.book, panel)

    def on_start(self) -> None:
        if self.intraday is not None:
            self._blas.enter_context(single_threaded_blas())
        for instrument in self.cache.instruments(venue=self.venue):
            self.subscribe_bars(bar_type(instrument.id))
            if self._intraday_spec is not None:
                source = AggregationSource[self.config.intraday_bar_source]
                self.subscribe_bars(BarType(instrument.id, self._intraday_spec, source))
        if self.intraday is not None and self.config.intraday_update_on == "timer":
            interval_ns = self.config.intraday_interval_secs * _NANOS
            first_ns = -(-self.clock.timestamp_ns() // interval_ns) * interval_ns  # the next multiple
            self.clock.set_timer(
                "factor-live",
                datetime.timedelta(seconds=self.config.intraday_interval_secs),
                start_time=datetime.datetime.fromtimestamp(first_ns / _NANOS, tz=datetime.UTC),
                callback=self._on_live_timer,
            )
        if self.config.update_on == "timer":
            start = self.clock.utc_now() + datetime.timedelta(seconds=self.config.update_delay_secs)
            self.clock.set_timer(
                "factor-risk",
                datetime.timedelta(seconds=self.config.update_interval_secs),
                start_time=start,
                callback=self._on_timer,
            )

    def on_stop(self) -> None:
        self._blas.close()

    def on_bar(self, bar: Bar) -> None:
        if self.intraday is not None:
            if bar.bar_type.spec == self._intraday_spec:
                self._on_intraday_bar(bar)
                return
            self.intraday.record_close(bar.bar_type.instrument_id.symbol.value, date_of(bar.ts_event), float(bar.close))
        self._latest_close_ns = max(self._latest_close_ns, bar.ts_event)
        if self.config.update_on == "bar":
            self.update()

    def _on_intraday_bar(self, bar: Bar) -> None:
        intraday = self.intraday
        if intraday is None:  # only called with one; this narrows the type
            return
        day = date_of(bar.ts_event)
        if day != intraday.day:
            intraday.start_day(day)
        symbol = bar.bar_type.instrument_id.symbol.value
        close = float(bar.close)
        intraday.price(symbol, close, float(bar.open))
        intraday.record_close(symbol, day, close)
        self._live_latest_ns = max(self._live_latest_ns, bar.ts_event)
        if self.config.intraday_update_on == "bar":
            self.update_live()

    def _on_live_timer(self, _event: object) -> None:
        if self._live_latest_ns > self._live_updated_ns:
            self.update_live()

    def _on_timer(self, _event: object) -> None:
        if self._latest_close_ns > self._updated_close_ns:
            self.update()

    def update(self) -> PortfolioFactorRisk | None:
        """Compute and publish the book's factor risk now; returns what was published (None before the
        model's first forecast or before any bar)."""
        if self._latest_close_ns == 0:
            return None
        self._updated_close_ns = self._latest_close_ns
        day = date_of(self._latest_close_ns)
        snapshot = self.book.as_of(day)
        if snapshot is None:
            return None
        state = book_state(self.cache, self.venue, currency=self.currency, include_open_orders=False)
        weights = state.weights() if state.equity > 0 else {}
        modelled = set(snapshot.symbols)
        covered = {symbol: weight for symbol, weight in weights.items() if symbol in modelled}
        risk = decompose_risk(snapshot, covered, allow_unnormalized=True)
        now = self.clock.timestamp_ns()
        day_text = day.isoformat()
        update = PortfolioFactorRisk(
            ts_event=self._latest_close_ns,
            ts_init=now,
            date=day_text,
            model_date=str(self.book.forecast_date(day)),
            equity=state.equity,
            invested=math.fsum(weights.values()),
            uncovered_weight=math.fsum(abs(w) for s, w in weights.items() if s not in covered),
            positions=len(state.quantities),
            total_risk=risk.total_risk,
            factor_risk=risk.factor_risk,
            specific_risk=risk.specific_risk,
        )
        self.publish_data(RISK_DATA_TYPE, update)
        for factor, exposure in risk.exposures.iter_rows():
            self.publish_data(
                EXPOSURE_DATA_TYPE,
                FactorExposure(
                    ts_event=self._latest_close_ns, ts_init=now, date=day_text, factor=factor, exposure=exposure
                ),
            )
        if self.config.publish_signals:
            root = math.sqrt(TRADING_DAYS)
            for name, value in (
                ("factor_risk_total", risk.total_risk),
                ("factor_risk_factor", risk.factor_risk),
                ("factor_risk_specific", risk.specific_risk),
            ):
                self.publish_signal(name, value * root, ts_event=self._latest_close_ns)
        self.updates += 1
        return update

    def update_live(self) -> LivePortfolioUpdate | None:
        """Solve today's regression on the intraday bars so far and publish it with the book's live figures;
        returns what was published (None without intraday bars, before the model's first forecast, or while
        today's regression cannot be solved)."""
        intraday = self.intraday
        if intraday is None:
            return None
        self._live_updated_ns = self._live_latest_ns
        result = intraday.solve()
        if result is None or not result.solved:
            return None
        quantities: dict[str, float] = {}
        for position in self.cache.positions_open(venue=self.venue):
            if position.signed_qty != 0:
                symbol = position.instrument_id.symbol.value
                quantities[symbol] = quantities.get(symbol, 0.0) + float(position.signed_qty)
        account = self.cache.account_for_venue(self.venue)
        cash = float(account.balance_total(self.currency).as_double()) if account is not None else 0.0
        figures = intraday.book_figures(quantities, cash)
        if figures is None:  # solve() above made the latest result; this narrows the type
            return None
        live = figures.portfolio
        risk = live.risk
        now = self.clock.timestamp_ns()
        ts_event = self._live_latest_ns
        day_text, model_date = str(intraday.day), str(intraday.model_date)
        update = LivePortfolioUpdate(
            ts_event=ts_event,
            ts_init=now,
            date=day_text,
            model_date=model_date,
            bars=intraday.bars,
            n_priced=result.n_priced,
            n_assets=result.n_assets,
            r2=math.nan if result.r2 is None else result.r2,
            equity=figures.equity,
            positions=len(quantities),
            uncovered_weight=figures.uncovered_weight,
            pnl=live.pnl,
            factor_pnl=live.factor_total,
            specific_pnl=live.specific_pnl,
            total_risk=risk.total_risk,
            factor_risk=risk.factor_risk,
            specific_risk=risk.specific_risk,
        )
        self.publish_data(LIVE_PORTFOLIO_DATA_TYPE, update)
        exposure_now = dict(live.exposures.select("factor", "portfolio").iter_rows())
        for factor, exposure, factor_return, pnl in live.factor_pnl.iter_rows():
            self.publish_data(
                LIVE_FACTOR_DATA_TYPE,
                LiveFactorReturn(
                    ts_event=ts_event,
                    ts_init=now,
                    date=day_text,
                    model_date=model_date,
                    factor=factor,
                    factor_return=math.nan if factor_return is None else factor_return,
                    exposure=exposure,
                    pnl=pnl,
                    exposure_now=exposure_now[factor],
                ),
            )
        if self.config.publish_signals:
            for name, value in (
                ("live_pnl", live.pnl),
                ("live_factor_pnl", live.factor_total),
                ("live_specific_pnl", live.specific_pnl),
                ("live_risk_total", risk.total_risk * math.sqrt(TRADING_DAYS)),
            ):
                self.publish_signal(name, value, ts_event=ts_event)
        self.live_updates += 1
        return update

    def book_now(self) -> BookState:
        """The book as the actor values it (positions at the last closes), e.g. to check its figures."""
        return book_state(self.cache, self.venue, currency=self.currency, include_open_orders=False)
