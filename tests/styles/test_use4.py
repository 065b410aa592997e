"""USE4 descriptors and styles (beta, residual volatility, non-linear size) against slow per-date / per-asset
loops written from the formulas, a known-beta market, and the cross-sectional properties the styles promise."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from factor_engine.styles import compute_styles, use4
from factor_engine.styles.descriptors import combine, descriptor_to_style, orthogonalize, standardize_use4, trim
from factor_engine.synthetic import generate_market

WINDOW = 40
HALF_LIFE = 10.0
MIN_OBS = 15
N_DATES, N_ASSETS = 120, 7


def assert_same(actual: np.ndarray, expected: np.ndarray, *, rtol: float = 1e-10, atol: float = 1e-13) -> None:
    """Same NaN pattern exactly; where defined ``|a - e| <= atol + rtol * |e|``."""
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg="NaN patterns differ")
    defined = ~np.isnan(expected)
    assert defined.any(), "the comparison covers no defined value"
    error = np.abs(actual[defined] - expected[defined]) / (atol + rtol * np.abs(expected[defined]))
    assert error.max() <= 1.0, f"max error {error.max():.3g} times the tolerance"


# --------------------------------------------------------------------------------------------------------------
# small random panels


@pytest.fixture(scope="module")
def market_panel() -> tuple[np.ndarray, np.ndarray]:
    """(returns (T, N), market (T,)) with random missing returns, a late starter, a long gap, an empty asset and
    missing market dates."""
    rng = np.random.default_rng(20240611)
    market = 0.0004 + 0.01 * rng.standard_normal(N_DATES)
    market[0] = np.nan
    market[[30, 77]] = np.nan
    loadings = np.linspace(0.4, 1.6, N_ASSETS)
    returns = 0.0002 + loadings * np.nan_to_num(market)[:, None] + 0.015 * rng.standard_normal((N_DATES, N_ASSETS))
    returns[rng.random(returns.shape) < 0.08] = np.nan
    returns[:50, 1] = np.nan  # lists late
    returns[45:82, 2] = np.nan  # a gap longer than window - min_observations
    returns[:, 6] = np.nan  # never observed
    return returns, market


def _weights(count: int, half_life: float) -> np.ndarray:
    """0.5^(k / half_life) for k = count-1 … 0 (oldest first, newest weight 1)."""
    return 0.5 ** (np.arange(count)[::-1] / half_life)


def reference_beta(
    returns: np.ndarray, market: np.ndarray, window: int, half_life: float, min_observations: int
) -> tuple[np.ndarray, np.ndarray]:
    n_dates, n_assets = returns.shape
    slope = np.full(returns.shape, np.nan)
    sigma = np.full(returns.shape, np.nan)
    for t in range(n_dates):
        first = max(0, t - window + 1)
        weights = _weights(t - first + 1, half_life)
        for i in range(n_assets):
            y, x = returns[first : t + 1, i], market[first : t + 1]
            keep = np.isfinite(y) & np.isfinite(x)
            if keep.sum() < min_observations or np.ptp(x[keep]) == 0:
                continue
            w, y, x = weights[keep], y[keep], x[keep]
            root = np.sqrt(w)
            design = np.column_stack([np.ones_like(x), x])
            coef = np.linalg.lstsq(design * root[:, None], y * root, rcond=None)[0]
            residual = y - design @ coef
            slope[t, i] = coef[1]
            sigma[t, i] = np.sqrt((w * residual**2).sum() / w.sum())
    return slope, sigma


def reference_dastd(returns: np.ndarray, window: int, half_life: float, min_observations: int) -> np.ndarray:
    result = np.full(returns.shape, np.nan)
    for t in range(returns.shape[0]):
        first = max(0, t - window + 1)
        weights = _weights(t - first + 1, half_life)
        for i in range(returns.shape[1]):
            y = returns[first : t + 1, i]
            keep = np.isfinite(y)
            if keep.sum() < min_observations:
                continue
            w = weights[keep] / weights[keep].sum()
            mean = (w * y[keep]).sum()
            result[t, i] = np.sqrt((w * (y[keep] - mean) ** 2).sum())
    return result


def reference_cmra(returns: np.ndarray, months: int, month_days: int, min_observations: int) -> np.ndarray:
    span = months * month_days
    result = np.full(returns.shape, np.nan)
    for t in range(span - 1, returns.shape[0]):
        for i in range(returns.shape[1]):
            window = returns[t - span + 1 : t + 1, i]
            if np.isfinite(window).sum() < min_observations:
                continue
            logs = np.where(np.isfinite(window), np.log1p(np.nan_to_num(window)), 0.0)
            z = [logs[span - m * month_days :].sum() for m in range(1, months + 1)]
            if 1.0 + min(z) <= 0.0:
                continue
            result[t, i] = np.log(1.0 + max(z)) - np.log(1.0 + min(z))
    return result


def test_beta_descriptors_match_weighted_least_squares_loop(market_panel: tuple[np.ndarray, np.ndarray]) -> None:
    returns, market = market_panel
    slope, sigma = use4.beta_descriptors(returns, market, window=WINDOW, half_life=HALF_LIFE, min_observations=MIN_OBS)
    expected_slope, expected_sigma = reference_beta(returns, market, WINDOW, HALF_LIFE, MIN_OBS)
    assert_same(slope, expected_slope)
    assert_same(sigma, expected_sigma)
    # the panel exercises what it is meant to: the late starter, the gap and the empty asset
    assert np.isnan(slope[:60, 1]).all() and np.isfinite(slope[-1, 1])
    assert np.isnan(slope[90, 2]) and np.isfinite(slope[50, 2]) and np.isfinite(slope[-1, 2])
    assert np.isnan(slope[:, 6]).all()


def test_beta_descriptors_nan_where_the_market_does_not_move() -> None:
    rng = np.random.default_rng(7)
    market = 0.01 * rng.standard_normal(60)
    market[30:] = 0.003  # constant for the last 30 dates
    returns = 0.01 * rng.standard_normal((60, 3))
    slope, sigma = use4.beta_descriptors(returns, market, window=20, half_life=5.0, min_observations=10)
    expected_slope, expected_sigma = reference_beta(returns, market, 20, 5.0, 10)
    assert np.isnan(slope[49:]).all() and np.isnan(sigma[49:]).all()
    assert_same(slope, expected_slope)
    assert_same(sigma, expected_sigma)


def test_beta_descriptors_recover_a_known_beta() -> None:
    rng = np.random.default_rng(11)
    n_dates = 300
    true_beta = np.linspace(0.5, 1.8, 6)
    market = 0.0003 + 0.01 * rng.standard_normal(n_dates)
    noise = 0.002 * rng.standard_normal((n_dates, true_beta.size))
    returns = 0.0001 + market[:, None] * true_beta + noise
    # half-life 1e12: weights 0.5^(k/1e12) differ from 1 by < 3e-10 over the window, i.e. ordinary least squares
    slope, sigma = use4.beta_descriptors(returns, market, window=n_dates, half_life=1e12, min_observations=n_dates)
    assert np.isnan(slope[:-1]).all()
    for i, beta_i in enumerate(true_beta):
        ols_slope, ols_intercept = np.polyfit(market, returns[:, i], 1)
        residual = returns[:, i] - (ols_intercept + ols_slope * market)
        assert slope[-1, i] == pytest.approx(ols_slope, rel=1e-10, abs=1e-10)
        assert sigma[-1, i] == pytest.approx(np.sqrt(np.mean(residual**2)), rel=1e-9)
        standard_error = 0.002 / (0.01 * np.sqrt(n_dates))
        assert abs(slope[-1, i] - beta_i) < 5 * standard_error


def test_dastd_matches_weighted_std_loop(market_panel: tuple[np.ndarray, np.ndarray]) -> None:
    returns, _ = market_panel
    actual = use4.dastd(returns, window=WINDOW, half_life=HALF_LIFE, min_observations=MIN_OBS)
    assert_same(actual, reference_dastd(returns, WINDOW, HALF_LIFE, MIN_OBS))


def test_cmra_matches_cumulative_range_loop(market_panel: tuple[np.ndarray, np.ndarray]) -> None:
    returns, _ = market_panel
    returns = returns.copy()
    returns[60:63, 3] = -0.6  # three crashes: Z of any range holding them is about -2.7, so 1 + Z_min <= 0
    months, month_days, min_observations = 4, 5, 12
    actual = use4.cmra(returns, months=months, month_days=month_days, min_observations=min_observations)
    expected = reference_cmra(returns, months, month_days, min_observations)
    assert_same(actual, expected)
    assert np.isnan(actual[:19]).all() and np.isfinite(actual[19, 0])  # nothing before a full 20-date window
    assert np.isnan(actual[62:80, 3]).all() and np.isfinite(actual[58, 3]) and np.isfinite(actual[82, 3])


def test_cmra_short_panel_is_all_nan() -> None:
    returns = np.full((19, 2), 0.01)
    assert np.isnan(use4.cmra(returns, months=4, month_days=5, min_observations=5)).all()


def test_descriptors_of_a_wide_panel_match_the_loops_and_the_dates_at_path() -> None:
    """More assets than one block of the compiled kernels: the columns on either side of each block boundary
    match the loop references, every column matches the descriptors summed directly at each date (``at``),
    and a column-major copy of the input gives the same values."""
    rng = np.random.default_rng(5)
    n_dates, n_assets = 90, 300
    market = 0.0004 + 0.01 * rng.standard_normal(n_dates)
    market[[0, 17, 55]] = np.nan
    returns = 0.9 * np.nan_to_num(market)[:, None] + 0.015 * rng.standard_normal((n_dates, n_assets))
    returns[rng.random(returns.shape) < 0.1] = np.nan
    returns[:40, 63:66] = np.nan  # late starters at a boundary of CMRA's blocks
    returns[20:60, 255:258] = np.nan  # a gap at a boundary of beta's and DASTD's blocks
    returns[30, 256] = -1.0  # a total loss: no log return
    months, month_days = 4, 5
    slope, sigma = use4.beta_descriptors(returns, market, window=WINDOW, half_life=HALF_LIFE, min_observations=MIN_OBS)
    volatility = use4.dastd(returns, window=WINDOW, half_life=HALF_LIFE, min_observations=MIN_OBS)
    range_ = use4.cmra(returns, months=months, month_days=month_days, min_observations=MIN_OBS)

    edges = [0, 63, 64, 65, 127, 128, 255, 256, 257, 299]
    expected_slope, expected_sigma = reference_beta(returns[:, edges], market, WINDOW, HALF_LIFE, MIN_OBS)
    assert_same(slope[:, edges], expected_slope)
    assert_same(sigma[:, edges], expected_sigma)
    assert_same(volatility[:, edges], reference_dastd(returns[:, edges], WINDOW, HALF_LIFE, MIN_OBS))
    clean = np.where(returns <= -1.0, np.nan, returns)  # the loop has no rule for a total loss
    assert_same(range_[:, edges], reference_cmra(clean[:, edges], months, month_days, MIN_OBS))

    every = np.arange(n_dates)
    at_slope, at_sigma = use4.beta_descriptors(
        returns, market, window=WINDOW, half_life=HALF_LIFE, min_observations=MIN_OBS, at=every
    )
    assert_same(slope, at_slope)
    assert_same(sigma, at_sigma)
    at_volatility = use4.dastd(returns, window=WINDOW, half_life=HALF_LIFE, min_observations=MIN_OBS, at=every)
    assert_same(volatility, at_volatility)
    assert_same(range_, use4.cmra(returns, months=months, month_days=month_days, min_observations=MIN_OBS, at=every))

    columns = np.asfortranarray(returns)
    np.testing.assert_array_equal(
        use4.beta_descriptors(columns, market, window=WINDOW, half_life=HALF_LIFE, min_observations=MIN_OBS)[0], slope
    )
    np.testing.assert_array_equal(
        use4.dastd(columns, window=WINDOW, half_life=HALF_LIFE, min_observations=MIN_OBS), volatility
    )
    np.testing.assert_array_equal(
        use4.cmra(columns, months=months, month_days=month_days, min_observations=MIN_OBS), range_
    )


def test_market_return_uses_previous_caps() -> None:
    rng = np.random.default_rng(5)
    returns = 0.01 * rng.standard_normal((30, 6))
    caps = np.exp(rng.normal(22, 1, (30, 6)))
    returns[rng.random(returns.shape) < 0.15] = np.nan
    caps[rng.random(caps.shape) < 0.1] = np.nan
    caps[4, 2] = 0.0
    caps[7, 3] = -5.0
    returns[12] = np.nan  # no return at all on a date
    expected = np.full(30, np.nan)
    for t in range(1, 30):
        total = weight = 0.0
        for i in range(6):
            previous = caps[t - 1, i]
            if np.isfinite(returns[t, i]) and np.isfinite(previous) and previous > 0:
                total += previous * returns[t, i]
                weight += previous
        if weight > 0:
            expected[t] = total / weight
    actual = use4.market_return(returns, caps)
    assert_same(actual, expected, rtol=1e-12, atol=1e-13)
    assert np.isnan(actual[[0, 12]]).all()


# --------------------------------------------------------------------------------------------------------------
# descriptor pipeline


@pytest.fixture(scope="module")
def cross_sections() -> tuple[np.ndarray, np.ndarray]:
    """(values (T, N), caps (T, N)) with missing values and caps, non-positive caps, a constant row, a row with
    one value and a row without a usable cap."""
    rng = np.random.default_rng(99)
    values = rng.standard_normal((25, 30)) * 2.0 + 0.7
    caps = np.exp(rng.normal(21, 1.2, values.shape))
    values[rng.random(values.shape) < 0.15] = np.nan
    caps[rng.random(caps.shape) < 0.1] = np.nan
    caps[2, :4] = 0.0
    caps[3, 5] = -1.0
    values[5] = 4.2  # no dispersion
    values[3, 5] = 1.5  # a value whose cap is not usable
    values[6, 1:] = np.nan  # a single value
    caps[7] = np.nan  # no usable cap
    return values, caps


def reference_standardize(values: np.ndarray, caps: np.ndarray) -> np.ndarray:
    result = np.full(values.shape, np.nan)
    for t in range(values.shape[0]):
        row, row_caps = values[t], caps[t]
        finite = np.isfinite(row)
        usable = finite & np.isfinite(row_caps) & (row_caps > 0)
        if finite.sum() < 2 or not usable.any():
            continue
        std = np.std(row[finite], ddof=1)
        cap_mean = np.average(row[usable], weights=row_caps[usable])
        if std <= 1e-12 * max(abs(np.mean(row[finite])), abs(cap_mean)):  # no dispersion beyond rounding
            continue
        result[t] = (row - cap_mean) / std
    return result


def test_standardize_use4_matches_loop_and_its_definition(cross_sections: tuple[np.ndarray, np.ndarray]) -> None:
    values, caps = cross_sections
    actual = standardize_use4(values, caps)
    assert_same(actual, reference_standardize(values, caps), rtol=1e-12, atol=1e-13)
    assert np.isnan(actual[[5, 6, 7]]).all()
    assert np.isfinite(actual[3, 5])  # no usable cap: standardized, but not in the mean
    checked = 0
    for t in range(values.shape[0]):
        finite = np.isfinite(actual[t])
        if not finite.any():
            continue
        usable = finite & np.isfinite(caps[t]) & (caps[t] > 0)
        assert np.average(actual[t, usable], weights=caps[t, usable]) == pytest.approx(0.0, abs=1e-12)
        assert np.std(actual[t, finite], ddof=1) == pytest.approx(1.0, abs=1e-12)
        checked += 1
    assert checked == values.shape[0] - 3


def test_trim_clips_outliers_at_three_sigma(cross_sections: tuple[np.ndarray, np.ndarray]) -> None:
    values, caps = (array.copy() for array in cross_sections)
    values[10, 0] = 60.0  # far beyond 3 standard deviations
    values[11, :] = np.linspace(-1.0, 1.0, values.shape[1])
    values[11, 4] = -40.0
    caps[11, :] = 1e9
    first = reference_standardize(values, caps)
    assert first[10, 0] > 3.0 and first[11, 4] < -3.0
    expected = reference_standardize(np.clip(first, -3.0, 3.0), caps)
    actual = trim(values, caps)
    assert_same(actual, expected, rtol=1e-12, atol=1e-13)
    # the outlier no longer sets the scale: trimming at ±3 leaves far more dispersion among the other values
    others = np.isfinite(actual[10]) & (np.arange(values.shape[1]) != 0)
    assert np.std(actual[10, others], ddof=1) > 1.5 * np.std(first[10, others], ddof=1)
    # with a limit nothing reaches, trimming is only the standardization done twice
    assert not np.allclose(trim(values, caps, limit=100.0), actual, equal_nan=True)
    assert_same(trim(values, caps, limit=100.0), reference_standardize(first, caps), rtol=1e-12, atol=1e-13)


def test_combine_renormalizes_missing_descriptors() -> None:
    rng = np.random.default_rng(3)
    descriptors = [rng.standard_normal((8, 5)) for _ in range(3)]
    for descriptor in descriptors:
        descriptor[rng.random(descriptor.shape) < 0.35] = np.nan
    for descriptor in descriptors:
        descriptor[0, 0] = np.nan  # no descriptor at all
    weights = (0.74, 0.16, 0.10)
    expected = np.full((8, 5), np.nan)
    for t in range(8):
        for i in range(5):
            have = [(w, d[t, i]) for w, d in zip(weights, descriptors, strict=True) if np.isfinite(d[t, i])]
            if have:
                expected[t, i] = sum(w * v for w, v in have) / sum(w for w, _ in have)
    actual = combine(descriptors, weights)
    assert_same(actual, expected, rtol=1e-14, atol=1e-15)
    assert np.isnan(actual[0, 0])


def test_combine_rejects_bad_weights() -> None:
    descriptor = np.zeros((2, 2))
    with pytest.raises(ValueError, match="need one weight per descriptor, got 2 descriptors, 1 weights"):
        combine([descriptor, descriptor], [1.0])
    with pytest.raises(ValueError, match="need one weight per descriptor"):
        combine([], [])
    with pytest.raises(ValueError, match="descriptor weights must be positive"):
        combine([descriptor, descriptor], [1.0, 0.0])
    with pytest.raises(ValueError, match="descriptor weights must be positive"):
        combine([descriptor], [float("nan")])


def test_orthogonalize_leaves_out_an_exposure_missing_on_the_whole_date() -> None:
    """Size when every cap is equal (no dispersion: NaN for every asset): the date's regression runs on the
    other exposures instead of giving every asset a missing value."""
    rng = np.random.default_rng(5)
    against = [rng.standard_normal((4, 30)) for _ in range(2)]
    values = 0.2 + 0.7 * against[0] + rng.standard_normal((4, 30))
    caps = np.exp(rng.normal(21, 1.0, (4, 30)))
    against[1][2] = np.nan
    actual = orthogonalize(values, against, caps)
    np.testing.assert_allclose(actual[2], orthogonalize(values[2:3], [against[0][2:3]], caps[2:3])[0], rtol=1e-12)
    np.testing.assert_allclose(actual[[0, 1, 3]], orthogonalize(values, against, caps)[[0, 1, 3]], rtol=1e-12)
    assert np.isfinite(actual).all()
    # an exposure missing for only some assets still leaves those assets out
    against[1][1, :4] = np.nan
    assert np.isnan(orthogonalize(values, against, caps)[1, :4]).all()


def test_descriptor_to_style_keep_masks_the_descriptors_as_missing() -> None:
    """``keep`` (applied block by block) gives what masking each descriptor to NaN first gives, on more dates
    than one block."""
    rng = np.random.default_rng(5)
    shape = (40, 30)
    descriptors = [rng.standard_normal(shape) for _ in range(2)]
    caps = np.exp(rng.normal(21, 1.0, shape))
    keep = rng.random(shape) > 0.2
    against = [rng.standard_normal(shape)]
    masked = [np.where(keep, d, np.nan) for d in descriptors]
    expected = descriptor_to_style(masked, [0.7, 0.3], caps, against=against, against_size=True)
    actual = descriptor_to_style(descriptors, [0.7, 0.3], caps, against=against, against_size=True, keep=keep)
    np.testing.assert_array_equal(actual, expected)
    assert np.isfinite(actual[keep]).all() and np.isnan(actual[~keep]).all()


def test_orthogonalize_matches_per_date_lstsq() -> None:
    rng = np.random.default_rng(17)
    n_dates, n_assets = 12, 15
    against = [rng.standard_normal((n_dates, n_assets)) for _ in range(2)]
    values = 0.5 + 0.8 * against[0] - 0.3 * against[1] + rng.standard_normal((n_dates, n_assets))
    caps = np.exp(rng.normal(21, 1.0, (n_dates, n_assets)))
    values[rng.random(values.shape) < 0.1] = np.nan
    against[1][rng.random(values.shape) < 0.1] = np.nan
    caps[rng.random(caps.shape) < 0.05] = np.nan
    caps[4, :3] = 0.0
    values[9, 3:] = np.nan  # three usable assets: not more than the three regressors
    actual = orthogonalize(values, against, caps)
    expected = np.full(values.shape, np.nan)
    for t in range(n_dates):
        design = np.column_stack([np.ones(n_assets), against[0][t], against[1][t]])
        usable = np.isfinite(values[t]) & np.isfinite(design).all(axis=1) & np.isfinite(caps[t]) & (caps[t] > 0)
        if usable.sum() <= design.shape[1]:
            continue
        root = np.sqrt(caps[t, usable])
        coef = np.linalg.lstsq(design[usable] * root[:, None], values[t, usable] * root, rcond=None)[0]
        expected[t, usable] = values[t, usable] - design[usable] @ coef
        # the residual is cap-weighted orthogonal to the intercept and each regressor
        for k in range(design.shape[1]):
            assert np.sum(caps[t, usable] * actual[t, usable] * design[usable, k]) / caps[t, usable].sum() == (
                pytest.approx(0.0, abs=1e-12)
            )
    assert_same(actual, expected, rtol=1e-12, atol=1e-13)
    assert np.isnan(actual[9]).all()


# --------------------------------------------------------------------------------------------------------------
# styles on the synthetic market


def _dense(frame: pl.DataFrame, column: str) -> np.ndarray:
    """(T, N) array of ``column``, dates and symbols sorted, NaN where a row is absent or null."""
    wide = frame.pivot(on="symbol", index="date", values=column, sort_columns=True).sort("date")
    return wide.drop("date").to_numpy().astype(np.float64)


def _present(frame: pl.DataFrame) -> np.ndarray:
    """(T, N) mask of the (date, symbol) pairs that have a row."""
    return np.isfinite(_dense(frame.with_columns(pl.lit(1.0).alias("row")), "row"))


def reference_trim(values: np.ndarray, caps: np.ndarray) -> np.ndarray:
    return reference_standardize(np.clip(reference_standardize(values, caps), -3.0, 3.0), caps)


def reference_combine(descriptors: list[np.ndarray], weights: tuple[float, ...]) -> np.ndarray:
    stacked = np.stack(descriptors)
    have = np.isfinite(stacked)
    w = np.asarray(weights)[:, None, None] * have
    with np.errstate(invalid="ignore"):
        return np.where(have.any(axis=0), (w * np.nan_to_num(stacked)).sum(axis=0) / w.sum(axis=0), np.nan)


def reference_orthogonalize(values: np.ndarray, against: list[np.ndarray], caps: np.ndarray) -> np.ndarray:
    residual = np.full(values.shape, np.nan)
    for t in range(values.shape[0]):
        # an exposure with no value at all that date is left out of its regression
        design = np.column_stack([np.ones(values.shape[1]), *(a[t] for a in against if np.isfinite(a[t]).any())])
        usable = np.isfinite(values[t]) & np.isfinite(design).all(axis=1) & np.isfinite(caps[t]) & (caps[t] > 0)
        if usable.sum() <= design.shape[1]:
            continue
        root = np.sqrt(caps[t, usable])
        coef = np.linalg.lstsq(design[usable] * root[:, None], values[t, usable] * root, rcond=None)[0]
        residual[t, usable] = values[t, usable] - design[usable] @ coef
    return residual


def _cap_weighted_covariance(score: np.ndarray, exposure: np.ndarray, caps: np.ndarray) -> float:
    keep = np.isfinite(score) & np.isfinite(exposure) & (caps > 0)
    w = caps[keep] / caps[keep].sum()
    s, x = score[keep], exposure[keep]
    return float(np.sum(w * (s - np.sum(w * s)) * (x - np.sum(w * x))))


def _shuffled_within_dates(panel: pl.DataFrame) -> pl.DataFrame:
    """The rows shuffled within each date, dates still in order: the styles must keep this order."""
    rng = np.random.default_rng(8)
    shuffle = pl.Series("shuffle", rng.random(panel.height))
    return panel.with_columns(shuffle).sort("date", "shuffle").drop("shuffle")


@pytest.fixture(scope="module")
def synthetic_panel() -> pl.DataFrame:
    """The synthetic market: 60 assets over 400 dates, some listing late and some delisting."""
    return _shuffled_within_dates(generate_market(60, 400, seed=3).panel)


@pytest.fixture(scope="module")
def steady_panel() -> pl.DataFrame:
    """The same market without delistings (no asset leaves the cross-section while its window is still full)."""
    return _shuffled_within_dates(generate_market(60, 400, seed=3, delisting_rate=0.0).panel)


def _scores(panel: pl.DataFrame) -> dict[str, pl.DataFrame]:
    return {
        "beta_score": use4.beta(panel),
        "resvol_score": use4.resvol(panel.lazy()),
        "nlsize_score": use4.nlsize(panel),
    }


@pytest.fixture(scope="module")
def style_scores(synthetic_panel: pl.DataFrame) -> dict[str, pl.DataFrame]:
    return _scores(synthetic_panel)


@pytest.fixture(scope="module")
def steady_scores(steady_panel: pl.DataFrame) -> dict[str, pl.DataFrame]:
    return _scores(steady_panel)


def _dense_scores(panel: pl.DataFrame, scores: dict[str, pl.DataFrame]) -> dict[str, np.ndarray]:
    """Each score as a (T, N) array aligned with the panel's sorted dates and symbols, plus the caps."""
    dense = {name: _dense(frame, name) for name, frame in scores.items()}
    return {"caps": _dense(panel, "market_cap"), **dense}


def reference_styles(
    panel: pl.DataFrame, caps: np.ndarray | None = None, market: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """USE4 styles from the module's validated kernels and the loop references of the descriptor pipeline, each
    descriptor kept only where the asset has a row (its cross-section on that date); ``caps`` (default the
    panel's) weight them and, unless ``market`` is given, the market return."""
    returns, present = _dense(panel, "asset_returns"), _present(panel)
    caps = _dense(panel, "market_cap") if caps is None else caps

    def in_cross_section(descriptor: np.ndarray) -> np.ndarray:
        return np.where(present, descriptor, np.nan)

    slope, hsigma = use4.beta_descriptors(returns, use4.market_return(returns, caps) if market is None else market)
    beta_style = reference_standardize(reference_trim(in_cross_section(slope), caps), caps)
    size = reference_trim(np.log(caps), caps)
    descriptors = [use4.dastd(returns), use4.cmra(returns), hsigma]
    combined = reference_combine([reference_trim(in_cross_section(d), caps) for d in descriptors], (0.74, 0.16, 0.10))
    resvol = reference_standardize(
        reference_orthogonalize(reference_standardize(combined, caps), [beta_style, size], caps), caps
    )
    cube = reference_standardize(size**3, caps)
    nlsize = reference_trim(reference_orthogonalize(cube, [size], caps), caps)
    return {"beta_score": beta_style, "resvol_score": resvol, "nlsize_score": nlsize, "size": size}


@pytest.fixture(scope="module")
def synthetic_reference(synthetic_panel: pl.DataFrame) -> dict[str, np.ndarray]:
    return reference_styles(synthetic_panel)


@pytest.fixture(scope="module")
def steady_reference(steady_panel: pl.DataFrame) -> dict[str, np.ndarray]:
    return reference_styles(steady_panel)


@pytest.mark.parametrize("score", ["beta_score", "resvol_score", "nlsize_score"])
def test_styles_keep_the_input_rows_in_order(
    synthetic_panel: pl.DataFrame, style_scores: dict[str, pl.DataFrame], score: str
) -> None:
    result = style_scores[score]
    assert result.columns == ["date", "symbol", score]
    assert result.select("date", "symbol").equals(synthetic_panel.select("date", "symbol"))
    assert not synthetic_panel.select("date", "symbol").equals(synthetic_panel.sort("date", "symbol"))
    # the order of the input rows changes nothing but the order of the output rows
    in_order = getattr(use4, score.removesuffix("_score"))(synthetic_panel.sort("date", "symbol"))
    joined = result.join(in_order, on=["date", "symbol"], suffix="_sorted")
    assert joined.height == result.height
    np.testing.assert_allclose(
        joined[score].to_numpy(), joined[f"{score}_sorted"].to_numpy(), rtol=0, atol=1e-12, equal_nan=True
    )


def _assert_standardized(values: np.ndarray, caps: np.ndarray) -> int:
    """Each date with values: cap-weighted mean 0, equal-weighted ddof-1 std 1 (1e-9); returns those dates."""
    dates = 0
    for t in range(values.shape[0]):
        finite = np.isfinite(values[t])
        if not finite.any():
            continue
        dates += 1
        assert np.average(values[t, finite], weights=caps[t, finite]) == pytest.approx(0.0, abs=1e-9), t
        assert np.std(values[t, finite], ddof=1) == pytest.approx(1.0, abs=1e-9), t
    return dates


@pytest.mark.parametrize(
    ("score", "first_date", "bound"),
    [("beta_score", 63, 3.5), ("resvol_score", 63, 4.5), ("nlsize_score", 0, 4.5)],
)
def test_styles_are_standardized_without_delistings(
    steady_panel: pl.DataFrame, steady_scores: dict[str, pl.DataFrame], score: str, first_date: int, bound: float
) -> None:
    dense = _dense_scores(steady_panel, steady_scores)
    values = dense[score]
    assert np.isnan(values[:first_date]).all()
    assert _assert_standardized(values, dense["caps"]) == 400 - first_date
    # beta is trimmed once and keeps |score| <= 3.5; resvol (not trimmed after its orthogonalization) and nlsize
    # (heavy-tailed: clipping at 3 shrinks the std it is divided by again) go beyond 3.5 on some dates
    assert np.nanmax(np.abs(values)) <= bound


@pytest.mark.parametrize("score", ["resvol_score", "nlsize_score"])
def test_styles_are_standardized_with_delistings(
    synthetic_panel: pl.DataFrame, style_scores: dict[str, pl.DataFrame], score: str
) -> None:
    dense = _dense_scores(synthetic_panel, style_scores)
    first_date = 63 if score == "resvol_score" else 0
    assert np.isnan(dense[score][:first_date]).all()
    assert _assert_standardized(dense[score], dense["caps"]) == 400 - first_date


def test_beta_is_standardized_over_the_assets_of_the_date(
    synthetic_panel: pl.DataFrame, style_scores: dict[str, pl.DataFrame]
) -> None:
    dense = _dense_scores(synthetic_panel, style_scores)
    assert _assert_standardized(dense["beta_score"], dense["caps"]) == 400 - 63


@pytest.mark.parametrize("score", ["beta_score", "resvol_score"])
def test_styles_match_the_reference_pipeline_with_delistings(
    synthetic_panel: pl.DataFrame,
    style_scores: dict[str, pl.DataFrame],
    synthetic_reference: dict[str, np.ndarray],
    score: str,
) -> None:
    expected = synthetic_reference[score]
    assert_same(_dense_scores(synthetic_panel, style_scores)[score], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("score", ["beta_score", "resvol_score", "nlsize_score"])
def test_styles_match_the_reference_pipeline(
    steady_panel: pl.DataFrame,
    steady_scores: dict[str, pl.DataFrame],
    steady_reference: dict[str, np.ndarray],
    score: str,
) -> None:
    expected = steady_reference[score]
    assert_same(_dense_scores(steady_panel, steady_scores)[score], expected, rtol=1e-10, atol=1e-12)


def reference_equal_weighted_market(returns: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Each date's mean return over the assets with a row the date before and a return that date (a loop)."""
    market = np.full(returns.shape[0], np.nan)
    for t in range(1, returns.shape[0]):
        members = [i for i in range(returns.shape[1]) if present[t - 1, i] and np.isfinite(returns[t, i])]
        if members:
            market[t] = float(np.mean(returns[t, members]))
    return market


@pytest.fixture(scope="module")
def no_caps_reference(steady_panel: pl.DataFrame) -> dict[str, np.ndarray]:
    """Beta and residual volatility of a panel without caps by the reference pipeline with every cap 1: the
    equal-weighted market (by the loop), equal-weighted means and regressions, size (no dispersion: no value)
    out of resvol's regression."""
    present = _present(steady_panel)
    market = reference_equal_weighted_market(_dense(steady_panel, "asset_returns"), present)
    return {"market": market, **reference_styles(steady_panel, np.where(present, 1.0, np.nan), market)}


@pytest.mark.parametrize("score", ["beta_score", "resvol_score"])
def test_styles_without_caps_are_equal_weighted(
    steady_panel: pl.DataFrame,
    steady_reference: dict[str, np.ndarray],
    no_caps_reference: dict[str, np.ndarray],
    score: str,
) -> None:
    returns, caps = _dense(steady_panel, "asset_returns"), _dense(steady_panel, "market_cap")
    ones = np.where(np.isfinite(caps), 1.0, np.nan)
    # the equal-weighted market is the kernel's market with every cap 1, and not the cap-weighted one
    np.testing.assert_allclose(use4.market_return(returns, ones), no_caps_reference["market"], rtol=1e-12, atol=1e-15)
    assert np.nanmax(np.abs(no_caps_reference["market"] - use4.market_return(returns, caps))) > 1e-4
    assert np.isnan(no_caps_reference["size"]).all()  # equal caps: no size, left out of resvol's regression
    scores = compute_styles(steady_panel.drop("market_cap"), ["beta", "resvol"])
    actual = _dense(scores, score)
    assert_same(actual, no_caps_reference[score], rtol=1e-10, atol=1e-12)
    both = np.isfinite(actual) & np.isfinite(steady_reference[score])
    assert both.sum() > 1000 and np.max(np.abs(actual[both] - steady_reference[score][both])) > 1e-2


def test_nlsize_needs_the_caps(steady_panel: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"style 'nlsize' needs column\(s\) \['market_cap'\]"):
        compute_styles(steady_panel.drop("market_cap"), ["nlsize"])


def test_nlsize_matches_the_reference_pipeline_with_delistings(
    synthetic_panel: pl.DataFrame, style_scores: dict[str, pl.DataFrame], synthetic_reference: dict[str, np.ndarray]
) -> None:
    expected = synthetic_reference["nlsize_score"]
    assert_same(_dense_scores(synthetic_panel, style_scores)["nlsize_score"], expected, rtol=1e-10, atol=1e-12)


def test_beta_needs_63_returns(style_scores: dict[str, pl.DataFrame]) -> None:
    # the market return starts on the second date, so the 63rd (return, market) pair comes on date index 63
    for score in ("beta_score", "resvol_score"):
        values = _dense(style_scores[score], score)
        assert np.isnan(values[:63]).all()
        assert np.isfinite(values[63]).sum() > 40


def test_resvol_is_orthogonal_to_beta_and_size(
    synthetic_panel: pl.DataFrame, style_scores: dict[str, pl.DataFrame]
) -> None:
    dense = _dense_scores(synthetic_panel, style_scores)
    caps, resvol = dense["caps"], dense["resvol_score"]
    size = trim(np.log(caps), caps)  # USE4's size: the log cap, trimmed and standardized
    checked = 0
    for t in range(caps.shape[0]):
        if not np.isfinite(resvol[t]).any():
            continue
        for regressor in (dense["beta_score"], size):
            assert _cap_weighted_covariance(resvol[t], regressor[t], caps[t]) == pytest.approx(0.0, abs=1e-10)
        checked += 1
    assert checked == 400 - 63


def test_nlsize_is_orthogonal_to_size_only_before_trimming(
    synthetic_panel: pl.DataFrame, style_scores: dict[str, pl.DataFrame], synthetic_reference: dict[str, np.ndarray]
) -> None:
    dense = _dense_scores(synthetic_panel, style_scores)
    caps, nlsize = dense["caps"], dense["nlsize_score"]
    size = synthetic_reference["size"]
    before_trim = reference_standardize(
        reference_orthogonalize(reference_standardize(size**3, caps), [size], caps), caps
    )
    for t in range(caps.shape[0]):
        assert _cap_weighted_covariance(before_trim[t], size[t], caps[t]) == pytest.approx(0.0, abs=1e-10)
        # the cube's residual is heavy-tailed: every date has values beyond 3 standard deviations, clipping them
        # ties them at the extremes and leaves a small covariance with size (about -0.001 to -0.003 here)
        above, below = before_trim[t] > 3.0, before_trim[t] < -3.0
        assert above.any() or below.any()
        finite = nlsize[t][np.isfinite(nlsize[t])]
        if above.any():
            np.testing.assert_allclose(nlsize[t, above], finite.max(), rtol=0, atol=1e-12)
            assert (finite >= finite.max() - 1e-12).sum() == above.sum()
        if below.any():
            np.testing.assert_allclose(nlsize[t, below], finite.min(), rtol=0, atol=1e-12)
            assert (finite <= finite.min() + 1e-12).sum() == below.sum()
        assert abs(_cap_weighted_covariance(nlsize[t], size[t], caps[t])) < 0.01


# --------------------------------------------------------------------------------------------------------------
# parameter validation


def test_kernels_reject_bad_parameters() -> None:
    returns, market = np.zeros((10, 2)), np.zeros(10)
    with pytest.raises(ValueError, match="window must be an integer ≥ 2, got 1"):
        use4.beta_descriptors(returns, market, window=1, min_observations=2)
    with pytest.raises(ValueError, match=r"window must be an integer ≥ 2, got 2\.5"):
        use4.dastd(returns, window=2.5, min_observations=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"min_observations must be in \[2, window=40\], got 41"):
        use4.beta_descriptors(returns, market, window=40, min_observations=41)
    with pytest.raises(ValueError, match=r"min_observations must be in \[2, window=40\], got 1"):
        use4.dastd(returns, window=40, min_observations=1)
    with pytest.raises(ValueError, match=r"min_observations must be in \[2, window=20\], got 21"):
        use4.cmra(returns, months=4, month_days=5, min_observations=21)
    for half_life in (0.0, -3.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="half_life must be positive"):
            use4.beta_descriptors(returns, market, window=5, half_life=half_life, min_observations=3)
        with pytest.raises(ValueError, match="half_life must be positive"):
            use4.dastd(returns, window=5, half_life=half_life, min_observations=3)


def test_styles_reject_missing_columns(synthetic_panel: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"beta: missing column\(s\) \['asset_returns'\]"):
        use4.beta(synthetic_panel.drop("asset_returns"))
    with pytest.raises(ValueError, match=r"nlsize: missing column\(s\) \['market_cap'\]"):
        use4.nlsize(synthetic_panel.drop("market_cap"))


def test_cmra_treats_a_total_loss_as_missing_not_as_the_end_of_the_asset() -> None:
    rng = np.random.default_rng(11)
    returns = rng.normal(0.0, 0.01, size=(60, 2))
    returns[5, 0] = -1.0  # a -100 % day: no log return
    value = use4.cmra(returns, months=2, month_days=5, min_observations=5)
    clean = returns.copy()
    clean[5, 0] = np.nan  # the same asset with that day missing
    expected = use4.cmra(clean, months=2, month_days=5, min_observations=5)
    np.testing.assert_array_equal(np.isnan(value), np.isnan(expected))
    np.testing.assert_allclose(value[np.isfinite(value)], expected[np.isfinite(expected)], rtol=0, atol=0)
    assert np.isfinite(value[20:, 0]).all()


def test_styles_computed_together_share_the_beta_regression_and_equal_those_computed_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from factor_engine.styles import compute_styles

    panel = generate_market(50, 320, seed=4).panel
    alone = {name: compute_styles(panel, [name]) for name in ("beta", "resvol", "nlsize")}
    calls: list[int] = []
    real = use4.beta_descriptors

    def counted(*args: object, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(use4, "beta_descriptors", counted)
    together = compute_styles(panel, ["beta", "resvol", "nlsize"])
    assert len(calls) == 1  # beta and resvol shared one regression
    for frame in alone.values():
        score = frame.columns[-1]
        assert together.select("date", "symbol", score).equals(frame.select("date", "symbol", score))
    compute_styles(panel, ["resvol"])
    assert len(calls) == 2  # nothing is kept between calls
