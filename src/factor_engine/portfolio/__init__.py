"""Portfolio analytics on a factor risk model: exposures, risk decomposition and return attribution."""

from factor_engine.portfolio.analytics import (
    PortfolioError,
    RiskDecomposition,
    RiskModelSnapshot,
    attribute_returns,
    cumulative_attribution,
    decompose_risk,
    portfolio_exposures,
)

__all__ = [
    "PortfolioError",
    "RiskDecomposition",
    "RiskModelSnapshot",
    "attribute_returns",
    "cumulative_attribution",
    "decompose_risk",
    "portfolio_exposures",
]
