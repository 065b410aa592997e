"""USE4's descriptor → style pipeline on dense (dates × assets) arrays, NaN marking a missing value.

Barra USE4 (Menchero, Orr and Wang, "The Barra US Equity Model (USE4): Methodology Notes", MSCI 2011, §3)
builds each style from descriptors:

1. each descriptor is standardized on the estimation universe to a **cap-weighted mean of 0** and an
   **equal-weighted standard deviation of 1** (:func:`standardize_use4`);
2. values beyond **3 standard deviations** are trimmed to 3 and the descriptor standardized again
   (:func:`trim`);
3. the descriptors are combined with fixed weights (:func:`combine`; an asset missing a descriptor gets the
   weighted mean of those it has, the weights renormalized);
4. the style is standardized again and, for some styles, **orthogonalized** to others by a cap-weighted
   cross-sectional regression (:func:`orthogonalize`: residual volatility to beta and size, non-linear size
   to size, liquidity to size), then standardized once more.

Every function works row by row (one row = one date's cross-section) over the finite values and the assets
with a positive, finite market cap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from factor_engine.xsection import CONSTANT_TOL

__all__ = ["TRIM_SIGMA", "combine", "descriptor_to_style", "orthogonalize", "standardize_use4", "trim"]

#: USE4's outlier bound, in standard deviations.
TRIM_SIGMA = 3.0
# dates per block of the batched regressions (bounds the (dates, assets, regressors) work arrays)
_DATES_PER_BLOCK = 256


def _cap_weights(values: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Weights (T, N): the market cap where both the value and a positive cap are finite, else 0."""
    usable = np.isfinite(values) & np.isfinite(caps) & (caps > 0)
    return np.where(usable, caps, 0.0)


def standardize_use4(values: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Each row shifted to a cap-weighted mean of 0 and scaled to an equal-weighted standard deviation of 1
    (sample std, ddof=1, around the equal-weighted mean), over the assets with a finite value; an asset
    without a usable cap keeps its value but does not move the mean. A row with fewer than two values, no
    usable cap or no dispersion becomes NaN.

    Parameters
    ----------
    values: (T, N) descriptor values, NaN where missing.
    caps: (T, N) market caps (currency units) weighting the mean.
    """
    finite = np.isfinite(values)
    clean = np.where(finite, values, 0.0)
    weights = _cap_weights(values, caps)
    count = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cap_mean = (weights * clean).sum(axis=1) / weights.sum(axis=1)
        equal_mean = clean.sum(axis=1) / count
        deviation = np.where(finite, clean - equal_mean[:, None], 0.0)
        std = np.sqrt((deviation * deviation).sum(axis=1) / (count - 1))
        scale = np.maximum(np.abs(equal_mean), np.abs(cap_mean))
        std[~(std > CONSTANT_TOL * np.maximum(scale, 1e-300))] = np.nan
        result: np.ndarray = (values - cap_mean[:, None]) / std[:, None]
    return result


def trim(values: np.ndarray, caps: np.ndarray, limit: float = TRIM_SIGMA) -> np.ndarray:
    """USE4 outlier treatment: standardize (:func:`standardize_use4`), clip to ``±limit`` standard
    deviations, standardize again."""
    standardized = standardize_use4(values, caps)
    return standardize_use4(np.clip(standardized, -limit, limit), caps)


def combine(descriptors: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The weighted mean of standardized descriptors; an asset missing some gets the weighted mean of those
    it has (weights renormalized), NaN when it has none.

    Parameters
    ----------
    descriptors: (T, N) arrays, each already trimmed and standardized.
    weights: one positive weight per descriptor (USE4's, e.g. 0.74 / 0.16 / 0.10 for residual volatility).
    """
    if len(descriptors) != len(weights) or not descriptors:
        raise ValueError(f"need one weight per descriptor, got {len(descriptors)} descriptors, {len(weights)} weights")
    if any(not np.isfinite(w) or w <= 0 for w in weights):
        raise ValueError(f"descriptor weights must be positive, got {list(weights)}")
    total = np.zeros_like(descriptors[0], dtype=np.float64)
    weight_sum = np.zeros_like(total)
    for descriptor, weight in zip(descriptors, weights, strict=True):
        finite = np.isfinite(descriptor)
        total += np.where(finite, weight * descriptor, 0.0)
        weight_sum += np.where(finite, weight, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        combined: np.ndarray = np.where(weight_sum > 0, total / weight_sum, np.nan)
    return combined


def orthogonalize(values: np.ndarray, against: Sequence[np.ndarray], caps: np.ndarray) -> np.ndarray:
    """The residual of a cap-weighted cross-sectional regression of ``values`` on an intercept and the
    ``against`` exposures, date by date, over the assets where all of them and a positive cap are finite;
    NaN elsewhere (and on a date with no more such assets than regressors).

    Parameters
    ----------
    values: (T, N) style exposures to clean.
    against: (T, N) exposures to remove (e.g. beta and size).
    caps: (T, N) market caps (regression weights).
    """
    residual = np.full(values.shape, np.nan)
    for start in range(0, values.shape[0], _DATES_PER_BLOCK):
        rows = slice(start, start + _DATES_PER_BLOCK)
        residual[rows] = _orthogonal_block(values[rows], [a[rows] for a in against], caps[rows])
    return residual


def _orthogonal_block(values: np.ndarray, against: Sequence[np.ndarray], caps: np.ndarray) -> np.ndarray:
    design = np.stack([np.ones_like(values), *against], axis=-1)  # (T, N, K)
    usable = np.isfinite(values) & np.isfinite(design).all(axis=-1) & np.isfinite(caps) & (caps > 0)
    x = np.where(usable[..., None], design, 0.0)
    weighted = x * np.where(usable, caps, 0.0)[..., None]
    gram = np.einsum("tnk,tnl->tkl", weighted, x)
    moment = np.einsum("tnk,tn->tk", weighted, np.where(usable, values, 0.0))
    solvable = usable.sum(axis=1) > design.shape[-1]
    coefficients = np.zeros(moment.shape)
    coefficients[solvable] = np.einsum("tkl,tl->tk", np.linalg.pinv(gram[solvable]), moment[solvable])
    fitted = np.einsum("tnk,tk->tn", x, coefficients)
    result: np.ndarray = np.where(usable & solvable[:, None], values - fitted, np.nan)
    return result


def descriptor_to_style(
    descriptors: Sequence[np.ndarray],
    weights: Sequence[float],
    caps: np.ndarray,
    *,
    against: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """USE4's pipeline from raw descriptors to a style exposure: each descriptor trimmed and standardized,
    combined with ``weights``, standardized, orthogonalized to ``against`` (if any) and standardized again.

    Parameters
    ----------
    descriptors: (T, N) raw descriptor values.
    weights: one positive weight per descriptor.
    caps: (T, N) market caps (standardization mean and regression weights).
    against: (T, N) exposures the style is made orthogonal to (cap-weighted).
    """
    combined = combine([trim(d, caps) for d in descriptors], weights)
    style = standardize_use4(combined, caps)
    if against:
        style = standardize_use4(orthogonalize(style, against, caps), caps)
    return style
