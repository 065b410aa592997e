"""Compiled kernels of the cross-sectional regression (:mod:`factor_engine.regression`) when the sectors are
one-hot (each asset in one sector, given by its code): the normal equations and the fitted values from the codes
and the style exposures, without the dense (dates × assets × factors) design."""

from __future__ import annotations

import numpy as np

from factor_engine._jit import kernel


@kernel
def one_hot_moments(
    ok: np.ndarray,
    weight: np.ndarray,
    target: np.ndarray,
    codes: np.ndarray,
    styles: np.ndarray,
    sector_weight: np.ndarray,
    gram: np.ndarray,
    rhs: np.ndarray,
    by_sector: np.ndarray,
) -> None:  # pragma: no cover - compiled; tested through solve_cross_sections
    """For each of b dates, over its rows ``ok`` (b, N): ``gram`` (b, K, K) ``= Bᵀ W B`` and ``rhs`` (b, K)
    ``= Bᵀ W y`` of the design ``B = [1, sector dummies (codes, b × N), styles (b, N, P)]`` (K = 1 + S + P)
    with weights ``weight`` and targets ``target``, and ``by_sector`` (b, S) the sums of ``sector_weight`` per
    sector. The outputs are overwritten."""
    n_dates, n_assets = ok.shape
    n_sectors = by_sector.shape[1]
    n_styles = styles.shape[2]
    first = 1 + n_sectors
    n_factors = first + n_styles
    for d in range(n_dates):
        g = gram[d]
        r = rhs[d]
        g[:, :] = 0.0
        r[:] = 0.0
        by_sector[d, :] = 0.0
        for i in range(n_assets):
            if not ok[d, i]:
                continue
            w = weight[d, i]
            y = target[d, i]
            s = 1 + codes[d, i]
            wy = w * y
            g[0, 0] += w
            g[0, s] += w
            g[s, s] += w
            r[0] += wy
            r[s] += wy
            by_sector[d, s - 1] += sector_weight[d, i]
            for j in range(n_styles):
                x = styles[d, i, j]
                wx = w * x
                g[0, first + j] += wx
                g[s, first + j] += wx
                r[first + j] += wx * y
                for k in range(j, n_styles):
                    g[first + j, first + k] += wx * styles[d, i, k]
        for a in range(n_factors):  # the upper triangle, mirrored
            for c in range(a + 1, n_factors):
                g[c, a] = g[a, c]


@kernel
def one_hot_fitted(
    ok: np.ndarray, codes: np.ndarray, styles: np.ndarray, factor_returns: np.ndarray, fitted: np.ndarray
) -> None:  # pragma: no cover - compiled; tested through solve_cross_sections
    """``fitted`` (b, N) ``= B f`` of the design of :func:`one_hot_moments` for each date's ``factor_returns``
    (b, K; finite), 0 where not ``ok``."""
    n_dates, n_assets = ok.shape
    n_styles = styles.shape[2]
    first = factor_returns.shape[1] - n_styles
    for d in range(n_dates):
        f = factor_returns[d]
        for i in range(n_assets):
            if not ok[d, i]:
                fitted[d, i] = 0.0
                continue
            value = f[0] + f[1 + codes[d, i]]
            for j in range(n_styles):
                value += styles[d, i, j] * f[first + j]
            fitted[d, i] = value
