"""Compiled kernels of specific risk (:mod:`factor_engine.risk.specific`): the Newey–West EWMA recursion, the
fat-tail factor of the blend weight and the per-row sums of the structural regression by group.

The time-series kernels work on (dates, assets) C-ordered arrays and on a block of asset columns ``[lo, hi)``:
dates outer, the block's assets inner, with per-asset accumulators, so each pass reads contiguous row
segments. Blocks of columns are independent and run in parallel threads; the structural kernels run on a
block of dates each, in the same threads.
"""

from __future__ import annotations

import numpy as np

from factor_engine._jit import kernel


@kernel
def newey_west_variance(
    resid: np.ndarray,
    present: np.ndarray,
    context: int,
    decay: float,
    nw_lags: int,
    sums: np.ndarray,
    variance: np.ndarray,
    lo: int,
    hi: int,
) -> None:  # pragma: no cover - compiled; its tests call it through specific_risk
    """Writes the Newey–West EWMA variance of rows ``context:`` of ``resid`` into ``variance`` (one row less
    per context row) for the columns ``lo:hi``, and advances ``sums`` ((2 + 2 nw_lags, N): ``u²``, ``P``, then
    per lag ``u u₋ₗ`` and ``P P₋ₗ``) from their values before the first such row to those after the last.

    ``u`` is ``resid`` where ``present`` and 0 elsewhere; the context rows only supply the lagged terms (rows
    before the first have none). Each sum is ``S = decay · S + x``; ``Γ₀ = S(u²) / S(P)``, each lag adds
    ``2 (1 − l / (nw_lags + 1)) S(u u₋ₗ) / S(P P₋ₗ)`` where ``S(P P₋ₗ) > 0``, and a sum that is not positive
    gives ``Γ₀`` instead (NaN before the first observation)."""
    width = hi - lo
    depth = nw_lags + 1
    # the last nw_lags + 1 rows of u and P, row r in slot r % depth (zeros: no earlier row)
    u = np.zeros((depth, width))
    p = np.zeros((depth, width))
    acc = np.empty((sums.shape[0], width))
    for k in range(sums.shape[0]):
        for j in range(width):
            acc[k, j] = sums[k, lo + j]
    weight = np.empty(depth)
    for lag in range(1, depth):
        weight[lag] = 2.0 * (1.0 - lag / (nw_lags + 1))
    for r in range(max(0, context - nw_lags), context):
        slot = r % depth
        for j in range(width):
            if present[r, lo + j]:
                u[slot, j] = resid[r, lo + j]
                p[slot, j] = 1.0
    for r in range(context, resid.shape[0]):
        slot = r % depth
        for j in range(width):
            if present[r, lo + j]:
                x = resid[r, lo + j]
                o = 1.0
            else:
                x = 0.0
                o = 0.0
            u[slot, j] = x
            p[slot, j] = o
            acc[0, j] = decay * acc[0, j] + x * x
            acc[1, j] = decay * acc[1, j] + o
        for lag in range(1, depth):
            before = (r - lag + depth) % depth
            cross = acc[2 * lag]
            pairs = acc[2 * lag + 1]
            for j in range(width):
                cross[j] = decay * cross[j] + u[slot, j] * u[before, j]
                pairs[j] = decay * pairs[j] + p[slot, j] * p[before, j]
        out = variance[r - context]
        for j in range(width):
            gamma0 = acc[0, j] / acc[1, j]
            total = gamma0
            for lag in range(1, depth):
                pair_weight = acc[2 * lag + 1, j]
                if pair_weight > 0:
                    total += weight[lag] * (acc[2 * lag, j] / pair_weight)
            out[lo + j] = total if total > 0 else gamma0
    for k in range(sums.shape[0]):
        for j in range(width):
            sums[k, lo + j] = acc[k, j]


@kernel
def fat_tail_factors(
    resid: np.ndarray, ends: np.ndarray, window: int, lo: int, hi: int, out: np.ndarray
) -> None:  # pragma: no cover - compiled; its tests call it through _blend_weight and specific_risk
    """Writes into ``out[i, lo:hi]`` the fat-tail factor ``clip(exp(1 − Z), 0, 1)`` of each column's finite
    residuals in rows ``max(0, ends[i] − window + 1) … ends[i]`` (see :func:`.specific._fat_tail_factor`).

    Each asset's observed values of the window are kept sorted from one evaluation to the next: the values of
    the rows that leave the window are taken out and those of the rows that enter merged in (both sorted
    first; few when evaluations are close), so the quartiles are lookups (linear interpolation between order
    statistics, numpy's default) and the values within ``±10 σ̃`` one contiguous range of them. A window far from
    the previous one is sorted anew."""
    width = hi - lo
    ordered = np.empty((width, window))  # each asset's observed values of the current window, ascending
    size = np.zeros(width, dtype=np.int64)
    change = max(1, window // 2)  # rows leaving plus entering up to which the window is updated, not rebuilt
    leaving = np.empty((width, change))
    entering = np.empty((width, window))
    n_leaving = np.zeros(width, dtype=np.int64)
    n_entering = np.zeros(width, dtype=np.int64)
    merged = np.empty(window)
    first, last = 0, -1  # rows of the current window
    for i in range(ends.shape[0]):
        end = ends[i]
        start = max(0, end - window + 1)
        rebuild = not (i > 0 and start >= first and end >= last and (start - first) + (end - last) <= change)
        for j in range(width):
            n_leaving[j] = 0
            n_entering[j] = 0
            if rebuild:
                size[j] = 0
        if rebuild:
            _gather(resid, start, end + 1, lo, entering, n_entering)
        else:
            _gather(resid, first, start, lo, leaving, n_leaving)
            _gather(resid, last + 1, end + 1, lo, entering, n_entering)
        first, last = start, end
        for j in range(width):
            _sort(leaving[j], n_leaving[j])
            _sort(entering[j], n_entering[j])
            m = _update(ordered[j], size[j], leaving[j], n_leaving[j], entering[j], n_entering[j], merged)
            size[j] = m
            out[i, lo + j] = _fat_tail(ordered[j], m)


@kernel
def _fat_tail(ordered: np.ndarray, m: int) -> float:  # pragma: no cover - compiled
    """The fat-tail factor of the sorted values ``ordered[:m]``: 1 below 2 values; with ``σ̃ = (Q3 − Q1) / 1.35``,
    0 when fewer than 2 lie within ``±10 σ̃``, else ``min(1, exp(1 − |σ_eq / σ̃ − 1|))`` with ``σ_eq`` their
    standard deviation (ddof 1), ``Z`` infinite when ``σ̃ = 0``."""
    if m < 2:
        return 1.0
    robust = (_quantile(ordered, m, 0.75) - _quantile(ordered, m, 0.25)) / 1.35
    limit = 10.0 * robust
    low, high = 0, m  # the values within ±limit: ordered[low:high]
    while low < high and ordered[low] < -limit:
        low += 1
    while high > low and ordered[high - 1] > limit:
        high -= 1
    kept = high - low
    if kept < 2:
        return 0.0
    mean = _sum(ordered, low, high) / kept
    plain = np.sqrt(_squared_deviations(ordered, low, high, mean) / (kept - 1))
    distance = abs(plain / robust - 1.0) if robust > 0 else np.inf
    return min(1.0, np.exp(1.0 - distance))


@kernel
def _sum(values: np.ndarray, low: int, high: int) -> float:  # pragma: no cover - compiled
    """``Σ values[low:high]`` in four running sums (which the compiler can keep in one vector register)."""
    s0 = s1 = s2 = s3 = 0.0
    k = low
    while k + 4 <= high:
        s0 += values[k]
        s1 += values[k + 1]
        s2 += values[k + 2]
        s3 += values[k + 3]
        k += 4
    while k < high:
        s0 += values[k]
        k += 1
    return (s0 + s1) + (s2 + s3)


@kernel
def _squared_deviations(values: np.ndarray, low: int, high: int, center: float) -> float:  # pragma: no cover
    """``Σ (values[low:high] − center)²``, like :func:`_sum`."""
    s0 = s1 = s2 = s3 = 0.0
    k = low
    while k + 4 <= high:
        s0 += (values[k] - center) ** 2
        s1 += (values[k + 1] - center) ** 2
        s2 += (values[k + 2] - center) ** 2
        s3 += (values[k + 3] - center) ** 2
        k += 4
    while k < high:
        s0 += (values[k] - center) ** 2
        k += 1
    return (s0 + s1) + (s2 + s3)


@kernel
def _gather(
    resid: np.ndarray, first: int, stop: int, lo: int, values: np.ndarray, count: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Appends each asset ``j``'s finite residuals of rows ``first:stop`` (column ``lo + j``) to ``values[j]``,
    ``count[j]`` holding how many it has."""
    for r in range(first, stop):
        for j in range(values.shape[0]):
            x = resid[r, lo + j]
            if np.isfinite(x):
                values[j, count[j]] = x
                count[j] += 1


@kernel
def _sort(values: np.ndarray, m: int) -> None:  # pragma: no cover - compiled
    """Sorts ``values[:m]`` in place: by insertion (the few values entering or leaving a window), Shell's sort
    with Ciura's gaps when many (small code, which numba compiles in a fraction of the time of
    ``ndarray.sort``)."""
    for gap in (701, 301, 132, 57, 23, 10, 4, 1):
        if gap > 1 and m <= 32:
            continue
        for k in range(gap, m):
            x = values[k]
            p = k
            while p >= gap and values[p - gap] > x:
                values[p] = values[p - gap]
                p -= gap
            values[p] = x


@kernel
def _update(
    ordered: np.ndarray,
    m: int,
    leaving: np.ndarray,
    n_leaving: int,
    entering: np.ndarray,
    n_entering: int,
    merged: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Replaces the sorted ``ordered[:m]`` by the sorted values of ``ordered[:m]`` less ``leaving[:n_leaving]``
    (sorted, each one of them) plus ``entering[:n_entering]`` (sorted); returns their number."""
    k = 0
    p = 0
    q = 0
    for i in range(m):
        x = ordered[i]
        if p < n_leaving and x == leaving[p]:
            p += 1
            continue
        while q < n_entering and entering[q] < x:
            merged[k] = entering[q]
            k += 1
            q += 1
        merged[k] = x
        k += 1
    while q < n_entering:
        merged[k] = entering[q]
        k += 1
        q += 1
    for i in range(k):  # (a loop: numba compiles slice assignment slowly)
        ordered[i] = merged[i]
    return k


@kernel
def _quantile(ordered: np.ndarray, m: int, q: float) -> float:  # pragma: no cover - compiled
    """The ``q`` quantile of the sorted ``ordered[:m]`` (m ≥ 1; numpy's linear method)."""
    position = q * (m - 1)
    below = int(position)  # (position ≥ 0: truncation is the floor)
    low = ordered[below]
    if below + 1 >= m:
        return low
    return low + (position - below) * (ordered[below + 1] - low)


@kernel
def group_moments(
    x: np.ndarray,
    member: np.ndarray,
    tt: np.ndarray,
    nn: np.ndarray,
    in_regression: np.ndarray,
    cap: np.ndarray,
    log_sigma: np.ndarray,
    sum_w: np.ndarray,
    sum_wy: np.ndarray,
    sum_wx: np.ndarray,
    gram: np.ndarray,
    rhs: np.ndarray,
    n_used: np.ndarray,
) -> None:  # pragma: no cover - compiled; its tests call it through specific_risk
    """Adds the moments of the structural regression by group (:func:`.specific._structural_by_group`) of the
    rows ``r`` (date ``tt[r]``, asset ``nn[r]``, group member ``member[r]``, other exposures ``x[r]``) that are in
    the regression and have finite exposures, with weight ``w = sqrt(cap)`` and target ``y = log σ_TS``: per
    date and member ``Σ w``, ``Σ w y`` and ``Σ w x``; per date ``Σ w x xᵀ``, ``Σ w x y`` and the number of such
    rows. The rows of a date run in order, so each sum is the same whatever the block of dates."""
    n_other = x.shape[1]
    for r in range(x.shape[0]):
        d = tt[r]
        n = nn[r]
        if not in_regression[d, n] or not _finite_row(x, r):
            continue
        g = member[r]
        w = np.sqrt(cap[d, n])
        y = log_sigma[d, n]
        sum_w[d, g] += w
        sum_wy[d, g] += w * y
        n_used[d] += 1
        for i in range(n_other):
            wx = w * x[r, i]
            sum_wx[d, g, i] += wx
            rhs[d, i] += wx * y
            for j in range(n_other):
                gram[d, i, j] += wx * x[r, j]


@kernel
def group_fit(
    x: np.ndarray,
    member: np.ndarray,
    tt: np.ndarray,
    nn: np.ndarray,
    in_regression: np.ndarray,
    log_sigma: np.ndarray,
    level: np.ndarray,
    params: np.ndarray,
    solvable: np.ndarray,
    n_used: np.ndarray,
    result: np.ndarray,
) -> None:  # pragma: no cover - compiled; its tests call it through specific_risk
    """Writes the structural estimate ``E0 · exp(fitted)`` of each row with finite exposures (as in
    :func:`group_moments`) of a ``solvable`` date into ``result[tt[r], nn[r]]``, with ``fitted = level[date,
    member] + x · params[date]`` and ``E0`` the mean of ``σ_TS / exp(fitted)`` over the date's regression rows."""
    n_other = x.shape[1]
    fitted = np.empty(x.shape[0])
    bias = np.zeros(level.shape[0])
    known = np.empty(x.shape[0], dtype=np.bool_)
    for r in range(x.shape[0]):
        known[r] = _finite_row(x, r)
        if not known[r]:
            continue
        d = tt[r]
        value = level[d, member[r]]
        for i in range(n_other):
            value += x[r, i] * params[d, i]
        fitted[r] = value
        if in_regression[d, nn[r]]:
            bias[d] += np.exp(log_sigma[d, nn[r]] - value)
    for d in range(bias.shape[0]):
        bias[d] /= n_used[d]
    for r in range(x.shape[0]):
        d = tt[r]
        if known[r] and solvable[d]:
            result[d, nn[r]] = bias[d] * np.exp(fitted[r])


@kernel
def _finite_row(x: np.ndarray, r: int) -> bool:  # pragma: no cover - compiled
    """Whether every value of row ``r`` of ``x`` is finite."""
    for i in range(x.shape[1]):  # noqa: SIM110 - a loop, not a generator, in compiled code
        if not np.isfinite(x[r, i]):
            return False
    return True
