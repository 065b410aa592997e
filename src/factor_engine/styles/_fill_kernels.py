"""Compiled kernels of USE4's missing-exposure fill (:mod:`factor_engine.styles.fill`).

They work on rows (one per universe row used), each carrying the index of its date; the per-date (and per
(date, sector) cell) sums are accumulated by that index, so the rows may come in any order. A per-date sum adds
a run of consecutive rows of the same date in a register before adding it to the date's entry (rows in date
order: each date's sum is the plain sequential sum; in any other order, a date's runs are added in turn). USE4's
size is two passes per standardization (the means, then the squared deviations, the clipping at 3σ done in the
first pass of the second) and one for the standardized values; the fill is a pass for the within-cell sums and
one for the fitted values.
"""

from __future__ import annotations

import numpy as np

from factor_engine._jit import kernel


@kernel
def sorted_date_index(days: np.ndarray, index: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """For ``days`` in non-decreasing order: writes into ``index`` each row's position among the distinct days
    and returns the first row of each distinct day; an empty array (``index`` partly written) when ``days`` is
    not in order."""
    n_rows = days.shape[0]
    starts = np.empty(n_rows, dtype=np.int64)  # only the first entries are touched
    n_dates = 0
    for i in range(n_rows):
        if i == 0 or days[i] != days[i - 1]:
            if i > 0 and days[i] < days[i - 1]:
                return starts[:0].copy()
            starts[n_dates] = i
            n_dates += 1
        index[i] = n_dates - 1
    return starts[:n_dates].copy()


@kernel
def _clipped_moments(
    values: np.ndarray,
    caps: np.ndarray,
    dates: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    constant_tol: float,
    cap_mean: np.ndarray,
    std: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Clips in place each finite ``values[i]`` to ``[low, high]`` of its date (NaN where a bound is NaN), then
    writes into ``cap_mean`` and ``std`` (n_dates,) each date's ``caps``-weighted mean and equal-weighted std
    (ddof 1) of its finite values; the std is NaN unless it exceeds ``constant_tol`` times the larger of the
    absolute means (cap-weighted, equal-weighted) and ``1e-300`` (NaN when either mean is)."""
    n_rows = values.shape[0]
    n_dates = cap_mean.shape[0]
    count = np.zeros(n_dates)
    total = np.zeros(n_dates)
    cap_sum = np.zeros(n_dates)
    cap_total = np.zeros(n_dates)  # Σ cap · value
    run = -1
    run_count, run_total, run_cap_sum, run_cap_total = 0.0, 0.0, 0.0, 0.0
    lo, hi, unbounded = 0.0, 0.0, False
    for i in range(n_rows):
        d = dates[i]
        if d != run:
            if run >= 0:
                count[run] += run_count
                total[run] += run_total
                cap_sum[run] += run_cap_sum
                cap_total[run] += run_cap_total
            run = d
            run_count, run_total, run_cap_sum, run_cap_total = 0.0, 0.0, 0.0, 0.0
            lo = low[d]
            hi = high[d]
            unbounded = np.isnan(lo) or np.isnan(hi)
        v = values[i]
        if not np.isfinite(v):
            continue
        if unbounded:
            values[i] = np.nan
            continue
        if v < lo:
            v = lo
            values[i] = v
        if v > hi:
            v = hi
            values[i] = v
        c = caps[i]
        run_count += 1.0
        run_total += v
        run_cap_sum += c
        run_cap_total += c * v
    if run >= 0:
        count[run] += run_count
        total[run] += run_total
        cap_sum[run] += run_cap_sum
        cap_total[run] += run_cap_total
    mean = total / count
    for d in range(n_dates):
        cap_mean[d] = cap_total[d] / cap_sum[d]
    squares = np.zeros(n_dates)
    run = -1
    run_squares = 0.0
    center = 0.0
    for i in range(n_rows):
        d = dates[i]
        if d != run:
            if run >= 0:
                squares[run] += run_squares
            run = d
            run_squares = 0.0
            center = mean[d]
        v = values[i]
        if np.isfinite(v):
            deviation = v - center
            run_squares += deviation * deviation
    if run >= 0:
        squares[run] += run_squares
    for d in range(n_dates):
        sd = np.sqrt(squares[d] / (count[d] - 1.0))
        m = mean[d]
        cm = cap_mean[d]
        if np.isnan(m) or np.isnan(cm):
            std[d] = np.nan
            continue
        bound = max(abs(m), abs(cm))
        if bound < 1e-300:
            bound = 1e-300
        std[d] = sd if sd > constant_tol * bound else np.nan


@kernel
def size_rows(
    caps: np.ndarray,
    dates: np.ndarray,
    n_dates: int,
    trim_sigma: float,
    constant_tol: float,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled; its tests call it through fill._size_rows
    """Replaces the log caps in ``out`` (R,) (``log(caps)``, not finite where a cap is NaN, infinite or not
    positive: no size) by USE4's size of each row: the log cap standardized within its date (``dates``: each
    row's date index, any order) to a cap-weighted mean of 0 and an equal-weighted std of 1 (ddof 1), clipped
    at ``trim_sigma`` of those, then standardized again (stds as :func:`_clipped_moments` gives them). Where the
    first std is not positive (NaN: one row, caps all equal), every row with a cap gets 0; a row without one,
    NaN."""
    cap_mean = np.empty(n_dates)
    first_std = np.empty(n_dates)
    unbounded = np.full(n_dates, np.inf)
    _clipped_moments(out, caps, dates, -unbounded, unbounded, constant_tol, cap_mean, first_std)
    half_width = trim_sigma * first_std
    std = np.empty(n_dates)
    # clipped (NaN on a date without a std), then standardized
    _clipped_moments(out, caps, dates, cap_mean - half_width, cap_mean + half_width, constant_tol, cap_mean, std)
    run = -1
    flat, center, scale = False, 0.0, 0.0
    for i in range(out.shape[0]):
        d = dates[i]
        if d != run:
            run = d
            flat = not first_std[d] > 0.0
            center = cap_mean[d]
            scale = std[d]
        c = caps[i]
        if not (np.isfinite(c) and c > 0.0):
            out[i] = np.nan
        elif flat:
            out[i] = 0.0
        else:
            out[i] = (out[i] - center) / scale


@kernel
def fill_rows(
    values: np.ndarray,
    rows: np.ndarray,
    dates: np.ndarray,
    sectors: np.ndarray,
    size: np.ndarray,
    weights: np.ndarray,
    n_dates: int,
    n_sectors: int,
    min_observed: int,
    wanted: np.ndarray,
    counts: np.ndarray,
) -> None:  # pragma: no cover - compiled; its tests call it through fill._fill_rows and FillContext.fill
    """Fills in place the missing (not finite) ``values[rows[k]]`` of each date with at least ``min_observed``
    finite ones by the date's regression, weighted by ``weights``, of the finite values on sector dummies and
    ``size``: ``a_sector + b · size``. Row ``k`` has date index ``dates[k]`` (any order), sector code
    ``sectors[k]`` (0…n_sectors−1), ``size[k]`` and ``weights[k]``. The slope is from the within-sector sums,
    0 where their ``Σ w (x − x̄_sector)²`` is at most ``1e-12`` of ``Σ w x²`` (or of ``1e-300``); a sector
    without finite values that date takes the pooled intercept given that slope. Writes ``wanted[k]`` (the
    row's value is to be filled) and adds the rows filled on each date to ``counts`` (n_dates,); with
    ``n_sectors`` 0 the rows to fill are marked and counted but left missing."""
    n_rows = rows.shape[0]
    observed = np.zeros(n_dates, dtype=np.int64)
    # per (date, sector) cell: Σ w, Σ w x, Σ w y, Σ w x x, Σ w x y over the finite values
    sums = np.zeros((n_dates * n_sectors, 5))  # row d · n_sectors + s
    for k in range(n_rows):
        y = values[rows[k]]
        if np.isfinite(y):
            d = dates[k]
            observed[d] += 1
            if n_sectors > 0:
                w = weights[k]
                x = size[k]
                wx = w * x
                c = d * n_sectors + sectors[k]
                sums[c, 0] += w
                sums[c, 1] += wx
                sums[c, 2] += w * y
                sums[c, 3] += wx * x
                sums[c, 4] += wx * y
    slope = np.zeros(n_dates)
    intercept = np.empty((n_dates, n_sectors))
    for d in range(n_dates):
        if observed[d] < min_observed or n_sectors == 0:
            continue
        within_xx = 0.0
        within_xy = 0.0
        all_w = 0.0
        all_wx = 0.0
        all_wy = 0.0
        all_wxx = 0.0
        for c in range(d * n_sectors, (d + 1) * n_sectors):
            sw = sums[c, 0]
            swx = sums[c, 1]
            swy = sums[c, 2]
            if sw > 0.0:
                # the slope from within-sector deviations (the dummies absorb each sector's mean)
                within_xx += sums[c, 3] - swx * swx / sw
                within_xy += sums[c, 4] - swx * swy / sw
            all_w += sw
            all_wx += swx
            all_wy += swy
            all_wxx += sums[c, 3]
        bound = 1e-300 if all_wxx < 1e-300 else all_wxx  # NaN stays NaN
        b = within_xy / within_xx if within_xx > 1e-12 * bound else 0.0
        slope[d] = b
        # a sector without observations that date: the date's pooled intercept
        pooled = (all_wy - b * all_wx) / all_w
        for s in range(n_sectors):
            c = d * n_sectors + s
            sw = sums[c, 0]
            intercept[d, s] = (sums[c, 2] - b * sums[c, 1]) / sw if sw > 0.0 else pooled
    for k in range(n_rows):
        d = dates[k]
        r = rows[k]
        if observed[d] >= min_observed and not np.isfinite(values[r]):
            wanted[k] = True
            counts[d] += 1
            if n_sectors > 0:
                values[r] = intercept[d, sectors[k]] + slope[d] * size[k]
        else:
            wanted[k] = False
