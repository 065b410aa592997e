"""Portfolio risk analytics for one date and ex-post return attribution, through ``B F Bᵀ + D``.

The asset covariance of a factor model is ``Σ = B F Bᵀ + diag(σ²)`` with exposures ``B`` (N×K), factor
covariance ``F`` (K×K) and specific volatilities ``σ`` (N). Every figure here is computed from the factored
form — ``Σ h = B (F (Bᵀ h)) + σ² ⊙ h`` costs O(NK) — and the N×N matrix is formed only when
:meth:`RiskModelSnapshot.asset_covariance` is called.

Units: the snapshot is in *daily* units (``F`` a covariance of daily factor returns, ``σ`` a daily standard
deviation, both as fractions), so every risk figure is a daily standard deviation until
:meth:`RiskDecomposition.annualized` scales it by ``√periods_per_year``.

Weights are fractions of capital by symbol (0.05 is 5 % of capital); a symbol of the model without a weight
has weight 0. A weight for a symbol the model does not cover raises :class:`PortfolioError` naming it, unless
``unknown="drop"``, which drops it, warns with the count and records it in the result.

Weights that look wrong are flagged (:func:`check_weights`, applied by :func:`decompose_risk` and
:func:`portfolio_exposures` to the portfolio and to the benchmark, each on its own):

* **Percentages are an error.** Weights whose net sum or any single weight exceeds
  :data:`PERCENT_LIKE_LIMIT` = 1.5 in absolute value (``|Σw| > 1.5`` or ``max |w| > 1.5``: more than 150 % of
  capital net, or in one asset) look like percentages (a percent book sums to about 100) and raise
  :class:`PortfolioError`, unless ``allow_unnormalized=True``.
* **A sum other than 1 is a warning.** Weights whose sum differs from 1 by more than
  :data:`WEIGHT_SUM_TOLERANCE` = 0.01 give a :class:`WeightsWarning` (and a line in
  ``RiskDecomposition.warnings``): the figures are of the weights as given, never rescaled.

``allow_unnormalized=True`` is the opt-in for books that are not a fully invested portfolio of fractions:
long-short, dollar-neutral, leveraged or partly invested books and active weights. It turns both checks off.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import polars as pl

__all__ = [
    "ALLOW_UNNORMALIZED_HINT",
    "FACTOR",
    "PERCENT_LIKE_LIMIT",
    "WEIGHT",
    "WEIGHT_SUM_TOLERANCE",
    "PortfolioError",
    "RiskDecomposition",
    "RiskModelSnapshot",
    "WeightsWarning",
    "attribute_returns",
    "check_weights",
    "cumulative_attribution",
    "decompose_risk",
    "portfolio_exposures",
]

SYMBOL = "symbol"
DATE = "date"
RETURNS = "asset_returns"
FACTOR = "factor"
WEIGHT = "weight"
SPECIFIC = "specific"
TOTAL = "total"
TRADING_DAYS = 252
# Relative tolerance for the symmetry and positive semi-definiteness of the factor covariance.
COVARIANCE_TOL = 1e-10
#: Weights look like percentages when their net sum or a single weight exceeds this in absolute value.
PERCENT_LIKE_LIMIT = 1.5
#: Weights whose sum differs from 1 by more than this get a warning (fraction of capital).
WEIGHT_SUM_TOLERANCE = 0.01
#: How the messages of :func:`check_weights` name the opt-in; the CLI and the service replace it with theirs.
ALLOW_UNNORMALIZED_HINT = "pass allow_unnormalized=True"

Weights = pl.DataFrame | Mapping[str, float] | np.ndarray
Unknown = Literal["raise", "drop"]


class PortfolioError(ValueError):
    """Invalid risk-model snapshot, weights or attribution inputs; the message says what and where."""


class WeightsWarning(UserWarning):
    """Weights that do not sum to 1 (see :func:`check_weights`): the figures are of the weights as given."""


def check_weights(
    weights: Weights,
    *,
    what: str = "weights",
    symbols: Sequence[str] | None = None,
    allow_unnormalized: bool = False,
    sum_tolerance: float = WEIGHT_SUM_TOLERANCE,
) -> tuple[str, ...]:
    """Flag weights that look wrong; return the warnings (empty when they look like a fully invested book).

    Parameters
    ----------
    weights: fractions of capital: a frame ``symbol, weight``, a mapping symbol → weight or an array.
    what: how the messages name the weights (e.g. ``"benchmark weights"``).
    symbols: the symbols of an array's entries, to name the largest weight (default: its position).
    allow_unnormalized: the opt-in for long-short, active, leveraged or partly invested books: no check.
    sum_tolerance: the largest ``|Σw − 1|`` without a warning.

    Raises
    ------
    PortfolioError: the weights look like percentages: ``|Σw| > PERCENT_LIKE_LIMIT`` or some
        ``|w| > PERCENT_LIKE_LIMIT`` (1.5, i.e. 150 % of capital), unless ``allow_unnormalized``.

    Returns
    -------
    One message when ``|Σw − 1| > sum_tolerance`` (e.g. ``"weights sum to 0.9, not 1 ..."``), else ().
    """
    if allow_unnormalized:
        return ()
    if isinstance(weights, pl.DataFrame):
        if not {SYMBOL, WEIGHT} <= set(weights.columns):
            raise PortfolioError(f"{what} frame needs columns '{SYMBOL}', '{WEIGHT}'; it has {weights.columns}")
        names: Sequence[str] | None = weights.get_column(SYMBOL).cast(pl.String).to_list()
        values = weights.get_column(WEIGHT).cast(pl.Float64).fill_null(np.nan).to_numpy()
    elif isinstance(weights, Mapping):
        names = [str(symbol) for symbol in weights]
        values = np.fromiter(weights.values(), dtype=np.float64, count=len(names))
    else:
        names, values = symbols, np.asarray(weights, dtype=np.float64).ravel()
    if values.size == 0:
        total, largest = 0.0, None
    else:
        total = float(values.sum())
        largest = int(np.argmax(np.abs(values)))
    reasons = []
    if abs(total) > PERCENT_LIKE_LIMIT:
        reasons.append(f"they sum to {total:.6g}")
    if largest is not None and abs(values[largest]) > PERCENT_LIKE_LIMIT:
        name = repr(names[largest]) if names is not None else f"the weight at position {largest}"
        reasons.append(f"{name} has {values[largest]:.6g}")
    if reasons:
        raise PortfolioError(
            f"{what} look like percentages, not fractions of capital: {' and '.join(reasons)} (more than "
            f"{PERCENT_LIKE_LIMIT:.0%} of capital). Weights are fractions (0.05 is 5 %): divide percentages by "
            f"100, or {ALLOW_UNNORMALIZED_HINT} for a leveraged or long-short book"
        )
    if abs(total - 1.0) > sum_tolerance:
        return (
            f"{what} sum to {total:.6g}, not 1 (tolerance {sum_tolerance:g}): the figures are of these weights as "
            f"given, not rescaled; scale them to sum to 1, or {ALLOW_UNNORMALIZED_HINT} for a long-short, active "
            "or partly invested book",
        )
    return ()


def _examples(names: Sequence[object], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return f"{shown}, ..." if len(names) > limit else shown


@dataclass(frozen=True)
class RiskModelSnapshot:
    """One date's factor risk model: ``Σ = B F Bᵀ + diag(σ²)`` in daily units.

    Attributes
    ----------
    factors: the K factor names, in the column order of ``exposures`` and ``factor_covariance``.
    symbols: the N asset symbols (unique), in the row order of ``exposures`` and ``specific_vol``.
    exposures: (N, K) float64, ``B``: asset exposures to the factors (unitless).
    factor_covariance: (K, K) float64, ``F``: covariance of daily factor returns; symmetrized on
        construction, must be positive semi-definite.
    specific_vol: (N,) float64, ``σ``: daily standard deviation of each asset's specific return (fraction,
        ≥ 0).

    Construction validates shapes, finiteness, PSD of ``F`` and ``σ ≥ 0`` and raises :class:`PortfolioError`.
    The arrays are made read-only copies. Use :meth:`from_frames` to build one from polars frames.
    """

    factors: tuple[str, ...]
    symbols: tuple[str, ...]
    exposures: np.ndarray
    factor_covariance: np.ndarray
    specific_vol: np.ndarray
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    _symbol_series: pl.Series = field(init=False, repr=False, compare=False)
    _factor_series: pl.Series = field(init=False, repr=False, compare=False)
    _factor_vol: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        factors = tuple(str(f) for f in self.factors)
        symbols = tuple(str(s) for s in self.symbols)
        _check_unique(factors, "factors")
        _check_unique(symbols, "symbols")
        n, k = len(symbols), len(factors)
        exposures = np.array(self.exposures, dtype=np.float64)
        covariance = np.array(self.factor_covariance, dtype=np.float64)
        specific_vol = np.array(self.specific_vol, dtype=np.float64)
        if exposures.shape != (n, k):
            raise PortfolioError(f"exposures have shape {exposures.shape}; expected ({n}, {k}) = (symbols, factors)")
        if covariance.shape != (k, k):
            raise PortfolioError(f"factor_covariance has shape {covariance.shape}; expected ({k}, {k}) for {k} factors")
        if specific_vol.shape != (n,):
            raise PortfolioError(f"specific_vol has shape {specific_vol.shape}; expected ({n},) for {n} symbols")
        bad = ~np.isfinite(exposures).all(axis=1)
        if bad.any():
            names = [symbols[i] for i in np.flatnonzero(bad)]
            raise PortfolioError(f"exposures are not finite for {len(names)} symbol(s): {_examples(names)}")
        if not np.isfinite(covariance).all():
            raise PortfolioError("factor_covariance has non-finite entries")
        bad = ~np.isfinite(specific_vol) | (specific_vol < 0)
        if bad.any():
            names = [symbols[i] for i in np.flatnonzero(bad)]
            raise PortfolioError(
                f"specific_vol must be finite and >= 0; {len(names)} symbol(s) are not: {_examples(names)}"
            )
        scale = max(float(np.abs(covariance).max(initial=0.0)), np.finfo(np.float64).tiny)
        asymmetry = float(np.abs(covariance - covariance.T).max(initial=0.0))
        if asymmetry > COVARIANCE_TOL * scale:
            raise PortfolioError(f"factor_covariance is not symmetric (largest |F - Fᵀ| = {asymmetry:.3g})")
        covariance = 0.5 * (covariance + covariance.T)
        if k:
            smallest = float(np.linalg.eigvalsh(covariance)[0])
            if smallest < -COVARIANCE_TOL * scale:
                raise PortfolioError(
                    f"factor_covariance is not positive semi-definite (smallest eigenvalue {smallest:.3g})"
                )
        for array in (exposures, covariance, specific_vol):
            array.flags.writeable = False
        factor_vol = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
        factor_vol.flags.writeable = False
        set_ = object.__setattr__
        set_(self, "factors", factors)
        set_(self, "symbols", symbols)
        set_(self, "exposures", exposures)
        set_(self, "factor_covariance", covariance)
        set_(self, "specific_vol", specific_vol)
        set_(self, "_index", {s: i for i, s in enumerate(symbols)})
        set_(self, "_symbol_series", pl.Series(SYMBOL, symbols, dtype=pl.String))
        set_(self, "_factor_series", pl.Series(FACTOR, factors, dtype=pl.String))
        set_(self, "_factor_vol", factor_vol)

    @classmethod
    def from_frames(
        cls,
        exposures: pl.DataFrame,
        factor_covariance: pl.DataFrame | np.ndarray,
        specific_vol: pl.DataFrame | Mapping[str, float] | np.ndarray,
    ) -> RiskModelSnapshot:
        """Build a snapshot from polars frames.

        Parameters
        ----------
        exposures: ``symbol`` + one numeric column per factor (the factor order is the column order).
        factor_covariance: daily factor covariance, either a (K, K) array in the factor order of ``exposures``
            or a frame ``factor`` + one column per factor (rows and columns are reordered to match).
        specific_vol: daily specific standard deviations: a frame ``symbol, specific_vol``, a mapping
            symbol → vol, or an (N,) array in the row order of ``exposures``. Every symbol needs one.
        """
        if SYMBOL not in exposures.columns:
            raise PortfolioError(f"exposures frame needs a '{SYMBOL}' column; it has {exposures.columns}")
        factors = [c for c in exposures.columns if c != SYMBOL]
        non_numeric = [c for c in factors if not exposures.schema[c].is_numeric()]
        if non_numeric:
            raise PortfolioError(f"exposure columns must be numeric; not numeric: {non_numeric}")
        symbols = exposures.get_column(SYMBOL).cast(pl.String).to_list()
        if any(s is None for s in symbols):
            raise PortfolioError("exposures frame has null symbols")
        matrix = exposures.select(pl.col(factors).cast(pl.Float64).fill_null(np.nan)).to_numpy()
        if isinstance(factor_covariance, pl.DataFrame):
            covariance = _covariance_from_frame(factor_covariance, factors)
        else:
            covariance = np.asarray(factor_covariance, dtype=np.float64)
        if isinstance(specific_vol, np.ndarray):
            vol = specific_vol
        else:
            if isinstance(specific_vol, pl.DataFrame):
                if not {SYMBOL, "specific_vol"} <= set(specific_vol.columns):
                    raise PortfolioError(
                        f"specific_vol frame needs columns '{SYMBOL}', 'specific_vol'; it has {specific_vol.columns}"
                    )
                keys = specific_vol.get_column(SYMBOL).cast(pl.String).to_list()
                values = specific_vol.get_column("specific_vol").cast(pl.Float64).fill_null(np.nan).to_list()
                _check_unique(keys, "specific_vol symbols")
                mapping: Mapping[str, float] = dict(zip(keys, values, strict=True))
            else:
                mapping = specific_vol
            missing = [s for s in symbols if s not in mapping]
            if missing:
                raise PortfolioError(f"specific_vol is missing for {len(missing)} symbol(s): {_examples(missing)}")
            vol = np.array([mapping[s] for s in symbols], dtype=np.float64)
        return cls(tuple(factors), tuple(symbols), matrix, covariance, vol)

    @property
    def n_assets(self) -> int:
        """N, the number of symbols."""
        return len(self.symbols)

    @property
    def n_factors(self) -> int:
        """K, the number of factors."""
        return len(self.factors)

    def asset_covariance(self) -> np.ndarray:
        """The (N, N) daily asset covariance ``B F Bᵀ + diag(σ²)``. O(N²K) time and O(N²) memory."""
        covariance = self.exposures @ self.factor_covariance @ self.exposures.T
        covariance[np.diag_indices_from(covariance)] += self.specific_vol**2
        return covariance

    def covariance_times(self, weights: np.ndarray) -> np.ndarray:
        """``Σ h`` for an (N,) vector in symbol order, in O(NK) without forming ``Σ``."""
        h = np.asarray(weights, dtype=np.float64)
        return self.exposures @ (self.factor_covariance @ (self.exposures.T @ h)) + self.specific_vol**2 * h

    def align_weights(self, weights: Weights, *, what: str = "weights", unknown: Unknown = "raise") -> np.ndarray:
        """Weights as an (N,) float64 vector in symbol order (0 for symbols without a weight).

        ``weights`` is a frame ``symbol, weight``, a mapping symbol → weight, or an (N,) array already in
        symbol order. Duplicate symbols and non-finite weights raise; symbols the model lacks raise unless
        ``unknown="drop"`` (then they are dropped with a warning). Use :func:`decompose_risk` to also get the
        dropped symbols back.
        """
        return self._align(weights, what, unknown)[0]

    def _align(
        self, weights: Weights, what: str, unknown: Unknown, stacklevel: int = 3
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        if unknown not in ("raise", "drop"):
            raise PortfolioError(f"unknown must be 'raise' or 'drop', not {unknown!r}")
        if isinstance(weights, np.ndarray):
            vector = np.asarray(weights, dtype=np.float64)
            if vector.shape != (self.n_assets,):
                raise PortfolioError(
                    f"{what} array has shape {vector.shape}; expected ({self.n_assets},) in the snapshot's symbol order"
                )
            bad = np.flatnonzero(~np.isfinite(vector))
            if bad.size:
                names = [self.symbols[i] for i in bad]
                raise PortfolioError(f"{what} are not finite for {len(names)} symbol(s): {_examples(names)}")
            return vector, ()
        if isinstance(weights, pl.DataFrame):
            if not {SYMBOL, WEIGHT} <= set(weights.columns):
                raise PortfolioError(f"{what} frame needs columns '{SYMBOL}', '{WEIGHT}'; it has {weights.columns}")
            keys = weights.get_column(SYMBOL).cast(pl.String).to_list()
            values = weights.get_column(WEIGHT).cast(pl.Float64).fill_null(np.nan).to_numpy()
        elif isinstance(weights, Mapping):
            keys = [str(s) for s in weights]
            values = np.fromiter(weights.values(), dtype=np.float64, count=len(keys))
        else:
            raise PortfolioError(f"{what} must be a polars frame, a mapping or a numpy array, not {type(weights)}")
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            names = [keys[i] for i in bad]
            raise PortfolioError(
                f"{what} are not finite (NaN, null or inf) for {len(names)} symbol(s): {_examples(names)}"
            )
        _check_unique(keys, f"{what} symbols")
        index = self._index
        positions = np.fromiter((index.get(s, -1) for s in keys), dtype=np.int64, count=len(keys))
        known = positions >= 0
        dropped: tuple[str, ...] = ()
        if not known.all():
            dropped = tuple(keys[i] for i in np.flatnonzero(~known))
            if unknown == "raise":
                raise PortfolioError(
                    f"{what} name {len(dropped)} symbol(s) the risk model does not cover: {_examples(dropped)} "
                    "(pass unknown='drop' to drop them)"
                )
            warnings.warn(
                f"dropped {len(dropped)} {what} symbol(s) the risk model does not cover: {_examples(dropped)}",
                stacklevel=stacklevel,
            )
        vector = np.zeros(self.n_assets)
        vector[positions[known]] = values[known]
        return vector, dropped


def _check_unique(names: Sequence[str], what: str) -> None:
    if len(set(names)) != len(names):
        duplicated = sorted(n for n, count in Counter(names).items() if count > 1)
        raise PortfolioError(f"{what} must be unique; duplicated: {_examples(duplicated)}")


def _covariance_from_frame(frame: pl.DataFrame, factors: Sequence[str]) -> np.ndarray:
    if FACTOR not in frame.columns:
        raise PortfolioError(f"factor_covariance frame needs a '{FACTOR}' column; it has {frame.columns}")
    row_names = frame.get_column(FACTOR).cast(pl.String).to_list()
    column_names = [c for c in frame.columns if c != FACTOR]
    expected = set(factors)
    if set(row_names) != expected or set(column_names) != expected or len(row_names) != len(factors):
        raise PortfolioError(
            "factor_covariance factors do not match the exposures: "
            f"missing {sorted(expected - set(column_names) - set(row_names))}, "
            f"extra {sorted((set(column_names) | set(row_names)) - expected)}"
        )
    order = [row_names.index(f) for f in factors]
    values = frame.select(pl.col(list(factors)).cast(pl.Float64)).to_numpy()
    return values[order]


@dataclass(frozen=True)
class RiskDecomposition:
    """Result of :func:`decompose_risk`: the risk of a portfolio (or of active weights) and where it comes from.

    With a benchmark, everything decomposes the active weights ``h = w − b``; otherwise ``h = w``. Risk
    figures are standard deviations of the return of ``h`` in the units of ``periods_per_year`` (``1`` is
    daily, as the snapshot; see :meth:`annualized`).

    Attributes
    ----------
    total_risk: ``σ_p = sqrt(hᵀ Σ h)``; with a benchmark, the tracking error.
    factor_risk: ``σ_F = sqrt(xᵀ F x)`` with ``x = Bᵀ h`` the (active) factor exposures.
    specific_risk: ``σ_S = sqrt(Σ σ_n² h_n²)``; ``σ_p² = σ_F² + σ_S²``.
    factor_variance_share, specific_variance_share: ``σ_F²/σ_p²`` and ``σ_S²/σ_p²`` (sum to 1; NaN if
        ``σ_p = 0``).
    tracking_error: ``total_risk`` when a benchmark was given, else None.
    exposures: ``factor, exposure`` — ``x``, one row per factor.
    factor_contributions: one row per factor: ``factor, exposure`` (``x_k``), ``volatility`` (``σ_k =
        sqrt(F_kk)``), ``correlation`` (``ρ_k``, of factor k's return with the factor part of the portfolio
        return ``xᵀf``; NaN where ``σ_k = 0`` or ``σ_F = 0``), ``contribution`` (``x_k σ_k ρ_k = x_k (F x)_k /
        σ_F``; sums to ``factor_risk``), ``variance_share`` (``x_k (F x)_k / σ_p²``; sums to
        ``factor_variance_share``).
    asset_contributions: one row per model symbol, in snapshot order: ``symbol, weight`` (``h_n``), ``mcr``
        (marginal contribution to risk ``∂σ_p/∂h_n = (Σ h)_n / σ_p``), ``contribution`` (``h_n · mcr_n``; sums
        to ``total_risk``, Euler), ``share`` (``contribution / σ_p``; sums to 1). ``mcr`` is NaN if ``σ_p = 0``.
    dropped_symbols: weight or benchmark symbols the model does not cover, dropped with ``unknown="drop"``.
    periods_per_year: 1 for daily figures, else the annualization applied.
    warnings: what :func:`check_weights` said of the weights and the benchmark (e.g. a sum other than 1).
    """

    total_risk: float
    factor_risk: float
    specific_risk: float
    factor_variance_share: float
    specific_variance_share: float
    tracking_error: float | None
    exposures: pl.DataFrame
    factor_contributions: pl.DataFrame
    asset_contributions: pl.DataFrame
    dropped_symbols: tuple[str, ...] = ()
    periods_per_year: int = 1
    warnings: tuple[str, ...] = ()

    def annualized(self, periods_per_year: int = TRADING_DAYS) -> RiskDecomposition:
        """The same decomposition with risk figures scaled from daily by ``√periods_per_year``.

        Scales total, factor, specific risk, tracking error, factor ``volatility`` and ``contribution``, asset
        ``mcr`` and ``contribution``; exposures, weights, correlations and shares are unchanged. Only a daily
        decomposition can be annualized.
        """
        if self.periods_per_year != 1:
            raise PortfolioError(f"this decomposition is already annualized ({self.periods_per_year} periods/year)")
        if periods_per_year < 1:
            raise PortfolioError(f"periods_per_year must be >= 1, not {periods_per_year}")
        scale = float(np.sqrt(periods_per_year))
        return replace(
            self,
            total_risk=self.total_risk * scale,
            factor_risk=self.factor_risk * scale,
            specific_risk=self.specific_risk * scale,
            tracking_error=None if self.tracking_error is None else self.tracking_error * scale,
            factor_contributions=self.factor_contributions.with_columns(pl.col("volatility", "contribution") * scale),
            asset_contributions=self.asset_contributions.with_columns(pl.col("mcr", "contribution") * scale),
            periods_per_year=periods_per_year,
        )


@dataclass(frozen=True)
class _Holdings:
    """Aligned portfolio (and benchmark) weights, the dropped symbols and the weight checks' warnings."""

    portfolio: np.ndarray
    benchmark: np.ndarray | None
    dropped: tuple[str, ...]
    warnings: tuple[str, ...]


def _holdings(
    snapshot: RiskModelSnapshot, weights: Weights, benchmark: Weights | None, unknown: Unknown, allow_unnormalized: bool
) -> _Holdings:
    """Align and check the weights (see :func:`check_weights`); each warning is also emitted as a
    :class:`WeightsWarning` pointing at the caller of the public function."""
    portfolio, dropped = snapshot._align(weights, "weights", unknown, stacklevel=4)
    messages = check_weights(portfolio, symbols=snapshot.symbols, allow_unnormalized=allow_unnormalized)
    bench = None
    if benchmark is not None:
        bench, bench_dropped = snapshot._align(benchmark, "benchmark weights", unknown, stacklevel=4)
        dropped += tuple(s for s in bench_dropped if s not in dropped)
        messages += check_weights(
            bench, what="benchmark weights", symbols=snapshot.symbols, allow_unnormalized=allow_unnormalized
        )
    for message in messages:
        warnings.warn(message, WeightsWarning, stacklevel=3)
    return _Holdings(portfolio, bench, dropped, messages)


def decompose_risk(
    snapshot: RiskModelSnapshot,
    weights: Weights,
    benchmark: Weights | None = None,
    *,
    unknown: Unknown = "raise",
    allow_unnormalized: bool = False,
) -> RiskDecomposition:
    """Decompose the daily risk of a portfolio (or, with a benchmark, of its active weights) in O(NK).

    Parameters
    ----------
    snapshot: the date's risk model (daily units).
    weights: portfolio weights as fractions of capital: a frame ``symbol, weight``, a mapping symbol → weight
        or an (N,) array in ``snapshot.symbols`` order (the fast path). Negative weights are shorts.
    benchmark: optional benchmark weights in the same forms; the decomposition is then of ``w − b`` and
        ``tracking_error`` is its total risk.
    unknown: ``"raise"`` (default) on symbols the model lacks, or ``"drop"`` them with a warning.
    allow_unnormalized: False (default) checks the weights and the benchmark with :func:`check_weights`:
        percentage-like weights raise, a sum other than 1 warns (also in ``warnings`` of the result). True for
        long-short, leveraged, partly invested books or active weights.

    Returns
    -------
    :class:`RiskDecomposition` with daily figures; contributions add up exactly (see its attributes).
    """
    holdings = _holdings(snapshot, weights, benchmark, unknown, allow_unnormalized)
    portfolio, bench, dropped = holdings.portfolio, holdings.benchmark, holdings.dropped
    h = portfolio if bench is None else portfolio - bench
    exposures = snapshot.exposures
    x = exposures.T @ h
    fx = snapshot.factor_covariance @ x
    factor_terms = x * fx
    factor_var = max(float(factor_terms.sum()), 0.0)
    specific_var_n = snapshot.specific_vol**2 * h
    specific_var = float(specific_var_n @ h)
    total_var = factor_var + specific_var
    total_risk = float(np.sqrt(total_var))
    factor_risk = float(np.sqrt(factor_var))
    sigma_h = exposures @ fx + specific_var_n

    with np.errstate(divide="ignore", invalid="ignore"):
        mcr = sigma_h / total_risk if total_risk > 0 else np.full_like(h, np.nan)
        asset_contribution = h * mcr
        asset_share = asset_contribution / total_risk if total_risk > 0 else np.full_like(h, np.nan)
        factor_vol = snapshot._factor_vol
        correlation = fx / (factor_vol * factor_risk)
        correlation[(factor_vol == 0) | (factor_risk == 0)] = np.nan
        factor_contribution = factor_terms / factor_risk if factor_risk > 0 else np.zeros_like(x)
        variance_share = factor_terms / total_var if total_var > 0 else np.full_like(x, np.nan)
    factor_share = factor_var / total_var if total_var > 0 else float("nan")
    specific_share = specific_var / total_var if total_var > 0 else float("nan")

    factor_names = snapshot._factor_series
    return RiskDecomposition(
        total_risk=total_risk,
        factor_risk=factor_risk,
        specific_risk=float(np.sqrt(specific_var)),
        factor_variance_share=factor_share,
        specific_variance_share=specific_share,
        tracking_error=None if bench is None else total_risk,
        exposures=pl.DataFrame([factor_names, pl.Series("exposure", x)]),
        factor_contributions=pl.DataFrame(
            [
                factor_names,
                pl.Series("exposure", x),
                pl.Series("volatility", factor_vol),
                pl.Series("correlation", correlation),
                pl.Series("contribution", factor_contribution),
                pl.Series("variance_share", variance_share),
            ]
        ),
        asset_contributions=pl.DataFrame(
            [
                snapshot._symbol_series,
                pl.Series(WEIGHT, h),
                pl.Series("mcr", mcr),
                pl.Series("contribution", asset_contribution),
                pl.Series("share", asset_share),
            ]
        ),
        dropped_symbols=dropped,
        warnings=holdings.warnings,
    )


def portfolio_exposures(
    snapshot: RiskModelSnapshot,
    weights: Weights,
    benchmark: Weights | None = None,
    *,
    unknown: Unknown = "raise",
    allow_unnormalized: bool = False,
) -> pl.DataFrame:
    """Factor exposures ``Bᵀw`` of a portfolio, its benchmark and the active difference.

    Returns ``factor, portfolio, benchmark, active`` with one row per factor. Without a benchmark the
    benchmark column is 0 (cash) and ``active`` equals ``portfolio``. Weights, ``unknown`` and
    ``allow_unnormalized`` as in :func:`decompose_risk` (the checks' warnings are :class:`WeightsWarning`).
    """
    holdings = _holdings(snapshot, weights, benchmark, unknown, allow_unnormalized)
    portfolio, bench = holdings.portfolio, holdings.benchmark
    x_portfolio = snapshot.exposures.T @ portfolio
    x_benchmark = np.zeros_like(x_portfolio) if bench is None else snapshot.exposures.T @ bench
    return pl.DataFrame(
        [
            snapshot._factor_series,
            pl.Series("portfolio", x_portfolio),
            pl.Series("benchmark", x_benchmark),
            pl.Series("active", x_portfolio - x_benchmark),
        ]
    )


def attribute_returns(
    exposures: pl.DataFrame,
    factor_returns: pl.DataFrame,
    weights: pl.DataFrame | Mapping[str, float],
    asset_returns: pl.DataFrame,
) -> pl.DataFrame:
    """Ex-post attribution of portfolio returns to factors, for every date at once.

    For each date ``t`` of ``factor_returns``: portfolio exposures ``x_t = Σ_n w_{n,t} B_{n,t}``, factor
    contributions ``x_{k,t} f_{k,t}``, ``total = Σ_n w_{n,t} r_{n,t}`` and ``specific = total − Σ_k x_{k,t}
    f_{k,t}``, so the factor columns and ``specific`` add up to ``total`` exactly.

    Parameters
    ----------
    exposures: ``date, symbol`` + one column per factor: the exposures that explain the return of ``date``
        (align any lag beforehand, e.g. with :attr:`FactorReturns.exposures`).
    factor_returns: ``date`` + the same factor columns: daily factor returns (fractions).
    weights: ``date, symbol, weight`` (weights held over each date), or static weights applied on every
        date — a frame ``symbol, weight`` or a mapping symbol → weight. Fractions of capital; need not sum
        to 1. Every date of ``factor_returns`` needs dated weights.
    asset_returns: ``date, symbol, asset_returns``: daily simple returns (fractions).

    Every held (date, symbol) — non-zero weight — needs finite exposures and an asset return; otherwise
    :class:`PortfolioError` names how many and which.

    Returns
    -------
    ``date`` + one column per factor (contribution, fraction of capital) + ``specific`` + ``total``, sorted
    by date.
    """
    for name, frame, required in (
        ("exposures", exposures, (DATE, SYMBOL)),
        ("factor_returns", factor_returns, (DATE,)),
        ("asset_returns", asset_returns, (DATE, SYMBOL, RETURNS)),
    ):
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise PortfolioError(f"{name} frame lacks column(s) {missing}; it has {frame.columns}")
    factors = [c for c in factor_returns.columns if c != DATE]
    exposure_factors = [c for c in exposures.columns if c not in (DATE, SYMBOL)]
    if set(factors) != set(exposure_factors):
        raise PortfolioError(
            "factors of exposures and factor_returns do not match: "
            f"only in exposures {sorted(set(exposure_factors) - set(factors))}, "
            f"only in factor_returns {sorted(set(factors) - set(exposure_factors))}"
        )
    if not factors:
        raise PortfolioError("factor_returns has no factor columns")
    reserved = sorted(set(factors) & {SYMBOL, WEIGHT, RETURNS, SPECIFIC, TOTAL})
    if reserved:
        raise PortfolioError(f"factor names clash with reserved column names: {reserved}")
    for name, frame, key in (
        ("exposures", exposures, [DATE, SYMBOL]),
        ("factor_returns", factor_returns, [DATE]),
        ("asset_returns", asset_returns, [DATE, SYMBOL]),
    ):
        if frame.select(pl.struct(key).is_duplicated().any()).item():
            raise PortfolioError(f"{name} has duplicated {tuple(key)} rows")

    dates = factor_returns.select(DATE).sort(DATE)
    held = _dated_weights(weights, dates)
    if held.select(pl.struct(DATE, SYMBOL).is_duplicated().any()).item():
        raise PortfolioError("weights have duplicated (date, symbol) rows")
    no_weights = dates.join(held.select(DATE).unique(), on=DATE, how="anti")
    if no_weights.height:
        raise PortfolioError(
            f"weights are missing for {no_weights.height} date(s) of factor_returns: "
            f"{_examples(no_weights.get_column(DATE).to_list())}"
        )
    bad_weight = held.filter(~pl.col(WEIGHT).is_finite() | pl.col(WEIGHT).is_null())
    if bad_weight.height:
        raise PortfolioError(f"weights are not finite for {bad_weight.height} row(s): {_pairs(bad_weight)}")

    held = held.join(dates, on=DATE, how="semi").filter(pl.col(WEIGHT) != 0.0)
    joined = held.join(exposures.select(DATE, SYMBOL, *factors), on=[DATE, SYMBOL], how="left").join(
        asset_returns.select(DATE, SYMBOL, RETURNS), on=[DATE, SYMBOL], how="left"
    )
    finite_exposures = pl.all_horizontal([pl.col(f).cast(pl.Float64).is_finite().fill_null(False) for f in factors])
    lacking = joined.filter(~finite_exposures)
    if lacking.height:
        raise PortfolioError(f"exposures are missing or not finite for {lacking.height} held row(s): {_pairs(lacking)}")
    lacking = joined.filter(~pl.col(RETURNS).cast(pl.Float64).is_finite().fill_null(False))
    if lacking.height:
        raise PortfolioError(
            f"asset returns are missing or not finite for {lacking.height} held row(s): {_pairs(lacking)}"
        )

    exposure_sums = joined.group_by(DATE).agg(
        *[(pl.col(WEIGHT) * pl.col(f).cast(pl.Float64)).sum().alias(f) for f in factors],
        (pl.col(WEIGHT) * pl.col(RETURNS).cast(pl.Float64)).sum().alias(TOTAL),
    )
    frame = dates.join(exposure_sums, on=DATE, how="left").join(
        factor_returns.select(DATE, *[pl.col(f).alias(f"__f_{f}") for f in factors]), on=DATE, how="left"
    )
    # A date whose held weights are all zero has no rows in the join: its contributions are 0.
    contributions = [(pl.col(f).fill_null(0.0) * pl.col(f"__f_{f}").cast(pl.Float64)).alias(f) for f in factors]
    frame = frame.with_columns(*contributions, pl.col(TOTAL).fill_null(0.0))
    bad_factor = frame.filter(~pl.all_horizontal([pl.col(f).is_finite().fill_null(False) for f in factors]))
    if bad_factor.height:
        raise PortfolioError(
            f"factor returns are missing or not finite on {bad_factor.height} date(s): "
            f"{_examples(bad_factor.get_column(DATE).to_list())}"
        )
    return frame.select(
        DATE,
        *factors,
        (pl.col(TOTAL) - pl.sum_horizontal(factors)).alias(SPECIFIC),
        TOTAL,
    )


def _dated_weights(weights: pl.DataFrame | Mapping[str, float], dates: pl.DataFrame) -> pl.DataFrame:
    if isinstance(weights, Mapping):
        weights = pl.DataFrame(
            {SYMBOL: [str(s) for s in weights], WEIGHT: np.fromiter(weights.values(), dtype=np.float64)},
            schema={SYMBOL: pl.String, WEIGHT: pl.Float64},
        )
    if not {SYMBOL, WEIGHT} <= set(weights.columns):
        raise PortfolioError(f"weights frame needs columns '{SYMBOL}', '{WEIGHT}'; it has {weights.columns}")
    weights = weights.with_columns(pl.col(WEIGHT).cast(pl.Float64))
    if DATE in weights.columns:
        return weights.select(DATE, SYMBOL, WEIGHT)
    return dates.join(weights.select(SYMBOL, WEIGHT), how="cross")


def _pairs(frame: pl.DataFrame) -> str:
    rows = frame.select(DATE, SYMBOL).head(6).rows()
    return _examples([(str(d), s) for d, s in rows])


def cumulative_attribution(attribution: pl.DataFrame) -> pl.DataFrame:
    """Running sums over dates of an :func:`attribute_returns` frame (arithmetic, not compounded).

    Every column but ``date`` becomes its cumulative sum in date order, so the cumulative factor columns and
    ``specific`` still add up to the cumulative ``total``. Sums of simple returns are not compounded returns;
    link them geometrically (e.g. Carino) if that is needed.
    """
    if DATE not in attribution.columns:
        raise PortfolioError(f"attribution frame lacks '{DATE}'; it has {attribution.columns}")
    values = [c for c in attribution.columns if c != DATE]
    return attribution.sort(DATE).select(DATE, pl.col(values).cum_sum())
