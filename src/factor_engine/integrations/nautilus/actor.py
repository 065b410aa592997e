"""``FactorRiskActor``: follows the trader's positions and the daily bars and publishes the book's factor
exposures and its total, factor and specific risk as NautilusTrader custom data and signals."""

from __future__ import annotations

import datetime
import math

from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.data import Bar
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.objects import Currency

from factor_engine.integrations.nautilus.book import BookState, book_state
from factor_engine.integrations.nautilus.data import (
    EXPOSURE_DATA_TYPE,
    RISK_DATA_TYPE,
    FactorExposure,
    PortfolioFactorRisk,
)
from factor_engine.integrations.nautilus.market import bar_type, date_of
from factor_engine.integrations.nautilus.snapshots import SnapshotBook, load_risk_model
from factor_engine.portfolio import decompose_risk
from factor_engine.portfolio.analytics import TRADING_DAYS

__all__ = ["FactorRiskActor", "FactorRiskActorConfig"]

_UPDATE_ON = ("timer", "bar")


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
        ``_specific`` (``SignalFactorRiskTotal`` ...).
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


class FactorRiskActor(Actor):
    """Publishes :class:`~.data.PortfolioFactorRisk` and one :class:`~.data.FactorExposure` per factor for the
    book of every strategy at the venue (positions valued at the last daily closes, see :func:`~.book.book_state`).

    The risk model is the snapshot as of the date of the latest close (the latest forecast date on or before
    it, so never a later one). Before the model's first forecast nothing is published. Positions the snapshot
    has no forecast for (e.g. a delisted symbol) are left out of the figures and counted in
    ``uncovered_weight``.

    Parameters
    ----------
    config: the configuration.
    book: the model's snapshots, to share one with other components; default: loaded from the configuration.
    """

    def __init__(self, config: FactorRiskActorConfig, book: SnapshotBook | None = None) -> None:
        if config.update_on not in _UPDATE_ON:
            raise ValueError(f"update_on must be one of {_UPDATE_ON}, not {config.update_on!r}")
        super().__init__(config)
        self.book = book or SnapshotBook(load_risk_model(config.model_path, config.model_id, config.database_url))
        self.venue = Venue(config.venue)
        self.currency = Currency.from_str(config.currency)
        self.updates = 0
        self._latest_close_ns = 0
        self._updated_close_ns = 0

    def on_start(self) -> None:
        for instrument in self.cache.instruments(venue=self.venue):
            self.subscribe_bars(bar_type(instrument.id))
        if self.config.update_on == "timer":
            start = self.clock.utc_now() + datetime.timedelta(seconds=self.config.update_delay_secs)
            self.clock.set_timer(
                "factor-risk",
                datetime.timedelta(seconds=self.config.update_interval_secs),
                start_time=start,
                callback=self._on_timer,
            )

    def on_bar(self, bar: Bar) -> None:
        self._latest_close_ns = max(self._latest_close_ns, bar.ts_event)
        if self.config.update_on == "bar":
            self.update()

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

    def book_now(self) -> BookState:
        """The book as the actor values it (positions at the last closes), e.g. to check its figures."""
        return book_state(self.cache, self.venue, currency=self.currency, include_open_orders=False)
