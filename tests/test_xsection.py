"""Cross-sectional helpers: the ``pl.Expr`` builders of xsection.py and the dense kernels of _dense.py.

Every builder is checked against a slow per-date numpy loop, and every dense kernel against numpy's
quantiles, polars' own ``Series.quantile`` and the matching builder. NaN and null count as the same
"missing" (the comparison requires the same missing cells on both sides).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from factor_engine import xsection
from factor_engine._dense import (
    date_bounds,
    quantile_linear,
    quantile_nearest,
    quantile_nearest_rows,
    standardize,
    standardize_rows,
    winsorize,
    winsorize_rows,
)
from factor_engine.xsection import (
    center_xsection,
    exp_weights,
    fill_features,
    finite,
    norm_xsection,
    percentiles_xsection,
    smooth_features,
    top_n_by_group,
    winsorize_xsection,
)

FrameMatcher = Callable[..., None]
KEYS = ["date", "row"]
START = dt.date(2024, 1, 1)
NAN, INF = float("nan"), float("inf")


# --------------------------------------------------------------------------------------------------------------
# inputs and per-date references


def _long_frame(seed: int, *, n_dates: int = 9, nan: bool = True, null: bool = True, inf: bool = True) -> pl.DataFrame:
    """``date, row, x``: unequal cross-sections (one with a single row, one constant one) with planted
    NaN / null / ±inf cells; every date keeps at least two finite values except the single-row one."""
    rng = np.random.default_rng(seed)
    dates: list[dt.date] = []
    values: list[float | None] = []
    for d in range(n_dates):
        size = 1 if d == 0 else int(rng.integers(5, 40))
        x = list(rng.normal(rng.normal(0, 5), rng.uniform(0.5, 3.0), size))
        if d == 1:
            x = [2.5] * size  # a constant cross-section
        if size > 3:
            for position in rng.choice(np.arange(2, size), size=min(3, size - 2), replace=False):
                kind = int(rng.integers(3))
                if kind == 0 and nan:
                    x[position] = NAN
                elif kind == 1 and null:
                    x[position] = None
                elif kind == 2 and inf:
                    x[position] = float(rng.choice([INF, -INF]))
        dates += [START + dt.timedelta(days=d)] * size
        values += x
    return pl.DataFrame({"date": dates, "x": values}, schema={"date": pl.Date, "x": pl.Float64}).with_row_index("row")


def _per_date(frame: pl.DataFrame, function: Callable[[np.ndarray], np.ndarray], name: str = "x") -> pl.DataFrame:
    """Apply ``function`` to each date's values (null as NaN) and return ``date, row, x``."""
    parts = []
    for (date,), day in frame.partition_by("date", as_dict=True, maintain_order=True).items():
        values = day[name].fill_null(NAN).to_numpy().astype(np.float64)
        parts.append(pl.DataFrame({"date": [date] * day.height, "row": day["row"], name: function(values)}))
    return pl.concat(parts)


def _finite_quantile(values: np.ndarray, q: float) -> float:
    finite_values = values[np.isfinite(values)]
    return float(np.quantile(finite_values, q)) if finite_values.size else NAN


def reference_center(values: np.ndarray, standardize_: bool = False) -> np.ndarray:
    finite_values = values[np.isfinite(values)]
    mean = finite_values.mean() if finite_values.size else NAN
    centered = values - mean
    if not standardize_:
        return centered
    std = finite_values.std(ddof=1) if finite_values.size > 1 else NAN
    if not std > 1e-12 * abs(mean):  # a constant cross-section has no standardized values
        return np.full_like(values, NAN)
    with np.errstate(invalid="ignore", divide="ignore"):
        return centered / std


def reference_winsorize(values: np.ndarray, percentile: float) -> np.ndarray:
    lower, upper = _finite_quantile(values, percentile), _finite_quantile(values, 1 - percentile)
    return np.clip(values, lower, upper)


def reference_norm(values: np.ndarray, lower: float, upper: float) -> np.ndarray:
    present = values[~np.isnan(values)]
    lo, hi = present.min(), present.max()
    if hi == lo:
        return np.where(np.isnan(values), NAN, lower)
    return (values - lo) / (hi - lo) * (upper - lower) + lower


def polars_quantile(values: np.ndarray, q: float) -> float:
    """polars' default ``quantile(q)`` of the non-NaN values (NaN when there are none)."""
    result = pl.Series(values[~np.isnan(values)], dtype=pl.Float64).quantile(q)
    return NAN if result is None else float(result)


def reference_percentiles(values: np.ndarray, lower_pct: float, upper_pct: float, fill: float) -> np.ndarray:
    """Documented: keep values at/below the lower or at/above the upper quantile, missing ones and the
    middle become ``fill``."""
    q_lo, q_hi = polars_quantile(values, lower_pct), polars_quantile(values, upper_pct)
    keep = ~np.isnan(values) & ((values <= q_lo) | (values >= q_hi))
    return np.where(keep, values, fill)


# --------------------------------------------------------------------------------------------------------------
# Expr builders vs per-date loops


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return _long_frame(7)


@pytest.mark.parametrize("standardize_", [False, True])
def test_center_xsection_matches_per_date_loop(
    frame: pl.DataFrame, standardize_: bool, frames_match: FrameMatcher
) -> None:
    ours = frame.select(*KEYS, center_xsection("x", standardize=standardize_))
    expected = _per_date(frame, lambda v: reference_center(v, standardize_))
    frames_match(ours, expected, KEYS, ["x"], atol=1e-12, rtol=1e-12)
    # ±inf inputs stay infinite, except on a date whose finite values are constant (no standardized value)
    assert np.isinf(ours["x"].to_numpy()).sum() == np.isinf(expected["x"].to_numpy()).sum() > 0


def test_center_xsection_over_another_column_and_as_expression(frames_match: FrameMatcher) -> None:
    rng = np.random.default_rng(3)
    frame = pl.DataFrame({"group": rng.choice(["a", "b", "c"], 60), "y": rng.normal(size=60)}).with_row_index("row")
    ours = frame.select("row", center_xsection(pl.col("y") * 2.0, over="group", standardize=True).alias("z"))
    expected = []
    for part in frame.partition_by("group"):
        doubled = part["y"].to_numpy() * 2.0
        expected.append(pl.DataFrame({"row": part["row"], "z": (doubled - doubled.mean()) / doubled.std(ddof=1)}))
    frames_match(ours, pl.concat(expected), ["row"], ["z"], atol=1e-13)


@pytest.mark.parametrize("percentile", [0.0, 0.05, 0.2, 0.5])
def test_winsorize_xsection_matches_per_date_loop(
    frame: pl.DataFrame, percentile: float, frames_match: FrameMatcher
) -> None:
    ours = frame.select(*KEYS, winsorize_xsection("x", percentile=percentile))
    expected = _per_date(frame, lambda v: reference_winsorize(v, percentile))
    frames_match(ours, expected, KEYS, ["x"], atol=1e-12, rtol=1e-12)
    assert not np.isinf(ours["x"].drop_nulls().to_numpy()).any()  # ±inf clipped to the bounds


@pytest.mark.parametrize(("lower", "upper"), [(0.0, 1.0), (-1.0, 3.0)])
def test_norm_xsection_matches_per_date_loop(lower: float, upper: float, frames_match: FrameMatcher) -> None:
    constant_date = START + dt.timedelta(days=1)
    # a null on the constant date is the separate case below; here it is a NaN
    frame = _long_frame(11, inf=False).with_columns(
        pl.when((pl.col("date") == constant_date) & pl.col("x").is_null()).then(NAN).otherwise("x").alias("x")
    )
    assert frame["x"].null_count() > 0 and frame["x"].is_nan().sum() > 0
    ours = frame.select(*KEYS, norm_xsection("x", lower=lower, upper=upper))
    expected = _per_date(frame, lambda v: reference_norm(v, lower, upper))
    frames_match(ours, expected, KEYS, ["x"], atol=1e-12)
    constant = ours.filter(pl.col("date") == constant_date)["x"]
    assert constant.drop_nans().drop_nulls().unique().to_list() == [lower]


def test_norm_xsection_keeps_null_missing_on_a_constant_cross_section() -> None:
    """Missing values stay missing (module docstring) — also when the other values are all equal."""
    frame = pl.DataFrame({"date": [1, 1, 1, 2, 2], "x": [3.0, None, 3.0, 1.0, None]})
    ours = frame.select(norm_xsection("x"))["x"].to_list()
    assert ours == [0.0, None, 0.0, 0.0, None]


@pytest.mark.parametrize(("lower_pct", "upper_pct", "fill"), [(0.2, 0.8, 0.0), (0.1, 0.5, -9.0), (0.3, 0.3, 1.5)])
def test_percentiles_xsection_matches_per_date_loop(
    lower_pct: float, upper_pct: float, fill: float, frames_match: FrameMatcher
) -> None:
    frame = _long_frame(5, nan=False)
    ours = frame.select(*KEYS, percentiles_xsection("x", lower_pct=lower_pct, upper_pct=upper_pct, fill_value=fill))
    expected = _per_date(frame, lambda v: reference_percentiles(v, lower_pct, upper_pct, fill))
    frames_match(ours, expected, KEYS, ["x"], atol=0.0)
    # nulls (missing) are replaced by the fill value, as documented
    nulls = frame.filter(pl.col("x").is_null())["row"]
    assert nulls.len() > 0
    assert ours.filter(pl.col("row").is_in(nulls.implode()))["x"].to_list() == [fill] * nulls.len()


def test_percentiles_xsection_treats_nan_like_null() -> None:
    """NaN is missing like null (module docstring), and missing values become ``fill_value`` (function
    docstring): a NaN must not survive the mask while a null is filled."""
    frame = pl.DataFrame({"date": [1] * 6, "x": [1.0, 2.0, 3.0, 4.0, None, NAN]})
    ours = frame.select(percentiles_xsection("x", lower_pct=0.25, upper_pct=0.75, fill_value=0.0))["x"].to_list()
    assert ours[4] == 0.0
    assert ours[5] == 0.0


def test_finite_filters_null_nan_and_inf_inside_aggregations() -> None:
    frame = pl.DataFrame({"date": [1, 1, 1, 1, 2, 2], "x": [1.0, NAN, INF, None, -INF, 4.0]})
    result = frame.group_by("date").agg(finite("x").sum().alias("s"), finite("x").len().alias("n")).sort("date")
    assert result.rows() == [(1, 1.0, 1), (2, 4.0, 1)]


# --------------------------------------------------------------------------------------------------------------
# dense kernels vs numpy, polars and the Expr builders


def _missing_equal(actual: np.ndarray, expected: np.ndarray, *, atol: float, rtol: float = 0.0) -> None:
    """Same NaN cells; equal infinities; other values within tolerance."""
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol, equal_nan=True)


CELLS = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False),
    st.floats(-1e3, 1e3, allow_nan=False),
    st.sampled_from([0.0, 1.0, 2.0]),  # ties
    st.just(NAN),
    st.sampled_from([INF, -INF]),
)


@st.composite
def dense_arrays(draw: st.DrawFn, *, cells: st.SearchStrategy[float] = CELLS) -> np.ndarray:
    n_dates = draw(st.integers(1, 5))
    width = draw(st.integers(1, 15))
    array: np.ndarray = draw(hnp.arrays(np.float64, (n_dates, width), elements=cells))
    return array


def _as_long(dense: np.ndarray, how_missing: np.ndarray) -> pl.DataFrame:
    """The cells of ``dense`` as rows ``date, row, x``; a NaN cell becomes an absent row, a null or a NaN
    according to ``how_missing`` (0, 1, 2)."""
    t, n = np.nonzero(~np.isnan(dense) | (how_missing > 0))
    values = dense[t, n]
    null = np.isnan(values) & (how_missing[t, n] == 1)
    return pl.DataFrame(
        {
            "date": t.astype(np.int64),
            "row": (t * dense.shape[1] + n).astype(np.int64),
            "x": pl.Series(values).set(pl.Series(null), None) if null.any() else values,
        }
    )


def _dense_frame(dense: np.ndarray, result: np.ndarray) -> pl.DataFrame:
    t, n = np.indices(dense.shape)
    return pl.DataFrame({"row": (t * dense.shape[1] + n).ravel(), "x": result.ravel()})


HYPOTHESIS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HYPOTHESIS
@given(dense=dense_arrays(), q=st.floats(0.0, 1.0))
def test_quantile_linear_matches_numpy_nanpercentile(dense: np.ndarray, q: float) -> None:
    expected = np.full(dense.shape[0], NAN)
    for t, values in enumerate(dense):
        finite_values = values[np.isfinite(values)]
        if finite_values.size:
            expected[t] = np.nanpercentile(finite_values, 100.0 * q)
    _missing_equal(quantile_linear(dense, q), expected, atol=1e-9, rtol=1e-12)


@HYPOTHESIS
@given(dense=dense_arrays(), q=st.floats(0.0, 1.0))
def test_quantile_nearest_matches_polars_default_quantile(dense: np.ndarray, q: float) -> None:
    expected = np.array([polars_quantile(values, q) for values in dense])
    _missing_equal(quantile_nearest(dense, q), expected, atol=0.0)


def test_quantile_nearest_rounds_like_polars_just_below_half() -> None:
    """(count − 1)·q = 0.49999999999999994 rounds to index 0 in polars (round half away from zero of the
    position); floor(position + 0.5) rounds it up to 1 because position + 0.5 rounds to 1.0 in float64."""
    q = float(np.nextafter(0.5, 0.0))
    values = np.array([[10.0, 20.0]])
    assert polars_quantile(values[0], q) == 10.0
    assert quantile_nearest(values, q)[0] == 10.0


@HYPOTHESIS
@given(dense=dense_arrays(), percentile=st.floats(0.0, 0.5), data=st.data())
def test_winsorize_kernel_matches_expr_builder(dense: np.ndarray, percentile: float, data: st.DataObject) -> None:
    # a row with ±inf but no finite value is a separate (documented) case below
    assume(all(np.isfinite(row).any() or not np.isinf(row).any() for row in dense))
    how_missing = data.draw(hnp.arrays(np.int8, dense.shape, elements=st.integers(0, 2)))
    long = _as_long(dense, how_missing)
    ours = _dense_frame(dense, winsorize(dense, percentile))
    builder = long.select("row", winsorize_xsection("x", over="date", percentile=percentile))
    expected = _dense_frame(dense, np.array([reference_winsorize(v, percentile) for v in dense]))
    assert_rows_match(ours, builder, expected)


def test_winsorize_kernel_matches_expr_builder_when_a_date_has_only_infinite_values() -> None:
    dense = np.array([[INF, -INF, NAN], [1.0, 2.0, 3.0]])
    long = _as_long(dense, np.zeros(dense.shape, dtype=np.int8))
    builder = long.sort("row").select(winsorize_xsection("x", over="date", percentile=0.1))["x"]
    kernel = winsorize(dense, 0.1).ravel()[long.sort("row")["row"].to_numpy()]
    np.testing.assert_array_equal(kernel, builder.fill_null(NAN).to_numpy())


def _well_spread(row: np.ndarray) -> bool:
    """Fewer than two finite values, or finite values that are not (nearly) all equal."""
    finite_values = row[np.isfinite(row)]
    if finite_values.size < 2:
        return True
    return bool(np.ptp(finite_values) > 1e-9 * (1.0 + np.abs(finite_values).max()))


@HYPOTHESIS
@given(dense=dense_arrays(), data=st.data())
def test_standardize_kernel_matches_expr_builder(dense: np.ndarray, data: st.DataObject) -> None:
    # constant cross-sections are the separate case below
    assume(all(_well_spread(row) for row in dense))
    how_missing = data.draw(hnp.arrays(np.int8, dense.shape, elements=st.integers(0, 2)))
    long = _as_long(dense, how_missing)
    ours = _dense_frame(dense, standardize(dense))
    builder = long.select("row", center_xsection("x", over="date", standardize=True))
    expected = _dense_frame(dense, np.array([reference_center(v, True) for v in dense]))
    assert_rows_match(ours, builder, expected)


def test_standardizing_a_constant_cross_section_gives_missing() -> None:
    """Its sample std is zero, so the standardized values are undefined (missing) — not ±inf or ±0.9, which
    is what the rounding error of the mean gives when n·c/n is not exactly c in float64."""
    wrong = []
    for constant, size in [(1.0, 5), (0.0, 7), (870.1448475755365, 5), (-994.5229996597038, 13), (0.1, 13)]:
        dense = np.full((1, size), constant)
        kernel = standardize(dense)[0]
        builder = (
            pl.DataFrame({"date": [0] * size, "x": dense[0]})
            .select(center_xsection("x", standardize=True))["x"]
            .fill_null(NAN)
            .to_numpy()
        )
        if not (np.isnan(kernel).all() and np.isnan(builder).all()):
            wrong.append(f"{size} x {constant!r}: kernel {kernel[0]!r}, builder {builder[0]!r}")
    assert not wrong, "constant cross-sections standardized to non-missing values:\n" + "\n".join(wrong)


def assert_rows_match(kernel: pl.DataFrame, builder: pl.DataFrame, expected: pl.DataFrame) -> None:
    """Kernel, builder and reference agree on every row the builder has (the dense padding is missing)."""
    rows = builder["row"]
    kernel_values = kernel.filter(pl.col("row").is_in(rows.implode())).sort("row")["x"].to_numpy()
    expected_values = expected.filter(pl.col("row").is_in(rows.implode())).sort("row")["x"].to_numpy()
    builder_values = builder.sort("row")["x"].fill_null(NAN).to_numpy()
    scale = np.where(np.isfinite(expected_values), np.abs(expected_values), 0.0)
    for values in (kernel_values, builder_values):
        _missing_equal(values, expected_values, atol=1e-9 * (1.0 + scale.max(initial=0.0)), rtol=1e-12)
    padding = kernel.filter(~pl.col("row").is_in(rows.implode()))["x"].to_numpy()
    assert np.isnan(padding).all()


def test_kernels_keep_missing_cells_missing_and_ignore_them() -> None:
    dense = np.array([[1.0, NAN, 3.0, 100.0, NAN], [NAN, NAN, NAN, NAN, NAN], [5.0, NAN, NAN, NAN, NAN]])
    for result in (winsorize(dense, 0.25), standardize(dense)):
        assert np.isnan(result[0, [1, 4]]).all()
        assert np.isnan(result[1]).all()
    np.testing.assert_allclose(winsorize(dense, 0.25)[0, [0, 2, 3]], [2.0, 3.0, 51.5])
    np.testing.assert_allclose(
        standardize(dense)[0, [0, 2, 3]], (np.array([1.0, 3.0, 100.0]) - 104 / 3) / np.std([1.0, 3.0, 100.0], ddof=1)
    )
    assert np.isnan(standardize(dense)[2, 0])  # one value: no sample std
    assert np.isnan(quantile_linear(dense, 0.5)[1]) and np.isnan(quantile_nearest(dense, 0.5)[1])
    assert quantile_linear(dense, 0.5)[2] == quantile_nearest(dense, 0.5)[2] == 5.0


@st.composite
def date_segments(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Rows in date order as ``(values, bounds)``: each date a segment of 0–15 cells (an empty date too)."""
    lengths = draw(st.lists(st.integers(0, 15), min_size=1, max_size=6))
    values = np.array([draw(CELLS) for _ in range(sum(lengths))], dtype=np.float64)
    return values, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _segments(values: np.ndarray, bounds: np.ndarray) -> list[np.ndarray]:
    return [values[lo:hi] for lo, hi in itertools.pairwise(bounds)]


def _as_grid(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """The rows as a (dates, widest date) grid, NaN after each date's rows (the grid functions' input)."""
    grid = np.full((bounds.size - 1, max(int(np.diff(bounds).max()), 1)), NAN)
    for d, segment in enumerate(_segments(values, bounds)):
        grid[d, : segment.size] = segment
    return grid


def _grid_rows(grid: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    return np.concatenate([grid[d, : hi - lo] for d, (lo, hi) in enumerate(itertools.pairwise(bounds))])


@HYPOTHESIS
@given(rows=date_segments())
def test_standardize_rows_matches_the_grid_kernel_and_a_per_date_loop(rows: tuple[np.ndarray, np.ndarray]) -> None:
    values, bounds = rows
    assume(all(_well_spread(segment) for segment in _segments(values, bounds)))
    ours = standardize_rows(values, bounds)
    expected = np.concatenate([reference_center(segment, True) for segment in _segments(values, bounds)])
    _missing_equal(ours, expected, atol=1e-9, rtol=1e-12)
    _missing_equal(ours, _grid_rows(standardize(_as_grid(values, bounds)), bounds), atol=1e-12, rtol=1e-12)


@HYPOTHESIS
@given(rows=date_segments(), percentile=st.floats(0.0, 0.5))
def test_winsorize_rows_matches_the_grid_kernel_and_a_per_date_loop(
    rows: tuple[np.ndarray, np.ndarray], percentile: float
) -> None:
    values, bounds = rows
    ours = winsorize_rows(values, bounds, percentile)
    # a date with ±inf but no finite value keeps its values (the grid kernel's documented case)
    plain = [np.isfinite(segment).any() or not np.isinf(segment).any() for segment in _segments(values, bounds)]
    expected = np.concatenate(
        [
            reference_winsorize(segment, percentile) if ok else segment
            for segment, ok in zip(_segments(values, bounds), plain, strict=True)
        ]
    )
    _missing_equal(ours, expected, atol=1e-9, rtol=1e-12)
    _missing_equal(ours, _grid_rows(winsorize(_as_grid(values, bounds), percentile), bounds), atol=0.0)


@HYPOTHESIS
@given(rows=date_segments(), fractions=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=3))
def test_quantile_nearest_rows_matches_polars_per_date(
    rows: tuple[np.ndarray, np.ndarray], fractions: list[float]
) -> None:
    values, bounds = rows
    ours = quantile_nearest_rows(values, bounds, fractions)
    grid = _as_grid(values, bounds)
    for q, per_date in zip(fractions, ours, strict=True):
        expected = np.array([polars_quantile(segment, q) for segment in _segments(values, bounds)])
        _missing_equal(per_date, expected, atol=0.0)
        _missing_equal(per_date, quantile_nearest(grid, q), atol=0.0)


def test_row_functions_on_a_worked_example() -> None:
    """Two dates: [1, NaN, 3, 100] and [5]; rows of a frame located by date_bounds."""
    frame = pl.DataFrame({"date": [START] * 4 + [START + dt.timedelta(days=1)], "x": [1.0, NAN, 3.0, 100.0, 5.0]})
    bounds = date_bounds(frame)
    np.testing.assert_array_equal(bounds, [0, 4, 5])
    values = frame["x"].to_numpy()
    std = np.std([1.0, 3.0, 100.0], ddof=1)
    _missing_equal(
        standardize_rows(values, bounds),
        np.array([(1.0 - 104 / 3) / std, NAN, (3.0 - 104 / 3) / std, (100.0 - 104 / 3) / std, NAN]),
        atol=1e-15,
    )
    # the 0.25 and 0.75 linear quantiles of 1, 3, 100 are 2 and 51.5; one value is its own quantile
    _missing_equal(winsorize_rows(values, bounds, 0.25), np.array([2.0, NAN, 3.0, 51.5, 5.0]), atol=1e-15)
    # nearest rank of 1, 3, 100: positions 0.5 and 1.5 round half away to 1 and 2
    low, high = quantile_nearest_rows(values, bounds, (0.25, 0.75))
    np.testing.assert_array_equal(low, [3.0, 5.0])
    np.testing.assert_array_equal(high, [100.0, 5.0])
    np.testing.assert_array_equal(date_bounds(frame.head(0)), [0])


# --------------------------------------------------------------------------------------------------------------
# fill, smooth, top-n and weights


def _history_frame(seed: int) -> pl.DataFrame:
    """``date, symbol, a, b``: unbalanced shuffled histories, ``a`` Float64 with null/NaN/inf, ``b`` Int64."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(6):
        start, end = sorted(rng.choice(15, size=2, replace=False))
        for d in range(start, end + 1):
            if rng.random() < 0.1:
                continue
            a = float(rng.normal())
            kind = rng.random()
            a_value: float | None = None if kind < 0.1 else NAN if kind < 0.2 else INF if kind < 0.25 else a
            b_value = None if rng.random() < 0.15 else int(rng.integers(-5, 5))
            rows.append((START + dt.timedelta(days=d), f"S{s}", a_value, b_value))
    frame = pl.DataFrame(
        rows, schema={"date": pl.Date, "symbol": pl.String, "a": pl.Float64, "b": pl.Int64}, orient="row"
    )
    return frame.sample(fraction=1.0, shuffle=True, seed=seed)


def test_fill_features_matches_per_symbol_forward_fill(frames_match: FrameMatcher) -> None:
    frame = _history_frame(1)
    result = fill_features(frame, ["a", "b"])
    assert isinstance(result, pl.LazyFrame)
    ours = result.collect()
    assert ours["date"].is_sorted()
    assert ours.schema["a"] == ours.schema["b"] == pl.Float64
    expected = []
    for (symbol,), history in frame.partition_by("symbol", as_dict=True).items():
        history = history.sort("date")
        filled: dict[str, list[float | None]] = {"a": [], "b": []}
        for name in ("a", "b"):
            last: float | None = None
            for value in history[name].to_list():
                if value is not None and np.isfinite(value):
                    last = float(value)
                filled[name].append(last)
        expected.append(pl.DataFrame({"date": history["date"], "symbol": symbol, **filled}))
    expected_frame = pl.concat(expected, how="vertical_relaxed")
    frames_match(ours, expected_frame, ["date", "symbol"], ["a", "b"], atol=0.0)
    assert ours["a"].is_nan().sum() == 0 and ours["a"].is_infinite().sum() == 0
    assert expected_frame["a"].null_count() < frame["a"].fill_nan(None).null_count()  # something was filled


@pytest.mark.parametrize("window", [1, 3])
def test_smooth_features_matches_trailing_mean_per_symbol(window: int, frames_match: FrameMatcher) -> None:
    frame = _history_frame(2).with_columns(pl.col("a").fill_nan(0.5).clip(-10, 10))
    ours = smooth_features(frame.lazy(), ["a"], window=window).collect()
    expected = []
    for (symbol,), history in frame.partition_by("symbol", as_dict=True).items():
        history = history.sort("date")
        values = history["a"].to_list()
        means: list[float | None] = []
        for end in range(len(values)):
            trailing = values[end - window + 1 : end + 1] if end + 1 >= window else []
            means.append(float(np.mean(trailing)) if trailing and None not in trailing else None)
        expected.append(pl.DataFrame({"date": history["date"], "symbol": symbol, "a": means}))
    frames_match(ours, pl.concat(expected), ["date", "symbol"], ["a"], atol=1e-14)


@pytest.mark.parametrize("n", [1, 3, 50])
def test_top_n_by_group_matches_per_date_sort(n: int) -> None:
    rng = np.random.default_rng(4)
    frame = pl.DataFrame(
        {
            "date": np.repeat(np.arange(5), 8),
            "symbol": np.tile([f"S{i}" for i in range(8)], 5),
            "market_cap": rng.permutation(40).astype(np.float64) + 1.0,
        }
    ).sample(fraction=1.0, shuffle=True, seed=1)
    kept = top_n_by_group(frame, n).collect()
    masked = top_n_by_group(frame, n, keep_only=False).collect()
    expected: set[tuple[int, str]] = set()
    for (date,), day in frame.partition_by("date", as_dict=True).items():
        order = np.argsort(-day["market_cap"].to_numpy())
        expected |= {(date, day["symbol"][int(i)]) for i in order[:n]}
    assert set(kept.select("date", "symbol").iter_rows()) == expected
    assert masked.height == frame.height
    assert masked.schema["rank_mask"] == pl.Int8
    assert set(masked.filter(pl.col("rank_mask") == 1).select("date", "symbol").iter_rows()) == expected
    assert masked["rank_mask"].sum() == len(expected) == min(n, 8) * 5


@pytest.mark.parametrize(("window", "half_life"), [(1, 1), (5, 2), (252, 126), (10, 0.5), (np.int64(4), 3.5)])
def test_exp_weights_closed_form(window: int, half_life: float) -> None:
    weights = exp_weights(window, half_life)
    j = np.arange(int(window))
    np.testing.assert_allclose(weights, 0.5 ** ((int(window) - 1 - j) / half_life), rtol=1e-14, atol=0)
    assert weights.shape == (int(window),)
    assert weights[-1] == 1.0
    if window > half_life + 1 and float(half_life).is_integer():
        assert weights[-1 - int(half_life)] == pytest.approx(0.5, rel=1e-14)


# --------------------------------------------------------------------------------------------------------------
# errors users see


@pytest.mark.parametrize(
    ("window", "half_life", "message"),
    [
        (0, 2, r"window must be a positive integer, got 0"),
        (-3, 2, r"window must be a positive integer, got -3"),
        (2.5, 2, r"window must be a positive integer, got 2.5"),
        (True, 2, r"window must be a positive integer, got True"),
        (5, 0, r"half_life must be positive, got 0"),
        (5, -1.0, r"half_life must be positive, got -1.0"),
        (5, NAN, r"half_life must be positive, got nan"),
    ],
)
def test_exp_weights_rejects_bad_arguments(window: object, half_life: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        exp_weights(window, half_life)  # type: ignore[arg-type]


def test_builder_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"percentile must be a fraction between 0 and 0.5, got 0.6"):
        winsorize_xsection("x", percentile=0.6)
    with pytest.raises(ValueError, match=r"percentile must be a fraction between 0 and 0.5, got -0.01"):
        winsorize_xsection("x", percentile=-0.01)
    with pytest.raises(ValueError, match=r"lower_pct \(0.9\) must not exceed upper_pct \(0.1\)"):
        percentiles_xsection("x", lower_pct=0.9, upper_pct=0.1)
    with pytest.raises(ValueError, match=r"upper_pct must be a fraction between 0 and 1.0, got 1.5"):
        percentiles_xsection("x", lower_pct=0.1, upper_pct=1.5)
    with pytest.raises(ValueError, match=r"lower_pct must be a fraction between 0 and 1.0, got -0.1"):
        percentiles_xsection("x", lower_pct=-0.1, upper_pct=0.5)


def test_frame_helper_errors() -> None:
    frame = pl.DataFrame({"date": [START], "symbol": ["S0"], "a": [1.0]})
    with pytest.raises(ValueError, match=r"missing column\(s\) \['b'\]; the frame has \['date', 'symbol', 'a'\]"):
        fill_features(frame, ["a", "b"])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['b'\]"):
        smooth_features(frame.lazy(), ["b"], window=2)
    with pytest.raises(ValueError, match=r"window must be a positive integer, got 0"):
        smooth_features(frame, ["a"], window=0)
    with pytest.raises(ValueError, match=r"n must be a positive integer, got 0"):
        top_n_by_group(frame, 0)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['market_cap'\]"):
        top_n_by_group(frame, 3)


def test_public_names() -> None:
    assert set(xsection.__all__) == {
        "center_xsection",
        "exp_weights",
        "fill_features",
        "finite",
        "norm_xsection",
        "percentiles_xsection",
        "smooth_features",
        "top_n_by_group",
        "winsorize_xsection",
    }
