"""Risk model: factor covariance forecasts, their adjustments, and specific risk."""

from factor_engine.risk.adjustments import (
    eigenfactor_adjustment,
    factor_bias_statistics,
    volatility_regime_adjustment,
)
from factor_engine.risk.covariance import CovarianceConfig, FactorCovariance, factor_covariance
from factor_engine.risk.specific import SpecificRiskConfig, specific_risk

__all__ = [
    "CovarianceConfig",
    "FactorCovariance",
    "SpecificRiskConfig",
    "eigenfactor_adjustment",
    "factor_bias_statistics",
    "factor_covariance",
    "specific_risk",
    "volatility_regime_adjustment",
]
