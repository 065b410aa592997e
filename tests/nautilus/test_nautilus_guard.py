"""FactorRiskGuard: orders that would breach an exposure bound, the risk budget or the tracking-error budget are
denied with the reason logged; orders within the limits, or bringing a breached book back, pass."""

from __future__ import annotations

import datetime
import math

import numpy as np
import pytest
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.objects import Quantity
from nautilus_trader.test_kit.stubs.execution import TestExecStubs

from factor_engine.integrations.nautilus import BookState, FactorRiskGuard, GuardLimits, SnapshotBook, panel_market
from factor_engine.model import RiskModel
from factor_engine.portfolio import decompose_risk
from factor_engine.portfolio.analytics import RiskModelSnapshot

EQUITY = 1_000_000.0
PRICE = 100.0
STYLE = "sze_score"


@pytest.fixture(scope="module")
def book(small_model: RiskModel) -> SnapshotBook:
    return SnapshotBook(small_model)


@pytest.fixture(scope="module")
def day(book: SnapshotBook) -> datetime.date:
    return book.dates[-1]


@pytest.fixture(scope="module")
def snapshot(book: SnapshotBook, day: datetime.date) -> RiskModelSnapshot:
    return book.at(day)


def _state(snapshot: RiskModelSnapshot, day: datetime.date, shares: dict[str, float]) -> BookState:
    """A book of ``shares`` at a price of 100 for every symbol of the snapshot; the rest of the equity in cash."""
    invested = sum(shares.values()) * PRICE
    prices = dict.fromkeys(snapshot.symbols, PRICE)
    return BookState(day, EQUITY, EQUITY - invested, dict(shares), prices, dict.fromkeys(snapshot.symbols, day))


def _equal_book(snapshot: RiskModelSnapshot, day: datetime.date) -> BookState:
    """95 % of equity spread equally over every symbol."""
    each = 0.95 * EQUITY / PRICE / snapshot.n_assets
    return _state(snapshot, day, dict.fromkeys(snapshot.symbols, each))


def _style_extremes(snapshot: RiskModelSnapshot) -> tuple[str, str]:
    column = snapshot.exposures[:, snapshot.factors.index(STYLE)]
    return snapshot.symbols[int(np.argmax(column))], snapshot.symbols[int(np.argmin(column))]


def _exposure(snapshot: RiskModelSnapshot, state: BookState, trades: dict[str, float]) -> float:
    weights = snapshot.align_weights(state.weights(state.after(trades)))
    return float(snapshot.exposures[:, snapshot.factors.index(STYLE)] @ weights)


def test_denies_an_order_breaching_a_factor_bound_and_logs_why(
    book: SnapshotBook, day: datetime.date, snapshot: RiskModelSnapshot
) -> None:
    state = _equal_book(snapshot, day)
    now = _exposure(snapshot, state, {})
    high, low = _style_extremes(snapshot)
    logged: list[str] = []
    guard = FactorRiskGuard(book, GuardLimits(factor_bounds={STYLE: (now - 0.05, now + 0.05)}), log=logged.append)

    big_buy = {high: 0.2 * EQUITY / PRICE}  # 20 % of equity in the largest exposure
    assert _exposure(snapshot, state, big_buy) > now + 0.05  # the order does breach the bound
    denied = guard.check_trades(state, big_buy)
    assert not denied.allowed
    assert denied.exposures[STYLE] == pytest.approx(_exposure(snapshot, state, big_buy), rel=1e-12)
    assert denied.reasons == (
        f"exposure to {STYLE} would be {denied.exposures[STYLE]:.4f}, above its upper bound {now + 0.05:g} "
        f"(now {now:.4f})",
    )
    assert logged == [f"FactorRiskGuard denied 1 order(s) on {day}: {denied.reasons[0]}"]

    small_buy = {low: 0.001 * EQUITY / PRICE}
    allowed = guard.check_trades(state, small_buy)
    assert allowed.allowed and allowed.reasons == ()
    assert len(logged) == 1 and guard.denied_orders == 1


def test_an_order_bringing_a_breached_book_back_passes(
    book: SnapshotBook, day: datetime.date, snapshot: RiskModelSnapshot
) -> None:
    high, low = _style_extremes(snapshot)
    state = _state(snapshot, day, {high: 0.5 * EQUITY / PRICE, low: 0.1 * EQUITY / PRICE})
    now = _exposure(snapshot, state, {})
    guard = FactorRiskGuard(book, GuardLimits(factor_bounds={STYLE: (-math.inf, now - 0.1)}), log=lambda _m: None)
    assert guard.check_trades(state, {high: -0.1 * EQUITY / PRICE}).allowed  # reduces the breach
    further = guard.check_trades(state, {high: 0.05 * EQUITY / PRICE})
    assert not further.allowed and "above its upper bound" in further.reasons[0]


def test_denies_an_order_over_the_risk_budget(
    book: SnapshotBook, day: datetime.date, snapshot: RiskModelSnapshot
) -> None:
    state = _equal_book(snapshot, day)
    weights = snapshot.align_weights(state.weights())
    risk_now = decompose_risk(snapshot, weights, allow_unnormalized=True).total_risk * math.sqrt(252)
    logged: list[str] = []
    guard = FactorRiskGuard(book, GuardLimits(max_risk=risk_now * 1.02), log=logged.append)
    riskiest = snapshot.symbols[int(np.argmax(snapshot.specific_vol))]
    concentrate = {symbol: -shares for symbol, shares in state.quantities.items() if symbol != riskiest}
    concentrate[riskiest] = 0.9 * EQUITY / PRICE
    decision = guard.check_trades(state, concentrate)
    assert not decision.allowed
    expected = decompose_risk(
        snapshot, snapshot.align_weights(state.weights(state.after(concentrate))), allow_unnormalized=True
    ).total_risk * math.sqrt(252)
    assert decision.risk == pytest.approx(expected, rel=1e-12)
    assert decision.reasons[0].startswith(f"risk would be {100 * expected:.2f} % annualized, above the budget")
    assert len(logged) == 1 and f"denied {len(concentrate)} order(s)" in logged[0]
    assert guard.check_trades(state, {riskiest: -1.0}).allowed  # a small sale lowers nothing past the budget


def test_denies_an_order_over_the_tracking_error_budget(
    book: SnapshotBook, day: datetime.date, snapshot: RiskModelSnapshot
) -> None:
    benchmark = dict.fromkeys(snapshot.symbols, 1.0 / snapshot.n_assets)
    state = _equal_book(snapshot, day)
    guard = FactorRiskGuard(book, GuardLimits(max_tracking_error=0.02, benchmark=benchmark), log=lambda _m: None)
    high, _ = _style_extremes(snapshot)
    decision = guard.check_trades(state, {high: 0.3 * EQUITY / PRICE})
    assert not decision.allowed
    assert decision.tracking_error is not None and decision.tracking_error > 0.02
    assert decision.reasons[0].startswith("tracking error would be")
    assert guard.check_trades(state, {high: 1.0}).allowed


def test_a_nautilus_order_is_checked_on_its_instrument(
    book: SnapshotBook, day: datetime.date, snapshot: RiskModelSnapshot, small_panel
) -> None:
    high, _ = _style_extremes(snapshot)
    instrument = panel_market(small_panel).instruments[high]
    state = _equal_book(snapshot, day)
    now = _exposure(snapshot, state, {})
    guard = FactorRiskGuard(book, GuardLimits(factor_bounds={STYLE: (now - 0.01, now + 0.01)}), log=lambda _m: None)
    buy = TestExecStubs.market_order(instrument, OrderSide.BUY, Quantity.from_int(3_000))
    sell = TestExecStubs.market_order(instrument, OrderSide.SELL, Quantity.from_int(10))
    assert not guard.check_order(state, buy).allowed
    assert abs(_exposure(snapshot, state, {high: -10.0}) - now) < 0.01
    assert guard.check_order(state, sell).allowed  # a small sale: within the bound


def test_unmodelled_symbols_and_dates_are_denied(book: SnapshotBook, day: datetime.date, snapshot) -> None:
    state = _equal_book(snapshot, day)
    state.prices["NOT-MODELLED"] = PRICE
    guard = FactorRiskGuard(book, GuardLimits(), log=lambda _m: None)
    decision = guard.check_trades(state, {"NOT-MODELLED": 10.0})
    assert not decision.allowed and decision.reasons[0].startswith("no risk forecast for NOT-MODELLED")
    early = book.dates[0] - datetime.timedelta(days=1)
    decision = guard.check_weights(early, {}, {snapshot.symbols[0]: 0.1})
    assert not decision.allowed and decision.reasons == (
        f"no risk forecast on or before {early}: nothing to check the orders against",
    )
    with pytest.raises(ValueError, match="has no price for"):
        guard.check_trades(state, {"UNPRICED": 1.0})


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"factor_bounds": {STYLE: (1.0, -1.0)}}, "must be lower <= upper"),
        ({"max_risk": -0.1}, "max_risk must be a finite number >= 0"),
        ({"max_tracking_error": 0.05}, "max_tracking_error needs a benchmark"),
    ],
)
def test_limits_are_validated(limits: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GuardLimits(**limits)
