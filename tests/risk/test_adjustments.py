"""Eigenfactor risk adjustment and volatility regime adjustment: checked by out-of-sample bias statistics on
simulated factor returns with a known covariance, and by exact algebraic properties."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import math

import numpy as np
import polars as pl
import pytest

from factor_engine.risk import CovarianceConfig, FactorCovariance, factor_covariance
from factor_engine.risk.adjustments import (
    _DRAW_STEPS,
    _Estimator,
    _PathGroup,
    eigenfactor_adjustment,
    eigenfactor_with_state,
    factor_bias_statistics,
    volatility_regime_adjustment,
)

HALF_LIFE = 60
N_EFF = (1 + 0.5 ** (1 / HALF_LIFE)) / (1 - 0.5 ** (1 / HALF_LIFE))
# USE4's structure at a test's scale: volatilities from a short half-life, correlations from a long one,
# Newey-West lags on both (the Wishart simulation of the correlation half-life's sample under-corrects it)
USE4_LIKE = CovarianceConfig(vol_half_life=30, corr_half_life=250, vol_nw_lags=3, corr_nw_lags=1, min_periods=100)


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
    adjusted = eigenfactor_adjustment(raw, n_simulations=500, every=21, seed=1)
    raw_bias, adjusted_bias = _eigen_bias(raw, frame), _eigen_bias(adjusted, frame)
    assert raw_bias[:3].min() > 1.04  # the smallest eigenfactors are underpredicted by the sample forecast
    assert np.mean(np.abs(adjusted_bias - 1)) < 0.7 * np.mean(np.abs(raw_bias - 1))
    assert np.abs(adjusted_bias[:3] - 1).max() < np.abs(raw_bias[:3] - 1).max()


@pytest.fixture(scope="module")
def use4_like() -> tuple[pl.DataFrame, FactorCovariance]:
    """Returns with a known covariance (16 factors, 4,000 dates) forecast with USE4's structure."""
    rng = np.random.default_rng(21)
    n_factors = 16
    loadings = rng.normal(size=(n_factors, n_factors))
    sigma = loadings @ loadings.T / n_factors * 1e-4 + np.diag(np.geomspace(1e-7, 1e-4, n_factors))
    frame = _frame(rng.multivariate_normal(np.zeros(n_factors), sigma, size=4000))
    return frame, factor_covariance(frame, USE4_LIKE)


def test_eigenfactor_adjustment_of_the_estimator_used_removes_most_of_the_bias(
    use4_like: tuple[pl.DataFrame, FactorCovariance],
) -> None:
    """Simulating the estimator actually used (short volatility, long correlation half-life, Newey-West) moves
    the smallest eigenportfolio's bias toward 1 by most of its excess, every eigenportfolio the raw forecast does
    not overpredict into its sampling band, and leaves the overpredicted largest ones no lower."""
    frame, raw = use4_like
    adjusted = eigenfactor_adjustment(raw, n_simulations=250, scale=1.0, every=63, seed=1)
    raw_bias, adjusted_bias = _eigen_bias(raw, frame), _eigen_bias(adjusted, frame)
    n_outcomes = raw.values.shape[0] - 1
    band = 2 * np.sqrt(2 / n_outcomes)  # two standard errors of one bias statistic
    assert raw_bias[0] > 1 + 3 * band, raw_bias  # the sample forecast underpredicts clearly
    assert abs(adjusted_bias[0] - 1) < 0.3 * (raw_bias[0] - 1), (raw_bias, adjusted_bias)
    # the largest eigenvalues are left alone (simulated bias below 1 is not scaled down: v_k >= 1), so their
    # eigenportfolios keep the raw forecast's bias; every other eigenportfolio lands in its sampling band
    overpredicted = raw_bias < 1 - band
    assert overpredicted[-1] and not overpredicted[:-3].any(), raw_bias
    assert np.all(adjusted_bias[overpredicted] >= raw_bias[overpredicted] - 1e-3), (raw_bias, adjusted_bias)
    assert np.abs(adjusted_bias[~overpredicted] - 1).max() < band, adjusted_bias
    # the Wishart simulation of the correlation half-life's sample (the former method) corrects far less
    decay = 0.5 ** (1 / USE4_LIKE.corr_half_life)
    wishart = eigenfactor_adjustment(
        dataclasses.replace(raw, estimator=None, observations=None),
        effective_observations=(1 + decay) / (1 - decay),
        n_simulations=250,
        scale=1.0,
        every=63,
        seed=1,
    )
    assert _eigen_bias(wishart, frame)[0] - 1 > 0.6 * (raw_bias[0] - 1)


def test_simulated_paths_are_estimated_as_factor_covariance_estimates() -> None:
    """One simulated path's z-space estimates, mapped by A, are what factor_covariance forecasts from the
    path's returns r_s = A z_s (an independent reference: the estimator itself)."""
    n_factors, length = 4, 150
    rng = np.random.default_rng(2)
    root = rng.normal(size=(n_factors, n_factors)) * 0.01
    estimator = _Estimator.of(USE4_LIKE)
    paths = _PathGroup(np.random.default_rng(9), 3, n_factors, estimator)
    paths.advance(length)
    vol_z, corr_z = paths.estimates()
    replay = np.random.default_rng(9)
    chunks = [replay.standard_normal((3, _DRAW_STEPS, n_factors), dtype=np.float32) for _ in range(2)]
    draws = np.concatenate(chunks, axis=1)[:, :length].astype(np.float64)  # (paths, length, K)
    for path in range(3):
        returns = draws[path] @ root.T
        config = dataclasses.replace(USE4_LIKE, min_periods=2)
        forecast = factor_covariance(_frame(returns), config).values[-1]
        expected_vol = np.sqrt(np.diag(forecast))
        simulated_vol = np.sqrt(np.diag(root @ vol_z[path] @ root.T))
        np.testing.assert_allclose(simulated_vol, expected_vol, rtol=1e-5)
        corr_cov = root @ corr_z[path] @ root.T
        simulated_corr = corr_cov / np.sqrt(np.outer(np.diag(corr_cov), np.diag(corr_cov)))
        np.testing.assert_allclose(simulated_corr, forecast / np.outer(expected_vol, expected_vol), atol=1e-5)


def test_a_forecast_without_its_estimator_is_simulated_as_equal_weights(
    iid: tuple[pl.DataFrame, FactorCovariance],
) -> None:
    _, raw = iid
    bare = dataclasses.replace(raw, estimator=None, observations=None)
    fallback = eigenfactor_adjustment(bare, effective_observations=N_EFF, n_simulations=50, seed=4)
    equal_weights = CovarianceConfig(vol_half_life=math.inf, corr_half_life=math.inf, vol_nw_lags=0, corr_nw_lags=0)
    explicit = dataclasses.replace(
        raw, estimator=equal_weights, observations=np.full(raw.values.shape[:2], round(N_EFF), dtype=np.int64)
    )
    np.testing.assert_array_equal(fallback.values, eigenfactor_adjustment(explicit, n_simulations=50, seed=4).values)
    with pytest.raises(ValueError, match="records no estimator: give effective_observations"):
        eigenfactor_adjustment(bare)


def test_eigenfactor_adjustment_keeps_eigenvectors_and_scale_zero_is_identity(
    iid: tuple[pl.DataFrame, FactorCovariance],
) -> None:
    _, raw = iid
    unchanged = eigenfactor_adjustment(raw, n_simulations=50, scale=0.0)
    np.testing.assert_allclose(unchanged.values, raw.values, rtol=1e-9, atol=1e-18)
    adjusted = eigenfactor_adjustment(raw, n_simulations=50)
    _, vectors = np.linalg.eigh(raw.values)
    rotated = np.einsum("tki,tkl,tlj->tij", vectors, adjusted.values, vectors)
    off_diagonal = rotated - np.einsum("tii->ti", rotated)[:, :, None] * np.eye(rotated.shape[1])
    assert np.abs(off_diagonal).max() < 1e-12 * np.abs(rotated).max()
    np.testing.assert_array_equal(adjusted.values, adjusted.values.transpose(0, 2, 1))
    assert np.linalg.eigvalsh(adjusted.values).min() >= 0


def test_eigenfactor_adjustment_is_point_in_time(iid: tuple[pl.DataFrame, FactorCovariance]) -> None:
    frame, raw = iid
    head = _forecast(frame.head(700))
    full = eigenfactor_adjustment(raw, n_simulations=50, every=10, seed=3)
    early = eigenfactor_adjustment(head, n_simulations=50, every=10, seed=3)
    np.testing.assert_allclose(early.values, full.values[: early.values.shape[0]], rtol=1e-12, atol=0)


def _dates(covariance: FactorCovariance, rows: slice) -> FactorCovariance:
    observations = None if covariance.observations is None else covariance.observations[rows]
    return dataclasses.replace(
        covariance, dates=covariance.dates[rows], values=covariance.values[rows], observations=observations
    )


@pytest.mark.parametrize("cuts", [(700,), (300, 1000, 1399), (1399,)])
def test_eigenfactor_extended_from_its_state_equals_one_run(cuts: tuple[int, ...]) -> None:
    """A model extended by later dates: the adjustment of those dates from the state of a run over the
    earlier ones equals a run over all of them, including a factor that enters in the later part (a new
    block of factors) and simulation dates falling in the extension."""
    rng = np.random.default_rng(12)
    returns = rng.standard_normal((1500, 6)) * 0.01
    returns[:900, 5] = np.nan  # enters after 900 returns: a forecast from its 100th return on
    raw = factor_covariance(_frame(returns), USE4_LIKE)
    settings = {"n_simulations": 60, "every": 40, "seed": 5}
    full, full_state = eigenfactor_with_state(raw, **settings)
    state = None
    pieces = []
    for lo, hi in itertools.pairwise((0, *cuts, raw.dates.len())):
        piece, state = eigenfactor_with_state(_dates(raw, slice(lo, hi)), state=state, **settings)
        pieces.append(piece.values)
    extended = np.concatenate(pieces)
    finite = np.isfinite(full.values)
    np.testing.assert_array_equal(np.isfinite(extended), finite)
    np.testing.assert_allclose(extended[finite], full.values[finite], rtol=1e-12, atol=0)
    assert state is not None and len(state.blocks) == len(full_state.blocks) == 2
    for ours, theirs in zip(state.blocks, full_state.blocks, strict=True):
        np.testing.assert_array_equal(ours.positions, theirs.positions)
        np.testing.assert_allclose(ours.profiles, theirs.profiles, rtol=1e-12)
    assert full_state.blocks[1].positions.size > 3  # the new block was simulated several times
    with pytest.raises(ValueError, match="the state was made with"):
        eigenfactor_with_state(_dates(raw, slice(1400, 1500)), state=state, n_simulations=61, every=40, seed=5)


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
