"""A factor-constrained portfolio backtested in NautilusTrader's ``BacktestEngine`` on a panel's returns.

One venue (``SIM``) with a USD cash account, one :class:`Equity` per symbol and daily bars made from the
panel's returns (:mod:`.market`); :class:`~.strategy.FactorPortfolioStrategy` trades through
:class:`~.guard.FactorRiskGuard`; :class:`~.actor.FactorRiskActor` publishes the book's risk after each close
and a recorder subscribed to that custom data keeps it: the equity curve and the exposures come from what
the actor published.

Timing (no look-ahead): the decision after the close of ``t`` uses the snapshot as of ``t`` (exposures known
at that close, the forecasts made then); the orders fill at that close, which is the next bar's open; the
actor's forecast at ``t`` is for the book held from ``t`` to ``t + 1``.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from factor_engine.integrations.nautilus.actor import FactorRiskActor, FactorRiskActorConfig
from factor_engine.integrations.nautilus.data import (
    EXPOSURE_DATA_TYPE,
    RISK_DATA_TYPE,
    FactorExposure,
    PortfolioFactorRisk,
    SessionEnd,
)
from factor_engine.integrations.nautilus.market import PanelMarket, panel_market
from factor_engine.integrations.nautilus.snapshots import SnapshotBook
from factor_engine.integrations.nautilus.strategy import FactorPortfolioStrategy, FactorPortfolioStrategyConfig
from factor_engine.model import RiskModel
from factor_engine.panel import DATE
from factor_engine.portfolio.analytics import TRADING_DAYS

__all__ = ["BacktestResult", "market_engine", "run_backtest"]

VENUE = "SIM"
_DAY_NS = 86_400 * 1_000_000_000
Progress = Callable[[int, int], object]


@dataclass(frozen=True)
class BacktestResult:
    """What :func:`run_backtest` measured.

    Attributes
    ----------
    summary: JSON-compatible figures (see :func:`run_backtest`).
    equity_curve: ``date, equity, invested, daily_return, total_risk, factor_risk, specific_risk``: one row
        per close from the model's first forecast on; equity in account currency, ``invested`` the positions'
        value per unit of equity, ``daily_return`` the equity's return since the previous close, risks the
        actor's ex-ante forecast for the book held after that close (annualized sd, fractions).
    exposures: ``date`` + one column per factor: the book's exposures after each close.
    rebalances: one row per rebalance (:class:`~.strategy.Rebalance`).
    """

    summary: dict[str, Any]
    equity_curve: pl.DataFrame
    exposures: pl.DataFrame
    rebalances: pl.DataFrame


def _recorder(dates: list[datetime.date], progress: Progress | None) -> tuple[Any, list[Any], list[Any]]:
    """An actor that keeps what the FactorRiskActor publishes (and reports progress over ``dates``)."""
    from nautilus_trader.common.actor import Actor
    from nautilus_trader.config import ActorConfig

    risks: list[PortfolioFactorRisk] = []
    exposures: list[FactorExposure] = []
    position = {day.isoformat(): i for i, day in enumerate(dates)}

    class _Recorder(Actor):
        def on_start(self) -> None:
            self.subscribe_data(RISK_DATA_TYPE)
            self.subscribe_data(EXPOSURE_DATA_TYPE)

        def on_data(self, data: Any) -> None:
            if isinstance(data, PortfolioFactorRisk):
                risks.append(data)
                if progress is not None:
                    progress(position.get(data.date, 0) + 1, len(dates))
            elif isinstance(data, FactorExposure):
                exposures.append(data)

    return _Recorder(ActorConfig(component_id="FactorRiskRecorder")), risks, exposures


def market_engine(market: PanelMarket, *, capital: float, log_level: str = "ERROR") -> tuple[Any, int]:
    """A ``BacktestEngine`` with the market's venue (a USD cash account holding ``capital``, netting
    positions), instruments and bars, and the time it runs to: a day after the last close (a
    :class:`~.data.SessionEnd` point there lets the components' timers after the last close fire — the engine
    fires timers only up to its last data point). Add the components, ``run(end=...)``, then ``dispose()``."""
    from nautilus_trader.backtest.config import BacktestEngineConfig
    from nautilus_trader.backtest.engine import BacktestEngine
    from nautilus_trader.config import LoggingConfig, RiskEngineConfig
    from nautilus_trader.model.currencies import USD
    from nautilus_trader.model.data import CustomData, DataType
    from nautilus_trader.model.enums import AccountType, OmsType
    from nautilus_trader.model.identifiers import ClientId
    from nautilus_trader.model.objects import Money

    # a rebalance sends up to one order per symbol at once: the RiskEngine's default rate (100/s) would deny some
    submit_rate = f"{max(100, 2 * len(market.instruments))}/00:00:01"
    engine = BacktestEngine(
        BacktestEngineConfig(
            trader_id="FACTOR-001",
            logging=LoggingConfig(log_level=log_level),
            risk_engine=RiskEngineConfig(max_order_submit_rate=submit_rate),
            run_analysis=False,
        )
    )
    engine.add_venue(
        market.venue,
        oms_type=OmsType.NETTING,
        account_type=AccountType.CASH,
        starting_balances=[Money(capital, USD)],
        base_currency=USD,
    )
    for instrument in market.instruments.values():
        engine.add_instrument(instrument)
    engine.add_data(market.bars, sort=False)  # panel_market sorts them
    end_ns = int(market.bars[-1].ts_init) + _DAY_NS
    marker = CustomData(DataType(SessionEnd), SessionEnd(ts_event=end_ns, ts_init=end_ns))
    engine.add_data([marker], client_id=ClientId("factor-engine"), sort=False)
    return engine, end_ns


def run_backtest(
    model: RiskModel,
    panel: pl.DataFrame,
    *,
    optimize: Mapping[str, Any] | None = None,
    rebalance_days: int = 21,
    capital: float = 1_000_000.0,
    guard_factor_bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
    guard_max_risk: float | None = None,
    guard_max_tracking_error: float | None = None,
    cash_buffer: float = 0.0,
    fee: float = 0.0,
    progress: Progress | None = None,
    log_level: str = "ERROR",
) -> BacktestResult:
    """Backtest :class:`~.strategy.FactorPortfolioStrategy` on ``panel`` with ``model`` in a BacktestEngine.

    Parameters
    ----------
    model: the risk model (its snapshot as of each close drives the strategy, the guard and the actor).
    panel: ``date, symbol, asset_returns`` (daily fractions): the prices the engine trades at.
    optimize: the optimization, in :class:`~factor_engine.portfolio.spec.OptimizeSpec` keys (default
        min-variance); long only on the cash account.
    rebalance_days: trading days between rebalances.
    capital: the starting cash, USD.
    guard_factor_bounds, guard_max_risk, guard_max_tracking_error: the guard's limits (exposures, annualized
        risk and tracking error; see :class:`~.guard.GuardLimits`).
    cash_buffer: fraction of equity left in cash at each rebalance.
    fee: commission as a fraction of the traded value.
    progress: called with (closes done, closes in the panel) after each close the actor reports.
    log_level: NautilusTrader's log level (``"ERROR"``: quiet; ``"WARNING"`` shows the guard's denials).

    Returns
    -------
    :class:`BacktestResult`. ``summary`` holds ``engine``, ``orders_filled``, ``orders_denied`` (by the guard),
    ``orders_rejected`` (by NautilusTrader's RiskEngine or the venue), ``rebalances`` and their statuses,
    ``realized_vol`` (sd of the daily equity returns after the first trade × √252), ``forecast_vol`` (the
    mean over the same holding days of the actor's annualized ex-ante risk of the book held that day),
    their ``vol_ratio``, ``turnover`` (Σ traded value / equity over the rebalances after the first, per
    year: buys and sells), ``final_equity``, ``total_return`` and ``annualized_return`` (over the holding
    days), ``max_abs_exposure`` (factor → the largest |exposure| over the holding days), the period and
    ``run_seconds`` (the engine's run).
    """
    import nautilus_trader

    if not (math.isfinite(capital) and capital > 0):
        raise ValueError(f"capital must be a positive number of USD, not {capital!r}")
    market = panel_market(panel, venue=VENUE, fee=fee)
    book = SnapshotBook(model)
    bounds = {f: [lo, hi] for f, (lo, hi) in (guard_factor_bounds or {}).items()}
    strategy = FactorPortfolioStrategy(
        FactorPortfolioStrategyConfig(
            strategy_id="FactorPortfolio-001",
            venue=VENUE,
            rebalance_days=rebalance_days,
            optimize=dict(optimize or {}),
            guard_factor_bounds=bounds,
            guard_max_risk=guard_max_risk,
            guard_max_tracking_error=guard_max_tracking_error,
            cash_buffer=cash_buffer,
        ),
        book=book,
    )
    actor = FactorRiskActor(FactorRiskActorConfig(component_id="FactorRiskActor", venue=VENUE), book=book)
    dates = market.dates.to_list()
    recorder, risks, exposures = _recorder(dates, progress)

    engine, end_ns = market_engine(market, capital=capital, log_level=log_level)
    try:
        engine.add_strategy(strategy)
        engine.add_actor(actor)
        engine.add_actor(recorder)
        start = time.perf_counter()
        engine.run(end=end_ns)
        run_seconds = time.perf_counter() - start
        orders_filled = strategy.orders_filled
    finally:
        engine.dispose()

    equity_curve = _equity_curve(risks)
    exposure_frame = _exposure_frame(exposures)
    rebalance_frame = pl.DataFrame(
        [asdict(r) | {"reasons": "; ".join(r.reasons)} for r in strategy.rebalances],
        schema={
            "date": pl.Date,
            "model_date": pl.Date,
            "status": pl.String,
            "orders": pl.Int64,
            "traded_value": pl.Float64,
            "equity": pl.Float64,
            "forecast_risk": pl.Float64,
            "reasons": pl.String,
        },
    )
    summary = _summary(equity_curve, exposure_frame, rebalance_frame)
    summary |= {
        "engine": f"NautilusTrader {nautilus_trader.__version__} BacktestEngine",
        "orders_filled": orders_filled,
        "orders_denied": strategy.guard.denied_orders,
        "orders_rejected": strategy.orders_rejected,
        "capital": capital,
        "rebalance_days": rebalance_days,
        "strategy": strategy.spec.as_dict(),
        "guard": {
            "factor_bounds": bounds,
            "max_risk": guard_max_risk,
            "max_tracking_error": guard_max_tracking_error,
        },
        "cash_buffer": cash_buffer,
        "fee": fee,
        "n_assets": len(market.instruments),
        "n_closes": len(dates),
        "bars": len(market.bars),
        "run_seconds": run_seconds,
    }
    return BacktestResult(summary, equity_curve, exposure_frame, rebalance_frame)


def _equity_curve(risks: list[PortfolioFactorRisk]) -> pl.DataFrame:
    root = math.sqrt(TRADING_DAYS)
    frame = pl.DataFrame(
        {
            DATE: [datetime.date.fromisoformat(r.date) for r in risks],
            "equity": [r.equity for r in risks],
            "invested": [r.invested for r in risks],
            "total_risk": [r.total_risk * root for r in risks],
            "factor_risk": [r.factor_risk * root for r in risks],
            "specific_risk": [r.specific_risk * root for r in risks],
        },
        schema={
            DATE: pl.Date,
            "equity": pl.Float64,
            "invested": pl.Float64,
            "total_risk": pl.Float64,
            "factor_risk": pl.Float64,
            "specific_risk": pl.Float64,
        },
    )
    return frame.with_columns((pl.col("equity") / pl.col("equity").shift(1) - 1.0).alias("daily_return")).select(
        DATE, "equity", "invested", "daily_return", "total_risk", "factor_risk", "specific_risk"
    )


def _exposure_frame(exposures: list[FactorExposure]) -> pl.DataFrame:
    long = pl.DataFrame(
        {
            DATE: [datetime.date.fromisoformat(e.date) for e in exposures],
            "factor": [e.factor for e in exposures],
            "exposure": [e.exposure for e in exposures],
        },
        schema={DATE: pl.Date, "factor": pl.String, "exposure": pl.Float64},
    )
    if long.height == 0:
        return pl.DataFrame(schema={DATE: pl.Date})
    factors = long.get_column("factor").unique(maintain_order=True).to_list()
    return long.pivot("factor", index=DATE, values="exposure").select(DATE, *factors).sort(DATE)


def _summary(equity_curve: pl.DataFrame, exposures: pl.DataFrame, rebalances: pl.DataFrame) -> dict[str, Any]:
    """The figures over the holding days: from the first traded rebalance to the last close."""
    traded = rebalances.filter(pl.col("status") == "traded")
    counts = dict(rebalances.group_by("status").len().iter_rows())
    summary: dict[str, Any] = {
        "rebalances": rebalances.height,
        "rebalances_by_status": {str(k): int(v) for k, v in counts.items()},
    }
    if traded.height == 0 or equity_curve.height == 0:
        final = float(equity_curve.get_column("equity")[-1]) if equity_curve.height else None
        return summary | {
            "start": None,
            "end": None,
            "holding_days": 0,
            "realized_vol": None,
            "forecast_vol": None,
            "vol_ratio": None,
            "turnover": None,
            "final_equity": final,
            "total_return": None,
            "annualized_return": None,
            "max_abs_exposure": {},
        }
    first = traded.get_column("date")[0]
    held = equity_curve.filter(pl.col(DATE) >= first)
    returns = held.get_column("daily_return").to_numpy()[1:]  # the return of each day after the first trade
    forecasts = held.get_column("total_risk").to_numpy()[:-1]  # made at the close before each of those days
    equity = held.get_column("equity").to_numpy()
    days = returns.size
    years = days / TRADING_DAYS if days else math.nan
    realized = float(np.std(returns, ddof=1) * math.sqrt(TRADING_DAYS)) if days > 1 else math.nan
    forecast = float(np.mean(forecasts)) if days else math.nan
    later = traded.slice(1)
    turnover = float((later.get_column("traded_value") / later.get_column("equity")).sum()) / years if days else None
    total_return = float(equity[-1] / equity[0] - 1.0)
    held_exposures = exposures.filter(pl.col(DATE) >= first)
    largest = {
        factor: float(np.nanmax(np.abs(held_exposures.get_column(factor).to_numpy())))
        for factor in held_exposures.columns
        if factor != DATE
    }
    return summary | {
        "start": str(first),
        "end": str(held.get_column(DATE)[-1]),
        "holding_days": days,
        "realized_vol": _finite(realized),
        "forecast_vol": _finite(forecast),
        "vol_ratio": _finite(realized / forecast) if forecast > 0 else None,
        "turnover": None if turnover is None else _finite(turnover),
        "final_equity": float(equity[-1]),
        "total_return": total_return,
        "annualized_return": _finite((1.0 + total_return) ** (1.0 / years) - 1.0) if days else None,
        "max_abs_exposure": largest,
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
