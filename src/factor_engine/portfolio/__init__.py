"""Portfolio analytics on a factor risk model: exposures, risk decomposition, return attribution and
factor-constrained optimization."""

from factor_engine.portfolio.analytics import (
    PortfolioError,
    RiskDecomposition,
    RiskModelSnapshot,
    WeightsWarning,
    attribute_returns,
    check_weights,
    cumulative_attribution,
    decompose_risk,
    portfolio_exposures,
)
from factor_engine.portfolio.optimizer import Constraints, OptimizationError, OptimizationResult, optimize

__all__ = [
    "Constraints",
    "OptimizationError",
    "OptimizationResult",
    "PortfolioError",
    "RiskDecomposition",
    "RiskModelSnapshot",
    "WeightsWarning",
    "attribute_returns",
    "check_weights",
    "cumulative_attribution",
    "decompose_risk",
    "optimize",
    "portfolio_exposures",
]
