"""Covariances in factored form and the long-only minimum-variance solver used by the validation.

:class:`FactoredCovariance` keeps an (N, N) covariance as ``L Lᵀ + diag(d)`` (a risk model ``X F Xᵀ + D`` or a
sample covariance of a window of returns, optionally Ledoit–Wolf shrunk, :func:`ledoit_wolf_intensity`) so that
thousands of assets never form the matrix; :func:`long_only_min_variance` finds the fully invested long-only
minimum-variance weights of such a covariance by accelerated projected gradient. The validation of
:mod:`factor_engine.risk.validation` builds its sample-covariance forecasts and minimum-variance portfolios
from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["FactoredCovariance", "ledoit_wolf_intensity", "long_only_min_variance"]


def ledoit_wolf_intensity(returns: np.ndarray) -> tuple[float, float]:
    """Ledoit & Wolf (2004) shrinkage of the sample covariance toward ``μ I`` (constant variance).

    With ``X`` the (W, N) returns centered by their column means, ``S = XᵀX / W``, ``μ = tr(S) / N`` and the
    norm ``‖A‖² = tr(AAᵀ) / N``: ``d² = ‖S − μI‖²``, ``b̄² = Σ_k ‖x_k x_kᵀ − S‖² / W²``, ``b² = min(b̄², d²)``
    and the intensity ``δ = b² / d²`` (0 when ``d² = 0``). The shrunk covariance is ``(1 − δ) S + δ μ I``.

    Every term comes from the (W, W) Gram matrix ``G = XXᵀ`` (``‖S‖_F = ‖G‖_F / W``, ``‖x_k‖² = G_kk``), so
    the (N, N) covariance is never formed: O(W² N) for N assets.

    Returns ``(δ, μ)``.
    """
    values = np.asarray(returns, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 2 or values.shape[1] < 1 or not np.isfinite(values).all():
        raise ValueError(f"returns must be a finite (observations ≥ 2, assets ≥ 1) array, got shape {values.shape}")
    return _ledoit_wolf_from_centered(values - values.mean(axis=0))


def _ledoit_wolf_from_centered(centered: np.ndarray) -> tuple[float, float]:
    n_obs, n_assets = centered.shape
    gram = centered @ centered.T
    row_norms = np.diag(gram)  # ‖x_k‖²
    target = float(row_norms.sum()) / n_obs / n_assets  # tr(S) / N
    sample_sq = float(np.sum(gram**2)) / n_obs**2  # ‖S‖_F²
    distance = max(sample_sq - n_assets * target**2, 0.0) / n_assets  # ‖S − μI‖_F² / N
    # Σ_k ‖x_k x_kᵀ − S‖_F² = Σ_k ‖x_k‖⁴ − W ‖S‖_F²
    spread = (float(np.sum(row_norms**2)) - n_obs * sample_sq) / n_assets
    dispersion = min(spread / n_obs**2, distance)
    return (dispersion / distance if distance > 0 else 0.0), target


@dataclass(frozen=True)
class FactoredCovariance:
    """An (N, N) covariance ``Σ = L Lᵀ + diag(d)`` kept in factored form (never formed).

    The risk model is ``L = X U diag(√e)`` for ``F = U diag(e) Uᵀ`` and ``d`` the specific variances; a
    sample covariance of ``W`` centered returns ``C`` is ``L = Cᵀ √((1 − δ) / W)`` and ``d = δ μ`` (Ledoit–Wolf,
    ``δ = 0`` without shrinkage). Products cost O(N r) for ``r`` columns of ``L``.

    Attributes
    ----------
    loadings: (N, r) ``L``.
    diagonal: (N,) ``d`` (≥ 0).
    """

    loadings: np.ndarray
    diagonal: np.ndarray

    @classmethod
    def from_model(cls, exposures: np.ndarray, factor_cov: np.ndarray, specific_var: np.ndarray) -> FactoredCovariance:
        """``X F Xᵀ + diag(s²)`` for (N, K) exposures, a (K, K) PSD factor covariance and (N,) variances."""
        eigvals, eigvecs = np.linalg.eigh(0.5 * (factor_cov + factor_cov.T))
        root = eigvecs * np.sqrt(np.maximum(eigvals, 0.0))
        return cls(loadings=exposures @ root, diagonal=np.asarray(specific_var, dtype=np.float64))

    @classmethod
    def from_returns(cls, window_returns: np.ndarray, shrink: str = "none") -> FactoredCovariance:
        """The sample covariance ``CᵀC / W`` of a (W, N) window of returns (centered by column means ``C``),
        Ledoit–Wolf shrunk toward ``μ I`` when ``shrink == "ledoit_wolf"`` (:func:`ledoit_wolf_intensity`)."""
        n_obs, n_assets = window_returns.shape
        centered = window_returns - window_returns.mean(axis=0)
        intensity, target = _ledoit_wolf_from_centered(centered) if shrink == "ledoit_wolf" else (0.0, 0.0)
        return cls(
            loadings=centered.T * math.sqrt((1.0 - intensity) / n_obs),
            diagonal=np.full(n_assets, intensity * target),
        )

    def dense(self) -> np.ndarray:
        """The (N, N) matrix (for small N and tests)."""
        matrix: np.ndarray = self.loadings @ self.loadings.T + np.diag(self.diagonal)
        return matrix

    def variances(self) -> np.ndarray:
        """(N,) diagonal of ``Σ``."""
        values: np.ndarray = np.einsum("nr,nr->n", self.loadings, self.loadings) + self.diagonal
        return values

    def portfolio_variance(self, weights: np.ndarray) -> np.ndarray:
        """``wᵀ Σ w`` of each row of (P, N) weights (or a scalar array for one (N,) vector)."""
        projected = weights @ self.loadings
        values: np.ndarray = np.sum(projected**2, axis=-1) + (weights**2) @ self.diagonal
        return values

    def matvec(self, weights: np.ndarray) -> np.ndarray:
        """``Σ w`` for an (N,) vector."""
        product: np.ndarray = self.loadings @ (self.loadings.T @ weights) + self.diagonal * weights
        return product

    def largest_eigenvalue_bound(self) -> float:
        """An upper bound of ``λ_max(Σ)``: ``λ_max(LᵀL) + max d`` (exact when ``d`` is constant)."""
        gram = self.loadings.T @ self.loadings
        top = float(np.linalg.eigvalsh(gram)[-1]) if gram.size else 0.0
        return top + (float(self.diagonal.max()) if self.diagonal.size else 0.0)


def long_only_min_variance(
    covariance: np.ndarray | FactoredCovariance,
    *,
    start: np.ndarray | None = None,
    rtol: float = 1e-8,
    max_iter: int = 50_000,
) -> np.ndarray:
    """Fully invested long-only minimum-variance weights ``argmin wᵀΣw`` s.t. ``w ≥ 0, Σw = 1``.

    Accelerated projected gradient (FISTA, step ``1 / (2 λ)`` with ``λ ≥ λ_max(Σ)``, adaptive restart of
    O'Donoghue & Candès) with Euclidean projection onto the simplex. It stops when the Frank–Wolfe duality gap
    ``wᵀg − min_i g_i`` (``g = 2Σw``), an upper bound of ``f(w) − f*``, is at most ``rtol · f(w)``; or raises
    after ``max_iter`` iterations. A :class:`FactoredCovariance` is never formed: each iteration costs
    O(N r), so thousands of assets take about a second.

    Parameters
    ----------
    covariance: an (N, N) PSD matrix or a :class:`FactoredCovariance`.
    start: (N,) starting weights (projected onto the simplex), e.g. the previous rebalance's; default 1/N.
    rtol: relative optimality gap of the objective.
    max_iter: iterations before giving up.
    """
    if isinstance(covariance, FactoredCovariance):
        n_assets = covariance.diagonal.size
        finite = bool(np.isfinite(covariance.loadings).all() and np.isfinite(covariance.diagonal).all())
        product = covariance.matvec
        largest = covariance.largest_eigenvalue_bound() if finite and n_assets else math.nan
    else:
        matrix = 0.5 * (covariance + covariance.T)
        n_assets = matrix.shape[0]
        if matrix.shape != (n_assets, n_assets):
            raise ValueError(f"covariance must be a square matrix, got shape {covariance.shape}")
        finite = bool(np.isfinite(matrix).all())
        product = matrix.__matmul__
        largest = float(np.linalg.eigvalsh(matrix)[-1]) if finite and n_assets else math.nan
    if n_assets == 0 or not finite:
        raise ValueError(f"covariance must be finite and non-empty ({n_assets} assets, finite={finite})")
    weights = np.full(n_assets, 1.0 / n_assets) if start is None else _project_simplex(np.asarray(start, float))
    if largest <= 0:
        return weights
    step = 1.0 / (2.0 * largest)  # the gradient 2Σw has Lipschitz constant 2 λ_max
    point, previous, theta = weights.copy(), weights.copy(), 1.0
    for _ in range(max_iter):
        gradient = 2.0 * product(weights)
        objective = 0.5 * float(weights @ gradient)
        if float(weights @ gradient) - float(gradient.min()) <= rtol * objective:
            return weights
        weights = _project_simplex(point - step * 2.0 * product(point))
        if float((point - weights) @ (weights - previous)) > 0:  # momentum against descent: restart
            point, theta = weights.copy(), 1.0
        else:
            theta_next = (1.0 + math.sqrt(1.0 + 4.0 * theta**2)) / 2.0
            point = weights + ((theta - 1.0) / theta_next) * (weights - previous)
            theta = theta_next
        previous = weights
    raise RuntimeError(f"long_only_min_variance did not reach rtol {rtol} in {max_iter} iterations")


def _project_simplex(point: np.ndarray) -> np.ndarray:
    """Euclidean projection onto ``{w ≥ 0, Σw = 1}`` (sort-based, Held–Wolfe–Crowder / Duchi et al.)."""
    ordered = np.sort(point)[::-1]
    cumulative = np.cumsum(ordered) - 1.0
    ranks = np.arange(1, point.size + 1)
    last = int(np.flatnonzero(ordered - cumulative / ranks > 0)[-1])
    projected: np.ndarray = np.maximum(point - cumulative[last] / (last + 1), 0.0)
    return projected
