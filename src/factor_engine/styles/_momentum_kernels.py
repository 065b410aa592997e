"""Compiled kernel of momentum's trailing weighted growth (:func:`.momentum.trailing_weighted_growth`)."""

from __future__ import annotations

import numpy as np

from factor_engine._jit import kernel


@kernel
def weighted_growth(
    returns: np.ndarray,
    starts: np.ndarray,
    stops: np.ndarray,
    window: int,
    lag: int,
    decay: float,
    series_limit: float,
    series_tol: float,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled; its tests call it through trailing_weighted_growth
    """Writes into ``out`` (NaN-filled, like ``returns``) each position's ``prod_j(1 + w_j r_j) − 1`` over the
    ``window`` returns of its symbol ending ``lag`` positions before it, ``w_j = decay^(window−1−j)``, where
    the symbol has the history and the window holds only finite returns. Symbol ``s`` occupies
    ``returns[starts[s]:stops[s]]`` in date order.

    The log of the product is ``Σ_j log1p(w_j r_j)``. A return below ``series_limit`` in magnitude enters
    through the power series ``log1p(u) = Σ_k (−1)^(k+1) u^k / k``: the term of power ``k`` of the window
    ending at ``e`` is ``S_k(e) − decay^(k·window) S_k(e − window)``, with ``S_k`` the running sum
    ``S_k(e) = decay^k S_k(e − 1) + c_k r_e^k``, all powers advanced in one pass. Terms are taken until
    ``window · m^(k+1) / (k+1) < series_tol`` (``m`` the largest such return), so the truncation error is below
    ``series_tol``. A larger return (rare) adds its exact ``log1p(w r)`` to the ``window`` sums it enters."""
    max_small = 0.0
    longest = 0
    for s in range(starts.shape[0]):
        longest = max(longest, stops[s] - starts[s])
        for i in range(starts[s], stops[s]):
            size = abs(returns[i])
            if size < series_limit and size > max_small:
                max_small = size
    n_terms = 1
    while max_small > 0.0 and window * max_small ** (n_terms + 1) / (n_terms + 1) >= series_tol:
        n_terms += 1
    step = np.empty(n_terms)  # decay^k
    step_window = np.empty(n_terms)  # decay^(k·window)
    coefficient = np.empty(n_terms)  # (−1)^(k+1) / k
    for k in range(n_terms):
        step[k] = decay ** (k + 1)
        step_window[k] = step[k] ** window
        coefficient[k] = (1.0 if k % 2 == 0 else -1.0) / (k + 1)
    weight = np.empty(window)  # decay^(e − p) of a return at p in the window ending at e
    for j in range(window):
        weight[j] = decay**j
    running = np.empty(n_terms)
    head = np.empty(longest)  # Σ_k S_k(e)
    tail = np.empty(longest)  # Σ_k decay^(k·window) S_k(e)
    exact = np.empty(longest)  # Σ log1p(w r) of the large returns in the window ending at e
    bad = np.empty(longest + 1, dtype=np.int64)  # non-finite returns before each position
    for s in range(starts.shape[0]):
        lo = starts[s]
        n = stops[s] - lo
        if n < lag + window:
            continue
        running[:] = 0.0
        exact[:n] = 0.0
        bad[0] = 0
        for p in range(n):
            x = returns[lo + p]
            bad[p + 1] = bad[p]
            if not np.isfinite(x):
                bad[p + 1] += 1
                x = 0.0
            elif abs(x) >= series_limit:
                for e in range(p, min(n, p + window)):
                    exact[e] += np.log1p(weight[e - p] * x)
                x = 0.0
            power = x
            head_sum = 0.0
            tail_sum = 0.0
            for k in range(n_terms):
                value = step[k] * running[k] + coefficient[k] * power
                running[k] = value
                head_sum += value
                tail_sum += step_window[k] * value
                power *= x
            head[p] = head_sum
            tail[p] = tail_sum
        for p in range(lag + window - 1, n):
            e = p - lag
            if bad[e + 1] != bad[e + 1 - window]:
                continue
            log_growth = head[e] + exact[e]
            if e >= window:
                log_growth -= tail[e - window]
            out[lo + p] = np.expm1(log_growth)


@kernel
def symbol_major_order(codes: np.ndarray, n_symbols: int) -> np.ndarray:  # pragma: no cover - compiled
    """The rows ordered by their symbol code ``codes`` (0…``n_symbols`` − 1), keeping their order within a
    symbol: a counting sort, two passes (a frame in date order gives each symbol's rows in date order)."""
    first = np.zeros(n_symbols + 1, dtype=np.int64)
    for i in range(codes.shape[0]):
        first[codes[i] + 1] += 1
    for s in range(n_symbols):
        first[s + 1] += first[s]
    order = np.empty(codes.shape[0], dtype=np.int64)
    for i in range(codes.shape[0]):
        code = codes[i]
        order[first[code]] = i
        first[code] += 1
    return order
