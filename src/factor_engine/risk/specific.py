"""Specific (idiosyncratic) risk per asset and date, in the style of Barra USE4.

References: Menchero, Orr and Wang, *The Barra US Equity Model (USE4), Methodology Notes* (MSCI, 2011),
sections on specific risk: Newey–West EWMA time-series estimate, structural model, Bayesian shrinkage and
the volatility regime adjustment.

Notation: ``u[s, n]`` is the residual (specific return, daily fraction) of asset ``n`` on date ``s`` of the
residuals' date axis; ``P[s, n]`` is 1 when that residual is observed (a row with a finite value) and 0
otherwise; ``δ = 0.5 ** (1 / half_life)``. Every quantity on date ``t`` uses residuals of dates ``≤ t`` only,
so the forecast of date ``t`` (for ``t + 1``) is point in time.

1. **Time-series estimate** (Newey–West EWMA). With EWMA sums ``E_t[x] = Σ_{s≤t} δ^{t−s} x_s``::

       Γ_0(t) = E_t[u_s²] / E_t[P_s]
       Γ_l(t) = E_t[u_s u_{s−l}] / E_t[P_s P_{s−l}]          (l = 1..nw_lags, lags in dates of the axis)
       σ_TS²(t) = Γ_0(t) + Σ_l 2 (1 − l / (nw_lags + 1)) Γ_l(t)        (Bartlett weights)

   A missing residual contributes nothing (it is 0 with ``P = 0``); a lag with no observed pair so far has
   ``Γ_l = 0``; if the Newey–West sum is not positive the plain ``Γ_0`` is used. ``σ_TS`` exists once the
   asset has ``h(t) = Σ_{s≤t} P_s ≥ min_periods`` observations. All the EWMA sums advance together in one
   compiled pass along the dates of dense (dates × assets) arrays, blocks of assets running in parallel.

2. **Structural estimate** (``structural=True`` and exposures given). On each date ``t`` the assets with a
   full weight on their time-series estimate (``γ = 1`` below, ``σ_TS > 0``) are regressed, with weights
   ``sqrt(market_cap)``, as ``log σ_TS = X b + e`` where ``X`` is an intercept followed by the exposure columns
   of that date (collinear or empty columns are dropped on that date only, so a market column of ones adds nothing; a
   date needs more regression assets than estimable columns). For every asset with exposures::

       σ_STR(t) = E0(t) · exp(X b(t)),    E0(t) = mean over the regression assets of σ_TS / exp(X b)

   (``E0`` removes the bias of the log transform). The blend is ``σ = γ σ_TS + (1 − γ) σ_STR`` with USE4's
   weight of the time-series estimate (Menchero, Orr & Wang 2011, specific risk; EUE3 research notes)::

       γ = clip((h_W − b) / (W − b), 0, 1) · clip(exp(1 − Z), 0, 1),     Z = |σ_eq / σ̃ − 1|

   where ``W = full_history`` dates is the trailing window, ``h_W`` the observed residuals in it, ``b =
   blend_start`` (60 of 180 in USE4), ``σ̃ = (Q3 − Q1) / 1.35`` the robust standard deviation of those
   residuals (interquartile range, linear interpolation) and ``σ_eq`` their standard deviation (ddof 1, mean
   removed) after dropping those outside ``±10 σ̃``: fat tails (``σ_eq > 2 σ̃``) lower ``γ``; ``Z`` is
   infinite (``γ = 0``) when ``σ̃ = 0``. The fat-tail factor is computed on every ``robust_every``-th date of the
   residuals' axis (dates 0, ``robust_every``, …) and each date uses the latest one at or before it. The
   regression assets are those with ``γ = 1``. An asset without ``σ_TS`` gets ``σ_STR`` (its ``γ`` is 0) and
   one without exposures on that date keeps ``σ_TS``. The per-date normal equations are stacked over blocks
   of dates and solved in one batched call.

3. **Bayesian shrinkage** toward the size group. Assets with a ``σ`` on date ``t`` are ranked by market cap
   (ascending, 0-based rank ``r`` among ``m`` assets) into ``G = n_size_groups`` groups ``g = ⌊G r / m⌋``.
   With the cap-weighted group mean ``σ̄_g = Σ c σ / Σ c`` and ``Δ_g = sqrt(mean_g (σ − σ̄_g)²)``::

       v = q |σ − σ̄_g| / (Δ_g + q |σ − σ̄_g|),     σ_SH = v σ̄_g + (1 − v) σ

   (``v = 0`` when ``σ = σ̄_g``).

4. **Volatility regime adjustment** (``vra_half_life`` not None). The cross-sectional bias statistic of
   date ``t`` uses the assets with a forecast ``σ_SH(t−1) > 0`` on the previous date of the residuals' date
   axis and a residual on ``t``, weighted by their caps ``w`` of date ``t − 1`` (normalized to sum 1)::

       B_t = sqrt(Σ_n w_n (u_{t,n} / σ_SH_{t−1,n})²)
       λ_t = sqrt(Σ_{s≤t} δ_V^{t−s} B_s² / Σ_{s≤t} δ_V^{t−s})   (over dates with a B_s; δ_V from vra_half_life)
       σ_VRA(t) = λ_t σ_SH(t)

   with ``λ_t = 1`` before the first date with a bias statistic.

The result is a daily standard deviation (fraction) for every residual row whose asset has a forecast.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TypeGuard

import numpy as np
import polars as pl

from factor_engine._dense import ewma_sum, run_parallel, single_threaded_blas
from factor_engine._grid import Grid, build_grid, check_unique, collect_keyed, compact_index, sort_by_keys
from factor_engine.panel import DATE, MARKET_CAP, SYMBOL
from factor_engine.regression import _rank_revealing_solve

__all__ = ["RESIDUAL", "SPECIFIC_VOL", "SpecificRiskConfig", "specific_risk"]

RESIDUAL = "residual"
SPECIFIC_VOL = "specific_vol"
# Cells (dates × assets × exposure columns) per batch of dates in the structural regressions.
_BLOCK_CELLS = 1_500_000
# Cells (dates × assets) per batch of dates in the shrinkage: about 64 dates of 3,000 assets, so the two
# workers get even shares and the work arrays stay small (a third faster than batches of 500 dates).
_SHRINK_CELLS = 200_000
# Dates per parallel batch of the regime adjustment's bias statistics.
_REGIME_DATES = 64
# Assets per parallel block of the compiled time-series kernels (their per-asset work arrays stay in cache).
_KERNEL_COLUMNS = 256


@dataclass(frozen=True)
class SpecificRiskConfig:
    """Parameters of :func:`specific_risk` (USE4 defaults). All horizons are in dates of the residuals.

    Attributes
    ----------
    half_life: half-life (dates) of the EWMA of squared residuals and their autocovariances.
    nw_lags: Newey–West lags (Bartlett weights); 0 disables the autocovariance terms.
    min_periods: observed residuals an asset needs before it gets a time-series estimate.
    full_history: the trailing window (dates) of the blend weight ``γ``: with that many observations in it the
        time-series estimate gets full weight against the structural one (must exceed ``min_periods``).
    blend_start: observations in the window up to which the time-series estimate gets no weight (< full_history);
        None for a third of ``full_history`` (USE4: 60 of 180).
    robust_every: dates between evaluations of the fat-tail factor of ``γ`` (robust vs plain std, ≥ 1).
    shrinkage: Bayesian shrinkage intensity ``q ≥ 0`` toward the cap-weighted mean of the size group.
    n_size_groups: number of market-cap groups (deciles by default) used by the shrinkage.
    structural: blend with the structural estimate for short histories (needs exposures).
    vra_half_life: half-life (dates) of the volatility regime adjustment; ``None`` disables it.
    """

    half_life: float = 84
    nw_lags: int = 5
    min_periods: int = 21
    full_history: int = 180
    blend_start: int | None = None
    robust_every: int = 21
    shrinkage: float = 0.1
    n_size_groups: int = 10
    structural: bool = True
    vra_half_life: float | None = 42

    def __post_init__(self) -> None:
        _check_positive("half_life", self.half_life)
        _check_int("nw_lags", self.nw_lags, minimum=0)
        _check_int("min_periods", self.min_periods, minimum=1)
        _check_int("full_history", self.full_history, minimum=1)
        if self.full_history <= self.min_periods:
            raise ValueError(
                f"full_history ({self.full_history}) must be greater than min_periods ({self.min_periods})"
            )
        if self.blend_start is not None:
            _check_int("blend_start", self.blend_start, minimum=0)
            if self.blend_start >= self.full_history:
                raise ValueError(
                    f"blend_start ({self.blend_start}) must be less than full_history ({self.full_history})"
                )
        _check_int("robust_every", self.robust_every, minimum=1)
        if not _is_real(self.shrinkage) or not (math.isfinite(self.shrinkage) and self.shrinkage >= 0):
            raise ValueError(f"shrinkage must be a finite number ≥ 0, got {self.shrinkage!r}")
        _check_int("n_size_groups", self.n_size_groups, minimum=1)
        if not isinstance(self.structural, bool):
            raise ValueError(f"structural must be a bool, got {self.structural!r}")
        if self.vra_half_life is not None:
            _check_positive("vra_half_life", self.vra_half_life)

    @property
    def effective_blend_start(self) -> int:
        """The blend start in force: the configured one or a third of ``full_history``."""
        return self.full_history // 3 if self.blend_start is None else int(self.blend_start)


def _is_real(value: object) -> TypeGuard[float]:
    """Whether ``value`` is a real number (a Python or numpy int or float, not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _check_positive(name: str, value: object) -> None:
    if not (_is_real(value) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool | np.bool_) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")


def specific_risk(
    residuals: pl.DataFrame,
    market_cap: pl.DataFrame,
    exposures: pl.DataFrame | None = None,
    config: SpecificRiskConfig | None = None,
) -> pl.DataFrame:
    """Forecast each asset's specific volatility on every date (Barra USE4 method, see the module docstring).

    Parameters
    ----------
    residuals: ``date, symbol, residual`` — daily specific returns (fractions), e.g.
        :attr:`factor_engine.regression.FactorReturns.residuals`. A null or NaN residual is an unobserved
        date for that asset (its row still gets a forecast when one exists).
    market_cap: ``date, symbol, market_cap`` (currency units) with a positive cap for every residual row;
        extra rows are ignored.
    exposures: ``date, symbol`` + numeric exposure columns (e.g. :attr:`FactorReturns.exposures`) for the
        structural model; rows missing or with a non-finite value give that asset no structural estimate
        on that date. ``None`` skips the structural model.
    config: :class:`SpecificRiskConfig`; ``None`` for the USE4 defaults.

    Returns
    -------
    ``date, symbol, specific_vol`` — daily specific standard deviation (fraction) forecast at the close of
    ``date`` from residuals up to ``date``, one row per residual row whose asset has a forecast, sorted by
    (date, symbol).
    """
    config = SpecificRiskConfig() if config is None else config
    return finish_specific_risk(time_series_specific_risk(residuals, market_cap, config), exposures)


@dataclass(frozen=True, eq=False)
class TimeSeriesState:
    """The part of :func:`specific_risk` that needs no exposures (steps 1 and the inputs of 2–4), so a model
    build can run it before the exposures exist: the residual grid, the caps on it and ``σ_TS``; ``sums`` are the
    Newey–West EWMA sums after the last date (``SpecificState.sums``), which an extension continues from."""

    grid: Grid
    t: np.ndarray
    n: np.ndarray
    has_row: np.ndarray
    resid: np.ndarray
    present: np.ndarray
    market_cap: pl.DataFrame
    cap_cells: tuple[np.ndarray, np.ndarray, np.ndarray]
    cap: np.ndarray
    sigma_ts: np.ndarray
    count: np.ndarray
    gamma: np.ndarray
    sums: np.ndarray
    config: SpecificRiskConfig


def time_series_specific_risk(
    residuals: pl.DataFrame, market_cap: pl.DataFrame, config: SpecificRiskConfig | None = None
) -> TimeSeriesState:
    """Step 1 of :func:`specific_risk` (same parameters): the checked inputs on their grid, the Newey–West
    EWMA time-series volatility and its blend weight ``γ``; :func:`finish_specific_risk` completes the forecast."""
    config = SpecificRiskConfig() if config is None else config
    if not isinstance(config, SpecificRiskConfig):
        raise TypeError(f"config must be a SpecificRiskConfig, got {type(config).__name__}")
    residuals = sort_by_keys(_check_frame(residuals, "residuals", (RESIDUAL,)))
    market_cap = _check_frame(market_cap, "market_cap", (MARKET_CAP,))
    if residuals.height == 0:
        raise ValueError("residuals is empty")

    grid = build_grid([residuals])
    t, n, has_row, resid, present, cap_cells, cap = _gridded(grid, residuals, market_cap)

    decay = 0.5 ** (1.0 / config.half_life)
    sums = np.zeros((2 + 2 * config.nw_lags, grid.n_symbols))
    sigma_ts, count = _time_series_vol(resid, present, decay, config.nw_lags, config.min_periods, sums)
    gamma = _blend_weight(resid, count, config) if config.structural else np.ones_like(sigma_ts)
    return TimeSeriesState(
        grid, t, n, has_row, resid, present, market_cap, cap_cells, cap, sigma_ts, count, gamma, sums, config
    )


def _gridded(
    grid: Grid, residuals: pl.DataFrame, market_cap: pl.DataFrame
) -> tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray
]:
    """The residuals and caps on ``grid``: each residual row's (t, n), the (T, N) rows present, residuals (NaN
    where missing) and observed ones, the caps' cells and the (T, N) caps; ValueError naming rows without a
    positive, finite cap."""
    t, n = grid.locate(residuals)
    check_unique(grid, t, n, "residuals")
    t, n = compact_index(t, grid.n_dates), compact_index(n, grid.n_symbols)  # kept for the whole build
    has_row = np.zeros((grid.n_dates, grid.n_symbols), dtype=bool)
    has_row[t, n] = True
    resid = grid.scatter(t, n, residuals[RESIDUAL].cast(pl.Float64).fill_null(np.nan).to_numpy())
    present = np.isfinite(resid)
    cap_cells = _locate(grid, market_cap, "market_cap")
    cap = _dense_column(grid, market_cap, MARKET_CAP, cap_cells)
    bad = has_row & ~((cap > 0) & np.isfinite(cap))
    if bad.any():
        bad_t, bad_n = np.nonzero(bad)
        dates = grid.date_series()
        examples = [(str(dates[int(i)]), grid.symbols[int(j)]) for i, j in zip(bad_t[:5], bad_n[:5], strict=True)]
        raise ValueError(
            f"market_cap must be positive and finite for every residual row: {bad_t.shape[0]} rows are "
            f"missing, null or not positive, e.g. {examples}"
        )
    return t, n, has_row, resid, present, cap_cells, cap


def finish_specific_risk(state: TimeSeriesState, exposures: pl.DataFrame | None = None) -> pl.DataFrame:
    """Steps 2–4 of :func:`specific_risk` on the output of :func:`time_series_specific_risk`: the structural
    blend (with ``exposures``, as in :func:`specific_risk`), the shrinkage and the regime adjustment."""
    return _finish(state, exposures)[0]


def _finish(
    state: TimeSeriesState, exposures: pl.DataFrame | None, before: RegimeContext | None = None
) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """:func:`finish_specific_risk`, also returning the shrunk ``σ_SH`` (T, N) and the regime adjustment's
    EWMA sums after the last date (2,); ``before`` continues the regime adjustment of earlier dates."""
    config, grid, cap = state.config, state.grid, state.cap
    sigma_ts, gamma = state.sigma_ts, state.gamma
    if exposures is not None:
        exposures = _check_frame(exposures, "exposures", ())
    sigma = sigma_ts
    if config.structural and exposures is not None:
        in_regression = (gamma >= 1.0) & (sigma_ts > 0)
        sigma_str = _structural(
            grid, state.t, state.n, exposures, state.market_cap, state.cap_cells, sigma_ts, in_regression, cap
        )
        blend = gamma * np.where(gamma > 0, sigma_ts, 0.0) + (1.0 - gamma) * sigma_str
        sigma = np.where(np.isfinite(sigma_str), blend, sigma_ts)
    shrunk = _shrink(sigma, state.has_row, cap, config.shrinkage, config.n_size_groups)
    sigma, regime = shrunk, np.zeros(2)
    if config.vra_half_life is not None:
        decay = 0.5 ** (1.0 / config.vra_half_life)
        multiplier, regime = _regime_multiplier(state.resid, state.present, shrunk, cap, decay, before)
        sigma = shrunk * multiplier[:, None]

    frame = grid.cells_frame(np.isfinite(sigma), {SPECIFIC_VOL: sigma})
    return frame, shrunk, regime


def _check_frame(frame: pl.DataFrame, what: str, required: tuple[str, ...]) -> pl.DataFrame:
    frame = collect_keyed(frame, what, required)
    for column in required:
        if not frame[column].dtype.is_numeric():
            raise ValueError(f"{what}: column {column!r} must be numeric, got {frame[column].dtype}")
    return frame


def _locate(grid: Grid, frame: pl.DataFrame, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, t, n)``: the rows of ``frame`` whose (date, symbol) lies on ``grid`` and their grid cells
    (each cell at most once: a duplicate is an error naming ``what``)."""
    first = int(grid.days[0])
    span = int(grid.days[-1]) - first + 1
    # day -> date index, with -1 on both sides of the grid's span: one gather, no masks
    lookup = np.full(span + 2, -1, dtype=np.int32)
    lookup[grid.days.astype(np.int64) - first + 1] = np.arange(grid.n_dates)
    days = frame[DATE].to_physical()
    offset = (days.fill_null(first - 2) if days.null_count() else days).to_numpy().astype(np.int64)  # null: -1
    offset -= first - 1
    t = lookup[np.clip(offset, 0, span + 1, out=offset)]
    del offset
    codes = frame[SYMBOL].cast(pl.String).cast(pl.Enum(grid.symbols), strict=False).to_physical()
    on_grid = t >= 0
    if codes.null_count():  # a symbol off the grid
        on_grid &= codes.is_not_null().to_numpy()
        codes = codes.fill_null(0)
    n = codes.to_numpy().astype(np.int32)
    # t and n are int32 (a date or symbol index always fits), the rows int32 where they fit: the cells of the caps
    # are kept for the whole build
    if on_grid.all():
        check_unique(grid, t, n, what)
        return compact_index(np.arange(frame.height), frame.height), t, n
    rows = np.flatnonzero(on_grid)
    t, n = t[rows], n[rows]
    check_unique(grid, t, n, what)
    return compact_index(rows, frame.height), t, n


def _dense_column(
    grid: Grid, frame: pl.DataFrame, column: str, cells: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> np.ndarray:
    """``column`` of ``frame`` as a (T, N) array on ``grid`` given its :func:`_locate` cells; rows off the
    grid are ignored, absent cells NaN."""
    rows, t, n = cells
    values = frame[column].cast(pl.Float64).fill_null(np.nan).to_numpy()
    return grid.scatter(t, n, values[rows])


def _source_rows(
    grid: Grid, cells: tuple[np.ndarray, np.ndarray, np.ndarray], t: np.ndarray, n: np.ndarray
) -> np.ndarray:
    """For each cell ``(t[i], n[i])``, the row of a frame located at ``cells`` (:func:`_locate`) at that
    (date, symbol), or −1 where it has none."""
    rows, frame_t, frame_n = cells
    cell_row = np.full((grid.n_dates, grid.n_symbols), -1, dtype=rows.dtype)
    cell_row[frame_t, frame_n] = rows
    source: np.ndarray = cell_row[t, n]
    return source


def _ewma(values: np.ndarray, decay: float) -> np.ndarray:
    """``Σ_{s≤t} decay^{t−s} values[s]`` along axis 0."""
    filtered: np.ndarray = ewma_sum(values, decay, axis=0)
    return filtered


def _time_series_vol(
    resid: np.ndarray, present: np.ndarray, decay: float, nw_lags: int, min_periods: int, final: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Newey–West EWMA volatility ``σ_TS`` (T, N), NaN before ``min_periods`` observations, and the (T, N)
    observation counts ``h``; ``final`` receives the EWMA sums after the last date."""
    count = np.cumsum(present, axis=0, dtype=np.int32)
    sigma_ts = _newey_west_variance(resid, present, decay, nw_lags, final=final)
    np.sqrt(sigma_ts, out=sigma_ts)
    sigma_ts[count < min_periods] = np.nan
    return sigma_ts, count


def _newey_west_variance(
    resid: np.ndarray,
    present: np.ndarray,
    decay: float,
    nw_lags: int,
    *,
    context: int = 0,
    initial: np.ndarray | None = None,
    final: np.ndarray | None = None,
) -> np.ndarray:
    """Newey–West EWMA variance (T, n) of the given assets (NaN before an asset's first observation): one
    compiled pass along the dates (:func:`._specific_kernels.newey_west_variance`), blocks of assets in parallel.

    For an extension: the first ``context`` rows are earlier dates that only supply the lagged terms of the
    later rows (``context ≥ nw_lags``), ``initial`` holds the EWMA sums after them ((S, n), laid out as
    ``SpecificState.sums``) and the variance of the later rows is returned. ``final``, if given, receives the
    sums after the last row."""
    from factor_engine.risk._specific_kernels import newey_west_variance

    resid = np.ascontiguousarray(resid, dtype=np.float64)
    present = np.ascontiguousarray(present, dtype=np.bool_)
    n_symbols = resid.shape[1]
    rows = resid.shape[0] - context
    n_sums = 2 + 2 * nw_lags
    sums = np.zeros((n_sums, n_symbols)) if initial is None else np.array(initial, dtype=np.float64, order="C")
    variance = np.empty((rows, n_symbols))

    def solve_block(lo: int) -> None:
        newey_west_variance(
            resid, present, context, decay, nw_lags, sums, variance, lo, min(lo + _KERNEL_COLUMNS, n_symbols)
        )

    run_parallel(solve_block, range(0, n_symbols, _KERNEL_COLUMNS))
    if final is not None and rows:
        final[...] = sums
    return variance


def _structural(
    grid: Grid,
    t: np.ndarray,
    n: np.ndarray,
    exposures: pl.DataFrame,
    market_cap: pl.DataFrame,
    cap_cells: tuple[np.ndarray, np.ndarray, np.ndarray],
    sigma_ts: np.ndarray,
    in_regression: np.ndarray,
    cap: np.ndarray,
) -> np.ndarray:
    """Structural estimate ``σ_STR`` (T, N) from the regression assets ``in_regression`` (T, N), NaN where an
    asset has no exposures or its date no regression."""
    names = [c for c in exposures.columns if c not in (DATE, SYMBOL)]
    non_numeric = [c for c in names if not exposures[c].dtype.is_numeric()]
    if non_numeric:
        raise ValueError(f"exposures: column(s) {non_numeric} must be numeric")
    numeric = exposures.select(pl.col(c).cast(pl.Float64) for c in names)
    same_keys = exposures.height == market_cap.height and exposures.select(DATE, SYMBOL).equals(
        market_cap.select(DATE, SYMBOL)
    )  # the usual case (a model build): locate the rows once
    cells = cap_cells if same_keys else _locate(grid, exposures, "exposures")
    source = _source_rows(grid, cells, t, n)
    n_dates, n_symbols = sigma_ts.shape
    n_columns = 1 + len(names)
    # residual rows are sorted by date: rows of a block of dates are one contiguous slice
    row_start = np.searchsorted(t, np.arange(n_dates + 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_sigma = np.log(sigma_ts)
    result = np.full((n_dates, n_symbols), np.nan)
    block = max(1, _BLOCK_CELLS // max(1, n_symbols * n_columns))

    one_hot = _one_hot_columns(numeric)
    if one_hot is not None:
        other_columns = numeric.select(numeric.columns[i] for i in one_hot.other)

    def solve_block(lo: int) -> None:
        hi = min(lo + block, n_dates)
        first, last = row_start[lo], row_start[hi]
        rows = source[first:last]
        if one_hot is not None:
            _solve_block_by_group(lo, hi, first, last, rows)
            return
        values = np.full((last - first, len(names)), np.nan)
        found = rows >= 0
        values[found] = _frame_rows(numeric, rows[found])
        known = np.isfinite(values).all(axis=1)
        tt, nn = t[first:last] - lo, n[first:last]
        design = np.zeros((hi - lo, n_symbols, n_columns))
        design[tt[known], nn[known], 0] = 1.0
        design[tt[known], nn[known], 1:] = values[known]
        has_exposure = np.zeros((hi - lo, n_symbols), dtype=bool)
        has_exposure[tt[known], nn[known]] = True
        used = in_regression[lo:hi] & has_exposure
        weight = np.where(used, np.sqrt(cap[lo:hi]), 0.0)
        target = np.where(used, log_sigma[lo:hi], 0.0)
        weighted = design * weight[:, :, None]
        gram = np.matmul(weighted.transpose(0, 2, 1), design)
        rhs = np.einsum("tnk,tn->tk", weighted, target)
        params, active, _, _ = _rank_revealing_solve(gram, rhs)
        fitted = np.einsum("tnk,tk->tn", design, params)
        solvable = used.sum(axis=1) > active.sum(axis=1)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            ratio = np.where(used, np.exp(log_sigma[lo:hi] - fitted), 0.0)
            bias = ratio.sum(axis=1) / used.sum(axis=1)
            estimate = bias[:, None] * np.exp(fitted)
        result[lo:hi] = np.where(has_exposure & solvable[:, None], estimate, np.nan)

    def _solve_block_by_group(lo: int, hi: int, first: int, last: int, rows: np.ndarray) -> None:
        assert one_hot is not None
        found = np.flatnonzero(rows >= 0)
        wanted = rows[found]
        result[lo:hi] = _structural_by_group(
            np.ascontiguousarray(_frame_rows(other_columns, wanted)),
            one_hot.member[wanted],
            t[first:last][found] - lo,
            n[first:last][found],
            len(one_hot.group),
            in_regression[lo:hi],
            cap[lo:hi],
            log_sigma[lo:hi],
        )

    with single_threaded_blas():
        run_parallel(solve_block, range(0, n_dates, block))
    return result


def _frame_rows(frame: pl.DataFrame, wanted: np.ndarray) -> np.ndarray:
    """The (len(wanted), columns) float values of ``frame``'s rows ``wanted``: one slice when they lie about in
    one contiguous ascending range (a block of dates of a build's exposures), else a gather."""
    if wanted.size and wanted[-1] - wanted[0] < 2 * wanted.size and bool(np.all(wanted[1:] >= wanted[:-1])):
        span = frame.slice(int(wanted[0]), int(wanted[-1] - wanted[0]) + 1).to_numpy()
        rows: np.ndarray = span[wanted - wanted[0]]
        return rows
    return frame[wanted].to_numpy().reshape(-1, frame.width)


@dataclass(frozen=True)
class _OneHot:
    """Exposures made of one group of dummies (sectors: 0/1, exactly one 1 per row), columns of ones (the
    market, the intercept again) and other columns (styles): the positions of the group and of the other
    columns, and each row's member of the group."""

    group: list[int]
    other: list[int]
    member: np.ndarray  # (rows,) the group member (0…len(group)−1) of each exposure row


def _one_hot_columns(numeric: pl.DataFrame) -> _OneHot | None:
    """The :class:`_OneHot` structure of ``numeric`` (a model's exposures), or None when its 0/1 columns that
    are not all 1 do not form one group with exactly one 1 on every row (or hold a missing value), or no other
    column is left."""
    columns = numeric.columns
    flags = numeric.select(
        *(((pl.col(c) == 0.0) | (pl.col(c) == 1.0)).all().alias(f"binary {i}") for i, c in enumerate(columns)),
        *((pl.col(c) == 1.0).all().alias(f"ones {i}") for i, c in enumerate(columns)),
        *(pl.col(c).is_null().any().alias(f"null {i}") for i, c in enumerate(columns)),
    ).row(0)
    binary, ones, null = flags[: len(columns)], flags[len(columns) : 2 * len(columns)], flags[2 * len(columns) :]
    constant = [i for i in range(len(columns)) if ones[i]]
    group = [i for i in range(len(columns)) if binary[i] and not ones[i]]
    other = [i for i in range(len(columns)) if not binary[i]]
    if len(group) < 2 or not other or any(null[i] for i in (*group, *constant)):
        return None  # (without other columns the general solve is small already)
    # column by column on numpy views of the (null-free) dummies: no (rows,) temporary per dummy column
    member = np.zeros(numeric.height, dtype=np.int32)
    count = np.zeros(numeric.height, dtype=np.int32)
    for k, i in enumerate(group):
        one = numeric.get_column(columns[i]).to_numpy() == 1.0
        member[one] = k
        count += one
    if not bool(np.all(count == 1)):
        return None
    return _OneHot(group, other, member)


def _structural_by_group(
    x: np.ndarray,
    member: np.ndarray,
    tt: np.ndarray,
    nn: np.ndarray,
    n_members: int,
    in_regression: np.ndarray,
    cap: np.ndarray,
    log_sigma: np.ndarray,
) -> np.ndarray:
    """:func:`_structural`'s estimate on a (b, N) block of dates when the exposures hold one group of dummies
    (sectors), columns of ones and other columns ``x`` (the rows with exposures, in date order, at dates ``tt``
    within the block and symbols ``nn``, each in group ``member``; a row with a missing one is left out): the
    same weighted regression on
    ``[1, exposures]``, solved by the Frisch–Waugh–Lovell theorem (the other columns and the target demeaned
    within each group member: a P × P system per date, then each member's level) instead of the full design.
    The fitted values are the full regression's: a member without a regression asset that date takes the
    level of the last member with some (in column order), the full regression's intercept once its collinear
    dummy is dropped. The sums over each date's rows and the fitted values are compiled loops
    (:func:`._specific_kernels.group_moments`, :func:`._specific_kernels.group_fit`)."""
    from factor_engine.risk._specific_kernels import group_fit, group_moments

    n_dates, n_symbols = in_regression.shape
    n_other = x.shape[1]
    sum_w = np.zeros((n_dates, n_members))
    sum_wy = np.zeros((n_dates, n_members))
    sum_wx = np.zeros((n_dates, n_members, n_other))
    gram = np.zeros((n_dates, n_other, n_other))
    rhs = np.zeros((n_dates, n_other))
    n_used = np.zeros(n_dates, dtype=np.int64)
    group_moments(x, member, tt, nn, in_regression, cap, log_sigma, sum_w, sum_wy, sum_wx, gram, rhs, n_used)
    with np.errstate(invalid="ignore", divide="ignore"):
        inverse = np.where(sum_w > 0, 1.0 / sum_w, 0.0)
    # less each member's mean part: the within-member moments
    scaled = sum_wx * inverse[:, :, None]
    gram -= np.matmul(scaled.transpose(0, 2, 1), sum_wx)
    rhs -= np.einsum("tsj,ts->tj", scaled, sum_wy)
    params, active, _, _ = _rank_revealing_solve(gram, rhs)
    present = sum_w > 0
    level = (sum_wy - np.einsum("tsj,tj->ts", sum_wx, params)) * inverse
    # a member without regression assets: the level of the last member with some that date
    last_present = n_members - 1 - np.argmax(present[:, ::-1], axis=1)
    level = np.where(present, level, level[np.arange(n_dates), last_present][:, None])
    solvable = n_used > present.sum(axis=1) + active.sum(axis=1)
    result = np.full((n_dates, n_symbols), np.nan)
    group_fit(x, member, tt, nn, in_regression, log_sigma, level, params, solvable, n_used, result)
    return result


def _blend_weight(resid: np.ndarray, count: np.ndarray, config: SpecificRiskConfig) -> np.ndarray:
    """USE4's weight ``γ`` (T, N) of the time-series estimate (see the module docstring, step 2)."""
    window, start = config.full_history, config.effective_blend_start
    in_window = count.copy()
    in_window[window:] -= count[:-window]
    history = np.subtract(in_window, start, dtype=np.float64)
    history /= window - start
    np.clip(history, 0.0, 1.0, out=history)
    fat_tail = _fat_tail_factors(resid, np.arange(0, resid.shape[0], config.robust_every), window)
    for row, lo in enumerate(range(0, resid.shape[0], config.robust_every)):
        history[lo : lo + config.robust_every] *= fat_tail[row]
    return history


def _fat_tail_factors(resid: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """(len(ends), N) :func:`_fat_tail_factor` of the windows of ``window`` rows of ``resid`` (T, N) ending at the
    rows ``ends`` (shorter at the start): one compiled pass per block of assets
    (:func:`._specific_kernels.fat_tail_factors`), blocks in parallel."""
    from factor_engine.risk._specific_kernels import fat_tail_factors

    resid = np.ascontiguousarray(resid, dtype=np.float64)
    ends = np.ascontiguousarray(ends, dtype=np.int64)
    n_symbols = resid.shape[1]
    factors = np.empty((ends.size, n_symbols))

    def solve_block(lo: int) -> None:
        fat_tail_factors(resid, ends, window, lo, min(lo + _KERNEL_COLUMNS, n_symbols), factors)

    run_parallel(solve_block, range(0, n_symbols, _KERNEL_COLUMNS))
    return factors


def _fat_tail_factor(window: np.ndarray) -> np.ndarray:
    """(N,) ``clip(exp(1 − Z), 0, 1)`` with ``Z = |σ_eq / σ̃ − 1|`` of each column of a (W, N) window of
    residuals (NaN = unobserved); 1 for an asset with fewer than 2 observations (its γ is 0 anyway), 0 for one
    with fewer than 2 residuals within ``±10 σ̃``."""
    result: np.ndarray = _fat_tail_factors(window, np.array([window.shape[0] - 1]), max(1, window.shape[0]))[0]
    return result


def _shrink(sigma: np.ndarray, has_row: np.ndarray, cap: np.ndarray, intensity: float, n_groups: int) -> np.ndarray:
    """Bayesian shrinkage of each finite ``sigma`` of a residual row (``has_row``) toward the cap-weighted mean
    of its size group, NaN elsewhere. Computed on blocks of dates in parallel."""
    if intensity == 0:
        return np.where(has_row & np.isfinite(sigma), sigma, np.nan)
    n_dates, n_symbols = sigma.shape
    shrunk = np.empty_like(sigma)
    block = max(1, _SHRINK_CELLS // max(1, n_symbols))

    def solve_block(lo: int) -> None:
        hi = min(lo + block, n_dates)
        shrunk[lo:hi] = _shrink_block(sigma[lo:hi], has_row[lo:hi], cap[lo:hi], intensity, n_groups)

    run_parallel(solve_block, range(0, n_dates, block))
    return shrunk


def _shrink_block(
    sigma: np.ndarray, has_row: np.ndarray, cap: np.ndarray, intensity: float, n_groups: int
) -> np.ndarray:
    """:func:`_shrink` on a (b, N) block of dates.

    Works on each date's assets sorted by cap (assets without a ``sigma`` last, in an extra discarded group),
    with one segment per (date, group) for the sums."""
    n_dates, n_symbols = sigma.shape
    ok = has_row & np.isfinite(sigma)
    order = np.argsort(np.where(ok, cap, np.inf), axis=1)
    n_ok = ok.sum(axis=1)[:, None]
    position = np.arange(n_symbols)[None, :]
    valid = position < n_ok
    # the position r (0-based) of m assets falls in group floor(G r / m)
    group = np.where(valid, position * n_groups // np.maximum(n_ok, 1), n_groups)
    segment = (group + np.arange(n_dates)[:, None] * (n_groups + 1)).ravel()
    n_segments = n_dates * (n_groups + 1)
    sorted_sigma = np.where(valid, np.take_along_axis(sigma, order, axis=1), 0.0)
    weight = np.where(valid, np.take_along_axis(cap, order, axis=1), 0.0)
    members = np.bincount(segment, minlength=n_segments)
    with np.errstate(invalid="ignore", divide="ignore"):
        group_mean = np.bincount(segment, (weight * sorted_sigma).ravel(), n_segments) / np.bincount(
            segment, weight.ravel(), n_segments
        )
        mean = group_mean[segment].reshape(n_dates, n_symbols)
        deviation = np.where(valid, sorted_sigma - mean, 0.0)
        spread = np.sqrt(np.bincount(segment, (deviation * deviation).ravel(), n_segments) / members)[segment]
    distance = intensity * np.abs(deviation)
    denominator = spread.reshape(n_dates, n_symbols) + distance
    share = np.divide(distance, denominator, out=np.zeros_like(distance), where=denominator > 0)
    shrunk_sorted = np.where(valid, sorted_sigma + share * (mean - sorted_sigma), np.nan)
    shrunk = np.empty_like(sigma)
    np.put_along_axis(shrunk, order, shrunk_sorted, axis=1)
    return shrunk


@dataclass(frozen=True)
class RegimeContext:
    """The regime adjustment's view of the date before an extension: each asset's shrunk ``σ_SH`` and cap
    there (N,) and the EWMA sums of ``B²`` and of its weights after it (2,)."""

    shrunk: np.ndarray
    cap: np.ndarray
    sums: np.ndarray


def _regime_multiplier(
    resid: np.ndarray,
    present: np.ndarray,
    sigma: np.ndarray,
    cap: np.ndarray,
    decay: float,
    before: RegimeContext | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Volatility regime multiplier ``λ_t`` (T,) from the cap-weighted bias statistics of earlier forecasts, and
    the EWMA sums of ``B²`` and of its weights after the last date (2,); ``before`` carries the earlier dates."""
    n_dates = sigma.shape[0]
    no_row = np.full((1, sigma.shape[1]), np.nan)
    bias_sq, has_bias = np.zeros(n_dates), np.zeros(n_dates, dtype=bool)

    def block(lo: int) -> None:
        """Each date's cap-weighted mean squared standardized residual, on a batch of dates (small work arrays,
        in parallel; every row's sums are the ones the whole array gives)."""
        hi = min(lo + _REGIME_DATES, n_dates)
        if lo == 0:
            previous = np.vstack([no_row if before is None else before.shrunk[None], sigma[: hi - 1]])
            previous_cap = np.vstack([no_row if before is None else before.cap[None], cap[: hi - 1]])
        else:
            previous, previous_cap = sigma[lo - 1 : hi - 1], cap[lo - 1 : hi - 1]
        usable = present[lo:hi] & np.isfinite(previous) & (previous > 0)
        weight = np.where(usable, previous_cap, 0.0)
        total = weight.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            standardized = np.where(usable, resid[lo:hi] / np.where(usable, previous, 1.0), 0.0)
            bias_sq[lo:hi] = np.where(total > 0, (weight * standardized**2).sum(axis=1) / total, 0.0)
        has_bias[lo:hi] = total > 0

    run_parallel(block, range(0, n_dates, _REGIME_DATES))
    weighted, weight_sum = _ewma(bias_sq, decay), _ewma(has_bias.astype(np.float64), decay)
    if before is not None:  # the earlier dates' sums, decayed
        carried = decay ** np.arange(1, sigma.shape[0] + 1, dtype=np.float64)
        weighted += before.sums[0] * carried
        weight_sum += before.sums[1] * carried
    with np.errstate(invalid="ignore", divide="ignore"):
        multiplier = np.sqrt(weighted / weight_sum)
    result: np.ndarray = np.where(weight_sum > 0, multiplier, 1.0)
    return result, np.array([weighted[-1], weight_sum[-1]])
