"""Cross-sectional helpers: winsorize, center/standardize, percentile masks, fills and smoothing.

Every transform is a ``polars.Expr`` builder (or a lazy frame transform) evaluated per cross-section
(``over`` a date column) so it chains lazily inside ``select`` / ``with_columns``. Missing values
(null or NaN) never enter a statistic and stay missing in the output. These are the building blocks of
the built-in style factors and of user-registered custom factors (see :mod:`factor_engine.styles`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from factor_engine.panel import DATE, MARKET_CAP, SYMBOL

# Relative size of a cross-sectional standard deviation below which the cross-section counts as constant.
CONSTANT_TOL = 1e-12

__all__ = [
    "center_xsection",
    "exp_weights",
    "fill_features",
    "finite",
    "norm_xsection",
    "percentiles_xsection",
    "smooth_features",
    "top_n_by_group",
    "winsorize_xsection",
]


def _col(target: str | pl.Expr) -> pl.Expr:
    return pl.col(target) if isinstance(target, str) else target


def finite(target: str | pl.Expr) -> pl.Expr:
    """The values of ``target`` that are finite (drops null, NaN and ±inf); use inside aggregations."""
    expr = _col(target)
    return expr.filter(expr.is_finite())


def center_xsection(target: str | pl.Expr, over: str = DATE, *, standardize: bool = False) -> pl.Expr:
    """Subtract the cross-sectional mean of ``target`` per ``over`` group (and divide by its std if asked).

    Parameters
    ----------
    target: column name or expression holding the raw characteristic.
    over: column defining the cross-section, normally the date.
    standardize: also divide by the cross-sectional sample standard deviation (ddof=1).

    The mean and standard deviation use only finite values; null/NaN inputs stay null/NaN. A constant
    cross-section (standard deviation zero up to rounding) standardizes to null.
    """
    expr = _col(target)
    centered = expr - finite(expr).mean().over(over)
    if standardize:
        std = finite(expr).std().over(over)
        mean = finite(expr).mean().over(over)
        # a constant cross-section (std zero up to rounding) has no standardized value
        return pl.when(std > CONSTANT_TOL * mean.abs()).then(centered / std)
    return centered


def norm_xsection(target: str | pl.Expr, over: str = DATE, *, lower: float = 0.0, upper: float = 1.0) -> pl.Expr:
    """Rescale ``target`` linearly per ``over`` group so its minimum maps to ``lower`` and maximum to ``upper``.

    A constant cross-section maps to ``lower``; null and NaN stay missing.
    """
    expr = _col(target)
    lo = expr.drop_nans().min().over(over)
    hi = expr.drop_nans().max().over(over)
    return (
        pl.when(expr.is_nan() | expr.is_null())
        .then(expr)
        .when(hi != lo)
        .then((expr - lo) / (hi - lo) * (upper - lower) + lower)
        .otherwise(pl.lit(lower))
    )


def winsorize_xsection(target: str | pl.Expr, over: str = DATE, *, percentile: float = 0.05) -> pl.Expr:
    """Clip ``target`` per ``over`` group to its [percentile, 1 − percentile] quantiles (linear interpolation).

    Parameters
    ----------
    percentile: fraction in [0, 0.5], e.g. 0.05 clips to the 5th and 95th percentiles.

    Quantiles are computed on the finite values only; ±inf are clipped to the bounds, null/NaN stay missing.
    """
    _check_fraction("percentile", percentile, upper=0.5)
    expr = _col(target)
    lower = finite(expr).quantile(percentile, interpolation="linear").over(over)
    upper = finite(expr).quantile(1.0 - percentile, interpolation="linear").over(over)
    return expr.clip(lower, upper)


def percentiles_xsection(
    target: str | pl.Expr,
    over: str = DATE,
    *,
    lower_pct: float,
    upper_pct: float,
    fill_value: float = 0.0,
) -> pl.Expr:
    """Keep ``target`` where it is at or below the ``lower_pct`` or at or above the ``upper_pct`` quantile of
    its ``over`` group and replace the values in between (and missing ones) by ``fill_value``.

    This is the high-minus-low mask of the size factor (quantiles use polars' ``nearest`` rule).
    """
    _check_fraction("lower_pct", lower_pct)
    _check_fraction("upper_pct", upper_pct)
    if lower_pct > upper_pct:
        raise ValueError(f"lower_pct ({lower_pct}) must not exceed upper_pct ({upper_pct})")
    expr = _col(target)
    q_lo = expr.drop_nans().quantile(lower_pct).over(over)
    q_hi = expr.drop_nans().quantile(upper_pct).over(over)
    return pl.when(expr.is_not_nan() & ((expr <= q_lo) | (expr >= q_hi))).then(expr).otherwise(pl.lit(fill_value))


def exp_weights(window: int, half_life: int | float) -> np.ndarray:
    """Exponentially decaying weights over ``window`` observations, oldest first, newest weight 1.

    Parameters
    ----------
    window: number of trailing observations (positive integer).
    half_life: number of observations over which a weight halves (positive).
    """
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window <= 0:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    if not np.isfinite(half_life) or half_life <= 0:
        raise ValueError(f"half_life must be positive, got {half_life!r}")
    decay = np.log(2.0) / half_life
    weights: np.ndarray = np.exp(-decay * np.arange(window))[::-1]
    return weights


def fill_features(
    df: pl.DataFrame | pl.LazyFrame,
    features: Sequence[str],
    *,
    sort_col: str = DATE,
    over: str = SYMBOL,
) -> pl.LazyFrame:
    """Cast ``features`` to Float64, turn NaN/±inf into null and forward-fill each symbol's history.

    Returns a LazyFrame sorted by ``sort_col``.
    """
    _require_columns(df, [*features, sort_col, over])
    cleaned = [
        pl.when(pl.col(f).cast(pl.Float64).is_finite()).then(pl.col(f).cast(pl.Float64)).alias(f) for f in features
    ]
    return (
        df.lazy()
        .with_columns(cleaned)
        .sort(sort_col, maintain_order=True)
        .with_columns([pl.col(f).forward_fill().over(over).alias(f) for f in features])
    )


def smooth_features(
    df: pl.DataFrame | pl.LazyFrame,
    features: Sequence[str],
    *,
    window: int,
    sort_col: str = DATE,
    over: str = SYMBOL,
) -> pl.LazyFrame:
    """Replace each of ``features`` by its trailing ``window``-observation rolling mean per symbol."""
    if window <= 0:
        raise ValueError(f"window must be a positive integer, got {window}")
    _require_columns(df, [*features, sort_col, over])
    return (
        df.lazy()
        .sort(sort_col, maintain_order=True)
        .with_columns([pl.col(f).rolling_mean(window_size=window).over(over).alias(f) for f in features])
    )


def top_n_by_group(
    df: pl.DataFrame | pl.LazyFrame,
    n: int,
    *,
    rank_col: str = MARKET_CAP,
    over: str = DATE,
    keep_only: bool = True,
) -> pl.LazyFrame:
    """The ``n`` largest rows by ``rank_col`` in each ``over`` group (e.g. the top 3,000 by market cap per date).

    With ``keep_only=False`` every row is kept and an integer ``rank_mask`` column (1 in the top ``n``)
    is added instead.
    """
    if n <= 0:
        raise ValueError(f"n must be a positive integer, got {n}")
    _require_columns(df, [rank_col, over])
    rank = pl.col(rank_col).rank(method="ordinal", descending=True).over(over)
    lazy = df.lazy()
    if keep_only:
        return lazy.filter(rank <= n)
    return lazy.with_columns((rank <= n).cast(pl.Int8).alias("rank_mask"))


def _require_columns(df: pl.DataFrame | pl.LazyFrame, columns: Sequence[str]) -> None:
    present = df.collect_schema().names() if isinstance(df, pl.LazyFrame) else df.columns
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(f"missing column(s) {missing}; the frame has {present}")


def _check_fraction(name: str, value: float, *, upper: float = 1.0) -> None:
    if not (0.0 <= value <= upper):
        raise ValueError(f"{name} must be a fraction between 0 and {upper}, got {value!r}")
