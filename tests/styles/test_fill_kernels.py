"""The compiled fill kernels (:mod:`factor_engine.styles._fill_kernels`) against the numpy implementation they
replaced (kept here as the reference: per-date bincount sums over the rows) on randomized rows with every edge
case, and against a plain per-date loop written from the formula (weighted lstsq) on a small panel."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest

from factor_engine.styles.descriptors import TRIM_SIGMA
from factor_engine.styles.fill import (
    MIN_OBSERVED,
    _date_index,
    _fill_rows,
    _size_rows,
    fill_context,
    fill_missing_exposures,
)
from factor_engine.xsection import CONSTANT_TOL

# --------------------------------------------------------------------------------------------------------------
# the numpy implementation the kernels replaced (fill.py before them), unchanged


def reference_date_index(dates: pl.Series) -> tuple[np.ndarray, pl.Series]:
    days = dates.to_physical().to_numpy()
    if days.size and bool(np.all(days[1:] >= days[:-1])):
        change = np.empty(days.size, dtype=bool)
        change[0] = True
        np.not_equal(days[1:], days[:-1], out=change[1:])
        return np.cumsum(change) - 1, dates.filter(pl.Series(change))
    unique, index = np.unique(days, return_inverse=True)
    return index, pl.Series(dates.name, unique.astype(np.int32)).cast(pl.Date)


def _sums(index: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(index, weights=weights, minlength=size)


def reference_fill_rows(
    values: np.ndarray,
    dates: np.ndarray,
    sectors: np.ndarray,
    size: np.ndarray,
    weights: np.ndarray,
    n_dates: int,
    n_sectors: int,
    cell: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    observed = np.isfinite(values)
    enough = np.bincount(dates[observed], minlength=n_dates) >= MIN_OBSERVED
    wanted = ~observed & enough[dates]
    filled = values.copy()
    if n_sectors == 0 or not wanted.any():
        return filled, wanted
    w, x, y = weights[observed], size[observed], values[observed]
    cell = cell[observed]
    cells = n_dates * n_sectors
    wx = w * x
    sw, swx, swy = _sums(cell, w, cells), _sums(cell, wx, cells), _sums(cell, w * y, cells)
    swxx, swxy = _sums(cell, wx * x, cells), _sums(cell, wx * y, cells)
    shape = (n_dates, n_sectors)
    sw, swx, swy, swxx, swxy = (a.reshape(shape) for a in (sw, swx, swy, swxx, swxy))
    present = sw > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        sxx = np.where(present, swxx - swx * swx / sw, 0.0).sum(axis=1)
        sxy = np.where(present, swxy - swx * swy / sw, 0.0).sum(axis=1)
        slope = np.where(sxx > 1e-12 * np.maximum(swxx.sum(axis=1), 1e-300), sxy / sxx, 0.0)
        intercept = np.where(present, (swy - slope[:, None] * swx) / sw, np.nan)
        pooled = (swy.sum(axis=1) - slope * swx.sum(axis=1)) / sw.sum(axis=1)
    intercept = np.where(present, intercept, pooled[:, None])
    t_fill = dates[wanted]
    filled[wanted] = intercept[t_fill, sectors[wanted]] + slope[t_fill] * size[wanted]
    return filled, wanted


@dataclass(frozen=True)
class _ByDate:
    dates: np.ndarray
    n_dates: int
    lengths: np.ndarray | None

    @classmethod
    def of(cls, dates: np.ndarray, n_dates: int) -> _ByDate:
        in_order = dates.size == 0 or bool(np.all(dates[1:] >= dates[:-1]))
        return cls(dates, n_dates, np.bincount(dates, minlength=n_dates) if in_order else None)

    def sum(self, values: np.ndarray) -> np.ndarray:
        if self.lengths is None:
            return np.bincount(self.dates, weights=values, minlength=self.n_dates)
        sums = np.zeros(self.n_dates)
        nonempty = self.lengths > 0
        if values.size:
            starts = np.concatenate(([0], np.cumsum(self.lengths)[:-1]))
            sums[nonempty] = np.add.reduceat(values, starts[nonempty])
        return sums

    def expand(self, per_date: np.ndarray) -> np.ndarray:
        return np.repeat(per_date, self.lengths) if self.lengths is not None else per_date[self.dates]


def _standardized_rows(
    values: np.ndarray, cap_weights: np.ndarray, by_date: _ByDate
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    finite = np.isfinite(values)
    clean = np.where(finite, values, 0.0)
    count = by_date.sum(finite.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = cap_weights * finite
        cap_mean = by_date.sum(weights * clean) / by_date.sum(weights)
        del weights
        mean = by_date.sum(clean) / count
        clean -= by_date.expand(mean)
        clean *= finite
        std = np.sqrt(by_date.sum(clean * clean) / (count - 1))
        del clean
        std[~(std > CONSTANT_TOL * np.maximum(np.maximum(np.abs(mean), np.abs(cap_mean)), 1e-300))] = np.nan
        standardized = values - by_date.expand(cap_mean)
        standardized /= by_date.expand(std)
    return standardized, cap_mean, std


def reference_size_rows(caps: np.ndarray, dates: np.ndarray, n_dates: int) -> np.ndarray:
    by_date = _ByDate.of(dates, n_dates)
    with np.errstate(invalid="ignore", divide="ignore"):
        usable = np.isfinite(caps) & (caps > 0)
        log_cap = np.where(usable, np.log(np.where(usable, caps, 1.0)), np.nan)
    cap_weights = np.where(usable, caps, 0.0)
    _, cap_mean, std = _standardized_rows(log_cap, cap_weights, by_date)
    half_width = TRIM_SIGMA * std
    clipped = np.clip(log_cap, by_date.expand(cap_mean - half_width), by_date.expand(cap_mean + half_width))
    size = _standardized_rows(clipped, cap_weights, by_date)[0]
    flat = by_date.expand(~(std > 0)) & usable
    size[flat] = 0.0
    return size


def reference_fill_missing(universe: pl.DataFrame, scores: pl.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """The filled column and the per-date counts as fill.py computed them before the kernels (scores on the
    universe's rows, in its order)."""
    t, dates = reference_date_index(universe["date"])
    labels = universe["sector"]
    names = labels.drop_nulls().unique().sort()
    sectors = labels.cast(pl.Enum(names.to_list())).to_physical().fill_null(-1).to_numpy().astype(np.int64)
    caps = universe["market_cap"].cast(pl.Float64).to_numpy()
    size = reference_size_rows(caps, t, dates.len())
    with np.errstate(invalid="ignore"):
        used = np.flatnonzero((sectors >= 0) & np.isfinite(size) & np.isfinite(caps) & (caps > 0))
    values = scores[column].cast(pl.Float64).to_numpy().copy()
    n_sectors = len(names)
    fitted, wanted = reference_fill_rows(
        values[used],
        t[used],
        sectors[used],
        size[used],
        np.sqrt(caps[used]),
        dates.len(),
        n_sectors,
        t[used] * n_sectors + sectors[used],
    )
    values[used] = fitted
    return values, np.bincount(t[used][wanted], minlength=dates.len())


# --------------------------------------------------------------------------------------------------------------
# randomized rows with the edge cases


def assert_same(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-12) -> None:
    """Same missing entries, values within ``rtol`` of the largest magnitude (only summation order differs)."""
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    finite = np.isfinite(expected)
    scale = max(float(np.abs(expected[finite]).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize(
    "days",
    [
        [],
        [5],
        [3, 3, 4, 7, 7, 7, 9],
        [3, 3, 4, 7, 7, 2, 9],  # not in order: np.unique
        [7, 6, 5],
        [1, 1, 1, 0],  # out of order only at the last row
    ],
)
def test_date_index_matches_numpy(days: list[int]) -> None:
    dates = pl.Series("date", days, dtype=pl.Int32).cast(pl.Date)
    index, unique = _date_index(dates)
    expected_index, expected_unique = reference_date_index(dates)
    np.testing.assert_array_equal(index, expected_index)
    assert index.dtype == np.int64
    assert unique.equals(expected_unique) and unique.name == "date" and unique.dtype == pl.Date


def random_caps(rng: np.random.Generator, n_dates: int) -> tuple[np.ndarray, np.ndarray]:
    """(caps, dates) rows, in date order, with every case the size handles."""
    per_date = rng.integers(30, 90, n_dates)
    per_date[3] = 0  # a date without rows
    per_date[4] = 1  # a single row: no std
    dates = np.repeat(np.arange(n_dates), per_date)
    caps = np.exp(rng.normal(21.0, 1.5, dates.size))
    caps[rng.random(dates.size) < 0.1] = np.nan
    caps[rng.random(dates.size) < 0.03] = 0.0
    caps[rng.random(dates.size) < 0.02] = -5.0
    caps[rng.random(dates.size) < 0.02] = np.inf
    on = dates == 5
    caps[on] = 1.0  # all caps equal (a panel without caps): size 0
    caps[np.flatnonzero(on)[:3]] = np.nan
    on = np.flatnonzero(dates == 6)
    caps[on] = 3e9 * (1.0 + 1e-15 * np.arange(on.size))  # equal within CONSTANT_TOL: size 0
    caps[np.flatnonzero(dates == 7)[:4]] = np.exp(45.0)  # outliers to trim at 3σ
    on = np.flatnonzero(dates == 8)
    caps[on[2:]] = np.nan  # two rows with caps
    caps[dates == 9] = np.nan  # no caps that date
    on = np.flatnonzero(dates == 10)
    caps[on] = np.where(np.arange(on.size) % 2, 2e9, 5e9)  # two values: trimmed to nothing, size ±
    return caps, dates


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shuffled", [False, True])
def test_size_rows_matches_numpy(seed: int, shuffled: bool) -> None:
    rng = np.random.default_rng(seed)
    n_dates = 14
    caps, dates = random_caps(rng, n_dates)
    if shuffled:  # the _ByDate bincount path; the kernel accumulates by index in any order
        order = rng.permutation(dates.size)
        caps, dates = caps[order], dates[order]
    n_dates += 2  # dates with no rows at the end
    actual = _size_rows(caps, dates, n_dates)
    expected = reference_size_rows(caps, dates, n_dates)
    assert_same(actual, expected)
    # what the rows are meant to exercise
    usable = np.isfinite(caps) & (caps > 0)
    for flat in (4, 5, 6):
        assert (actual[(dates == flat) & usable] == 0.0).all()
    assert np.isnan(actual[~usable]).all()
    assert np.isfinite(actual[(dates == 7) & usable]).all()
    on_trimmed = (dates == 7) & usable
    assert np.abs(actual[on_trimmed]).max() < 0.5 * np.abs(np.log(caps[on_trimmed]) - 21.0).max()


def test_size_rows_of_no_rows_and_read_only_caps() -> None:
    empty = _size_rows(np.empty(0), np.empty(0, dtype=np.int64), 3)
    assert empty.shape == (0,)
    assert _size_rows(np.empty(0), np.empty(0, dtype=np.int64), 0).shape == (0,)
    rng = np.random.default_rng(5)
    caps, dates = random_caps(rng, 12)
    read_only = caps.copy()
    read_only.flags.writeable = False
    assert_same(_size_rows(read_only, dates.astype(np.int32), 12), reference_size_rows(caps, dates, 12))


def random_rows(rng: np.random.Generator, n_dates: int, n_sectors: int) -> dict[str, np.ndarray]:
    """Usable rows (values NaN where missing) in date order with every case the fill handles."""
    per_date = rng.integers(MIN_OBSERVED + 15, 80, n_dates)
    per_date[2] = 0  # a date without rows
    dates = np.repeat(np.arange(n_dates), per_date)
    sectors = rng.integers(0, n_sectors, dates.size)
    size = rng.standard_normal(dates.size)
    weights = np.sqrt(np.exp(rng.normal(21.0, 1.5, dates.size)))
    values = 0.3 * sectors + 0.8 * size + 0.2 * rng.standard_normal(dates.size)
    values[rng.random(dates.size) < 0.25] = np.nan
    values[rng.random(dates.size) < 0.02] = np.inf  # not an observation: filled
    on = np.flatnonzero(dates == 3)
    values[on[MIN_OBSERVED - 1 :]] = np.nan  # too few observed: left missing
    on = np.flatnonzero(dates == 4)
    values[on] = 1.0
    values[on[MIN_OBSERVED:]] = np.nan  # exactly MIN_OBSERVED observed: filled
    values[(dates == 5) & (sectors == 1)] = np.nan  # a sector without observations: pooled intercept
    size[dates == 6] = 0.0  # no size that date (caps all equal): sectors alone
    on = dates == 7
    size[on] = 0.5 * sectors[on] - 1.0  # size constant within each sector: sxx ≈ 0, slope 0
    on = dates == 8
    values[on & (sectors != 0) & np.isfinite(values)] = np.nan  # one sector observed, all its values 2
    values[on & (sectors == 0) & np.isfinite(values)] = 2.0
    values[np.flatnonzero(on & (sectors == 0))[: MIN_OBSERVED + 2]] = 2.0
    values[dates == 9] = np.nan  # nothing observed
    values[np.flatnonzero(dates == 10)] = 0.7  # nothing missing
    return {"values": values, "dates": dates, "sectors": sectors, "size": size, "weights": weights}


def _both(rows: dict[str, np.ndarray], n_dates: int, n_sectors: int) -> tuple[tuple[np.ndarray, ...], ...]:
    args = (rows["values"], rows["dates"], rows["sectors"], rows["size"], rows["weights"], n_dates, n_sectors)
    actual = _fill_rows(*args)
    expected = reference_fill_rows(*args, rows["dates"] * n_sectors + rows["sectors"])
    return actual, expected


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("shuffled", [False, True])
def test_fill_rows_matches_numpy(seed: int, shuffled: bool) -> None:
    rng = np.random.default_rng(seed)
    n_dates, n_sectors = 13, 6
    rows = random_rows(rng, n_dates, n_sectors)
    if shuffled:
        order = rng.permutation(rows["dates"].size)
        rows = {name: array[order] for name, array in rows.items()}
    values = rows["values"].copy()
    (filled, wanted), (expected, expected_wanted) = _both(rows, n_dates + 1, n_sectors + 1)  # + an empty sector
    np.testing.assert_array_equal(wanted, expected_wanted)
    assert_same(filled, expected)
    np.testing.assert_array_equal(rows["values"], values)  # the input untouched
    # what the rows are meant to exercise
    dates = rows["dates"]
    assert not wanted[dates == 3].any() and not wanted[dates == 9].any()
    assert wanted[dates == 4].any() and wanted[dates == 5].any() and not wanted[dates == 10].any()
    assert wanted[(dates == 5) & (rows["sectors"] == 1)].all()
    assert np.isfinite(filled[wanted]).all()
    observed = np.isfinite(values)
    np.testing.assert_array_equal(filled[observed], values[observed])


def test_fill_rows_slope_cases() -> None:
    """The slope's zero test and the pooled intercept, checked directly on the rows meant for them."""
    rng = np.random.default_rng(11)
    rows = random_rows(rng, 12, 4)
    (filled, wanted), (expected, _) = _both(rows, 12, 4)
    assert_same(filled, expected)
    dates, sectors, values = rows["dates"], rows["sectors"], rows["values"]
    # size constant within each sector: the fill is each sector's weighted mean
    on = (dates == 7) & np.isfinite(values)
    w = rows["weights"]
    for s in range(4):
        cell = on & (sectors == s)
        fill = wanted & (dates == 7) & (sectors == s)
        if cell.any() and fill.any():
            np.testing.assert_allclose(filled[fill], np.average(values[cell], weights=w[cell]), rtol=1e-12)
    # one sector observed, its values all 2: slope 0, every other sector takes its (pooled) intercept 2
    fill = wanted & (dates == 8)
    assert fill.any()
    np.testing.assert_allclose(filled[fill], 2.0, rtol=1e-12)


def test_fill_rows_without_rows_or_sectors() -> None:
    empty_f, empty_i = np.empty(0), np.empty(0, dtype=np.int64)
    for n_dates, n_sectors in ((0, 0), (3, 0), (3, 2)):
        filled, wanted = _fill_rows(empty_f, empty_i, empty_i, empty_f, empty_f, n_dates, n_sectors)
        assert filled.shape == (0,) and wanted.shape == (0,) and wanted.dtype == bool
    # no sectors: the rows to fill are marked, not filled (as before)
    rng = np.random.default_rng(4)
    rows = random_rows(rng, 12, 1)
    rows["sectors"][:] = 0
    (filled, wanted), (expected, expected_wanted) = _both(rows, 12, 0)
    np.testing.assert_array_equal(wanted, expected_wanted)
    assert wanted.any()
    assert_same(filled, expected)
    assert_same(filled, rows["values"])


def random_universe(seed: int, shuffled: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A universe (sectors and caps missing on some rows) and a score with the fill's cases, as frames."""
    rng = np.random.default_rng(seed)
    n_dates, n_assets = 15, 60
    date = np.repeat(np.arange(n_dates), n_assets)
    symbol = np.tile(np.arange(n_assets), n_dates)
    sector = rng.integers(0, 5, date.size).astype(object)
    sector[rng.random(date.size) < 0.05] = None
    caps = np.exp(rng.normal(21.0, 1.5, date.size))
    caps[rng.random(date.size) < 0.05] = np.nan
    caps[rng.random(date.size) < 0.02] = 0.0
    caps[date == 2] = 1.0  # caps all equal: size 0
    score = 0.3 * rng.integers(0, 5, date.size) + 0.2 * rng.standard_normal(date.size)
    score[rng.random(date.size) < 0.2] = np.nan
    score[(date == 4) & (symbol >= MIN_OBSERVED - 2)] = np.nan  # too few observed
    score[(date == 6) & (sector == 3)] = np.nan  # a sector without observations
    keep = rng.random(date.size) > 0.05  # assets missing from some dates
    universe = pl.DataFrame(
        {
            "date": pl.Series(date[keep].astype(np.int32)).cast(pl.Date),
            "symbol": [f"S{s:03d}" for s in symbol[keep]],
            "sector": pl.Series([None if s is None else f"G{s}" for s in sector[keep]], dtype=pl.String),
            "market_cap": pl.Series(caps[keep], nan_to_null=True),
        }
    )
    scores = universe.select("date", "symbol").with_columns(x_score=pl.Series(score[keep], nan_to_null=True))
    if shuffled:
        order = rng.permutation(universe.height)
        universe, scores = universe[order], scores[order]
    return universe, scores


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shuffled", [False, True])
def test_fill_context_matches_numpy(seed: int, shuffled: bool) -> None:
    universe, scores = random_universe(seed, shuffled)
    expected, expected_counts = reference_fill_missing(universe, scores, "x_score")
    filled, counts, dates = fill_missing_exposures(universe, scores, ["x_score"])
    assert filled.select("date", "symbol").equals(scores.select("date", "symbol"))
    assert_same(filled["x_score"].to_numpy(), expected)
    np.testing.assert_array_equal(counts["x_score"], expected_counts)
    assert counts["x_score"].dtype == np.int64 and counts["x_score"].sum() > 50
    assert counts["x_score"][dates.to_list().index(universe["date"].unique().sort()[4])] == 0
    # scores on a subset of the universe's rows, in another order: the other rows are missing (and filled, and
    # counted) as before
    subset = scores.sample(fraction=0.9, seed=seed, shuffle=True)
    part, part_counts = fill_context(universe).fill(subset, "x_score")
    keys = universe.select("date", "symbol")
    on_universe = keys.join(subset, on=["date", "symbol"], how="left", maintain_order="left")
    expected, expected_counts = reference_fill_missing(universe, on_universe, "x_score")
    rows = subset.join(keys.with_row_index("row"), on=["date", "symbol"], how="left", maintain_order="left")["row"]
    assert part.select("date", "symbol").equals(subset.select("date", "symbol"))
    assert_same(part["x_score"].to_numpy(), expected[rows.to_numpy()])
    np.testing.assert_array_equal(part_counts, expected_counts)


def test_fill_of_nan_and_of_complete_scores() -> None:
    """NaN (not null) scores are missing too; a score without any missing value comes back as it is."""
    universe, scores = random_universe(4, False)
    with_nan = scores.with_columns(pl.col("x_score").fill_null(float("nan")))
    expected, expected_counts = reference_fill_missing(universe, with_nan, "x_score")
    context = fill_context(universe)
    filled, counts = context.fill(with_nan, "x_score")
    assert_same(filled["x_score"].to_numpy(), expected)
    np.testing.assert_array_equal(counts, expected_counts)
    assert counts.sum() > 50
    complete = scores.with_columns(pl.col("x_score").fill_null(0.5).cast(pl.Float32))
    filled, counts = context.fill(complete, "x_score")
    assert filled["x_score"].dtype == pl.Float64 and counts.dtype == np.int64 and counts.shape == (15,)
    assert not counts.any()
    np.testing.assert_array_equal(filled["x_score"].to_numpy(), complete["x_score"].cast(pl.Float64).to_numpy())


# --------------------------------------------------------------------------------------------------------------
# a plain per-date loop from the formula


def formula_size(caps: np.ndarray) -> np.ndarray:
    """One date's USE4 size: log cap standardized (cap-weighted mean, equal-weighted std), clipped at 3σ,
    standardized again; 0 when the caps are all equal."""
    log_cap = np.log(caps)
    std = log_cap.std(ddof=1)
    if not std > 1e-12 * np.abs(log_cap).max():
        return np.zeros_like(caps)
    center = np.average(log_cap, weights=caps)
    clipped = np.clip(log_cap, center - TRIM_SIGMA * std, center + TRIM_SIGMA * std)
    return (clipped - np.average(clipped, weights=caps)) / clipped.std(ddof=1)


def formula_fill(universe: pl.DataFrame, scores: pl.DataFrame, column: str) -> np.ndarray:
    """Per date: weighted least squares (weights √cap) of the observed scores on sector dummies and size, by
    ``numpy.linalg.lstsq``; the fitted values for the missing ones (a sector without observations: the pooled
    intercept given the slope)."""
    frame = universe.with_columns(score=scores[column]).with_row_index("row")
    result = frame["score"].cast(pl.Float64).to_numpy().copy()
    for _, day in frame.group_by("date"):
        capped = day.filter(pl.col("market_cap") > 0)
        capped = capped.with_columns(size=pl.Series(formula_size(capped["market_cap"].to_numpy())))
        usable = capped.filter(pl.col("sector").is_not_null())  # size is over every asset with a cap
        caps, size = usable["market_cap"].to_numpy(), usable["size"].to_numpy()
        y = usable["score"].cast(pl.Float64).to_numpy()
        sectors = usable["sector"].to_numpy()
        observed = np.isfinite(y)
        if observed.sum() < MIN_OBSERVED or observed.all():
            continue
        present = np.unique(sectors[observed])
        design = np.column_stack([(sectors[observed] == s).astype(float) for s in present] + [size[observed]])
        root_w = caps[observed] ** 0.25
        coef, *_ = np.linalg.lstsq(design * root_w[:, None], y[observed] * root_w, rcond=None)
        slope = coef[-1]
        w = np.sqrt(caps[observed])
        pooled = (w @ y[observed] - slope * (w @ size[observed])) / w.sum()
        intercepts = dict(zip(present, coef[:-1], strict=True))
        rows = usable["row"].to_numpy()
        for i in np.flatnonzero(~observed):
            result[rows[i]] = intercepts.get(sectors[i], pooled) + slope * size[i]
    return result


@pytest.mark.parametrize("shuffled", [False, True])
def test_fill_matches_per_date_lstsq(shuffled: bool) -> None:
    universe, scores = random_universe(3, shuffled)
    filled, counts, _ = fill_missing_exposures(universe, scores, ["x_score"])
    expected = formula_fill(universe, scores, "x_score")
    assert_same(filled["x_score"].to_numpy(), expected, rtol=1e-10)
    assert counts["x_score"].sum() == int((np.isfinite(expected) & scores["x_score"].is_null().to_numpy()).sum())


def test_fill_module_imports_no_numba() -> None:
    """The kernels (numba) are imported by the functions that use them, not with the module."""
    code = "import sys, factor_engine.styles.fill; assert 'numba' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
