"""Compiled kernels of USE4's time-series descriptors over every date (:func:`.use4.beta_descriptors`,
:func:`.use4.dastd`, :func:`.use4.cmra`).

Each kernel takes the (dates, assets) C-ordered inputs whole and fills the columns ``start:stop`` of its
preallocated outputs, walking the dates in order with one accumulator per asset of the block (each date's row
of the block read contiguously). An exponentially weighted sum over the last ``window`` dates is the running
sum ``S(t) = decay · S(t − 1) + x(t)`` minus ``decay^window · S(t − window)``; ``S(t − window)`` is carried
by a second running sum fed the values ``window`` dates late, which repeats the first's arithmetic exactly, so
no history is kept. Counts of observations are running counts, incremented and decremented exactly.
"""

from __future__ import annotations

import numpy as np

from factor_engine._jit import kernel


@kernel
def beta_block(
    returns: np.ndarray,
    market: np.ndarray,
    start: int,
    stop: int,
    decay: float,
    decay_window: float,
    window: int,
    min_observations: int,
    slope: np.ndarray,
    sigma: np.ndarray,
) -> None:  # pragma: no cover - compiled; its tests call it through beta_descriptors
    """Writes into ``slope`` and ``sigma`` (columns ``start:stop``, every date) the slope and the residual
    standard deviation of the regression of each asset's returns on ``market`` weighted ``decay^k`` over the
    last ``window`` dates where both are finite (``decay_window = decay^window``); NaN with fewer than
    ``min_observations`` such dates or where the market's weighted variance is below ``1e-14`` times its
    weighted mean square."""
    width = stop - start
    sums = np.zeros((6, width))  # S(t) of w, x, y, xx, xy, yy
    late = np.zeros((6, width))  # the same running sums fed the values window dates late: S(t − window)
    count = np.zeros(width, dtype=np.int64)
    for t in range(returns.shape[0]):
        m = market[t]
        market_ok = np.isfinite(m)
        has_old = t >= window
        old_row = t - window if has_old else t
        old_m = market[old_row]
        old_market_ok = has_old and np.isfinite(old_m)
        for j in range(width):
            r = returns[t, start + j]
            o, x, y = 0.0, 0.0, 0.0
            if market_ok and np.isfinite(r):
                o, x, y = 1.0, m, r
                count[j] += 1
            sums[0, j] = decay * sums[0, j] + o
            sums[1, j] = decay * sums[1, j] + x
            sums[2, j] = decay * sums[2, j] + y
            sums[3, j] = decay * sums[3, j] + x * x
            sums[4, j] = decay * sums[4, j] + x * y
            sums[5, j] = decay * sums[5, j] + y * y
            old_r = returns[old_row, start + j]
            o, x, y = 0.0, 0.0, 0.0
            if old_market_ok and np.isfinite(old_r):
                o, x, y = 1.0, old_m, old_r
                count[j] -= 1
            late[0, j] = decay * late[0, j] + o
            late[1, j] = decay * late[1, j] + x
            late[2, j] = decay * late[2, j] + y
            late[3, j] = decay * late[3, j] + x * x
            late[4, j] = decay * late[4, j] + x * y
            late[5, j] = decay * late[5, j] + y * y
            w = sums[0, j] - decay_window * late[0, j]
            sx = sums[1, j] - decay_window * late[1, j]
            sy = sums[2, j] - decay_window * late[2, j]
            sxx = sums[3, j] - decay_window * late[3, j]
            sxy = sums[4, j] - decay_window * late[4, j]
            syy = sums[5, j] - decay_window * late[5, j]
            mx = sx / w
            my = sy / w
            mean_xx = sxx / w
            var_x = mean_xx - mx * mx
            cov = sxy / w - mx * my
            b = cov / var_x
            # weighted mean squared residual: var(y) − β² var(x), the regression having an intercept
            residual = syy / w - my * my - b * cov
            if residual < 0.0:  # NaN stays NaN
                residual = 0.0
            if mean_xx < 1e-300:
                mean_xx = 1e-300
            if count[j] >= min_observations and var_x > 1e-14 * mean_xx:
                slope[t, start + j] = b
                sigma[t, start + j] = np.sqrt(residual)
            else:
                slope[t, start + j] = np.nan
                sigma[t, start + j] = np.nan


@kernel
def dastd_block(
    returns: np.ndarray,
    start: int,
    stop: int,
    decay: float,
    decay_window: float,
    window: int,
    min_observations: int,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled; its tests call it through dastd
    """Writes into ``out`` (columns ``start:stop``, every date) the standard deviation of each asset's finite
    returns weighted ``decay^k`` over the last ``window`` dates (``decay_window = decay^window``), around their
    weighted mean; NaN with fewer than ``min_observations`` of them."""
    width = stop - start
    sums = np.zeros((3, width))  # S(t) of w, y, yy
    late = np.zeros((3, width))  # S(t − window)
    count = np.zeros(width, dtype=np.int64)
    for t in range(returns.shape[0]):
        has_old = t >= window
        old_row = t - window if has_old else t
        for j in range(width):
            r = returns[t, start + j]
            o, y = 0.0, 0.0
            if np.isfinite(r):
                o, y = 1.0, r
                count[j] += 1
            sums[0, j] = decay * sums[0, j] + o
            sums[1, j] = decay * sums[1, j] + y
            sums[2, j] = decay * sums[2, j] + y * y
            old_r = returns[old_row, start + j]
            o, y = 0.0, 0.0
            if has_old and np.isfinite(old_r):
                o, y = 1.0, old_r
                count[j] -= 1
            late[0, j] = decay * late[0, j] + o
            late[1, j] = decay * late[1, j] + y
            late[2, j] = decay * late[2, j] + y * y
            w = sums[0, j] - decay_window * late[0, j]
            mean = (sums[1, j] - decay_window * late[1, j]) / w
            variance = (sums[2, j] - decay_window * late[2, j]) / w - mean * mean
            if variance < 0.0:  # NaN stays NaN
                variance = 0.0
            out[t, start + j] = np.sqrt(variance) if count[j] >= min_observations else np.nan


@kernel
def cmra_block(
    returns: np.ndarray, start: int, stop: int, months: int, month_days: int, min_observations: int, out: np.ndarray
) -> None:  # pragma: no cover - compiled; its tests call it through cmra
    """Writes into ``out`` (columns ``start:stop``, every date) ``ln(1 + Z_max) − ln(1 + Z_min)`` over
    ``Z(m)``, the sum of the log returns over the last ``m · month_days`` dates, ``m = 1 … months`` (a
    non-finite return or one of −100 % or worse counting as 0); NaN before a full ``months · month_days``
    window, with fewer than ``min_observations`` returns in it, or where ``1 + Z_min ≤ 0``.

    ``Z(m)`` is the difference of two cumulative sums of the logs (``P(t + 1) = P(t) + log1p(r(t))``), the
    last ``months · month_days + 1`` of them kept in a ring per asset."""
    width = stop - start
    span = months * month_days
    size = span + 1
    ring = np.zeros((size, width))  # P(k) at row k % size; P(0) = 0
    cumulative = np.zeros(width)
    count = np.zeros(width, dtype=np.int64)
    z_max = np.empty(width)
    z_min = np.empty(width)
    for t in range(returns.shape[0]):
        has_old = t >= span
        old_row = t - span if has_old else t
        row = (t + 1) % size
        for j in range(width):
            r = returns[t, start + j]
            log = 0.0
            if np.isfinite(r) and r > -1.0:
                log = np.log1p(r)
                count[j] += 1
            cumulative[j] = cumulative[j] + log
            ring[row, j] = cumulative[j]
            old_r = returns[old_row, start + j]
            if has_old and np.isfinite(old_r) and old_r > -1.0:
                count[j] -= 1
        if t < span - 1:
            for j in range(width):
                out[t, start + j] = np.nan
            continue
        first = (t + 1 - month_days) % size
        for j in range(width):
            z_max[j] = cumulative[j] - ring[first, j]
            z_min[j] = z_max[j]
        for m in range(2, months + 1):
            past = (t + 1 - m * month_days) % size
            for j in range(width):
                z = cumulative[j] - ring[past, j]
                if z > z_max[j]:
                    z_max[j] = z
                if z < z_min[j]:
                    z_min[j] = z
        for j in range(width):
            if count[j] >= min_observations and z_min[j] > -1.0:
                out[t, start + j] = np.log1p(z_max[j]) - np.log1p(z_min[j])
            else:
                out[t, start + j] = np.nan
