"""What :class:`~factor_engine.integrations.nautilus.actor.FactorRiskActor` publishes: NautilusTrader custom data
(``@customdataclass``: serializable, storable in a data catalog, subscribed to with ``DataType(<class>)``).

Units: risk figures are *daily* standard deviations of the portfolio's return as fractions of equity
(× √252 annualizes); weights and exposures are per unit of equity (``Bᵀw`` with ``w`` = market value / equity).
"""

# no ``from __future__ import annotations``: customdataclass reads the annotations as types

from nautilus_trader.core.data import Data
from nautilus_trader.model.custom import customdataclass
from nautilus_trader.model.data import DataType

__all__ = ["EXPOSURE_DATA_TYPE", "RISK_DATA_TYPE", "FactorExposure", "PortfolioFactorRisk", "SessionEnd"]


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
class SessionEnd(Data):
    """A point in time after the last bar of a backtest: the engine fires timers only up to its last data
    point, so :func:`~.backtest.run_backtest` adds one to let the daily steps after the last close run."""


RISK_DATA_TYPE = DataType(PortfolioFactorRisk)
EXPOSURE_DATA_TYPE = DataType(FactorExposure)
