"""NautilusTrader integration (``pip install 'factor-engine[nautilus]'``, nautilus_trader 1.221.x).

- :class:`FactorRiskActor` (:class:`FactorRiskActorConfig`): follows the trader's positions and the daily bars
  and publishes the book's factor exposures and total, factor and specific risk as custom data
  (:class:`PortfolioFactorRisk`, :class:`FactorExposure`) and signals; with intraday bars, today's live factor
  returns so far and the book's live P&L by factor, exposures and risk (:class:`LivePortfolioUpdate`,
  :class:`LiveFactorReturn`; :class:`IntradayFactorSession`).
- :class:`FactorRiskGuard` (:class:`GuardLimits`): the pre-trade check a strategy calls before it submits
  orders; it denies orders that would breach per-factor exposure bounds or a risk or tracking-error budget,
  and logs why.
- :class:`FactorPortfolioStrategy` (:class:`FactorPortfolioStrategyConfig`): every N trading days, target
  weights from the optimizer under factor constraints, traded towards through the guard.
- :func:`run_backtest`: the strategy in NautilusTrader's ``BacktestEngine`` on a panel's returns
  (``factor-engine backtest``).

Everything that names nautilus_trader lives in this subpackage; importing it imports nautilus_trader, and
``import factor_engine`` does not import it.
"""

from factor_engine.integrations.nautilus.actor import FactorRiskActor, FactorRiskActorConfig
from factor_engine.integrations.nautilus.backtest import BacktestResult, market_engine, run_backtest
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
from factor_engine.integrations.nautilus.guard import FactorRiskGuard, GuardDecision, GuardLimits
from factor_engine.integrations.nautilus.intraday import IntradayFactorSession, LiveBookFigures
from factor_engine.integrations.nautilus.market import PanelMarket, bar_type, panel_market
from factor_engine.integrations.nautilus.snapshots import SnapshotBook, load_risk_model
from factor_engine.integrations.nautilus.strategy import (
    FactorPortfolioStrategy,
    FactorPortfolioStrategyConfig,
    Rebalance,
    strategy_spec,
)

__all__ = [
    "EXPOSURE_DATA_TYPE",
    "LIVE_FACTOR_DATA_TYPE",
    "LIVE_PORTFOLIO_DATA_TYPE",
    "RISK_DATA_TYPE",
    "BacktestResult",
    "BookState",
    "FactorExposure",
    "FactorPortfolioStrategy",
    "FactorPortfolioStrategyConfig",
    "FactorRiskActor",
    "FactorRiskActorConfig",
    "FactorRiskGuard",
    "GuardDecision",
    "GuardLimits",
    "IntradayFactorSession",
    "LiveBookFigures",
    "LiveFactorReturn",
    "LivePortfolioUpdate",
    "PanelMarket",
    "PortfolioFactorRisk",
    "Rebalance",
    "SnapshotBook",
    "bar_type",
    "book_state",
    "load_risk_model",
    "market_engine",
    "panel_market",
    "run_backtest",
    "strategy_spec",
]
