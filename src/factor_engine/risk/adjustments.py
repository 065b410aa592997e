"""Adjustments of factor covariance forecasts: eigenfactor risk adjustment and volatility regime adjustment.

Eigenfactor risk adjustment (Menchero, Wang & Orr 2011; Barra USE4). Sample covariances underpredict the risk
of their smallest eigenportfolios. For a forecast ``F0 = U0 diag(d0) U0ᵀ`` draw ``M`` simulated sample
covariances ``F_m = A (W_m / n) Aᵀ`` with ``A = U0 diag(√d0)`` and ``W_m ~ Wishart(n, I)`` (Bartlett
decomposition; ``n`` the effective number of observations behind the forecast), decompose
``F_m = U_m diag(d_m) U_mᵀ`` and measure each simulated eigenportfolio's true variance ``diag(U_mᵀ F0 U_m)``.
The simulated bias of eigenfactor ``k`` (by eigenvalue rank) is ``v_k = sqrt(mean_m(true_mk / d_mk))``; it
is scaled by ``γ_k = a (v_k − 1) + 1`` (``a`` = ``scale``, 1.4 in USE4 documentation) and the adjusted forecast
is ``U0 diag(γ² d0) U0ᵀ``. The bias profile is simulated on every ``every``-th date (common random numbers
across dates, so profiles change smoothly) and each date uses the latest profile simulated at or before it:
point-in-time, nothing from the future. A date where some factors have no forecast yet (a NaN row and column:
a new sector, a style still warming up) is adjusted on the block of factors that have one; dates are grouped
by that set of factors, and the simulated draws depend only on the seed and the block's size.

Volatility regime adjustment (Barra USE4). The cross-sectional bias statistic of the factors,
``B_t = sqrt(mean_k (f_{t,k} / σ_{t−1,k})²)`` over the factors with a forecast at ``t−1`` and a return at
``t``, measures whether yesterday's forecast was too low (> 1) or too high (< 1). Its exponentially weighted
mean square ``λ_t² = EWMA_h(B²)`` up to and including ``t`` (half-life ``h`` = 42 days, weights normalized)
rescales the forecast made at ``t``: ``F_VRA(t) = λ_t² F(t)``. Dates before the first bias observation keep
``λ = 1``.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from factor_engine._dense import ewma_sum, run_parallel, single_threaded_blas
from factor_engine.panel import DATE
from factor_engine.risk.covariance import FactorCovariance, forecast_mask

__all__ = ["eigenfactor_adjustment", "factor_bias_statistics", "volatility_regime_adjustment"]

# Simulated dates per batch (bounds the (dates, simulations, K, K) working array).
_DATES_PER_BATCH = 8


def _wishart_bartlett(rng: np.random.Generator, n_simulations: int, n_factors: int, dof: float) -> np.ndarray:
    """(M, K, K) draws of ``W / dof`` with ``W ~ Wishart(dof, I)`` via the Bartlett decomposition."""
    lower = np.tril(rng.standard_normal((n_simulations, n_factors, n_factors)), k=-1)
    diagonal = np.sqrt(rng.chisquare(dof - np.arange(n_factors), size=(n_simulations, n_factors)))
    lower[:, np.arange(n_factors), np.arange(n_factors)] = diagonal
    draws: np.ndarray = np.matmul(lower, lower.transpose(0, 2, 1)) / dof
    return draws


def _bias_profile(eigvals: np.ndarray, eigvecs: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """(D, K) simulated eigenfactor bias ``v_k`` for forecasts given by their eigen-decompositions.

    Computed in each forecast's eigenbasis: with ``F0 = U0 D U0ᵀ`` the simulated ``F_m = U0 (D^½ W_m D^½) U0ᵀ``
    has the eigenvalues of ``S_m = D^½ W_m D^½ = V_m Λ_m V_mᵀ`` and the eigenvectors ``U0 V_m``, whose true
    variances are ``diag(V_mᵀ D V_m)``: the bias depends on the eigenvalues ``D`` only (``eigvecs`` is unused).
    """
    del eigvecs  # the profile does not depend on them (see above)
    root = np.sqrt(np.maximum(eigvals, 0.0))  # (D, K)
    simulated = draws[None, :, :, :] * root[:, None, :, None] * root[:, None, None, :]  # (D, M, K, K)
    sim_vals, sim_vecs = np.linalg.eigh(simulated)
    true_var = np.einsum("dmik,di->dmk", sim_vecs**2, np.maximum(eigvals, 0.0), optimize=True)
    # eigenvalues that are zero up to rounding (a degenerate forecast) carry no bias information
    usable = sim_vals > 1e-12 * sim_vals.max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(usable, np.maximum(true_var, 0.0) / sim_vals, np.nan)
    counts = usable.sum(axis=1)
    mean_ratio = np.where(counts > 0, np.nansum(ratio, axis=1) / np.maximum(counts, 1), 1.0)
    profile: np.ndarray = np.sqrt(mean_ratio)
    return profile


def _simulated_profiles(eigvals: np.ndarray, eigvecs: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """(D, K) bias profiles of D forecasts, in batches of dates run in parallel (BLAS single-threaded)."""
    profiles = np.empty(eigvals.shape)

    def simulate(start: int) -> None:
        stop = start + _DATES_PER_BATCH
        profiles[start:stop] = _bias_profile(eigvals[start:stop], eigvecs[start:stop], draws)

    with single_threaded_blas():  # parallel over batches, not inside BLAS calls
        run_parallel(simulate, range(0, eigvals.shape[0], _DATES_PER_BATCH))
    return profiles


def eigenfactor_adjustment(
    covariance: FactorCovariance,
    *,
    effective_observations: float,
    n_simulations: int = 1000,
    scale: float = 1.4,
    every: int = 21,
    seed: int = 0,
) -> FactorCovariance:
    """Eigenfactor risk adjustment of every forecast (see the module docstring).

    Parameters
    ----------
    covariance: the forecasts to adjust.
    effective_observations: effective sample size ``n`` behind each forecast (for EWMA weights with
        half-life ``h``, ``(1 + λ)/(1 − λ)`` with ``λ = 0.5^(1/h)``); must exceed the number of factors.
    n_simulations: simulated covariances per simulated date.
    scale: the empirical scaling ``a`` of the simulated bias (0 leaves the forecasts unchanged).
    every: simulate the bias profile on every ``every``-th forecast date (1 = every date).
    seed: seed of the simulation (numpy ``default_rng``).
    """
    values = covariance.values
    n_dates, n_factors, _ = values.shape
    if n_simulations < 2 or every < 1:
        raise ValueError(f"need n_simulations >= 2 and every >= 1, got {n_simulations} and {every}")
    if not effective_observations > n_factors:
        raise ValueError(
            f"effective_observations ({effective_observations}) must exceed the number of factors ({n_factors})"
        )
    if not np.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be a non-negative number, got {scale}")
    adjusted = values.copy()
    if n_dates == 0:
        return covariance
    # factors with a forecast on each date: a finite variance (a factor without one has a NaN row and column)
    finite = forecast_mask(values)  # (T, K)
    patterns, pattern_of_date = np.unique(finite, axis=0, return_inverse=True)
    for p, pattern in enumerate(patterns):
        active = np.flatnonzero(pattern)
        dates = np.flatnonzero(pattern_of_date.ravel() == p)
        if active.size == 0:
            continue
        block = values[np.ix_(dates, active, active)]
        if not np.isfinite(block).all():
            raise ValueError("covariance forecasts must be finite among the factors with a finite variance")
        # the draws depend on the seed and the number of factors only, never on which other factor sets occur
        # on other dates: a forecast does not change when later data (a new factor) arrives
        rng = np.random.default_rng([seed, active.size])
        eigvals, eigvecs = np.linalg.eigh(block)
        draws = _wishart_bartlett(rng, n_simulations, active.size, float(effective_observations))
        simulated_at = dates[::every] if every > 1 else dates
        sim_positions = np.searchsorted(dates, simulated_at)
        profiles = _simulated_profiles(eigvals[sim_positions], eigvecs[sim_positions], draws)
        # each date uses the latest profile simulated at or before it
        latest = np.searchsorted(simulated_at, dates, side="right") - 1
        gamma = scale * (profiles[latest] - 1.0) + 1.0
        rebuilt = np.matmul(eigvecs * (gamma**2 * eigvals)[:, None, :], eigvecs.transpose(0, 2, 1))
        rebuilt = 0.5 * (rebuilt + rebuilt.transpose(0, 2, 1))
        adjusted[np.ix_(dates, active, active)] = rebuilt
    return FactorCovariance(
        dates=covariance.dates, factors=covariance.factors, values=adjusted, horizon=covariance.horizon
    )


def factor_bias_statistics(covariance: FactorCovariance, factor_returns: pl.DataFrame) -> pl.DataFrame:
    """``date, bias``: the cross-sectional factor bias statistic ``B_t`` of each return date ``t`` against the
    forecast made at the previous forecast date (daily forecasts are compared with daily returns)."""
    returns = _aligned_returns(covariance, factor_returns)
    vol = np.sqrt(np.einsum("tkk->tk", covariance.values) / covariance.horizon)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = returns[1:] / vol[:-1]
    z = np.where(np.isfinite(z), z, np.nan)
    counts = np.isfinite(z).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        bias = np.sqrt(np.nansum(z**2, axis=1) / counts)
    return pl.DataFrame({DATE: covariance.dates[1:], "bias": bias}).with_columns(pl.col("bias").fill_nan(None))


def _aligned_returns(covariance: FactorCovariance, factor_returns: pl.DataFrame) -> np.ndarray:
    missing = [f for f in covariance.factors if f not in factor_returns.columns]
    if missing or DATE not in factor_returns.columns:
        raise ValueError(f"factor_returns needs 'date' and the factor columns; missing {missing or ['date']}")
    aligned = pl.DataFrame({DATE: covariance.dates}).join(
        factor_returns.select(DATE, *covariance.factors), on=DATE, how="left"
    )
    values: np.ndarray = aligned.select(covariance.factors).to_numpy().astype(np.float64)
    return values


def volatility_regime_adjustment(
    covariance: FactorCovariance, factor_returns: pl.DataFrame, *, half_life: float = 42.0
) -> FactorCovariance:
    """Volatility regime adjustment of every forecast (see the module docstring).

    Parameters
    ----------
    covariance: the forecasts to adjust (made at each date's close).
    factor_returns: ``date`` + one column per factor (daily returns, fractions).
    half_life: trading days of the EWMA of the squared bias statistic.
    """
    if not half_life > 0:
        raise ValueError(f"half_life must be positive, got {half_life}")
    bias = factor_bias_statistics(covariance, factor_returns)["bias"].to_numpy().astype(np.float64)
    decay = 0.5 ** (1.0 / half_life)
    present = np.isfinite(bias)
    weighted = ewma_sum(np.where(present, bias**2, 0.0), decay)
    weights = ewma_sum(present.astype(np.float64), decay)
    with np.errstate(invalid="ignore", divide="ignore"):
        multiplier_sq = np.where(weights > 0, weighted / weights, 1.0)
    multiplier_sq = np.concatenate([[1.0], multiplier_sq])  # the first forecast has no bias history
    return FactorCovariance(
        dates=covariance.dates,
        factors=covariance.factors,
        values=covariance.values * multiplier_sq[:, None, None],
        horizon=covariance.horizon,
    )
