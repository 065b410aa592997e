"""Adjustments of factor covariance forecasts: eigenfactor risk adjustment and volatility regime adjustment.

Eigenfactor risk adjustment (Menchero, Wang & Orr 2011; Barra USE4). Sample covariances underpredict the risk
of their smallest eigenportfolios. For a forecast ``F0 = U0 diag(d0) U0ᵀ`` treated as the truth, simulate the
estimator that made it: ``M`` paths of ``n`` daily returns ``r_s = A z_s`` with ``A = U0 diag(√d0)`` and
``z_s ~ N(0, I)`` i.i.d., ``n`` being the number of returns behind the forecast (the most among its
factors: the market and sectors; a style that entered later has fewer), each path estimated exactly as
:func:`factor_engine.risk.covariance.factor_covariance` estimates: EWMA volatilities with the volatility
half-life and Newey-West lags, EWMA correlations with the correlation half-life and lags (weights
``λ^(n−1−s)`` normalized by their sum over the dates each lag term has), variances floored at 0. Each
simulated forecast ``F_m = U_m diag(d_m) U_mᵀ`` gives its eigenportfolios' true variances
``diag(U_mᵀ F0 U_m)``; the simulated bias of eigenfactor ``k`` (by eigenvalue rank) is
``v_k = sqrt(mean_m(true_mk / d_mk))``, made non-increasing in the eigenvalue (``v_k ← max_{j ≥ k} v_j``: a
simulated dip at the smallest eigenvalues comes from nearly singular directions, such as the cap-weighted sector
constraint, that i.i.d. simulated returns do not obey exactly, and would shrink them toward 0), and at least 1:
no eigenvalue is shrunk. The largest eigenvalues (market and sectors, of similar size) simulate ``v_k < 1`` only
because the sample's top eigenvector picks the noisiest direction among them; scaling that down (amplified by
``a``) underpredicted every long-only portfolio, which lies mostly in their span, by about 12 % on the synthetic
market. The profile is scaled by ``γ_k = a (v_k − 1) + 1`` (``a`` = ``scale``) and the adjusted forecast is
``U0 diag(γ² max(d0, 0)) U0ᵀ`` (PSD explicitly).

Computation. Every estimator sum is linear in the outer products of ``z``, so each path's EWMA sums are kept in
``z`` space, ``N_l(n) = Σ_{s<n} λ^{n−1−s} z_s z_{s−l}ᵀ`` (one recursion along time for all paths, lags and
both half-lives), and a date's simulated estimates are ``A Γ(n) Aᵀ``: one pass over time serves every date.
The bias profile is simulated on the first date, then at most ``every`` dates later and sooner once the
history has grown by a quarter (the profile moves fast while the history is short), and each date uses the
latest profile simulated at or before it: point-in-time, nothing from the future. The draws of ``z`` depend
only on the seed, the number of factors and the path (groups of paths run in parallel); a date's profile uses
the first ``n`` draws of each path, so it never changes when later data arrive. A date where some factors have
no forecast yet (a NaN row and column: a new sector, a style still warming up) is adjusted on the block of
factors that have one; dates are grouped by that set of factors. A forecast that records no estimator (built by
hand or read from a file) is simulated as an equal-weighted estimator of ``effective_observations`` returns
without lags (the Wishart simulation of Menchero, Wang & Orr).

Volatility regime adjustment (Barra USE4). The cross-sectional bias statistic of the factors,
``B_t = sqrt(mean_k (f_{t,k} / σ_{t−1,k})²)`` over the factors with a forecast at ``t−1`` and a return at
``t``, measures whether yesterday's forecast was too low (> 1) or too high (< 1). Its exponentially weighted
mean square ``λ_t² = EWMA_h(B²)`` up to and including ``t`` (half-life ``h`` = 42 days, weights normalized)
rescales the forecast made at ``t``: ``F_VRA(t) = λ_t² F(t)``. Dates before the first bias observation keep
``λ = 1``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import polars as pl

from factor_engine._dense import ewma_sum, run_parallel, single_threaded_blas
from factor_engine.panel import DATE
from factor_engine.risk.covariance import CovarianceConfig, FactorCovariance, forecast_mask

__all__ = [
    "EigenfactorBlock",
    "EigenfactorState",
    "RegimeState",
    "eigenfactor_adjustment",
    "eigenfactor_with_state",
    "factor_bias_statistics",
    "volatility_regime_adjustment",
    "volatility_regime_with_state",
]

# Simulated paths per group (each group is one random stream and one parallel task).
_PATHS_PER_GROUP = 250
# Time steps drawn at once per group (fixed, so a path's draws never depend on how far it is simulated).
_DRAW_STEPS = 128
# Simulated forecasts evaluated at once (bounds the (dates, paths, K, K) working arrays).
_DATES_PER_BATCH = 8
# A new profile is simulated once a forecast's history exceeds the last simulated one's by this factor.
_HISTORY_GROWTH = 1.25


@dataclasses.dataclass(frozen=True)
class _Estimator:
    """The covariance estimator being simulated: decays and Newey-West lags of volatilities and correlations."""

    vol_decay: float
    corr_decay: float
    vol_lags: int
    corr_lags: int

    @classmethod
    def of(cls, config: CovarianceConfig) -> _Estimator:
        return cls(_decay(config.vol_half_life), _decay(config.corr_half_life), config.vol_nw_lags, config.corr_nw_lags)

    @property
    def max_lag(self) -> int:
        return max(self.vol_lags, self.corr_lags)


def _decay(half_life: float) -> float:
    return 1.0 if math.isinf(half_life) else float(0.5 ** (1.0 / half_life))


def _weight_sum(decay: float, length: int, lag: int) -> float:
    """``Σ_{s=lag}^{length−1} decay^(length−1−s)``: the weights of a lag-``lag`` term after ``length`` dates."""
    terms = length - lag
    if terms <= 0:
        return 0.0
    return float(terms) if decay == 1.0 else (1.0 - decay**terms) / (1.0 - decay)


def _newey_west(sums: np.ndarray, decay: float, lags: int, length: int) -> np.ndarray:
    """(P, K, K) ``Γ_0 + Σ_l (1 − l/(L+1)) (Γ_l + Γ_lᵀ)`` from the (P, K, (L'+1) K) EWMA sums, lag ``l`` in the
    columns ``[l K, (l+1) K)`` (``L' ≥ L``)."""
    n_factors = sums.shape[1]
    total = sums[:, :, :n_factors] / _weight_sum(decay, length, 0)
    for lag in range(1, lags + 1):
        weight = _weight_sum(decay, length, lag)
        if weight > 0:
            term = sums[:, :, lag * n_factors : (lag + 1) * n_factors] * ((1.0 - lag / (lags + 1.0)) / weight)
            total = total + term + term.transpose(0, 2, 1)
    return total


class _PathGroup:
    """The EWMA sums of one group of simulated paths in ``z`` space, advanced along time on demand.

    Draws and sums are float32: the sums serve only to simulate the estimator's sampling error (a relative
    rounding of about 1e-6 against sampling errors of several percent) and take half the time. Layout is
    path-major, ``(P, steps, K)`` draws and ``(P, K, (L+1) K)`` sums (lag ``l`` in columns ``[l K, (l+1) K)``),
    so each chunk of steps updates every lag of one half-life with one batched matrix product."""

    def __init__(self, rng: np.random.Generator, n_paths: int, n_factors: int, estimator: _Estimator) -> None:
        self.rng, self.n_paths, self.n_factors, self.estimator = rng, n_paths, n_factors, estimator
        self.vol_sums = np.zeros((n_paths, n_factors, (estimator.vol_lags + 1) * n_factors), dtype=np.float32)
        self.corr_sums = np.zeros((n_paths, n_factors, (estimator.corr_lags + 1) * n_factors), dtype=np.float32)
        # the last `max_lag` draws of each path (zeros before the start)
        self.previous = np.zeros((n_paths, estimator.max_lag, n_factors), dtype=np.float32)
        self.drawn = np.zeros((n_paths, 0, n_factors), dtype=np.float32)
        self.drawn_from = 0  # time index of self.drawn[:, 0]
        self.length = 0  # dates simulated so far

    def _draws(self, start: int, stop: int) -> np.ndarray:
        """(P, stop − start, K) draws of the time steps [start, stop) (within one drawing chunk)."""
        if start >= self.drawn_from + self.drawn.shape[1]:
            self.drawn_from = start
            self.drawn = self.rng.standard_normal((self.n_paths, _DRAW_STEPS, self.n_factors), dtype=np.float32)
        return self.drawn[:, start - self.drawn_from : stop - self.drawn_from]

    def advance(self, length: int) -> None:
        """Simulate the dates up to ``length`` (exclusive)."""
        lags, k = self.estimator.max_lag, self.n_factors
        while self.length < length:
            stop = min(length, (self.length // _DRAW_STEPS + 1) * _DRAW_STEPS)
            steps = stop - self.length
            draws = self._draws(self.length, stop)  # (P, n, K)
            history = np.concatenate([self.previous, draws], axis=1) if lags else draws  # (P, lags + n, K)
            age = np.arange(steps - 1, -1, -1, dtype=np.float32)
            for sums, decay in ((self.vol_sums, self.estimator.vol_decay), (self.corr_sums, self.estimator.corr_decay)):
                weighted = (draws * (np.float32(decay) ** age)[None, :, None]).transpose(0, 2, 1)  # (P, K, n)
                sums *= np.float32(decay**steps)
                # lag l: z_s against z_{s−l}, a view of the history (no lagged copy of the draws)
                for lag in range(sums.shape[2] // k):
                    earlier = history[:, lags - lag : lags - lag + steps]
                    sums[:, :, lag * k : (lag + 1) * k] += np.matmul(weighted, earlier)
            if lags:
                self.previous = history[:, -lags:]
            self.length = stop

    def estimates(self) -> tuple[np.ndarray, np.ndarray]:
        """(P, K, K) ``z``-space Newey-West covariances of the volatility and the correlation estimators."""
        e = self.estimator
        vol = _newey_west(self.vol_sums, e.vol_decay, e.vol_lags, self.length)
        corr = _newey_west(self.corr_sums, e.corr_decay, e.corr_lags, self.length)
        return vol, corr


def _bias_ratios(forecasts: np.ndarray, vol_z: np.ndarray, corr_z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(Σ_m true/d, count)``, each (D, K): the sums over paths of the simulated eigenportfolios' true over
    forecast variances, for D forecasts ``F0`` (D, K, K) and each one's paths' ``z``-space estimates of the
    volatility and correlation estimators (D, P, K, K)."""
    eigvals, eigvecs = np.linalg.eigh(forecasts)
    # each eigenvector's sign fixed by its largest entry: the draws z enter through A = U √D, so a sign LAPACK
    # chose differently (the same factors in another order, e.g. a sector added later in the list) would
    # simulate other paths; with the sign fixed, reordering the factors only reorders the simulated returns
    largest = np.take_along_axis(eigvecs, np.argmax(np.abs(eigvecs), axis=1)[:, None, :], axis=1)
    eigvecs = eigvecs * np.where(largest < 0, -1.0, 1.0)
    root = (eigvecs * np.sqrt(np.maximum(eigvals, 0.0))[:, None, :])[:, None]  # (D, 1, K, K): A, F0 = A Aᵀ
    variance = np.sum((root @ vol_z) * root, axis=-1)  # (D, P, K): diag(A V Aᵀ)
    vol = np.sqrt(np.maximum(variance, 0.0))
    corr_cov = root @ corr_z @ root.transpose(0, 1, 3, 2)  # (D, P, K, K)
    diagonal = np.diagonal(corr_cov, axis1=2, axis2=3)
    scale = np.where(diagonal > 0, 1.0 / np.sqrt(np.where(diagonal > 0, diagonal, 1.0)), 0.0)
    correlation = corr_cov * scale[..., :, None] * scale[..., None, :]
    index = np.arange(forecasts.shape[1])
    correlation[..., index, index] = 1.0
    simulated = vol[..., :, None] * correlation * vol[..., None, :]
    sim_vals, sim_vecs = np.linalg.eigh(simulated)
    true_var = np.sum(sim_vecs * (forecasts[:, None] @ sim_vecs), axis=-2)  # (D, P, K): diag(Uᵀ F0 U)
    # eigenvalues that are zero up to rounding (a degenerate simulated forecast) carry no bias information
    usable = sim_vals > 1e-12 * np.maximum(sim_vals[..., -1:], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(usable, np.maximum(true_var, 0.0) / sim_vals, 0.0)
    return ratio.sum(axis=1), usable.sum(axis=1)


def _simulation_positions(
    history: np.ndarray, every: int, *, offset: int = 0, last: tuple[int, int] | None = None
) -> np.ndarray:
    """Positions (in date order) of the forecasts whose bias profile is simulated, given each one's history
    ``history`` (non-decreasing returns): the first, then the first date ``every`` dates after the last one
    simulated or, sooner, the first whose history exceeds the last one's by a quarter (the profile moves fast
    while the history is short and slowly once it is long).

    For the later dates of a block (a model extended): ``offset`` forecasts of the block came before
    ``history[0]`` and ``last`` is the (position in the block, history) of the last one simulated then; the
    positions returned are still indices into ``history``."""
    positions: list[int] = []
    previous = last
    for index in range(history.size):
        position = index + offset
        if previous is None or position - previous[0] >= every or history[index] > _HISTORY_GROWTH * previous[1]:
            positions.append(index)
            previous = (position, int(history[index]))
    return np.asarray(positions, dtype=np.int64)


def _simulated_profiles(
    forecasts: np.ndarray,
    lengths: np.ndarray,
    estimator: _Estimator,
    n_simulations: int,
    seed: int,
    replayed: np.ndarray | None = None,
) -> np.ndarray:
    """(D, K) simulated bias profiles ``v_k`` of D forecasts (D, K, K) made from ``lengths`` (D,) returns.

    ``replayed``: the lengths (non-decreasing, none above ``lengths``) of the forecasts of the same block
    simulated before (a model extended by new dates): the paths are advanced through them first, stopping at
    each as the first run did, so the new profiles equal those of a run over all the dates."""
    n_dates, n_factors, _ = forecasts.shape
    order = np.argsort(lengths, kind="stable")
    groups = range(0, n_simulations, _PATHS_PER_GROUP)
    ratio_sums = np.zeros((len(groups), n_dates, n_factors))
    counts = np.zeros((len(groups), n_dates, n_factors))

    def simulate(group: int) -> None:
        start = groups[group]
        rng = np.random.default_rng([seed, n_factors, group])
        paths = _PathGroup(rng, min(_PATHS_PER_GROUP, n_simulations - start), n_factors, estimator)
        for length in () if replayed is None else replayed:
            paths.advance(int(length))
        for first in range(0, n_dates, _DATES_PER_BATCH):
            batch = order[first : first + _DATES_PER_BATCH]
            estimates = []
            for position in batch:
                paths.advance(int(lengths[position]))
                estimates.append(paths.estimates())
            vol_z = np.stack([vol for vol, _ in estimates])
            corr_z = np.stack([corr for _, corr in estimates])
            ratio_sums[group, batch], counts[group, batch] = _bias_ratios(forecasts[batch], vol_z, corr_z)

    with single_threaded_blas():  # parallel over groups of paths, not inside BLAS calls
        run_parallel(simulate, range(len(groups)))
    total, count = ratio_sums.sum(axis=0), counts.sum(axis=0)
    profile: np.ndarray = np.sqrt(np.where(count > 0, total / np.maximum(count, 1), 1.0))
    return profile


@dataclasses.dataclass(frozen=True)
class EigenfactorBlock:
    """The simulations of one set of factors with a forecast (``pattern``), for extending a model.

    Attributes
    ----------
    pattern: (K,) bool, the factors with a forecast on the block's dates.
    n_dates: forecasts of the block so far.
    positions: (S,) positions within the block of the simulated forecasts.
    histories: (S,) their histories (returns simulated).
    profiles: (S, active) their bias profiles (non-increasing in the eigenvalue, at least 1).
    """

    pattern: np.ndarray
    n_dates: int
    positions: np.ndarray
    histories: np.ndarray
    profiles: np.ndarray


@dataclasses.dataclass(frozen=True)
class EigenfactorState:
    """What extending the eigenfactor adjustment to later dates needs: each block's simulations (a run over
    all the dates makes the same ones) and the settings they were made with."""

    blocks: tuple[EigenfactorBlock, ...]
    n_simulations: int
    scale: float
    every: int
    seed: int


def eigenfactor_adjustment(
    covariance: FactorCovariance,
    *,
    effective_observations: float | None = None,
    n_simulations: int = 1000,
    scale: float = 1.4,
    every: int = 126,
    seed: int = 0,
) -> FactorCovariance:
    """Eigenfactor risk adjustment of every forecast (see the module docstring).

    Parameters
    ----------
    covariance: the forecasts to adjust; the estimator simulated is ``covariance.estimator`` and the history of
        each forecast ``covariance.observations`` (both recorded by :func:`factor_covariance`).
    effective_observations: only for a forecast that records no estimator: the number of returns of the
        equal-weighted estimator simulated instead (e.g. ``(1 + λ)/(1 − λ)`` for EWMA weights with
        ``λ = 0.5^(1/h)``); must exceed the number of factors. Ignored when the estimator is recorded.
    n_simulations: simulated paths (the same paths serve every date).
    scale: the empirical scaling ``a`` of the simulated bias (0 leaves the forecasts unchanged).
    every: simulate the bias profile at most ``every`` forecast dates apart, and sooner once the history has
        grown by a quarter since the last simulation (1 = every date).
    seed: seed of the simulation (numpy ``default_rng``).
    """
    adjusted, _ = eigenfactor_with_state(
        covariance,
        effective_observations=effective_observations,
        n_simulations=n_simulations,
        scale=scale,
        every=every,
        seed=seed,
    )
    return adjusted


def eigenfactor_with_state(
    covariance: FactorCovariance,
    *,
    effective_observations: float | None = None,
    n_simulations: int = 1000,
    scale: float = 1.4,
    every: int = 126,
    seed: int = 0,
    state: EigenfactorState | None = None,
) -> tuple[FactorCovariance, EigenfactorState]:
    """:func:`eigenfactor_adjustment`, also returning the :class:`EigenfactorState` after the last date; given the
    ``state`` of a run over earlier dates, ``covariance`` holds only the later dates, which are adjusted as a
    run over all the dates would adjust them (the settings must be the state's)."""
    values = covariance.values
    n_dates, n_factors, _ = values.shape
    if n_simulations < 2 or every < 1:
        raise ValueError(f"need n_simulations >= 2 and every >= 1, got {n_simulations} and {every}")
    if effective_observations is not None and not effective_observations > n_factors:
        raise ValueError(
            f"effective_observations ({effective_observations}) must exceed the number of factors ({n_factors})"
        )
    if not np.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be a non-negative number, got {scale}")
    settings = (n_simulations, scale, every, seed)
    if state is not None and (state.n_simulations, state.scale, state.every, state.seed) != settings:
        raise ValueError(
            f"the state was made with (n_simulations, scale, every, seed) = "
            f"{(state.n_simulations, state.scale, state.every, state.seed)}, not {settings}"
        )
    if covariance.estimator is not None:
        estimator = _Estimator.of(covariance.estimator)
        observations = covariance.observations
        if observations is None:
            raise ValueError("a forecast that records its estimator must also record its observations")
    elif effective_observations is not None:
        estimator = _Estimator(1.0, 1.0, 0, 0)
        observations = np.full((n_dates, n_factors), round(effective_observations), dtype=np.int64)
    else:
        raise ValueError("the forecast records no estimator: give effective_observations for the simulation")
    earlier = {} if state is None else {block.pattern.tobytes(): block for block in state.blocks}
    if n_dates == 0:
        return covariance, EigenfactorState(tuple(earlier.values()), *settings)
    adjusted = values.copy()
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
        eigvals, eigvecs = np.linalg.eigh(block)
        # the history simulated: the longest among the block's factors (most of them: the market and sectors;
        # a style that entered later has fewer returns, and simulating every factor with its few returns would
        # inflate the whole profile for a year after it enters)
        history = observations[np.ix_(dates, active)].max(axis=1)
        before = earlier.get(pattern.tobytes())
        done = 0 if before is None else before.n_dates  # the block's forecasts of earlier runs
        last = (
            None
            if before is None or before.positions.size == 0
            else (
                int(before.positions[-1]),
                int(before.histories[-1]),
            )
        )
        sim_positions = _simulation_positions(history, every, offset=done, last=last)  # within this run
        if sim_positions.size == 0:  # the dates of an extension that use an earlier run's profile
            profiles = np.zeros((0, active.size))
        else:
            profiles = _simulated_profiles(
                block[sim_positions],
                history[sim_positions],
                estimator,
                n_simulations,
                seed,
                replayed=None if before is None else before.histories,
            )
        # the bias does not fall toward the smaller eigenvalues: a simulated dip there (a nearly singular direction,
        # e.g. the cap-weighted sector constraint, that i.i.d. simulated returns do not obey exactly) would shrink
        # that eigenvalue toward 0; each v_k is at least the largest v_j of the larger eigenvalues. Nor is an
        # eigenvalue shrunk (v_k ≥ 1): the largest, nearly equal eigenvalues (market and sectors) are overpredicted
        # as eigenportfolios only because the sample picks the noisiest direction among them, and shrinking them
        # (by a·(1 − v), amplified) underpredicts every long-only portfolio, which lies mostly in their span
        profiles = np.maximum(np.maximum.accumulate(profiles[:, ::-1], axis=1)[:, ::-1], 1.0)
        # each date uses the latest profile simulated at or before it (in an earlier run, for the first dates)
        known = profiles if before is None else np.concatenate([before.profiles, profiles])
        known_positions = (
            sim_positions + done if before is None else np.concatenate([before.positions, sim_positions + done])
        )
        latest = np.searchsorted(known_positions, np.arange(dates.size) + done, side="right") - 1
        gamma = scale * (known[latest] - 1.0) + 1.0
        # eigenvalues that are zero up to rounding (an exactly singular direction) carry no risk to adjust
        gamma = np.where(eigvals > 1e-12 * np.maximum(eigvals[:, -1:], 0.0), gamma, 1.0)
        # PSD explicitly: a rounding-negative eigenvalue of the input is 0 in the adjusted forecast
        rebuilt = np.matmul(eigvecs * (gamma**2 * np.maximum(eigvals, 0.0))[:, None, :], eigvecs.transpose(0, 2, 1))
        rebuilt = 0.5 * (rebuilt + rebuilt.transpose(0, 2, 1))
        adjusted[np.ix_(dates, active, active)] = rebuilt
        earlier[pattern.tobytes()] = EigenfactorBlock(
            pattern=pattern.copy(),
            n_dates=done + dates.size,
            positions=known_positions,
            histories=history[sim_positions]
            if before is None
            else np.concatenate([before.histories, history[sim_positions]]),
            profiles=known,
        )
    return dataclasses.replace(covariance, values=adjusted), EigenfactorState(tuple(earlier.values()), *settings)


def factor_bias_statistics(covariance: FactorCovariance, factor_returns: pl.DataFrame) -> pl.DataFrame:
    """``date, bias``: the cross-sectional factor bias statistic ``B_t`` of each return date ``t`` against the
    forecast made at the previous forecast date (daily forecasts are compared with daily returns)."""
    returns = _aligned_returns(covariance, factor_returns)
    vol = _daily_vol(covariance)
    bias = _bias(returns[1:], vol[:-1])
    return pl.DataFrame({DATE: covariance.dates[1:], "bias": bias}).with_columns(pl.col("bias").fill_nan(None))


def _daily_vol(covariance: FactorCovariance) -> np.ndarray:
    vol: np.ndarray = np.sqrt(np.einsum("tkk->tk", covariance.values) / covariance.horizon)
    return vol


def _bias(returns: np.ndarray, previous_vol: np.ndarray) -> np.ndarray:
    """(D,) ``sqrt(mean_k (f_k / σ_k)²)`` of each row's returns over the previous forecast's vols (NaN when no
    factor has both)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = returns / previous_vol
    z = np.where(np.isfinite(z), z, np.nan)
    counts = np.isfinite(z).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        bias: np.ndarray = np.sqrt(np.nansum(z**2, axis=1) / counts)
    return bias


def _aligned_returns(covariance: FactorCovariance, factor_returns: pl.DataFrame) -> np.ndarray:
    missing = [f for f in covariance.factors if f not in factor_returns.columns]
    if missing or DATE not in factor_returns.columns:
        raise ValueError(f"factor_returns needs 'date' and the factor columns; missing {missing or ['date']}")
    aligned = pl.DataFrame({DATE: covariance.dates}).join(
        factor_returns.select(DATE, *covariance.factors), on=DATE, how="left"
    )
    values: np.ndarray = aligned.select(covariance.factors).to_numpy().astype(np.float64)
    return values


@dataclasses.dataclass(frozen=True)
class RegimeState:
    """What extending the volatility regime adjustment to later dates needs: the daily vols of the last
    forecast (before the adjustment, NaN where none) and the EWMA sums of ``B²`` and of its weights there."""

    vol: np.ndarray
    weighted: float
    weights: float


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
    return volatility_regime_with_state(covariance, factor_returns, half_life=half_life)[0]


def volatility_regime_with_state(
    covariance: FactorCovariance,
    factor_returns: pl.DataFrame,
    *,
    half_life: float = 42.0,
    state: RegimeState | None = None,
) -> tuple[FactorCovariance, RegimeState | None]:
    """:func:`volatility_regime_adjustment`, also returning the :class:`RegimeState` after the last date (None
    when there is none); given the ``state`` of a run over earlier dates, ``covariance`` holds only the later
    dates, adjusted as a run over all the dates would adjust them."""
    if not half_life > 0:
        raise ValueError(f"half_life must be positive, got {half_life}")
    n_dates = covariance.values.shape[0]
    if n_dates == 0:
        return covariance, state
    returns = _aligned_returns(covariance, factor_returns)
    vol = _daily_vol(covariance)
    if state is None:  # the first forecast has no bias history
        bias = _bias(returns[1:], vol[:-1])
    else:
        bias = _bias(returns, np.concatenate([state.vol[None], vol[:-1]]))
    decay = 0.5 ** (1.0 / half_life)
    present = np.isfinite(bias)
    weighted = ewma_sum(np.where(present, bias**2, 0.0), decay)
    weights = ewma_sum(present.astype(np.float64), decay)
    if state is not None:  # the sums carried from the earlier dates, decayed
        carried = decay ** np.arange(1, n_dates + 1, dtype=np.float64)
        weighted += state.weighted * carried
        weights += state.weights * carried
    with np.errstate(invalid="ignore", divide="ignore"):
        multiplier_sq = np.where(weights > 0, weighted / weights, 1.0)
    if state is None:
        multiplier_sq = np.concatenate([[1.0], multiplier_sq])
    if weighted.size:
        after = RegimeState(vol=vol[-1].copy(), weighted=float(weighted[-1]), weights=float(weights[-1]))
    else:  # one forecast, no bias yet
        after = RegimeState(vol=vol[-1].copy(), weighted=0.0, weights=0.0)
    return dataclasses.replace(covariance, values=covariance.values * multiplier_sq[:, None, None]), after
