"""``FactorPortfolioStrategy``: every N trading days, target weights from the factor-constrained optimizer,
traded towards with market orders once :class:`~.guard.FactorRiskGuard` allows them."""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import msgspec
from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.data import Bar
from nautilus_trader.model.enums import OrderSide, OrderStatus
from nautilus_trader.model.identifiers import ClientOrderId, InstrumentId, Symbol, Venue
from nautilus_trader.model.objects import Currency, Quantity
from nautilus_trader.model.orders import Order
from nautilus_trader.trading.strategy import Strategy

from factor_engine.integrations.nautilus.book import BookState, book_state
from factor_engine.integrations.nautilus.guard import FactorRiskGuard, GuardLimits
from factor_engine.integrations.nautilus.market import bar_type, date_of
from factor_engine.integrations.nautilus.snapshots import SnapshotBook, load_risk_model
from factor_engine.portfolio import OptimizationError
from factor_engine.portfolio.analytics import TRADING_DAYS, RiskModelSnapshot
from factor_engine.portfolio.spec import OptimizeSpec

__all__ = ["FactorPortfolioStrategy", "FactorPortfolioStrategyConfig", "Rebalance", "strategy_spec"]


def strategy_spec(optimize: Mapping[str, Any], names: Mapping[str, str] | None = None) -> OptimizeSpec:
    """The strategy's :class:`OptimizeSpec` from its ``optimize`` keys: ``max_turnover`` is measured from the
    book at each rebalance, so it needs no ``current`` (one given is replaced by the book)."""
    data = {key: value for key, value in optimize.items() if key != "current"}
    turnover = data.pop("max_turnover", None)
    spec = OptimizeSpec.from_mapping(data, names)
    if turnover is None:
        return spec
    checked = OptimizeSpec.from_mapping({"max_turnover": turnover, "current": {"book": 1.0}}, names)
    return replace(spec, max_turnover=checked.max_turnover)


class FactorPortfolioStrategyConfig(StrategyConfig, frozen=True):
    """Configuration of :class:`FactorPortfolioStrategy`.

    Parameters
    ----------
    model_path: a model folder written by ``factor-engine build``; or
    model_id: a built model of the service's store at ``database_url`` (default: the service's setting).
    venue: the venue of the instruments and the account; ``currency`` the account currency.
    rebalance_days: trading days between rebalances (the first is on the model's first forecast date).
    optimize: the optimization, in the keys of :class:`factor_engine.portfolio.spec.OptimizeSpec` (objective,
        benchmark, long_only, neutral, factor_bounds, max_weight, max_tracking_error, max_turnover, ...); on a
        cash account ``long_only`` is always true, and ``max_turnover`` is measured from the book at each
        rebalance (see :func:`strategy_spec`).
    guard_factor_bounds: factor → ``[lower, upper]`` (null for an open side): the guard's exposure bounds.
    guard_max_risk: the guard's budget for total risk, annualized fraction.
    guard_max_tracking_error: the guard's tracking-error budget against the optimization's benchmark.
    cash_buffer: fraction of equity kept in cash at each rebalance (targets are scaled by 1 − cash_buffer).
    step_delay_secs, step_interval_secs: the daily step runs ``step_delay_secs`` after the first bar's close
        and every ``step_interval_secs`` after, when a new close has arrived.
    """

    model_path: str | None = None
    model_id: str | None = None
    database_url: str | None = None
    venue: str = "SIM"
    currency: str = "USD"
    rebalance_days: int = 21
    optimize: dict[str, Any] = msgspec.field(default_factory=dict)
    guard_factor_bounds: dict[str, list[float | None]] = msgspec.field(default_factory=dict)
    guard_max_risk: float | None = None
    guard_max_tracking_error: float | None = None
    cash_buffer: float = 0.0
    step_delay_secs: int = 60
    step_interval_secs: int = 86_400


@dataclass(frozen=True)
class Rebalance:
    """One rebalance.

    Attributes
    ----------
    date: the trading date whose close the decision used (orders fill at that close, the next bar's open).
    model_date: the forecast date of the snapshot.
    status: ``"traded"``, ``"denied"`` (by the guard), ``"infeasible"`` (the optimizer failed) or ``"none"``
        (nothing to trade).
    orders: orders sent (or denied).
    traded_value: Σ |shares × price| of those orders, account currency.
    equity: the book's equity before trading.
    forecast_risk: ex-ante risk of the optimized target weights, annualized (None when infeasible).
    reasons: why the guard denied the orders or the optimizer failed.
    """

    date: datetime.date
    model_date: datetime.date | None
    status: str
    orders: int
    traded_value: float
    equity: float
    forecast_risk: float | None
    reasons: tuple[str, ...] = ()


def _bounds(config: dict[str, list[float | None]]) -> dict[str, tuple[float, float]]:
    bounds = {}
    for factor, pair in config.items():
        if len(pair) != 2:
            raise ValueError(f"guard_factor_bounds[{factor!r}] must be [lower, upper], not {pair!r}")
        lower, upper = pair
        bounds[factor] = (-math.inf if lower is None else float(lower), math.inf if upper is None else float(upper))
    return bounds


class FactorPortfolioStrategy(Strategy):
    """Rebalances to the optimizer's target weights every ``rebalance_days`` trading days.

    At each step (a daily timer after the close) the strategy counts a trading day when a new close has
    arrived; on a rebalance day it takes the snapshot as of that close, optimizes over the symbols of the
    snapshot that have a bar on that day, turns the weights into whole shares of ``(1 − cash_buffer) ×
    equity`` at the closes, and asks the guard about all the orders as one trade. If allowed it sends the
    sells first and the buys once the sells are done, so a cash account never buys with money it does not
    have yet. Positions the target leaves out (also of symbols no longer modelled) are sold.

    Parameters
    ----------
    config: the configuration.
    book: the model's snapshots, to share one with other components; default: loaded from the configuration.
    guard: the pre-trade check; default: one with the configuration's guard limits.

    ``rebalances`` records every rebalance; :attr:`orders_filled` counts the filled orders,
    ``orders_rejected`` those NautilusTrader's RiskEngine denied or the venue rejected, and the guard's
    ``denied_orders`` those the guard denied.
    """

    def __init__(
        self,
        config: FactorPortfolioStrategyConfig,
        book: SnapshotBook | None = None,
        guard: FactorRiskGuard | None = None,
    ) -> None:
        if config.rebalance_days < 1:
            raise ValueError(f"rebalance_days must be >= 1, not {config.rebalance_days}")
        if not 0.0 <= config.cash_buffer < 1.0:
            raise ValueError(f"cash_buffer must be in [0, 1), not {config.cash_buffer}")
        super().__init__(config)
        self.spec = strategy_spec(config.optimize)
        self.book = book or SnapshotBook(load_risk_model(config.model_path, config.model_id, config.database_url))
        self._own_guard = guard is None
        self.guard = guard or FactorRiskGuard(
            self.book,
            GuardLimits(
                factor_bounds=_bounds(config.guard_factor_bounds),
                max_risk=config.guard_max_risk,
                max_tracking_error=config.guard_max_tracking_error,
                benchmark=self.spec.benchmark,
            ),
        )
        self.venue = Venue(config.venue)
        self.currency = Currency.from_str(config.currency)
        self.rebalances: list[Rebalance] = []
        self.orders_rejected = 0
        self._latest_close_ns = 0
        self._stepped_close_ns = 0
        self._days_since_rebalance: int | None = None
        self._pending_sells: set[ClientOrderId] = set()
        self._queued_buys: list[Order] = []

    # ---- lifecycle ----------------------------------------------------------------------------------------
    def on_start(self) -> None:
        if self._own_guard:  # its denials go to NautilusTrader's log
            self.guard.log = self.log.warning
        account = self.cache.account_for_venue(self.venue)
        if account is not None and account.is_cash_account and not self.spec.long_only:
            self.log.info("cash account: the optimization is long only")
            self.spec = replace(self.spec, long_only=True)
        for instrument in self.cache.instruments(venue=self.venue):
            self.subscribe_bars(bar_type(instrument.id))
        self.clock.set_timer(
            "factor-portfolio-step",
            datetime.timedelta(seconds=self.config.step_interval_secs),
            start_time=self.clock.utc_now() + datetime.timedelta(seconds=self.config.step_delay_secs),
            callback=self._on_timer,
        )

    def on_bar(self, bar: Bar) -> None:
        self._latest_close_ns = max(self._latest_close_ns, bar.ts_event)

    def _on_timer(self, _event: object) -> None:
        if self._latest_close_ns > self._stepped_close_ns:
            self._stepped_close_ns = self._latest_close_ns
            self.step(date_of(self._latest_close_ns))

    @property
    def orders_filled(self) -> int:
        """Orders of this strategy that are completely filled."""
        return sum(1 for order in self.cache.orders(strategy_id=self.id) if order.status == OrderStatus.FILLED)

    # ---- the daily step -----------------------------------------------------------------------------------
    def step(self, day: datetime.date) -> Rebalance | None:
        """One trading day: rebalance when due (returns the rebalance, else None)."""
        snapshot = self.book.as_of(day)
        if snapshot is None:
            return None
        if self._days_since_rebalance is not None:
            self._days_since_rebalance += 1
            if self._days_since_rebalance < self.config.rebalance_days:
                return None
        self._days_since_rebalance = 0
        rebalance = self.rebalance(day, snapshot)
        self.rebalances.append(rebalance)
        return rebalance

    def rebalance(self, day: datetime.date, snapshot: RiskModelSnapshot) -> Rebalance:
        """Optimize on ``snapshot`` and trade towards the targets through the guard."""
        model_date = self.book.forecast_date(day)
        quoted = [self._instrument_id(symbol) for symbol in snapshot.symbols]
        state = book_state(self.cache, self.venue, currency=self.currency, also_price=quoted)
        tradable = [i for i, symbol in enumerate(snapshot.symbols) if state.price_dates.get(symbol) == day]
        try:
            universe = _rows(snapshot, tradable)
            result = self._spec_for(universe, state).run(universe)
        except OptimizationError as error:
            self.log.error(f"no rebalance on {day}: {error}")
            return Rebalance(day, model_date, "infeasible", 0, 0.0, state.equity, None, (str(error),))
        invest = state.equity * (1.0 - self.config.cash_buffer)
        targets = {
            symbol: float(math.trunc(weight * invest / state.prices[symbol]))
            for symbol, weight in result.weights.iter_rows()
            if weight != 0.0
        }
        trades = {
            symbol: targets.get(symbol, 0.0) - state.quantities.get(symbol, 0.0)
            for symbol in {*targets, *state.quantities}
        }
        orders = [self._order(symbol, shares) for symbol, shares in sorted(trades.items()) if shares != 0]
        risk = result.risk * math.sqrt(TRADING_DAYS)
        if not orders:
            return Rebalance(day, model_date, "none", 0, 0.0, state.equity, risk)
        traded = math.fsum(abs(shares) * state.prices[symbol] for symbol, shares in trades.items())
        decision = self.guard.check_orders(state, orders)
        if not decision.allowed:
            return Rebalance(day, model_date, "denied", len(orders), traded, state.equity, risk, decision.reasons)
        self._send(orders)
        return Rebalance(day, model_date, "traded", len(orders), traded, state.equity, risk)

    def _spec_for(self, universe: RiskModelSnapshot, state: BookState) -> OptimizeSpec:
        """The spec on this universe: the benchmark restricted to it, the turnover measured from the book."""
        spec, symbols = self.spec, set(universe.symbols)
        if spec.max_turnover is not None:
            current = {s: w for s, w in state.weights().items() if s in symbols}
            spec = replace(spec, current=current or {universe.symbols[0]: 0.0}, allow_unnormalized=True)
        if spec.benchmark is not None:
            spec = replace(spec, benchmark={s: w for s, w in spec.benchmark.items() if s in symbols})
        return spec

    # ---- orders -------------------------------------------------------------------------------------------
    def _instrument_id(self, symbol: str) -> InstrumentId:
        return InstrumentId(Symbol(symbol), self.venue)

    def _order(self, symbol: str, shares: float) -> Order:
        side = OrderSide.BUY if shares > 0 else OrderSide.SELL
        return self.order_factory.market(self._instrument_id(symbol), side, Quantity.from_int(int(abs(shares))))

    def _send(self, orders: list[Order]) -> None:
        sells = [order for order in orders if order.side == OrderSide.SELL]
        self._queued_buys = [order for order in orders if order.side == OrderSide.BUY]
        self._pending_sells = {order.client_order_id for order in sells}
        for order in sells:
            self.submit_order(order)
        self._release_buys()

    def _release_buys(self) -> None:
        if not self._pending_sells and self._queued_buys:
            buys, self._queued_buys = self._queued_buys, []
            for order in buys:
                self.submit_order(order)

    def on_order_event(self, event: Any) -> None:
        order = self.cache.order(event.client_order_id)
        if order is not None and order.is_closed and event.client_order_id in self._pending_sells:
            self._pending_sells.discard(event.client_order_id)
            self._release_buys()

    def on_order_denied(self, event: Any) -> None:
        self.orders_rejected += 1

    def on_order_rejected(self, event: Any) -> None:
        self.orders_rejected += 1

    def book_now(self) -> BookState:
        """The book at the last closes (positions only)."""
        return book_state(self.cache, self.venue, currency=self.currency, include_open_orders=False)


def _rows(snapshot: RiskModelSnapshot, rows: list[int]) -> RiskModelSnapshot:
    """The snapshot restricted to the assets at ``rows``."""
    if len(rows) == snapshot.n_assets:
        return snapshot
    if not rows:
        raise OptimizationError("no symbol of the snapshot has a bar on this date")
    return RiskModelSnapshot(
        factors=snapshot.factors,
        symbols=tuple(snapshot.symbols[i] for i in rows),
        exposures=snapshot.exposures[rows],
        factor_covariance=snapshot.factor_covariance,
        specific_vol=snapshot.specific_vol[rows],
    )
