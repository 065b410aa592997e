"""Compiled per-date statistics of long rows in date order: each date's rows are one contiguous segment.

The cross-sectional styles (toraniko's value, size and momentum) standardize, winsorize and take quantiles
date by date. On rows sorted by date each date is a segment ``[bounds[d], bounds[d + 1])`` of the row arrays,
so every statistic is one or two passes over the segment, with no (dates × width) grid to scatter the rows
into and gather them back from. Each kernel works on the segments ``[first, last)`` and writes its part of
``out``: blocks of segments are independent and run in :func:`factor_engine._dense.run_parallel`'s threads.

The definitions are those of the grid functions in :mod:`factor_engine._dense` (which document them): a
statistic is over a segment's finite values (for the nearest-rank quantile, its non-NaN values), the same
constant-segment rule, the same interpolation. Only the order of summation differs (sequential here,
pairwise in numpy): results agree to a few units in the last place.
"""

from __future__ import annotations

import numpy as np

from factor_engine._jit import kernel


@kernel
def standardize_segments(
    values: np.ndarray, bounds: np.ndarray, tolerance: float, out: np.ndarray, first: int, last: int
) -> None:  # pragma: no cover - compiled; tested through factor_engine._dense.standardize_rows
    """``out`` = each value minus its segment's mean over the finite values, over their sample std (ddof 1);
    NaN for the whole segment when the std is not above ``tolerance · |mean|`` (a constant segment, or fewer
    than two finite values). Non-finite values go through the same arithmetic (±inf stays ±inf)."""
    for d in range(first, last):
        lo, hi = bounds[d], bounds[d + 1]
        count = 0
        total = 0.0
        for i in range(lo, hi):
            x = values[i]
            if np.isfinite(x):
                count += 1
                total += x
        mean = total / count
        squares = 0.0
        for i in range(lo, hi):
            x = values[i]
            if np.isfinite(x):
                deviation = x - mean
                squares += deviation * deviation
        std = np.sqrt(squares / (count - 1))
        if not std > tolerance * abs(mean):
            std = np.nan
        for i in range(lo, hi):
            out[i] = (values[i] - mean) / std


@kernel
def _kept(values: np.ndarray, lo: int, hi: int, keep_infinite: bool) -> np.ndarray:  # pragma: no cover
    """The segment's finite values (also ±inf with ``keep_infinite``: every non-NaN value), in row order."""
    kept = np.empty(hi - lo)
    count = 0
    for i in range(lo, hi):
        x = values[i]
        if (keep_infinite and not np.isnan(x)) or np.isfinite(x):
            kept[count] = x
            count += 1
    return kept[:count]


@kernel
def _order_statistics(kept: np.ndarray, k: int) -> tuple[float, float]:  # pragma: no cover - compiled
    """The ``k``-th and ``k + 1``-th smallest of ``kept`` (the ``k``-th twice when it is the largest), by
    selection (no sort): after partitioning at ``k`` the next one is the smallest of those after it."""
    part = np.partition(kept, k)
    following = part[k + 1 :]
    return part[k], (following.min() if following.shape[0] else part[k])


@kernel
def _linear_quantile(kept: np.ndarray, q: float) -> float:  # pragma: no cover - compiled
    """numpy's default (linear) quantile ``q`` of the values, interpolated as
    :func:`factor_engine._dense.quantile_linear` does (NaN without values)."""
    count = kept.shape[0]
    if count == 0:
        return np.nan
    position = q * (count - 1)
    lower = max(int(np.floor(position)), 0)
    a, b = _order_statistics(kept, lower)
    frac = position - lower
    diff = b - a
    return b - diff * (1.0 - frac) if frac >= 0.5 else a + diff * frac


@kernel
def winsorize_segments(
    values: np.ndarray, bounds: np.ndarray, percentile: float, out: np.ndarray, first: int, last: int
) -> None:  # pragma: no cover - compiled; tested through factor_engine._dense.winsorize_rows
    """``out`` = each value clipped to its segment's [percentile, 1 − percentile] linear quantiles of the
    finite values (±inf clipped too, NaN kept); a segment without finite values is copied as it is."""
    for d in range(first, last):
        lo, hi = bounds[d], bounds[d + 1]
        kept = _kept(values, lo, hi, False)
        lower = _linear_quantile(kept, percentile)
        upper = _linear_quantile(kept, 1.0 - percentile)
        if np.isnan(lower):
            lower = -np.inf
        if np.isnan(upper):
            upper = np.inf
        for i in range(lo, hi):
            x = values[i]
            out[i] = x if np.isnan(x) else min(max(x, lower), upper)


@kernel
def nearest_quantiles_segments(
    values: np.ndarray, bounds: np.ndarray, fractions: np.ndarray, out: np.ndarray, first: int, last: int
) -> None:  # pragma: no cover - compiled; tested through factor_engine._dense.quantile_nearest_rows
    """``out[d, j]`` = the ``fractions[j]`` quantile of segment ``d``'s non-NaN values by polars' ``nearest``
    rule (index ``(count − 1) · fraction`` rounded half away from zero); NaN without values."""
    for d in range(first, last):
        kept = _kept(values, bounds[d], bounds[d + 1], True)
        count = kept.shape[0]
        for j in range(fractions.shape[0]):
            if count == 0:
                out[d, j] = np.nan
                continue
            position = (count - 1) * fractions[j]
            index = np.floor(position)
            if position - index >= 0.5:
                index += 1.0
            k = min(max(int(index), 0), count - 1)
            out[d, j] = np.partition(kept, k)[k]
