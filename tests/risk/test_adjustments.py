"""Eigenfactor risk adjustment and volatility regime adjustment: checked by out-of-sample bias statistics on
simulated factor returns with a known covariance, and by exact algebraic properties."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from factor_engine.risk import CovarianceConfig, FactorCovariance, factor_covariance
from factor_engine.risk.adjustments import (
    eigenfactor_adjustment,
    factor_bias_statistics,
    volatility_regime_adjustment,
)

HALF_LIFE = 60
N_EFF = (1 + 0.5 ** (1 / HALF_LIFE)) / (1 - 0.5 ** (1 / HALF_LIFE))


def _frame(returns: np.ndarray) -> pl.DataFrame:
    start = dt.date(2010, 1, 1)
    dates = pl.date_range(start, start + dt.timedelta(days=returns.shape[0] - 1), eager=True)
    return pl.DataFrame({"date": dates, **{f"f{k}": returns[:, k] for k in range(returns.shape[1])}})


def _forecast(frame: pl.DataFrame) -> FactorCovariance:
    config = CovarianceConfig(
        vol_half_life=HALF_LIFE, corr_half_life=HALF_LIFE, vol_nw_lags=0, corr_nw_lags=0, min_periods=100
    )
    return factor_covariance(frame, config)


@pytest.fixture(scope="module")
def iid() -> tuple[pl.DataFrame, FactorCovariance]:
    rng = np.random.default_rng(0)
    n_factors = 10
    loadings = rng.normal(size=(n_factors, n_factors))
    sigma = loadings @ loadings.T / n_factors * 1e-4 + np.diag(np.linspace(1e-6, 1e-4, n_factors))
    frame = _frame(rng.multivariate_normal(np.zeros(n_factors), sigma, size=1500))
    return frame, _forecast(frame)


def _eigen_bias(covariance: FactorCovariance, frame: pl.DataFrame) -> np.ndarray:
    """Std over time of next-day eigenportfolio returns over their forecast vol (USE4 bias statistic)."""
    values, vectors = np.linalg.eigh(covariance.values[:-1])
    row = {d: i for i, d in enumerate(frame["date"].to_list())}
    returns = frame.drop("date").to_numpy()
    following = np.array([returns[row[d] + 1] for d in covariance.dates.to_list()[:-1]])
    standardized = np.einsum("tkj,tk->tj", vectors, following) / np.sqrt(values)
    bias: np.ndarray = standardized.std(axis=0)
    return bias


def test_eigenfactor_adjustment_moves_bias_statistics_toward_one(iid: tuple[pl.DataFrame, FactorCovariance]) -> None:
    frame, raw = iid
    adjusted = eigenfactor_adjustment(raw, effective_observations=N_EFF, n_simulations=500, every=21, seed=1)
    raw_bias, adjusted_bias = _eigen_bias(raw, frame), _eigen_bias(adjusted, frame)
    assert raw_bias[:3].min() > 1.04  # the smallest eigenfactors are underpredicted by the sample forecast
    assert np.mean(np.abs(adjusted_bias - 1)) < 0.7 * np.mean(np.abs(raw_bias - 1))
    assert np.abs(adjusted_bias[:3] - 1).max() < np.abs(raw_bias[:3] - 1).max()


def test_eigenfactor_adjustment_keeps_eigenvectors_and_scale_zero_is_identity(
    iid: tuple[pl.DataFrame, FactorCovariance],
) -> None:
    _, raw = iid
    unchanged = eigenfactor_adjustment(raw, effective_observations=N_EFF, n_simulations=50, scale=0.0)
    np.testing.assert_allclose(unchanged.values, raw.values, rtol=1e-9, atol=1e-18)
    adjusted = eigenfactor_adjustment(raw, effective_observations=N_EFF, n_simulations=50)
    _, vectors = np.linalg.eigh(raw.values)
    rotated = np.einsum("tki,tkl,tlj->tij", vectors, adjusted.values, vectors)
    off_diagonal = rotated - np.einsum("tii->ti", rotated)[:, :, None] * np.eye(rotated.shape[1])
    assert np.abs(off_diagonal).max() < 1e-12 * np.abs(rotated).max()
    np.testing.assert_array_equal(adjusted.values, adjusted.values.transpose(0, 2, 1))
    assert np.linalg.eigvalsh(adjusted.values).min() >= 0


def test_eigenfactor_adjustment_is_point_in_time(iid: tuple[pl.DataFrame, FactorCovariance]) -> None:
    frame, raw = iid
    head = _forecast(frame.head(700))
    full = eigenfactor_adjustment(raw, effective_observations=N_EFF, n_simulations=50, every=10, seed=3)
    early = eigenfactor_adjustment(head, effective_observations=N_EFF, n_simulations=50, every=10, seed=3)
    np.testing.assert_allclose(early.values, full.values[: early.values.shape[0]], rtol=1e-12, atol=0)


def test_volatility_regime_adjustment_tracks_a_volatility_shift() -> None:
    rng = np.random.default_rng(5)
    scale = np.where(np.arange(1600) < 800, 1.0, 2.0)[:, None]
    frame = _frame(rng.standard_normal((1600, 6)) * 0.01 * scale)
    raw = _forecast(frame)
    adjusted = volatility_regime_adjustment(raw, frame, half_life=42)
    assert adjusted.values[0] == pytest.approx(raw.values[0])  # no bias history yet: multiplier 1

    def bias_after_shift(covariance: FactorCovariance) -> float:
        stats = factor_bias_statistics(covariance, frame)
        window = stats.filter((pl.col("date") > frame["date"][800]) & (pl.col("date") <= frame["date"][900]))
        return float(np.sqrt(np.mean(window["bias"].to_numpy() ** 2)))

    assert bias_after_shift(raw) > 1.3  # the raw forecast lags the doubled volatility
    assert abs(bias_after_shift(adjusted) - 1) < 0.6 * abs(bias_after_shift(raw) - 1)


def test_volatility_regime_multiplier_is_the_ewma_of_squared_bias() -> None:
    rng = np.random.default_rng(8)
    frame = _frame(rng.standard_normal((400, 4)) * 0.01)
    raw = _forecast(frame)
    adjusted = volatility_regime_adjustment(raw, frame, half_life=10)
    bias = factor_bias_statistics(raw, frame)["bias"].to_numpy()
    decay = 0.5 ** (1 / 10)
    t = 50
    weights = decay ** np.arange(t, -1, -1)
    expected = np.sum(weights * bias[: t + 1] ** 2) / weights.sum()
    np.testing.assert_allclose(adjusted.values[t + 1], raw.values[t + 1] * expected, rtol=1e-12)


def test_errors(iid: tuple[pl.DataFrame, FactorCovariance]) -> None:
    frame, raw = iid
    with pytest.raises(ValueError, match=r"effective_observations .* must exceed the number of factors"):
        eigenfactor_adjustment(raw, effective_observations=5)
    with pytest.raises(ValueError, match="scale must be a non-negative number"):
        eigenfactor_adjustment(raw, effective_observations=N_EFF, scale=-1)
    with pytest.raises(ValueError, match="half_life must be positive"):
        volatility_regime_adjustment(raw, frame, half_life=0)
    with pytest.raises(ValueError, match=r"missing \['f0'\]"):
        volatility_regime_adjustment(raw, frame.drop("f0"))
