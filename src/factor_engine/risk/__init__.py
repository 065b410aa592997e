"""Risk model: factor covariance forecasts (specific risk and the RiskModel artifact to come)."""

from factor_engine.risk.adjustments import (
    eigenfactor_adjustment,
    factor_bias_statistics,
    volatility_regime_adjustment,
)
from factor_engine.risk.covariance import CovarianceConfig, FactorCovariance, factor_covariance

__all__ = [
    "CovarianceConfig",
    "FactorCovariance",
    "eigenfactor_adjustment",
    "factor_bias_statistics",
    "factor_covariance",
    "volatility_regime_adjustment",
]
