"""A pre-trade factor risk check a strategy calls before it submits orders.

NautilusTrader's own RiskEngine checks orders one by one against trading limits (notional, rate, balance) and
has no hook for custom checks, so the strategy asks :class:`FactorRiskGuard` first: it values the book after
the orders at the last closes, and denies them when that book would breach a per-factor exposure bound, the
risk budget or the tracking-error budget of its :class:`GuardLimits` — and says why.

A limit counts as breached by orders only if the book after them is outside the limit *and* further outside
than the book before them: orders that bring a drifted book back towards its limits always pass.
"""

from __future__ import annotations

import datetime
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from factor_engine.integrations.nautilus.book import BookState
from factor_engine.integrations.nautilus.snapshots import SnapshotBook
from factor_engine.portfolio import decompose_risk
from factor_engine.portfolio.analytics import TRADING_DAYS, RiskModelSnapshot

__all__ = ["FactorRiskGuard", "GuardDecision", "GuardLimits"]

_LOG = logging.getLogger(__name__)
# a limit is breached when the figure is beyond it by more than this (exposure units or annualized sd)
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class GuardLimits:
    """The limits :class:`FactorRiskGuard` enforces (every one optional).

    Attributes
    ----------
    factor_bounds: factor → ``(lower, upper)`` bounds on the book's exposure ``(Bᵀw)_k`` (weights per unit of
        equity; ±inf for an open side).
    max_risk: the budget for the book's total risk, annualized sd (daily × √periods_per_year), fraction.
    max_tracking_error: the budget for the tracking error against ``benchmark``, annualized, fraction.
    benchmark: symbol → weight (fractions of capital); needed by ``max_tracking_error``.
    periods_per_year: trading days per year of the annualization.
    """

    factor_bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    max_risk: float | None = None
    max_tracking_error: float | None = None
    benchmark: Mapping[str, float] | None = None
    periods_per_year: int = TRADING_DAYS

    def __post_init__(self) -> None:
        for factor, (lower, upper) in self.factor_bounds.items():
            if math.isnan(lower) or math.isnan(upper) or lower > upper:
                raise ValueError(f"guard bounds of {factor!r} must be lower <= upper, not ({lower}, {upper})")
        for name in ("max_risk", "max_tracking_error"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"guard {name} must be a finite number >= 0 (annualized fraction), not {value!r}")
        if self.max_tracking_error is not None and not self.benchmark:
            raise ValueError("guard max_tracking_error needs a benchmark")
        if self.periods_per_year < 1:
            raise ValueError(f"periods_per_year must be >= 1, not {self.periods_per_year}")


@dataclass(frozen=True)
class GuardDecision:
    """What :class:`FactorRiskGuard` decided about a set of orders.

    Attributes
    ----------
    allowed: True when no limit would be breached.
    reasons: one sentence per breached limit (empty when allowed).
    date: the trading date of the book's prices.
    model_date: the forecast date of the snapshot used (None when the model has none yet).
    exposures: factor → the book's exposure after the orders.
    risk: the book's total risk after the orders, annualized (None without a snapshot).
    tracking_error: after the orders, annualized (None without a benchmark).
    orders: how many orders were checked.
    """

    allowed: bool
    reasons: tuple[str, ...]
    date: datetime.date | None
    model_date: datetime.date | None
    exposures: dict[str, float]
    risk: float | None
    tracking_error: float | None
    orders: int


def _beyond(value: float, lower: float, upper: float) -> float:
    """How far ``value`` lies outside ``[lower, upper]`` (0 inside)."""
    return max(lower - value, value - upper, 0.0)


def _percent(value: float) -> str:
    return f"{100 * value:.2f} %"


class FactorRiskGuard:
    """Checks orders against :class:`GuardLimits` on the model's snapshot as of the book's date.

    Parameters
    ----------
    book: the model's snapshots (:class:`~.snapshots.SnapshotBook`).
    limits: what to enforce.
    log: called with one line per denial (default: a warning of the ``logging`` logger of this module); a
        strategy passes ``self.log.warning`` to have it in NautilusTrader's log.

    ``decisions`` keeps every decision, ``denied_orders`` counts the orders denied.
    """

    def __init__(self, book: SnapshotBook, limits: GuardLimits, *, log: Callable[[str], object] | None = None) -> None:
        self.book = book
        self.limits = limits
        self.log = log or _LOG.warning
        self.decisions: list[GuardDecision] = []
        self.denied_orders = 0

    def check_order(self, state: BookState, order: object) -> GuardDecision:
        """Check one NautilusTrader order (its instrument's symbol is the model symbol) against ``state``."""
        return self.check_orders(state, [order])

    def check_orders(self, state: BookState, orders: Sequence[object]) -> GuardDecision:
        """Check NautilusTrader orders as one trade: the book after all of them against the book now."""
        from nautilus_trader.model.enums import OrderSide

        trades: dict[str, float] = {}
        for order in orders:
            symbol = order.instrument_id.symbol.value  # type: ignore[attr-defined]
            sign = 1.0 if order.side == OrderSide.BUY else -1.0  # type: ignore[attr-defined]
            trades[symbol] = trades.get(symbol, 0.0) + sign * float(order.quantity)  # type: ignore[attr-defined]
        return self.check_trades(state, trades, n_orders=len(orders))

    def check_trades(self, state: BookState, trades: Mapping[str, float], *, n_orders: int = 0) -> GuardDecision:
        """Check signed share ``trades`` (symbol → shares, + buys) done at the book's last closes."""
        unpriced = sorted(symbol for symbol in trades if symbol not in state.prices)
        if unpriced:
            raise ValueError(f"the book has no price for {unpriced[:5]}: price them with book_state(also_price=...)")
        before = state.weights()
        after = state.weights(state.after(trades))
        decision = self.check_weights(state.date, before, after, n_orders=n_orders or len(trades))
        return decision

    def check_weights(
        self,
        day: datetime.date | None,
        before: Mapping[str, float],
        after: Mapping[str, float],
        *,
        n_orders: int = 1,
    ) -> GuardDecision:
        """The decision for moving the book from weights ``before`` to ``after`` (per unit of equity) on ``day``."""
        snapshot = None if day is None else self.book.as_of(day)
        model_date = None if day is None else self.book.forecast_date(day)
        if snapshot is None:
            reasons: tuple[str, ...] = (f"no risk forecast on or before {day}: nothing to check the orders against",)
            decision = GuardDecision(False, reasons, day, None, {}, None, None, n_orders)
        else:
            decision = self._decide(snapshot, day, model_date, before, after, n_orders)
        self.decisions.append(decision)
        if not decision.allowed:
            self.denied_orders += n_orders
            self.log(f"FactorRiskGuard denied {n_orders} order(s) on {day}: {'; '.join(decision.reasons)}")
        return decision

    def _decide(
        self,
        snapshot: RiskModelSnapshot,
        day: datetime.date | None,
        model_date: datetime.date | None,
        before: Mapping[str, float],
        after: Mapping[str, float],
        n_orders: int,
    ) -> GuardDecision:
        limits = self.limits
        covered = set(snapshot.symbols)
        reasons = [
            f"no risk forecast for {symbol} on {model_date}: the guard cannot check an order that adds to it"
            for symbol, weight in after.items()
            if symbol not in covered and abs(weight) > abs(before.get(symbol, 0.0)) + _TOLERANCE
        ]
        weights_before = snapshot.align_weights({s: w for s, w in before.items() if s in covered})
        weights_after = snapshot.align_weights({s: w for s, w in after.items() if s in covered})
        x_before = snapshot.exposures.T @ weights_before
        x_after = snapshot.exposures.T @ weights_after
        exposures = dict(zip(snapshot.factors, (float(x) for x in x_after), strict=True))
        for factor, (lower, upper) in limits.factor_bounds.items():
            if factor not in exposures:
                reasons.append(f"factor {factor!r} of the guard's bounds has no forecast on {model_date}")
                continue
            k = snapshot.factors.index(factor)
            now, then = float(x_before[k]), float(x_after[k])
            gap = _beyond(then, lower, upper)
            if gap > _TOLERANCE and gap > _beyond(now, lower, upper) + _TOLERANCE:
                side = f"below its lower bound {lower:g}" if then < lower else f"above its upper bound {upper:g}"
                reasons.append(f"exposure to {factor} would be {then:.4f}, {side} (now {now:.4f})")
        root = math.sqrt(limits.periods_per_year)
        risk_now, risk_then = (_risk(snapshot, weights, None) * root for weights in (weights_before, weights_after))
        if limits.max_risk is not None and risk_then > limits.max_risk + _TOLERANCE and risk_then > risk_now:
            reasons.append(
                f"risk would be {_percent(risk_then)} annualized, above the budget {_percent(limits.max_risk)} "
                f"(now {_percent(risk_now)})"
            )
        tracking_then = None
        if limits.benchmark is not None:
            benchmark = snapshot.align_weights({s: w for s, w in limits.benchmark.items() if s in covered})
            tracking_now = _risk(snapshot, weights_before, benchmark) * root
            tracking_then = _risk(snapshot, weights_after, benchmark) * root
            budget = limits.max_tracking_error
            if budget is not None and tracking_then > budget + _TOLERANCE and tracking_then > tracking_now:
                reasons.append(
                    f"tracking error would be {_percent(tracking_then)} annualized, above the budget "
                    f"{_percent(budget)} (now {_percent(tracking_now)})"
                )
        return GuardDecision(
            allowed=not reasons,
            reasons=tuple(reasons),
            date=day,
            model_date=model_date,
            exposures=exposures,
            risk=risk_then,
            tracking_error=tracking_then,
            orders=n_orders,
        )


def _risk(snapshot: RiskModelSnapshot, weights: np.ndarray, benchmark: np.ndarray | None) -> float:
    """Daily total risk of ``weights`` (or of their difference from ``benchmark``)."""
    return decompose_risk(snapshot, weights, benchmark, allow_unnormalized=True).total_risk
