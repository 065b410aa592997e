"""Risk model: factor covariance forecasts (specific risk and the RiskModel artifact to come)."""

from factor_engine.risk.covariance import CovarianceConfig, FactorCovariance, factor_covariance

__all__ = [
    "CovarianceConfig",
    "FactorCovariance",
    "factor_covariance",
]
