"""Compiled steps of USE4's descriptor pipeline (:mod:`factor_engine.styles.descriptors`) on a block of dates.

Each row of a block is one date's cross-section. :func:`standardize_use4_block` and :func:`trim_use4_block`
take a row's cap-weighted mean, equal-weighted mean and sample standard deviation over its finite values in
two passes, then write the row out in a third, instead of a dozen numpy passes and work arrays per step. The
definitions are :func:`factor_engine.styles.descriptors.standardize_use4` and
:func:`~factor_engine.styles.descriptors.trim`'s (documented there); only the order of summation differs
(sequential here, pairwise in numpy).
"""

from __future__ import annotations

import numpy as np

from factor_engine._jit import kernel


@kernel
def _row_moments(
    values: np.ndarray, cap_weights: np.ndarray, row: int, tolerance: float
) -> tuple[float, float]:  # pragma: no cover - compiled; tested through factor_engine.styles.descriptors
    """Row ``row``'s cap-weighted mean and equal-weighted sample std (ddof 1, around the equal-weighted mean)
    over its finite values; the std is NaN unless above ``tolerance · max(|means|)`` (no dispersion)."""
    count = 0
    total = 0.0
    weight = 0.0
    weighted = 0.0
    for j in range(values.shape[1]):
        x = values[row, j]
        if np.isfinite(x):
            count += 1
            total += x
            weight += cap_weights[row, j]
            weighted += cap_weights[row, j] * x
    cap_mean = weighted / weight
    mean = total / count
    squares = 0.0
    for j in range(values.shape[1]):
        x = values[row, j]
        if np.isfinite(x):
            deviation = x - mean
            squares += deviation * deviation
    std = np.sqrt(squares / (count - 1))
    if not std > tolerance * max(max(abs(mean), abs(cap_mean)), 1e-300):
        std = np.nan
    return cap_mean, std


@kernel
def standardize_use4_block(
    values: np.ndarray, cap_weights: np.ndarray, tolerance: float, out: np.ndarray
) -> None:  # pragma: no cover - compiled; tested through factor_engine.styles.descriptors
    """``out`` = each row minus its cap-weighted mean over its equal-weighted std (``out`` may be ``values``)."""
    for row in range(values.shape[0]):
        cap_mean, std = _row_moments(values, cap_weights, row, tolerance)
        for j in range(values.shape[1]):
            out[row, j] = (values[row, j] - cap_mean) / std


@kernel
def trim_use4_block(
    values: np.ndarray, cap_weights: np.ndarray, limit: float, tolerance: float, out: np.ndarray
) -> None:  # pragma: no cover - compiled; tested through factor_engine.styles.descriptors
    """``out`` = each row clipped to its cap-weighted mean ± ``limit`` std (±inf clipped too, NaN kept; the
    whole row NaN without dispersion), then standardized as :func:`standardize_use4_block`."""
    for row in range(values.shape[0]):
        cap_mean, std = _row_moments(values, cap_weights, row, tolerance)
        low = cap_mean - limit * std
        high = cap_mean + limit * std
        for j in range(values.shape[1]):
            x = values[row, j]
            out[row, j] = np.nan if np.isnan(x) or np.isnan(low) else min(max(x, low), high)
    standardize_use4_block(out, cap_weights, tolerance, out)
