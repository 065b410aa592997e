"""Factor returns: constrained cross-sectional weighted least squares over every date at once.

For each date ``t`` the asset returns ``r_t`` are regressed on the exposures ``B`` known at the close of date
``t - exposure_lag`` — a market column of ones, sector exposures and style scores — with regression weights
``sqrt(market_cap)`` (a proxy for inverse specific variance). Sector returns are identified by a constraint
(they sum to zero: cap-weighted for ``method="barra"``, equal-weighted for ``method="toraniko"``), which is
imposed by a change of variables ``f = R g`` with ``R`` spanning the constraint's null space.

Dates are solved together: the per-date normal equations ``Rᵀ Bᵀ W B R`` are formed for blocks of dates
with batched matrix products and solved with batched linear algebra. A rank-deficient date (an empty
sector, a constant style, fewer assets than factors) drops only what cannot be estimated on that date and
says so in :attr:`FactorReturns.diagnostics`; other dates are unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import polars as pl

from factor_engine._dense import run_parallel, single_threaded_blas, winsorize
from factor_engine._grid import Grid, build_grid, check_unique, collect_keyed
from factor_engine.panel import DATE, MARKET_CAP, RETURNS, SECTOR, SYMBOL

__all__ = [
    "MARKET",
    "CrossSections",
    "FactorReturns",
    "dropped_factors",
    "estimate_factor_returns",
    "estimate_from_panel",
    "row_checks",
    "solve_cross_sections",
    "zero_absent_styles",
]

MARKET = "market"
Method = Literal["barra", "toraniko"]
_METHODS = ("barra", "toraniko")
# A factor whose exposure column, after projecting out the factors before it, keeps less than this share
# of its weighted sum of squares is collinear with them on that date and is dropped there.
COLLINEARITY_TOL = 1e-10
_KEPT, _NO_EXPOSURE, _COLLINEAR = 0, 1, 2
# Cells (dates × assets × factors) per batch of dates: keeps each working array near 12 MB, small enough to
# be reused from the allocator's heap instead of mapped and page-faulted afresh.
_BLOCK_CELLS = 1_500_000


@dataclass(frozen=True)
class FactorReturns:
    """Result of :func:`estimate_factor_returns`. Unpacks as ``factor_returns, residuals = result``.

    Attributes
    ----------
    factor_returns: ``date`` + one Float64 column per factor (``market``, each sector, each style): daily
        factor returns (fractions), one row per date that could be solved, sorted by date. A factor that
        could not be estimated on a date (e.g. an empty sector) is null there.
    residuals: long ``date, symbol, residual`` — the part of each used asset return not explained by the
        factors (daily, fractions). ``barra``: raw return minus fitted; ``toraniko``: winsorized return
        minus fitted, as toraniko reports it.
    diagnostics: one row per return date: ``n_assets`` used, ``n_excluded`` rows of that date left out,
        ``r2`` (weighted, uncentered: 1 − Σw e² / Σw r²), ``condition_number`` of the column-scaled normal
        matrix, ``dropped`` factors and ``reason`` (empty when nothing was dropped).
    excluded: ``reason, n_rows`` — rows of ``returns_df`` left out of every regression, counted by the
        first reason that applies.
    factors, sectors, styles: factor names in column order.
    method: ``"barra"`` or ``"toraniko"``.
    exposure_lag: dates between the exposures used and the returns they explain.
    """

    factor_returns: pl.DataFrame
    residuals: pl.DataFrame
    diagnostics: pl.DataFrame
    excluded: pl.DataFrame
    factors: tuple[str, ...]
    sectors: tuple[str, ...]
    styles: tuple[str, ...]
    method: str
    exposure_lag: int
    _design: _Design = field(repr=False, compare=False)

    def __iter__(self) -> Any:
        return iter((self.factor_returns, self.residuals))

    @cached_property
    def exposures(self) -> pl.DataFrame:
        """``date, symbol`` + one column per factor: the exposures that explained each used return.

        ``date`` is the return date; the values are those known at the close of ``exposure_lag`` dates
        before it. Built on first access (it is the largest output).
        """
        return self._design.exposure_frame()


@dataclass(frozen=True)
class _Design:
    """Dense inputs of the regressions, kept to rebuild the exposures frame on demand."""

    grid: Grid
    lag: int
    valid: np.ndarray  # (T', N) bool, return dates lag..T-1
    sector_codes: np.ndarray | None  # (T, N) int, -1 missing
    sector_exposure: np.ndarray | None  # (T, N, S)
    style_exposure: np.ndarray  # (T, N, P)
    sectors: tuple[str, ...]
    styles: tuple[str, ...]
    absent_styles: np.ndarray | None = None  # (T', P) styles no asset had on an exposure date (barra)

    def exposure_frame(self) -> pl.DataFrame:
        t_ret, n = np.nonzero(self.valid)
        t_exp = t_ret  # exposure arrays are indexed from date 0, returns from date lag
        dates = self.grid.date_series()[self.lag :]
        columns: dict[str, Any] = {
            DATE: dates.gather(t_ret),
            SYMBOL: self.grid.symbols.gather(n),
            MARKET: np.ones(t_ret.shape[0]),
        }
        if self.sector_codes is not None:
            codes = self.sector_codes[t_exp, n]
            for s, name in enumerate(self.sectors):
                columns[name] = (codes == s).astype(np.float64)
        elif self.sector_exposure is not None:
            for s, name in enumerate(self.sectors):
                columns[name] = self.sector_exposure[t_exp, n, s]
        for p, name in enumerate(self.styles):
            values = self.style_exposure[t_exp, n, p]
            if self.absent_styles is not None:  # an absent style was fitted as 0 but is shown as missing
                values = np.where(self.absent_styles[t_exp, p], np.nan, values)
            columns[name] = values
        return pl.DataFrame(columns)


def estimate_factor_returns(
    returns_df: pl.DataFrame | pl.LazyFrame,
    mkt_cap_df: pl.DataFrame | pl.LazyFrame,
    sector_df: pl.DataFrame | pl.LazyFrame | None,
    style_df: pl.DataFrame | pl.LazyFrame | None,
    *,
    winsor_factor: float | None = 0.05,
    residualize_styles: bool = True,
    method: Method = "barra",
    exposure_lag: int | None = None,
) -> FactorReturns:
    """Estimate daily factor returns and residual returns by cross-sectional WLS on every date.

    Parameters
    ----------
    returns_df: ``date, symbol, asset_returns`` — daily simple returns (fractions).
    mkt_cap_df: ``date, symbol, market_cap`` — currency units; ``sqrt(market_cap)`` at the exposure date is
        the regression weight (and ``market_cap`` the sector constraint's weight for ``barra``).
    sector_df: ``date, symbol`` and either a ``sector`` label column or one numeric exposure column per
        sector (0/1 dummies or any exposures); ``None`` for a model without sectors.
    style_df: ``date, symbol`` + one numeric column per style (or any user-supplied exposure); ``None``
        for none.
    winsor_factor: fraction of returns clipped at each tail per date before fitting; ``None`` disables.
    residualize_styles: ``toraniko`` only — estimate styles on the returns left after market and sectors
        (True) or on the returns themselves (False).
    method: ``"barra"`` — one joint regression of market, sectors and styles with the sector returns'
        cap-weighted sum constrained to zero (Barra USE4); ``"toraniko"`` — toraniko 1.1.1's two-stage
        estimate (market + sectors with an equal-weighted zero-sum constraint, then styles), reproducing
        its numbers when ``exposure_lag=0``.
    exposure_lag: dates between the exposures and the returns they explain. Default 1 for ``barra`` (the
        exposures known at the previous close: point-in-time), 0 for ``toraniko`` (toraniko's same-day
        exposures).

    Returns
    -------
    :class:`FactorReturns` (unpacks as ``factor_returns, residuals``).

    Rows lacking a return, a positive market cap, a sector or a style exposure are left out of their date's
    regression and counted in ``excluded``; they never affect other rows or dates. With ``barra``, a style
    that no asset of a date has (e.g. still warming up) is instead absent that date: it is dropped there,
    like an empty sector, and the other factors are estimated from every row.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    lag = (1 if method == "barra" else 0) if exposure_lag is None else exposure_lag
    if isinstance(lag, bool) or not isinstance(lag, int) or lag < 0:
        raise ValueError(f"exposure_lag must be a non-negative integer, got {exposure_lag!r}")
    if winsor_factor is not None and not 0.0 <= winsor_factor <= 0.5:
        raise ValueError(f"winsor_factor must be a fraction in [0, 0.5] or None, got {winsor_factor!r}")

    returns = _collect(returns_df, "returns_df", (RETURNS,))
    caps = _collect(mkt_cap_df, "mkt_cap_df", (MARKET_CAP,))
    sectors_frame = None if sector_df is None else _collect(sector_df, "sector_df", ())
    styles_frame = None if style_df is None else _collect(style_df, "style_df", ())
    if returns.height == 0:
        raise ValueError("returns_df is empty")
    # inputs cut from one panel share the returns' keys: index those only once
    grid = build_grid(
        [returns] + [f for f in (caps, sectors_frame, styles_frame) if f is not None and not _same_keys(f, returns)]
    )
    n_dates, n_symbols = grid.n_dates, grid.n_symbols

    t_r, n_r = _locate(grid, returns, "returns_df")
    known = (returns, t_r, n_r)
    with ThreadPoolExecutor(max_workers=1) as side:
        # the (dates, symbols, styles) exposures, the largest input, in a second thread meanwhile
        styles_on_grid = side.submit(_style_inputs, grid, styles_frame, known)
        has_row = np.zeros((n_dates, n_symbols), dtype=bool)
        has_row[t_r, n_r] = True
        y = grid.scatter(t_r, n_r, returns[RETURNS].cast(pl.Float64).to_numpy())
        t_c, n_c = _locate_like(grid, caps, "mkt_cap_df", known)
        cap = grid.scatter(t_c, n_c, caps[MARKET_CAP].cast(pl.Float64).to_numpy())
        sector_names, sector_codes, sector_exposure = _sector_inputs(grid, sectors_frame, known)
        style_names, style_exposure = styles_on_grid.result()
    n_sec = len(sector_names)
    factors = (MARKET, *sector_names, *style_names)
    if len(set(factors)) != len(factors):
        raise ValueError(f"factor names must be distinct, got {factors}")

    # returns of dates lag.., exposures of dates ..T-1-lag
    ret_dates = grid.date_series()[lag:]
    end = n_dates - lag
    y = y[lag:]
    n_before_exposures = int(has_row[:lag].sum())
    has_row = has_row[lag:]
    cap_x = cap[:end]
    absent_styles = None
    if method == "barra" and style_names:
        absent_styles = zero_absent_styles(style_exposure[:end], has_row)
    reasons = row_checks(
        y,
        cap_x,
        None if sector_codes is None else sector_codes[:end],
        None if sector_exposure is None else sector_exposure[:end],
        style_exposure[:end],
        style_names,
        lag,
    )
    valid = has_row.copy()
    # returns of the first `lag` dates have no earlier exposures to be explained by
    excluded_rows = [(f"no exposures {lag} date(s) earlier (first dates of the panel)", n_before_exposures)] * (lag > 0)
    for reason, ok in reasons:
        dropped = valid & ~ok
        excluded_rows.append((reason, int(dropped.sum())))
        valid &= ok
    n_used = valid.sum(axis=1)
    n_excluded = has_row.sum(axis=1) - n_used

    n_ret_dates = y.shape[0]
    factor_values = np.full((n_ret_dates, len(factors)), np.nan)
    residual = np.full((n_ret_dates, n_symbols), np.nan)
    r2 = np.full(n_ret_dates, np.nan)
    condition = np.full(n_ret_dates, np.nan)
    dropped_mask = np.zeros((n_ret_dates, len(factors)), dtype=np.int8)
    skip_reason = np.full(n_ret_dates, "", dtype=object)

    block = max(1, _BLOCK_CELLS // max(1, n_symbols * len(factors)))

    def solve_block(lo: int) -> None:
        hi = min(lo + block, n_ret_dates)
        solved = solve_cross_sections(
            valid[lo:hi],
            y[lo:hi],
            cap_x[lo:hi],
            None if sector_codes is None else sector_codes[lo:hi],
            None if sector_exposure is None else sector_exposure[lo:hi],
            style_exposure[lo:hi],
            n_sectors=n_sec,
            method=method,
            winsor_factor=winsor_factor,
            residualize_styles=residualize_styles,
        )
        factor_values[lo:hi] = solved.factor_returns
        dropped_mask[lo:hi] = solved.dropped
        condition[lo:hi] = solved.condition
        residual[lo:hi] = solved.residual
        r2[lo:hi] = solved.r2
        skip_reason[lo:hi] = solved.skip_reason

    # Blocks run on all cores; each block's small batched products run single-threaded in BLAS
    # (multi-threaded BLAS on many small matrices is slower, and much slower on a busy machine).
    with single_threaded_blas():
        run_parallel(solve_block, range(0, n_ret_dates, block))
    skipped = skip_reason != ""
    valid_out = valid & ~skipped[:, None]

    dates_with_rows: np.ndarray = np.asarray(has_row.any(axis=1))
    solved_dates = dates_with_rows & ~skipped
    factor_frame = pl.DataFrame(
        {DATE: ret_dates.filter(pl.Series(solved_dates))}
        | {name: factor_values[solved_dates, k] for k, name in enumerate(factors)}
    ).with_columns(pl.col(name).fill_nan(None) for name in factors)

    residual_frame = grid.cells_frame(valid_out, {"residual": residual}, first=lag)
    diagnostics = _diagnostics(
        ret_dates, dates_with_rows, n_used, n_excluded, r2, condition, dropped_mask, skip_reason, factors
    )
    excluded = pl.DataFrame(
        {"reason": [r for r, _ in excluded_rows], "n_rows": [c for _, c in excluded_rows]},
        schema={"reason": pl.String, "n_rows": pl.Int64},
    )
    return FactorReturns(
        factor_returns=factor_frame,
        residuals=residual_frame,
        diagnostics=diagnostics,
        excluded=excluded,
        factors=factors,
        sectors=sector_names,
        styles=style_names,
        method=method,
        exposure_lag=lag,
        _design=_Design(
            grid=grid,
            lag=lag,
            valid=valid_out,
            sector_codes=sector_codes,
            sector_exposure=sector_exposure,
            style_exposure=style_exposure,
            sectors=sector_names,
            styles=style_names,
            absent_styles=absent_styles,
        ),
    )


def estimate_from_panel(
    panel: pl.DataFrame | pl.LazyFrame, style_df: pl.DataFrame | pl.LazyFrame | None, **options: Any
) -> FactorReturns:
    """:func:`estimate_factor_returns` on a long panel: its ``asset_returns``, ``market_cap`` and ``sector``
    columns, with ``style_df`` as the styles; ``options`` are passed through (method, exposure_lag, ...)."""
    lazy = panel.lazy()
    return estimate_factor_returns(
        lazy.select(DATE, SYMBOL, RETURNS).collect(),
        lazy.select(DATE, SYMBOL, MARKET_CAP).collect(),
        lazy.select(DATE, SYMBOL, SECTOR).collect(),
        style_df,
        **options,
    )


def _when(lag: int) -> str:
    return "on the same date" if lag == 0 else f"at the exposure date ({lag} date(s) before)"


def _collect(df: pl.DataFrame | pl.LazyFrame, what: str, required: Sequence[str]) -> pl.DataFrame:
    return collect_keyed(df, what, required)


def _locate(grid: Grid, frame: pl.DataFrame, what: str) -> tuple[np.ndarray, np.ndarray]:
    t, n = grid.locate(frame)
    check_unique(grid, t, n, what)
    return t, n


def _locate_like(
    grid: Grid, frame: pl.DataFrame, what: str, known: tuple[pl.DataFrame, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Grid positions of ``frame``'s rows, reusing ``known`` = (frame, t, n) when the keys are identical
    (the common case of several inputs cut from one panel)."""
    reference, t, n = known
    return (t, n) if _same_keys(frame, reference) else _locate(grid, frame, what)


def _same_keys(frame: pl.DataFrame, reference: pl.DataFrame) -> bool:
    return frame.height == reference.height and frame.select(DATE, SYMBOL).equals(reference.select(DATE, SYMBOL))


def _numeric_columns(frame: pl.DataFrame, what: str) -> list[str]:
    names = [c for c in frame.columns if c not in (DATE, SYMBOL)]
    bad = [c for c in names if not frame[c].dtype.is_numeric()]
    if bad:
        raise ValueError(f"{what}: column(s) {bad} must be numeric exposures")
    return sorted(names)


def _sector_inputs(
    grid: Grid, frame: pl.DataFrame | None, known: tuple[pl.DataFrame, np.ndarray, np.ndarray]
) -> tuple[tuple[str, ...], np.ndarray | None, np.ndarray | None]:
    """Sector names and either (T, N) integer codes (one-hot sectors) or (T, N, S) exposures."""
    if frame is None:
        return (), None, None
    t, n = _locate_like(grid, frame, "sector_df", known)
    if SECTOR in frame.columns:  # a `sector` column holds labels, whatever their dtype
        extra = [c for c in frame.columns if c not in (DATE, SYMBOL, SECTOR)]
        if extra:
            raise ValueError(f"sector_df: give either a 'sector' label column or exposure columns, not both {extra}")
        labels = frame[SECTOR].cast(pl.String)
        names = tuple(labels.drop_nulls().unique().sort().to_list())
        codes = labels.cast(pl.Enum(names)).to_physical().fill_null(-1).to_numpy().astype(np.int64)
        dense = np.full((grid.n_dates, grid.n_symbols), -1, dtype=np.int64)
        dense[t, n] = codes
        return names, dense, None
    names = tuple(_numeric_columns(frame, "sector_df"))
    if not names:
        return (), None, None
    columns = [frame[name].cast(pl.Float64).to_numpy() for name in names]
    codes = np.full(frame.height, -1, dtype=np.int64)
    ones_per_row = np.zeros(frame.height, dtype=np.int64)
    missing = np.zeros(frame.height, dtype=bool)
    binary = True
    for s, column in enumerate(columns):
        ones = column == 1.0
        nan = np.isnan(column)
        binary = binary and bool(np.all(ones | nan | (column == 0.0)))
        codes[ones] = s
        ones_per_row += ones
        missing |= nan
    if binary and bool(np.all(np.where(missing, ones_per_row == 0, ones_per_row == 1))):
        # one-hot dummies: keep integer codes (much cheaper than dense exposures)
        dense_codes = np.full((grid.n_dates, grid.n_symbols), -1, dtype=np.int64)
        dense_codes[t, n] = codes
        return names, dense_codes, None
    dense = np.full((grid.n_dates, grid.n_symbols, len(names)), np.nan)
    for s, column in enumerate(columns):
        dense[t, n, s] = column
    return names, None, dense


def _style_inputs(
    grid: Grid, frame: pl.DataFrame | None, known: tuple[pl.DataFrame, np.ndarray, np.ndarray]
) -> tuple[tuple[str, ...], np.ndarray]:
    if frame is None:
        return (), np.zeros((grid.n_dates, grid.n_symbols, 0))
    names = tuple(_numeric_columns(frame, "style_df"))
    t, n = _locate_like(grid, frame, "style_df", known)
    dense = np.full((grid.n_dates, grid.n_symbols, len(names)), np.nan)
    if names:
        dense[t, n] = frame.select(pl.col(c).cast(pl.Float64) for c in names).to_numpy()
    return names, dense


def zero_absent_styles(style_exposure: np.ndarray, has_row: np.ndarray) -> np.ndarray:
    """Set to 0, in place, the styles absent on a return date and return the (b, P) mask of them.

    A style with no value for any of a date's assets (still warming up, not yet available) is absent that
    date: exposure 0, so it is dropped there like an empty sector (``method="barra"``), instead of excluding
    every row. ``style_exposure`` is (b, N, P) at the exposure dates of the return dates, ``has_row`` (b, N)
    the assets with a row on each return date."""
    absent: np.ndarray = ~(np.isfinite(style_exposure) & has_row[:, :, None]).any(axis=1)
    e_idx, p_idx = np.nonzero(absent)
    style_exposure[e_idx, :, p_idx] = 0.0
    return absent


def row_checks(
    returns: np.ndarray,
    cap: np.ndarray,
    sector_codes: np.ndarray | None,
    sector_exposure: np.ndarray | None,
    style_exposure: np.ndarray,
    style_names: Sequence[str],
    lag: int,
) -> list[tuple[str, np.ndarray]]:
    """Why a row is left out of its date's regression, in the order the reasons are counted: (reason, (b, N)
    mask of the rows that pass). Arrays are aligned on the return dates: ``returns`` (b, N), the rest at the
    exposure dates ``lag`` dates earlier (``cap`` (b, N) currency units, ``sector_codes`` (b, N) or
    ``sector_exposure`` (b, N, S), ``style_exposure`` (b, N, P))."""
    reasons: list[tuple[str, np.ndarray]] = [
        ("missing return (null, NaN or inf)", np.isfinite(returns)),
        (
            f"no positive market cap {_when(lag)}",
            np.isfinite(cap) & (cap > 0.0),
        ),
    ]
    if sector_codes is not None:
        reasons.append((f"no sector {_when(lag)}", sector_codes >= 0))
    elif sector_exposure is not None:
        reasons.append((f"no sector exposure {_when(lag)}", np.isfinite(sector_exposure).all(axis=2)))
    for p, name in enumerate(style_names):
        reasons.append((f"no {name} exposure {_when(lag)}", np.isfinite(style_exposure[:, :, p])))
    return reasons


@dataclass(frozen=True)
class CrossSections:
    """The regressions of b return dates, solved by :func:`solve_cross_sections`.

    Attributes
    ----------
    factor_returns: (b, K) daily factor returns (fractions) in the order market, sectors, styles; NaN for a
        factor dropped on a date and on a skipped date.
    residual: (b, N) the part of each used return not explained by the factors (``barra``: raw return minus
        fitted; ``toraniko``: winsorized return minus fitted); NaN for unused rows and skipped dates.
    r2: (b,) weighted, uncentered R² of the fitted (winsorized) returns; NaN on a skipped date.
    condition: (b,) condition number of the column-scaled normal matrix.
    dropped: (b, K) int8: 0 kept, 1 no exposure, 2 collinear with earlier factors.
    skip_reason: (b,) object: why a date was not solved ("" when it was).
    """

    factor_returns: np.ndarray
    residual: np.ndarray
    r2: np.ndarray
    condition: np.ndarray
    dropped: np.ndarray
    skip_reason: np.ndarray


def solve_cross_sections(
    ok: np.ndarray,
    returns: np.ndarray,
    cap: np.ndarray,
    sector_codes: np.ndarray | None,
    sector_exposure: np.ndarray | None,
    style_exposure: np.ndarray,
    *,
    n_sectors: int,
    method: Method,
    winsor_factor: float | None,
    residualize_styles: bool,
) -> CrossSections:
    """The cross-sectional regressions of b return dates: the one solve behind :func:`estimate_factor_returns`
    (which calls it on blocks of dates) and the live intraday factor returns (:mod:`factor_engine.live`, one
    date at a time).

    Parameters
    ----------
    ok: (b, N) bool, the rows used (a return, a positive cap, a sector and every style exposure).
    returns: (b, N) daily simple returns (fractions) of the return dates; ignored where not ok.
    cap: (b, N) market cap at the exposure date (currency units): ``sqrt(cap)`` is the regression weight and,
        for ``barra``, ``cap`` the sector constraint's weight.
    sector_codes: (b, N) int sector index (-1 none) at the exposure date, or None.
    sector_exposure: (b, N, S) sector exposures at the exposure date, when not given as codes; or None.
    style_exposure: (b, N, P) style exposures at the exposure date (absent styles already zeroed).
    n_sectors: S, the number of sector factors (codes index them).
    method, winsor_factor, residualize_styles: as in :func:`estimate_factor_returns`.
    """
    fitted_y = np.where(ok, returns, np.nan)
    if winsor_factor is not None:
        fitted_y = winsorize(fitted_y, winsor_factor)
    weight = np.where(ok, np.sqrt(np.where(ok, cap, 1.0)), 0.0)
    target = np.where(ok, fitted_y, 0.0)
    if method == "barra":
        sector_weight = np.where(ok, cap, 0.0)
        if sector_codes is not None and n_sectors:
            # one-hot sectors (the usual case): the normal equations from the codes, no dense design
            solved, fitted = _solve_barra_one_hot(
                ok, weight, target, sector_codes, style_exposure, sector_weight, n_sectors
            )
        else:
            design = _design_block(ok, sector_codes, sector_exposure, style_exposure, n_sectors)
            gram, rhs = _gram(design, weight, target)
            by_sector = np.einsum("tn,tns->ts", sector_weight, design[:, :, 1 : 1 + n_sectors])
            solved = _solve_barra(gram, rhs, by_sector)
            fitted = np.matmul(design, np.nan_to_num(solved.factor_returns)[:, :, None])[:, :, 0]
        fit_residual = target - fitted
        raw_residual = np.where(ok, returns, 0.0) - fitted
    else:
        design = _design_block(ok, sector_codes, sector_exposure, style_exposure, n_sectors)
        solved = _solve_toraniko(design, weight, target, n_sectors, residualize_styles)
        fit_residual = solved.residual
        raw_residual = fit_residual
    residual = np.where(ok, raw_residual, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = 1.0 - (weight * fit_residual**2).sum(axis=1) / (weight * target**2).sum(axis=1)
    n_used = ok.sum(axis=1)
    none = n_used == 0
    few = (n_used < solved.n_candidates) & ~none if method == "barra" else np.zeros(ok.shape[0], dtype=bool)
    skip_reason = np.full(ok.shape[0], "", dtype=object)
    for t in np.flatnonzero(none | few):
        skip_reason[t] = (
            "no usable assets" if none[t] else f"fewer assets ({n_used[t]}) than factors ({solved.n_candidates[t]})"
        )
    skipped = skip_reason != ""
    factor_returns = solved.factor_returns
    factor_returns[skipped] = np.nan
    residual[skipped] = np.nan
    r2[skipped] = np.nan
    return CrossSections(
        factor_returns=factor_returns,
        residual=residual,
        r2=r2,
        condition=solved.condition,
        dropped=solved.dropped,
        skip_reason=skip_reason,
    )


def _design_block(
    ok: np.ndarray,
    sector_codes: np.ndarray | None,
    sector_exposure: np.ndarray | None,
    style_exposure: np.ndarray,
    n_sec: int,
) -> np.ndarray:
    """(b, N, K) exposures of b return dates (the arrays at their exposure dates), zero where not ok."""
    b, n_sym = ok.shape
    n_sty = style_exposure.shape[2]
    design = np.zeros((b, n_sym, 1 + n_sec + n_sty))
    design[:, :, 0] = ok
    if sector_codes is not None:
        tt, nn = np.nonzero(ok)
        design[tt, nn, 1 + sector_codes[tt, nn]] = 1.0
    elif sector_exposure is not None:
        design[:, :, 1 : 1 + n_sec] = np.where(ok[:, :, None], sector_exposure, 0.0)
    if n_sty:
        design[:, :, 1 + n_sec :] = np.where(ok[:, :, None], style_exposure, 0.0)
    return design


@dataclass(frozen=True)
class _Solved:
    factor_returns: np.ndarray  # (b, K), NaN where dropped
    dropped: np.ndarray  # (b, K) int8: _KEPT, _NO_EXPOSURE or _COLLINEAR
    condition: np.ndarray  # (b,)
    n_candidates: np.ndarray  # (b,) parameters with any exposure
    residual: np.ndarray  # (b, N) residual of the fitted (winsorized) returns, toraniko only


def _gram(design: np.ndarray, weight: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-date ``Bᵀ W B`` (b, K, K) and ``Bᵀ W y`` (b, K)."""
    weighted = design * weight[:, :, None]
    gram = np.matmul(weighted.transpose(0, 2, 1), design)
    rhs = np.einsum("tnk,tn->tk", weighted, target)
    return gram, rhs


def _constraint_basis(
    sector_weight: np.ndarray, n_factors: int, sector_offset: int, reference: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Null-space basis ``R`` (b, K, K−1) of ``Σ_s c_s f_s = 0`` and the (b, K−1) index of the factor each
    parameter stands for. The eliminated sector is ``reference`` (b,), by default each date's heaviest."""
    b, n_sec = sector_weight.shape
    ref = np.argmax(sector_weight, axis=1) if reference is None else reference
    ref_factor = sector_offset + ref
    params = np.arange(n_factors - 1)
    factor_of_param = params[None, :] + (params[None, :] >= ref_factor[:, None])
    basis = np.zeros((b, n_factors, n_factors - 1))
    rows = np.arange(b)[:, None]
    basis[rows, factor_of_param, params[None, :]] = 1.0
    ref_weight = sector_weight[np.arange(b), ref]
    safe = np.where(ref_weight != 0.0, ref_weight, 1.0)
    ratio = -sector_weight / safe[:, None]  # (b, S)
    is_sector = (factor_of_param >= sector_offset) & (factor_of_param < sector_offset + n_sec)
    sector_of_param = np.clip(factor_of_param - sector_offset, 0, n_sec - 1)
    basis[rows, ref_factor[:, None], params[None, :]] = np.where(
        is_sector, np.take_along_axis(ratio, sector_of_param, axis=1), 0.0
    )
    return basis, factor_of_param


def _solve_barra_one_hot(
    ok: np.ndarray,
    weight: np.ndarray,
    target: np.ndarray,
    sector_codes: np.ndarray,
    style_exposure: np.ndarray,
    sector_weight: np.ndarray,
    n_sec: int,
) -> tuple[_Solved, np.ndarray]:
    """:func:`_solve_barra` of the design ``[1, sector dummies, styles]`` given by its sector codes (b, N), and
    the fitted values (b, N; 0 where not ``ok``): compiled sums over the rows
    (:mod:`factor_engine._regression_kernels`) instead of batched products of the dense design."""
    from factor_engine._regression_kernels import one_hot_fitted, one_hot_moments

    b, n_symbols = ok.shape
    n_factors = 1 + n_sec + style_exposure.shape[2]
    gram = np.empty((b, n_factors, n_factors))
    rhs = np.empty((b, n_factors))
    by_sector = np.empty((b, n_sec))
    one_hot_moments(ok, weight, target, sector_codes, style_exposure, sector_weight, gram, rhs, by_sector)
    solved = _solve_barra(gram, rhs, by_sector)
    fitted = np.empty((b, n_symbols))
    one_hot_fitted(ok, sector_codes, style_exposure, np.nan_to_num(solved.factor_returns), fitted)
    return solved, fitted


def _solve_barra(gram: np.ndarray, rhs: np.ndarray, by_sector: np.ndarray) -> _Solved:
    """Barra's constrained regression of each date from its normal equations ``gram`` (b, K, K) and ``rhs``
    (b, K) of the design ``[1, sectors (S), styles]`` and ``by_sector`` (b, S), the sectors' constraint weights
    (cap-weighted: the sector returns' cap-weighted sum is 0)."""
    b, n_factors = rhs.shape
    n_sec = by_sector.shape[1]
    if n_sec:
        basis, factor_of_param = _constraint_basis(by_sector, n_factors, 1)
        gram = np.matmul(np.matmul(basis.transpose(0, 2, 1), gram), basis)
        rhs = np.einsum("tkj,tk->tj", basis, rhs)
    else:
        basis = np.broadcast_to(np.eye(n_factors), (b, n_factors, n_factors))
        factor_of_param = np.broadcast_to(np.arange(n_factors), (b, n_factors))
    params, active, candidate, condition = _rank_revealing_solve(gram, rhs)
    factor_returns = np.einsum("tkj,tj->tk", basis, params)
    dropped = np.zeros((b, n_factors), dtype=bool)
    np.put_along_axis(dropped, factor_of_param, ~active, axis=1)
    factor_returns[dropped] = np.nan
    collinear = np.zeros((b, n_factors), dtype=bool)
    np.put_along_axis(collinear, factor_of_param, candidate & ~active, axis=1)
    return _Solved(
        factor_returns=factor_returns,
        dropped=np.where(collinear, _COLLINEAR, np.where(dropped, _NO_EXPOSURE, _KEPT)).astype(np.int8),
        condition=condition,
        n_candidates=candidate.sum(axis=1),
        residual=np.empty((0, 0)),
    )


def _rank_revealing_solve(gram: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Solve each date's ``gram @ x = rhs``, dropping parameters with no exposure or collinear with earlier
    ones (in column order) by a Cholesky factorization that skips them.

    Returns the solution (b, J) with zeros at dropped parameters, the active mask, the mask of parameters
    with any exposure, and the condition number of the column-scaled active normal matrix.
    """
    b, n_par, _ = gram.shape
    diag = np.einsum("tjj->tj", gram)
    scale_max = diag.max(axis=1, keepdims=True)
    candidate = diag > 1e-14 * np.where(scale_max > 0, scale_max, 1.0)
    scale = np.sqrt(np.where(candidate, diag, 1.0))
    scaled = gram / (scale[:, :, None] * scale[:, None, :])
    scaled = np.where(candidate[:, :, None] & candidate[:, None, :], scaled, 0.0)
    lower = np.zeros_like(scaled)
    active = np.zeros((b, n_par), dtype=bool)
    for j in range(n_par):
        row = lower[:, j, :j]
        pivot = scaled[:, j, j] - np.einsum("ti,ti->t", row, row)
        ok = candidate[:, j] & (pivot > COLLINEARITY_TOL)
        root = np.sqrt(np.where(ok, pivot, 1.0))
        below = (scaled[:, j + 1 :, j] - np.einsum("tki,ti->tk", lower[:, j + 1 :, :j], row)) / root[:, None]
        lower[:, j, j] = np.where(ok, root, 0.0)
        lower[:, j + 1 :, j] = np.where(ok[:, None], below, 0.0)
        active[:, j] = ok
    both = active[:, :, None] & active[:, None, :]
    eye = np.broadcast_to(np.eye(n_par, dtype=bool), both.shape)
    reduced = np.where(both, scaled, np.where(eye, 1.0, 0.0))
    scaled_rhs = np.where(active, rhs / scale, 0.0)
    solution = np.linalg.solve(reduced, scaled_rhs[:, :, None])[:, :, 0] / scale
    eigen = np.linalg.eigvalsh(reduced)
    with np.errstate(divide="ignore", invalid="ignore"):
        condition = eigen[:, -1] / eigen[:, 0]
    return np.where(active, solution, 0.0), active, candidate, condition


def _pinv_solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Minimum-norm least-squares solution of each ``gram @ x = rhs`` with numpy ``lstsq``'s default cutoff
    (singular values below ``eps · K · s_max`` treated as zero) — toraniko's per-date solver."""
    n_par = gram.shape[-1]
    pseudo = np.linalg.pinv(gram, rtol=np.finfo(np.float64).eps * n_par, hermitian=True)
    solution: np.ndarray = np.einsum("tij,tj->ti", pseudo, rhs)
    return solution


def _scaled_condition(gram: np.ndarray) -> np.ndarray:
    diag = np.einsum("tjj->tj", gram)
    scale = np.sqrt(np.where(diag > 0, diag, 1.0))
    eigen = np.linalg.eigvalsh(gram / (scale[:, :, None] * scale[:, None, :]))
    with np.errstate(divide="ignore", invalid="ignore"):
        condition: np.ndarray = np.abs(eigen[:, -1] / eigen[:, 0])
    return condition


def _solve_toraniko(
    design: np.ndarray, weight: np.ndarray, target: np.ndarray, n_sec: int, residualize_styles: bool
) -> _Solved:
    b, _, n_factors = design.shape
    n_mkt_sec = 1 + n_sec
    gram, rhs = _gram(design, weight, target)
    if n_sec:
        last = np.full(b, n_sec - 1)  # toraniko eliminates the last sector
        basis, _ = _constraint_basis(np.ones((b, n_sec)), n_mkt_sec, 1, reference=last)
    else:
        basis = np.ones((b, 1, 1))
    gram_1 = np.matmul(np.matmul(basis.transpose(0, 2, 1), gram[:, :n_mkt_sec, :n_mkt_sec]), basis)
    rhs_1 = np.einsum("tkj,tk->tj", basis, rhs[:, :n_mkt_sec])
    first = np.einsum("tkj,tj->tk", basis, _pinv_solve(gram_1, rhs_1))
    after_sectors = target - np.einsum("tnk,tk->tn", design[:, :, :n_mkt_sec], first)
    condition = _scaled_condition(gram_1)
    factor_returns = np.empty((b, n_factors))
    factor_returns[:, :n_mkt_sec] = first
    residual = after_sectors
    if n_factors > n_mkt_sec:
        styles = design[:, :, n_mkt_sec:]
        gram_2 = gram[:, n_mkt_sec:, n_mkt_sec:]
        if residualize_styles:
            rhs_2 = np.einsum("tnk,tn->tk", styles * weight[:, :, None], after_sectors)
        else:
            rhs_2 = rhs[:, n_mkt_sec:]
        second = _pinv_solve(gram_2, rhs_2)
        factor_returns[:, n_mkt_sec:] = second
        residual = after_sectors - np.einsum("tnk,tk->tn", styles, second)
        condition = np.fmax(condition, _scaled_condition(gram_2))
    return _Solved(
        factor_returns=factor_returns,
        dropped=np.zeros((b, n_factors), dtype=np.int8),
        condition=condition,
        n_candidates=np.full(b, n_factors),
        residual=residual,
    )


def dropped_factors(factors: Sequence[str], dropped: np.ndarray, skip_reason: str = "") -> tuple[list[str], str]:
    """The factors not estimated on a date and the diagnostics' reason: every factor and ``skip_reason`` for a
    skipped date, else those of ``dropped`` ((K,) int8 of :attr:`CrossSections.dropped`) without exposure, then
    those collinear with earlier factors."""
    if skip_reason:
        return list(factors), skip_reason
    names = np.array(factors, dtype=object)
    empty = [str(x) for x in names[dropped == _NO_EXPOSURE]]
    collinear = [str(x) for x in names[dropped == _COLLINEAR]]
    parts = ([f"no exposure: {', '.join(empty)}"] if empty else []) + (
        [f"collinear with earlier factors: {', '.join(collinear)}"] if collinear else []
    )
    return empty + collinear, "; ".join(parts)


def _diagnostics(
    dates: pl.Series,
    dates_with_rows: np.ndarray,
    n_used: np.ndarray,
    n_excluded: np.ndarray,
    r2: np.ndarray,
    condition: np.ndarray,
    dropped_mask: np.ndarray,
    skip_reason: np.ndarray,
    factors: tuple[str, ...],
) -> pl.DataFrame:
    keep = np.flatnonzero(dates_with_rows)
    dropped_lists: list[list[str]] = [[] for _ in keep]
    reasons = [""] * keep.shape[0]
    for i in np.flatnonzero((skip_reason[keep] != "") | (dropped_mask[keep] != _KEPT).any(axis=1)):
        t = keep[i]
        dropped_lists[i], reasons[i] = dropped_factors(factors, dropped_mask[t], str(skip_reason[t]))
    return pl.DataFrame(
        {
            DATE: dates.gather(keep),
            "n_assets": n_used[keep].astype(np.int64),
            "n_excluded": n_excluded[keep].astype(np.int64),
            "r2": r2[keep],
            "condition_number": condition[keep],
            "dropped": pl.Series(dropped_lists, dtype=pl.List(pl.String)),
            "reason": reasons,
        }
    ).with_columns(pl.col("r2").fill_nan(None), pl.col("condition_number").fill_nan(None))
