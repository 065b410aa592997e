"""``_dense.ewma_sum`` against the sequential recursion written as a plain loop and against scipy's lfilter."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from factor_engine._dense import ewma_sum


def loop_reference(values: np.ndarray, decay: float, gain: float) -> np.ndarray:
    """``S[t] = decay · S[t−1] + gain · x[t]`` along the last axis, one date at a time."""
    out = np.empty_like(values)
    state = np.zeros(values.shape[:-1])
    for t in range(values.shape[-1]):
        state = decay * state + gain * values[..., t]
        out[..., t] = state
    return out


@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        ((1,), -1),
        ((7,), -1),
        ((129,), -1),
        ((5_003,), -1),
        ((3, 1_000), -1),
        ((300, 257), -1),
        ((700, 3), 0),
        ((400, 130), 0),
        ((2, 5, 300), 1),
    ],
)
@pytest.mark.parametrize(("decay", "gain"), [(0.5 ** (1 / 126), 1.0), (0.9, -0.5), (1.0, 0.25), (0.0, 2.0)])
def test_matches_the_sequential_recursion(shape: tuple[int, ...], axis: int, decay: float, gain: float) -> None:
    values = np.random.default_rng(len(shape) * 7 + shape[0]).standard_normal(shape)
    ours = ewma_sum(values, decay, axis=axis, gain=gain)
    moved = np.moveaxis(values, axis, -1)
    expected = np.moveaxis(loop_reference(moved, decay, gain), -1, axis)
    scale = 1.0 + np.abs(expected)
    assert ours.shape == values.shape
    assert np.max(np.abs(ours - expected) / scale) < 1e-12
    assert np.max(np.abs(ours - lfilter([gain], [1.0, -decay], values, axis=axis)) / scale) < 1e-12


def test_a_prefix_filters_identically_whatever_follows() -> None:
    values = np.random.default_rng(1).standard_normal((4, 3_001))
    full = ewma_sum(values, 0.99)
    for length in (1, 127, 128, 129, 700, 3_000):
        np.testing.assert_array_equal(ewma_sum(values[:, :length], 0.99), full[:, :length])


def test_nan_propagates_forward_and_empty_input() -> None:
    values = np.random.default_rng(2).standard_normal(1_000)
    values[300] = np.nan
    result = ewma_sum(values, 0.95)
    assert np.all(np.isfinite(result[:300])) and np.all(np.isnan(result[300:]))
    assert ewma_sum(np.zeros((0, 5)), 0.9, axis=0).shape == (0, 5)
    assert ewma_sum(np.zeros((3, 0)), 0.9).shape == (3, 0)


def test_wide_rows_in_pieces_match_the_recursion_and_keep_prefixes() -> None:
    """Along axis 0 of a wide array the time axis is filtered in pieces of 64 rows (ewma_sum's row pieces):
    the recursion to rounding, a prefix identically whatever follows it, a NaN forward only from its row,
    and ``sequential_rows`` the recursion's own rounding exactly."""
    values = np.random.default_rng(3).standard_normal((1_000, 300))
    decay = 0.5 ** (1 / 63)
    full = ewma_sum(values, decay, axis=0)
    expected = loop_reference(values.T, decay, 1.0).T
    assert np.max(np.abs(full - expected) / (1.0 + np.abs(expected))) < 1e-13
    np.testing.assert_array_equal(ewma_sum(values, decay, axis=0, sequential_rows=True), expected)
    for length in (129, 130, 191, 192, 193, 640, 999):
        np.testing.assert_array_equal(ewma_sum(values[:length], decay, axis=0), full[:length])
    broken = values.copy()
    broken[500, 7] = np.nan
    result = ewma_sum(broken, decay, axis=0)
    assert np.all(np.isfinite(result[:500, 7])) and np.all(np.isnan(result[500:, 7]))
    others = np.delete(np.arange(300), 7)
    np.testing.assert_array_equal(result[:, others], full[:, others])
