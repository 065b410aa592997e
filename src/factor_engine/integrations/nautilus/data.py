"""What :class:`~factor_engine.integrations.nautilus.actor.FactorRiskActor` publishes: NautilusTrader custom data
(``@customdataclass``: serializable, storable in a data catalog, subscribed to with ``DataType(<class>)``).

After each close: :class:`PortfolioFactorRisk` and one :class:`FactorExposure` per factor. During the day, on
intraday bars: :class:`LivePortfolioUpdate` and one :class:`LiveFactorReturn` per factor.

Units: risk figures are *daily* standard deviations of the portfolio's return as fractions of equity
(× √252 annualizes); weights and exposures are per unit of equity (``Bᵀw`` with ``w`` = market value / equity);
live returns and P&L are daily fractions since the previous close (0.01 is +1 %).
"""

# no ``from __future__ import annotations``: customdataclass reads the annotations as types

from nautilus_trader.core.data import Data
from nautilus_trader.model.custom import customdataclass
from nautilus_trader.model.data import DataType

__all__ = [
    "EXPOSURE_DATA_TYPE",
    "LIVE_FACTOR_DATA_TYPE",
    "LIVE_PORTFOLIO_DATA_TYPE",
    "RISK_DATA_TYPE",
    "FactorExposure",
    "LiveFactorReturn",
    "LivePortfolioUpdate",
    "PortfolioFactorRisk",
    "SessionEnd",
]


@customdataclass
class PortfolioFactorRisk(Data):
    """The portfolio's factor risk at one update.

    Fields
    ------
    date: the trading date of the prices (ISO ``YYYY-MM-DD``).
    model_date: the forecast date of the snapshot used (the latest on or before ``date``).
    equity: cash plus the market value of the positions (account currency).
    invested: Σ w, the market value of the positions per unit of equity.
    uncovered_weight: Σ |w| of positions the snapshot has no forecast for (left out of the figures below).
    positions: the number of open positions.
    total_risk, factor_risk, specific_risk: daily sd of the portfolio's return, fractions of equity.
    """

    date: str = ""
    model_date: str = ""
    equity: float = 0.0
    invested: float = 0.0
    uncovered_weight: float = 0.0
    positions: int = 0
    total_risk: float = 0.0
    factor_risk: float = 0.0
    specific_risk: float = 0.0


@customdataclass
class FactorExposure(Data):
    """The portfolio's exposure ``(Bᵀw)_k`` to one factor at one update (same ``ts_event`` as its
    :class:`PortfolioFactorRisk`)."""

    date: str = ""
    factor: str = ""
    exposure: float = 0.0


@customdataclass
class LivePortfolioUpdate(Data):
    """Today's live regression and the book's live figures at one intraday update
    (:mod:`factor_engine.live` on the intraday bars so far; ``ts_event`` is the latest bar's).

    Fields
    ------
    date: the trading date of the intraday bars (ISO); model_date: the close whose exposures, caps and risk
        forecast are used (the latest forecast date before ``date``).
    bars: intraday bars received today; n_priced: assets priced today so far; n_assets: of them, in the
        regression; r2: its weighted R².
    equity: the book valued at the previous closes, cash plus Σ shares × close (account currency).
    positions: open positions; uncovered_weight: Σ |w| of positions the model has no forecast for (left out).
    pnl: the book's return since the previous close, ``Σ w r`` (weights at the closes, held positions now);
        factor_pnl: ``Σ_k x_k f_k``; specific_pnl: the rest.
    total_risk, factor_risk, specific_risk: daily sd of the book drifted by today's returns, fractions of equity.
    """

    date: str = ""
    model_date: str = ""
    bars: int = 0
    n_priced: int = 0
    n_assets: int = 0
    r2: float = 0.0
    equity: float = 0.0
    positions: int = 0
    uncovered_weight: float = 0.0
    pnl: float = 0.0
    factor_pnl: float = 0.0
    specific_pnl: float = 0.0
    total_risk: float = 0.0
    factor_risk: float = 0.0
    specific_risk: float = 0.0


@customdataclass
class LiveFactorReturn(Data):
    """One factor at one intraday update (same ``ts_event`` as its :class:`LivePortfolioUpdate`).

    Fields
    ------
    date, model_date: as in :class:`LivePortfolioUpdate`.
    factor: the factor's name.
    factor_return: today's return so far (NaN when today's assets give no estimate of it).
    exposure: the book's exposure at the previous close over the priced holdings, ``Σ w B`` (what its P&L uses).
    pnl: ``exposure × factor_return`` (0 when not estimated).
    exposure_now: the exposure of the book drifted by today's returns.
    """

    date: str = ""
    model_date: str = ""
    factor: str = ""
    factor_return: float = 0.0
    exposure: float = 0.0
    pnl: float = 0.0
    exposure_now: float = 0.0


@customdataclass
class SessionEnd(Data):
    """A point in time after the last bar of a backtest: the engine fires timers only up to its last data
    point, so :func:`~.backtest.run_backtest` adds one to let the daily steps after the last close run."""


RISK_DATA_TYPE = DataType(PortfolioFactorRisk)
EXPOSURE_DATA_TYPE = DataType(FactorExposure)
LIVE_PORTFOLIO_DATA_TYPE = DataType(LivePortfolioUpdate)
LIVE_FACTOR_DATA_TYPE = DataType(LiveFactorReturn)
