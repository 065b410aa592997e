"""Factor covariance forecasts, Barra USE4 style: EWMA volatilities and correlations with Newey-West lags.

Method. Let ``f[s]`` be the (K,) factor returns of date ``s`` (rows of the date-sorted frame, daily
fractions) and ``m[s, i] = 1`` where factor ``i`` is present on date ``s`` (``f[s, i]`` is then set to 0
where it is absent). For a half-life ``h`` (trading days, i.e. rows) let ``λ = 0.5^(1/h)`` and, for the
forecast made at the close of date ``t`` from the returns up to and including ``t``, the weights
``w[t, s] = λ^(t−s)`` for ``s ≤ t``. The lag-``l`` EWMA cross moment is normalized pairwise by the weights
of the dates where both terms are present (the finite-history correction, and what makes a missing
return contribute nothing for that date)::

    Γ_l(t)[i, j] = Σ_{s≤t} w[t,s] f[s,i] f[s−l,j]  /  Σ_{s≤t} w[t,s] m[s,i] m[s−l,j]

(terms with ``s − l < 0`` are absent). Returns are taken to have zero mean, standard for daily factor
returns: no mean is estimated or subtracted. Newey-West with ``L`` lags and Bartlett weights::

    V(t) = Γ_0(t) + Σ_{l=1..L} (1 − l/(L+1)) (Γ_l(t) + Γ_l(t)ᵀ)

* volatilities: ``σ_i(t)² = max(V_vol(t)[i, i], 0)`` with ``h = vol_half_life`` and ``L = vol_nw_lags``;
* correlations: ``ρ(t)[i, j] = V_corr[i, j] / sqrt(V_corr[i, i] V_corr[j, j])`` with ``h = corr_half_life`` and
  ``L = corr_nw_lags`` (0 where a diagonal entry is not positive);
* optional Ledoit–Wolf shrinkage toward the identity: ``ρ̃ = (1 − δ) ρ + δ I`` with the intensity of
  Ledoit & Wolf (2004) computed on the lag-0 correlation ``R = Γ_0[i,j]/sqrt(Γ_0[i,i] Γ_0[j,j])`` (corr half-life)
  of the returns standardized by ``sqrt(Γ_0[i,i])``, on the effective sample::

      d² = Σ_{i≠j} R[i,j]² / K
      b² = Σ_{i,j} ν[i,j] (Q[i,j] / (Γ_0[i,i] Γ_0[j,j]) − R[i,j]²) / K
      δ  = min(b², d²) / d²          (0 when d² = 0)

  where ``Q`` is the EWMA (same pairwise normalization) of ``f[s,i]² f[s,j]²`` and
  ``ν[i,j] = Σ w² m_i m_j / (Σ w m_i m_j)²`` is the inverse effective sample size of the pair; the sums run
  over the K factors with enough history on that date. With equal weights and no missing values this is
  exactly sklearn's ``ledoit_wolf(z, assume_centered=True)`` on the standardized returns ``z`` (target
  ``μ I`` with ``μ = tr(R)/K = 1``);
* ``F(t) = horizon · P₊(diag(σ) ρ̃ diag(σ))`` where ``P₊`` symmetrizes and, only on the dates where the
  smallest eigenvalue is negative, floors the eigenvalues at 0 (batched ``eigh``; this can move the
  diagonal, so :meth:`FactorCovariance.volatility` reports the vols of the final matrix).

Horizon scaling multiplies the daily covariance by ``horizon``: the i.i.d. √horizon scaling of vols. The
Newey-West terms already account for the serial correlation of daily returns, so no further term is added.

A forecast is made on every date from the ``min_periods``-th row on. A factor with fewer than
``min_periods`` present returns up to that date has a NaN row and column there (null in the frames). Two
factors never present on a common date have covariance 0.

Computation. Every EWMA sum over time is the first-order recursion ``S(t) = λ S(t−1) + x(t)``, run for all
dates at once with ``factor_engine._dense.ewma_sum`` (a vectorized first-order filter) along the time
axis on (pairs × T) arrays of products (only the upper triangle of pairs, lagged both ways), in parallel over
blocks of pairs.

Adjustments. The eigenfactor risk adjustment and the volatility regime adjustment act on the finished
forecasts (:mod:`factor_engine.risk.adjustments`); :func:`factor_engine.model.forecast_factor_covariance`
chains them as the model configuration says.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
import polars as pl

from factor_engine._dense import ewma_sum, run_parallel
from factor_engine.panel import DATE

__all__ = ["CovarianceConfig", "FactorCovariance", "factor_covariance", "forecast_mask"]

FACTOR = "factor"
Shrinkage = Literal["none", "ledoit_wolf"]
_SHRINKAGES = ("none", "ledoit_wolf")
# Pairs of factors per block of the parallel EWMA recursions.
_PAIRS_PER_BLOCK = 64


@dataclass(frozen=True)
class CovarianceConfig:
    """Settings of :func:`factor_covariance` (defaults: Barra USE4S daily model).

    Attributes
    ----------
    vol_half_life: EWMA half-life of factor volatilities, in trading days (> 0; ``math.inf`` = equal weights).
    corr_half_life: EWMA half-life of factor correlations, in trading days (> 0; ``math.inf`` = equal weights).
    vol_nw_lags: Newey-West lags for the variances (≥ 0).
    corr_nw_lags: Newey-West lags for the covariances behind the correlations (≥ 0).
    min_periods: dates of history (rows, and present returns per factor) before the first forecast (≥ 2).
    shrinkage: ``"none"`` or ``"ledoit_wolf"`` (correlation shrunk toward the identity).
    horizon: forecast horizon in trading days (1 daily, 21 monthly, 252 annual); the covariance is scaled by it.
    """

    vol_half_life: float = 84
    corr_half_life: float = 504
    vol_nw_lags: int = 5
    corr_nw_lags: int = 2
    min_periods: int = 63
    shrinkage: Shrinkage = "none"
    horizon: int = 1

    def __post_init__(self) -> None:
        for name in ("vol_half_life", "corr_half_life"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a positive number of trading days, got {value!r}")
        for name in ("vol_nw_lags", "corr_nw_lags"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {getattr(self, name)!r}")
        if not _is_int(self.min_periods) or self.min_periods < 2:
            raise ValueError(f"min_periods must be an integer ≥ 2, got {self.min_periods!r}")
        if not _is_int(self.horizon) or self.horizon < 1:
            raise ValueError(f"horizon must be a positive integer number of trading days, got {self.horizon!r}")
        if self.shrinkage not in _SHRINKAGES:
            raise ValueError(f"shrinkage must be one of {_SHRINKAGES}, got {self.shrinkage!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@dataclass(frozen=True, eq=False)
class FactorCovariance:
    """Factor covariance forecasts, one (K, K) matrix per date.

    Attributes
    ----------
    dates: (T,) the dates at whose close each forecast is made (sorted, distinct).
    factors: the K factor names, in row/column order.
    values: (T, K, K) float64 covariance of factor returns over the next ``horizon`` trading days (daily
        fractions² × horizon), symmetric PSD; NaN row and column for a factor without enough history.
    horizon: forecast horizon in trading days.
    estimator: the :class:`CovarianceConfig` that made the forecasts (:func:`factor_covariance` records it;
        None for forecasts built otherwise or read from a file). The eigenfactor adjustment simulates it.
    observations: (T, K) int, present returns of each factor up to and including each date (the history
        behind each forecast; None when unknown).
    """

    dates: pl.Series
    factors: tuple[str, ...]
    values: np.ndarray
    horizon: int
    estimator: CovarianceConfig | None = None
    observations: np.ndarray | None = None

    def __post_init__(self) -> None:
        k = len(self.factors)
        if self.values.shape != (self.dates.len(), k, k):
            raise ValueError(
                f"values must have shape (dates, factors, factors) = {(self.dates.len(), k, k)}, "
                f"got {self.values.shape}"
            )
        if len(set(self.factors)) != k:
            raise ValueError(f"factor names must be distinct, got {self.factors}")
        reserved = [name for name in self.factors if name in (DATE, FACTOR)]
        if reserved:
            raise ValueError(f"factor names {reserved} clash with the frame columns {DATE!r} and {FACTOR!r}")
        if not _is_int(self.horizon) or self.horizon < 1:
            raise ValueError(f"horizon must be a positive integer number of trading days, got {self.horizon!r}")
        if self.observations is not None and self.observations.shape != self.values.shape[:2]:
            expected = self.values.shape[:2]
            raise ValueError(f"observations must have shape {expected} (dates, factors), got {self.observations.shape}")

    @cached_property
    def _row_of_date(self) -> dict[Any, int]:
        return {date: row for row, date in enumerate(self.dates.to_list())}

    def at(self, date: datetime.date | Any) -> np.ndarray:
        """The (K, K) covariance forecast made at the close of ``date`` (a copy)."""
        row = self._row_of_date.get(date)
        if row is None:
            raise KeyError(f"no covariance forecast for date {date}")
        matrix: np.ndarray = self.values[row].copy()
        return matrix

    def to_frame(self) -> pl.DataFrame:
        """Long frame: ``date``, ``factor`` and one Float64 column per factor (null where undefined)."""
        k = len(self.factors)
        data: dict[str, pl.Series] = {
            DATE: self.dates.gather(np.repeat(np.arange(self.dates.len()), k)).alias(DATE),
            FACTOR: pl.Series(FACTOR, list(self.factors) * self.dates.len(), dtype=pl.String),
        }
        flat = self.values.reshape(-1, k)
        for column, name in enumerate(self.factors):
            data[name] = pl.Series(name, flat[:, column], dtype=pl.Float64, nan_to_null=True)
        return pl.DataFrame(data)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, horizon: int = 1) -> FactorCovariance:
        """Inverse of :meth:`to_frame` (rows in any order): factors in column order, dates sorted.

        Parameters
        ----------
        frame: ``date``, ``factor`` and one numeric column per factor; each date has one row per factor.
        horizon: forecast horizon in trading days of the values.
        """
        missing = [c for c in (DATE, FACTOR) if c not in frame.columns]
        if missing:
            raise ValueError(f"covariance frame is missing column(s) {missing}; it has {frame.columns}")
        factors = tuple(c for c in frame.columns if c not in (DATE, FACTOR))
        unknown = frame.filter(~pl.col(FACTOR).is_in(list(factors)))[FACTOR].unique().to_list()
        if unknown:
            raise ValueError(f"covariance frame has rows for factors {unknown} that have no column")
        dates = frame[DATE].unique().sort()
        k = len(factors)
        if frame.height != dates.len() * k or frame.select(DATE, FACTOR).is_duplicated().any():
            raise ValueError("covariance frame must have exactly one row per (date, factor)")
        position = frame.select(
            pl.col(DATE).rank("dense").cast(pl.Int64) - 1,
            pl.col(FACTOR).replace_strict(list(factors), list(range(k)), return_dtype=pl.Int64),
        )
        values = np.full((dates.len(), k, k), np.nan)
        columns = frame.select(pl.col(name).cast(pl.Float64) for name in factors).to_numpy()
        values[position[DATE].to_numpy(), position[FACTOR].to_numpy()] = columns
        return cls(dates=dates, factors=factors, values=values, horizon=horizon)

    def volatility(self) -> pl.DataFrame:
        """``date`` and one Float64 column per factor: the forecast vol over the horizon, ``sqrt`` of the diagonal."""
        diagonal = np.sqrt(np.diagonal(self.values, axis1=1, axis2=2))
        columns = {name: pl.Series(name, diagonal[:, i], nan_to_null=True) for i, name in enumerate(self.factors)}
        return pl.DataFrame({DATE: self.dates, **columns})


def forecast_mask(values: np.ndarray) -> np.ndarray:
    """(..., K) mask of the factors that have a forecast in (..., K, K) covariances: a finite variance (a factor
    without enough history has a NaN row and column)."""
    mask: np.ndarray = np.isfinite(np.diagonal(values, axis1=-2, axis2=-1))
    return mask


def factor_covariance(
    factor_returns: pl.DataFrame | pl.LazyFrame,
    config: CovarianceConfig = CovarianceConfig(),
    *,
    at: Sequence[datetime.date] | pl.Series | None = None,
) -> FactorCovariance:
    """Forecast the factor covariance at the close of every date (see the module docstring for the method).

    Parameters
    ----------
    factor_returns: ``date`` + one numeric column per factor: daily factor returns (fractions), one row per
        date, null (or NaN) where a factor was not estimated. Unsorted dates are sorted; duplicates are an error.
    config: half-lives (trading days), Newey-West lags, history, shrinkage and horizon.
    at: only the forecasts of these dates (each a date of ``factor_returns`` from the ``min_periods``-th on):
        every EWMA sum is then evaluated directly at those dates, ``Σ_{s≤t} λ^(t−s) x(s)``, instead of
        running the recursion over all dates (a model extended by a few dates; equal to the full run's
        forecasts of those dates up to rounding, about 1e-15 relative).

    Returns
    -------
    A :class:`FactorCovariance` with one forecast per date from the ``min_periods``-th on (none if fewer), or
    per date of ``at`` in date order.
    """
    frame, factors = _validate(factor_returns)
    returns = frame.select(pl.col(name).cast(pl.Float64) for name in factors).to_numpy().T  # (K, T)
    present = np.isfinite(returns)
    if np.any(np.isinf(returns)):
        bad = [name for name, row in zip(factors, np.isinf(returns).any(axis=1), strict=True) if row]
        raise ValueError(f"factor_returns: column(s) {bad} contain infinite values")
    values = np.where(present, returns, 0.0)
    n_factors, n_dates = values.shape
    first = config.min_periods - 1
    positions = np.arange(first, n_dates) if at is None else _positions_of(frame[DATE], at, first)
    dates = frame[DATE].gather(positions)
    if positions.size == 0:
        empty = np.zeros((0, n_factors, n_factors))
        return FactorCovariance(dates, factors, empty, config.horizon, config, np.zeros((0, n_factors), np.int64))

    # the recursion over every date, or the sums evaluated only at the requested dates
    sums = _EwmaSums(values, present if not present.all() else None, None if at is None else positions)
    start = first if at is None else 0  # the forecasts' columns of the (P, ·) sums
    diagonal = np.arange(n_factors)
    variance = sums.newey_west(diagonal, diagonal, config.vol_half_life, config.vol_nw_lags)[:, start:]
    vol = np.sqrt(np.maximum(variance, 0.0)).T  # (T', K)

    upper_i, upper_j = np.triu_indices(n_factors)
    corr_cov = sums.newey_west(upper_i, upper_j, config.corr_half_life, config.corr_nw_lags)[:, start:]
    correlation = _correlation_from_pairs(corr_cov, upper_i, upper_j, n_factors)
    observations = np.cumsum(present, axis=1, dtype=np.int64)[:, positions].T  # (T', K) returns up to each date
    enough = observations >= config.min_periods  # (T', K) factors with history
    if config.shrinkage == "ledoit_wolf":
        intensity = _ledoit_wolf_intensity(sums, upper_i, upper_j, enough, config.corr_half_life, start)
        correlation *= (1.0 - intensity)[:, None, None]
        correlation[:, diagonal, diagonal] += intensity[:, None]

    covariance = vol[:, :, None] * correlation * vol[:, None, :]
    covariance *= enough[:, :, None] & enough[:, None, :]
    covariance = _nearest_psd(covariance)
    covariance[~enough[:, :, None] | ~enough[:, None, :]] = np.nan
    covariance *= config.horizon
    return FactorCovariance(
        dates=dates,
        factors=factors,
        values=covariance,
        horizon=config.horizon,
        estimator=config,
        observations=observations,
    )


def _validate(factor_returns: pl.DataFrame | pl.LazyFrame) -> tuple[pl.DataFrame, tuple[str, ...]]:
    if isinstance(factor_returns, pl.LazyFrame):
        factor_returns = factor_returns.collect()
    elif not isinstance(factor_returns, pl.DataFrame):
        raise TypeError(f"factor_returns must be a polars DataFrame, got {type(factor_returns).__name__}")
    if DATE not in factor_returns.columns:
        raise ValueError(f"factor_returns has no {DATE!r} column; it has {factor_returns.columns}")
    if not factor_returns[DATE].dtype.is_temporal():
        raise ValueError(f"factor_returns: column 'date' of type {factor_returns[DATE].dtype} is not a date")
    if factor_returns[DATE].null_count():
        raise ValueError("factor_returns: column 'date' has null values")
    factors = tuple(c for c in factor_returns.columns if c != DATE)
    if not factors:
        raise ValueError("factor_returns has no factor columns besides 'date'")
    bad = [c for c in factors if not factor_returns[c].dtype.is_numeric()]
    if bad:
        raise ValueError(f"factor_returns: column(s) {bad} must be numeric factor returns")
    if FACTOR in factors:
        raise ValueError(f"factor_returns: a factor may not be named {FACTOR!r} (a column of the covariance frame)")
    duplicated = factor_returns.filter(pl.col(DATE).is_duplicated())[DATE].unique().sort()
    if duplicated.len():
        raise ValueError(f"factor_returns has duplicate dates, e.g. {duplicated.head(5).to_list()}")
    return factor_returns.sort(DATE), factors


def _positions_of(dates: pl.Series, at: Sequence[datetime.date] | pl.Series, first: int) -> np.ndarray:
    """Sorted row positions in ``dates`` (sorted, distinct) of the requested forecast dates ``at``."""
    wanted = pl.Series(DATE, at).cast(dates.dtype).unique().sort()
    located = pl.DataFrame({DATE: wanted}).join(
        pl.DataFrame({DATE: dates}).with_row_index("position"), on=DATE, how="left"
    )
    unknown = located.filter(pl.col("position").is_null())[DATE]
    if unknown.len():
        raise ValueError(f"at: {unknown.len()} date(s) without factor returns, e.g. {unknown.head(3).to_list()}")
    positions = located["position"].cast(pl.Int64).to_numpy()
    early = positions < first
    if early.any():
        raise ValueError(
            f"at: {dates[int(positions[early][0])]} is before the first forecast date {dates[first]} (min_periods)"
        )
    return positions


def _decay(half_life: float) -> float:
    return 1.0 if math.isinf(half_life) else float(0.5 ** (1.0 / half_life))


def _ewma_sum(x: np.ndarray, decay: float) -> np.ndarray:
    """``S[..., t] = decay · S[..., t−1] + x[..., t]`` along the last axis."""
    result: np.ndarray = ewma_sum(x, decay, axis=-1)
    return result


class _EwmaSums:
    """Pairwise-normalized EWMA cross moments of (K, T) returns (0 where absent) and their presence mask, on
    every date or, with ``at`` (sorted positions), only on those dates."""

    def __init__(self, values: np.ndarray, present: np.ndarray | None, at: np.ndarray | None = None) -> None:
        self.values = values
        self.present = present  # None when every return is present
        self.n_dates = values.shape[1]
        self.at = at

    def _sum(self, x: np.ndarray, decay: float) -> np.ndarray:
        """(P, T) EWMA sums of (P, T) ``x`` on every date, or (P, D) on the dates ``at``: ``x`` times the
        weights ``λ^(t−s)`` (``s ≤ t``) of each requested date ``t``, a direct sum instead of the recursion."""
        if self.at is None:
            return _ewma_sum(x, decay)
        age = self.at[None, :] - np.arange(self.n_dates)[:, None]  # (T, D): t − s
        weights = np.where(age >= 0, float(decay) ** np.maximum(age, 0).astype(np.float64), 0.0)
        result: np.ndarray = x @ weights
        return result

    def _products(self, rows: Sequence[int] | np.ndarray, cols: np.ndarray, lag: int, mask: bool) -> np.ndarray:
        """(P, T) products ``x[rows, s] · x[cols, s − lag]`` (0 for s < lag), of the values or the mask."""
        source = self.present.astype(np.float64) if mask and self.present is not None else self.values
        products = np.zeros((len(rows), self.n_dates))
        products[:, lag:] = source[rows, lag:] * source[cols, : self.n_dates - lag]
        return products

    def _weights(self, rows: np.ndarray, cols: np.ndarray, lag: int, decay: float) -> np.ndarray:
        """(P, T) or (1, T) EWMA sums of the weights of the dates where both terms are present."""
        if self.present is None:
            ones = np.zeros((1, self.n_dates))
            ones[:, lag:] = 1.0
            return self._sum(ones, decay)
        return self._sum(self._products(rows, cols, lag, mask=True), decay)

    def moment(self, rows: np.ndarray, cols: np.ndarray, lag: int, decay: float, absent: float) -> np.ndarray:
        """(P, T) Γ_lag for the pairs (rows, cols); ``absent`` where no pair of dates has both terms."""
        numerator = self._sum(self._products(rows, cols, lag, mask=False), decay)
        weight = self._weights(rows, cols, lag, decay)
        with np.errstate(invalid="ignore", divide="ignore"):
            moment: np.ndarray = np.where(weight > 0, numerator / weight, absent)
        return moment

    def newey_west(self, rows: np.ndarray, cols: np.ndarray, half_life: float, lags: int) -> np.ndarray:
        """(P, T) Newey-West covariance ``Γ_0 + Σ_l (1 − l/(L+1)) (Γ_l + Γ_lᵀ)`` for the pairs (rows, cols)."""
        decay = _decay(half_life)
        result = np.empty((len(rows), self.n_dates if self.at is None else self.at.size))

        def block(pairs: slice) -> None:
            r, c = rows[pairs], cols[pairs]
            total = self.moment(r, c, 0, decay, absent=0.0)
            for lag in range(1, min(lags, self.n_dates - 1) + 1):
                bartlett = 1.0 - lag / (lags + 1.0)
                total += bartlett * (self.moment(r, c, lag, decay, 0.0) + self.moment(c, r, lag, decay, 0.0))
            result[pairs] = total

        run_parallel(block, _blocks(len(rows)))
        return result

    def fourth_moment(self, rows: np.ndarray, cols: np.ndarray, decay: float) -> tuple[np.ndarray, np.ndarray]:
        """(P, T) EWMA of ``x_i² x_j²`` (pairwise normalized) and the inverse effective sample size ν of each pair."""
        squares = self.values**2
        numerator = self._sum(squares[rows] * squares[cols], decay)
        if self.present is None:
            ones = np.ones((1, self.n_dates))
        else:
            ones = (self.present[rows] & self.present[cols]).astype(np.float64)
        weight = self._sum(ones, decay)
        weight_squared = self._sum(ones, decay**2)
        with np.errstate(invalid="ignore", divide="ignore"):
            fourth = np.where(weight > 0, numerator / weight, 0.0)
            inverse_size = np.where(weight > 0, weight_squared / weight**2, 0.0)
        return fourth, inverse_size


def _blocks(n_pairs: int) -> list[slice]:
    return [slice(start, min(start + _PAIRS_PER_BLOCK, n_pairs)) for start in range(0, n_pairs, _PAIRS_PER_BLOCK)]


def _to_matrices(pairs: np.ndarray, rows: np.ndarray, cols: np.ndarray, n_factors: int) -> np.ndarray:
    """(T, K, K) symmetric matrices from (P, T) upper-triangle pair values."""
    matrices = np.empty((pairs.shape[1], n_factors, n_factors))
    matrices[:, rows, cols] = pairs.T
    matrices[:, cols, rows] = pairs.T
    return matrices


def _correlation_from_pairs(pairs: np.ndarray, rows: np.ndarray, cols: np.ndarray, n_factors: int) -> np.ndarray:
    """(T, K, K) correlations ``V[i,j]/sqrt(V[i,i] V[j,j])`` (0 off the diagonal where a variance is not positive)."""
    covariance = _to_matrices(pairs, rows, cols, n_factors)
    diagonal = np.diagonal(covariance, axis1=1, axis2=2)
    scale = np.where(diagonal > 0, 1.0 / np.sqrt(np.where(diagonal > 0, diagonal, 1.0)), 0.0)
    correlation = covariance * scale[:, :, None] * scale[:, None, :]
    index = np.arange(n_factors)
    correlation[:, index, index] = 1.0
    return correlation


def _ledoit_wolf_intensity(
    sums: _EwmaSums, rows: np.ndarray, cols: np.ndarray, enough: np.ndarray, half_life: float, first: int
) -> np.ndarray:
    """(T',) Ledoit–Wolf shrinkage intensity δ of the lag-0 EWMA correlation toward the identity.

    Only the factors with enough history on a date (``enough``, (T', K)) take part, K being their count."""
    decay = _decay(half_life)
    second = sums.moment(rows, cols, 0, decay, absent=0.0)[:, first:]
    fourth, inverse_size = sums.fourth_moment(rows, cols, decay)
    fourth, inverse_size = fourth[:, first:], inverse_size[:, first:]
    variance = second[rows == cols]  # (K, T') in factor order: the pairs (i, i) come in increasing i
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(variance > 0, 1.0 / variance, 0.0)
    scale_pairs = scale[rows] * scale[cols]
    correlation_sq = second**2 * scale_pairs
    # each off-diagonal pair stands for (i, j) and (j, i); pairs with a factor lacking history count for nothing
    multiplicity = np.where(rows == cols, 1.0, 2.0)[:, None] * (enough.T[rows] & enough.T[cols])
    off_diagonal = (rows != cols)[:, None]
    n_factors = np.maximum(enough.sum(axis=1), 1)
    distance = np.sum(multiplicity * off_diagonal * correlation_sq, axis=0) / n_factors
    spread = np.sum(multiplicity * inverse_size * (fourth * scale_pairs - correlation_sq), axis=0) / n_factors
    spread = np.clip(spread, 0.0, distance)
    with np.errstate(invalid="ignore", divide="ignore"):
        intensity: np.ndarray = np.where(distance > 0, spread / distance, 0.0)
    return intensity


def _nearest_psd(covariance: np.ndarray) -> np.ndarray:
    """Symmetrize (T, K, K) matrices and floor the eigenvalues at 0 on the dates where one is negative."""
    covariance = 0.5 * (covariance + np.swapaxes(covariance, 1, 2))
    if covariance.shape[0] == 0:
        return covariance
    smallest = np.linalg.eigvalsh(covariance)[:, 0]
    negative = np.flatnonzero(smallest < 0)
    if negative.size:
        eigenvalues, eigenvectors = np.linalg.eigh(covariance[negative])
        repaired = (eigenvectors * np.maximum(eigenvalues, 0.0)[:, None, :]) @ np.swapaxes(eigenvectors, 1, 2)
        covariance[negative] = 0.5 * (repaired + np.swapaxes(repaired, 1, 2))
    return covariance
