"""Factor covariance forecasts checked against a slow per-date loop, closed forms and known truths."""

from __future__ import annotations

import datetime
import math
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factor_engine.regression import estimate_from_panel
from factor_engine.risk import CovarianceConfig, FactorCovariance, factor_covariance
from factor_engine.risk.covariance import Shrinkage
from factor_engine.synthetic import generate_market

START = datetime.date(2020, 1, 1)


def _frame(returns: np.ndarray, names: list[str] | None = None) -> pl.DataFrame:
    """``date`` + one column per factor from a (T, K) array, NaN becoming null."""
    names = names or [f"f{i}" for i in range(returns.shape[1])]
    dates = [START + datetime.timedelta(days=t) for t in range(returns.shape[0])]
    columns = {name: pl.Series(name, returns[:, i], nan_to_null=True) for i, name in enumerate(names)}
    return pl.DataFrame({"date": dates, **columns})


# ---------------------------------------------------------------- independent slow reference


def _pair_moment(returns: np.ndarray, t: int, i: int, j: int, lag: int, decay: float) -> float | None:
    """Weighted mean of f[s,i] f[s−lag,j] over s ≤ t where both are present, weights decay^(t−s)."""
    s = np.arange(lag, t + 1)
    products = returns[s, i] * returns[s - lag, j]
    weights = decay ** (t - s).astype(float)
    valid = ~np.isnan(products)
    if not valid.any():
        return None
    return float(np.average(products[valid], weights=weights[valid]))


def _newey_west(returns: np.ndarray, t: int, i: int, j: int, half_life: float, lags: int) -> float:
    decay = 0.5 ** (1.0 / half_life)
    total = _pair_moment(returns, t, i, j, 0, decay) or 0.0
    for lag in range(1, lags + 1):
        forward = _pair_moment(returns, t, i, j, lag, decay) or 0.0
        backward = _pair_moment(returns, t, j, i, lag, decay) or 0.0
        total += (1.0 - lag / (lags + 1.0)) * (forward + backward)
    return total


def _reference_lw_intensity(returns: np.ndarray, t: int, half_life: float) -> float:
    """Ledoit–Wolf intensity of the module docstring, pair by pair with explicit weight vectors."""
    k = returns.shape[1]
    if k == 0:
        return 0.0
    decay = 0.5 ** (1.0 / half_life)
    weights = decay ** (t - np.arange(t + 1)).astype(float)
    history = returns[: t + 1]
    second = np.array([[_pair_moment(returns, t, i, j, 0, decay) or 0.0 for j in range(k)] for i in range(k)])
    distance = spread = 0.0
    for i in range(k):
        for j in range(k):
            both = ~np.isnan(history[:, i]) & ~np.isnan(history[:, j])
            w = weights[both]
            fourth = np.average(history[both, i] ** 2 * history[both, j] ** 2, weights=w)
            correlation = second[i, j] / math.sqrt(second[i, i] * second[j, j])
            inverse_size = np.sum(w**2) / np.sum(w) ** 2
            spread += inverse_size * (fourth / (second[i, i] * second[j, j]) - correlation**2)
            if i != j:
                distance += correlation**2
    spread, distance = spread / k, distance / k
    return min(max(spread, 0.0), distance) / distance if distance > 0 else 0.0


def _reference(returns: np.ndarray, config: CovarianceConfig) -> np.ndarray:
    """(T', K, K) forecasts by a plain loop over dates and pairs.

    On each date only the factors with at least ``min_periods`` returns so far take part; the others get NaN.
    """
    n_dates, n_factors = returns.shape
    forecasts = []
    for t in range(config.min_periods - 1, n_dates):
        defined = np.sum(~np.isnan(returns[: t + 1]), axis=0) >= config.min_periods
        full = np.full((n_factors, n_factors), np.nan)
        full[np.ix_(defined, defined)] = _reference_date(returns[:, defined], t, config)
        forecasts.append(full)
    return np.array(forecasts)


def _reference_date(returns: np.ndarray, t: int, config: CovarianceConfig) -> np.ndarray:
    k = returns.shape[1]
    vol = np.sqrt([max(_newey_west(returns, t, i, i, config.vol_half_life, config.vol_nw_lags), 0.0) for i in range(k)])
    cov = np.array(
        [
            [_newey_west(returns, t, i, j, config.corr_half_life, config.corr_nw_lags) for j in range(k)]
            for i in range(k)
        ]
    )
    correlation = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    if config.shrinkage == "ledoit_wolf":
        intensity = _reference_lw_intensity(returns, t, config.corr_half_life)
        correlation = (1 - intensity) * correlation + intensity * np.eye(k)
    np.fill_diagonal(correlation, 1.0)
    forecast = np.outer(vol, vol) * correlation
    eigenvalues, eigenvectors = np.linalg.eigh(forecast)
    if eigenvalues[0] < 0:
        forecast = eigenvectors @ np.diag(np.maximum(eigenvalues, 0)) @ eigenvectors.T
    return config.horizon * forecast


@pytest.fixture(scope="module")
def gappy_returns() -> np.ndarray:
    rng = np.random.default_rng(11)
    returns = rng.standard_normal((40, 4)) @ np.array(
        [[1.0, 0.3, 0.0, 0.2], [0.0, 1.0, 0.5, 0.0], [0.0, 0.0, 1.0, -0.4], [0.0, 0.0, 0.0, 1.0]]
    )
    returns *= 0.01
    returns[rng.random(returns.shape) < 0.1] = np.nan
    return returns


@pytest.mark.parametrize("shrinkage", ["none", "ledoit_wolf"])
def test_forecasts_at_chosen_dates_match_the_slow_loop(gappy_returns: np.ndarray, shrinkage: Shrinkage) -> None:
    """``at=`` evaluates the EWMA sums directly at the requested dates (what a model update needs): the same
    forecasts as the per-date loop and as the full run at those dates."""
    config = CovarianceConfig(
        vol_half_life=7, corr_half_life=15, vol_nw_lags=3, corr_nw_lags=2, min_periods=8, shrinkage=shrinkage
    )
    frame = _frame(gappy_returns)
    full = factor_covariance(frame, config)
    expected = _reference(gappy_returns, config)
    wanted = [START + datetime.timedelta(days=t) for t in (39, 7, 20)]  # any order; one date is the first forecast
    partial = factor_covariance(frame, config, at=wanted)
    rows = [7 - 7, 20 - 7, 39 - 7]  # rows of the full run (forecasts start at date 7)
    assert partial.dates.to_list() == sorted(wanted)
    scale = np.nanmax(np.abs(expected))
    np.testing.assert_allclose(partial.values, expected[rows], rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(partial.values, full.values[rows], rtol=1e-13, atol=1e-14 * scale)
    np.testing.assert_array_equal(partial.observations, full.observations[rows])


def test_forecasts_at_dates_reject_dates_without_a_forecast(gappy_returns: np.ndarray) -> None:
    frame = _frame(gappy_returns)
    config = CovarianceConfig(min_periods=8)
    with pytest.raises(ValueError, match="before the first forecast date"):
        factor_covariance(frame, config, at=[START + datetime.timedelta(days=3)])
    with pytest.raises(ValueError, match="without factor returns"):
        factor_covariance(frame, config, at=[START - datetime.timedelta(days=1)])


@pytest.mark.parametrize("shrinkage", ["none", "ledoit_wolf"])
def test_matches_slow_per_date_loop_with_nulls(gappy_returns: np.ndarray, shrinkage: Shrinkage) -> None:
    config = CovarianceConfig(
        vol_half_life=7, corr_half_life=15, vol_nw_lags=3, corr_nw_lags=2, min_periods=8, shrinkage=shrinkage
    )
    result = factor_covariance(_frame(gappy_returns), config)
    expected = _reference(gappy_returns, config)
    assert result.values.shape == expected.shape == (33, 4, 4)
    assert result.dates.to_list()[0] == START + datetime.timedelta(days=7)
    np.testing.assert_allclose(result.values, expected, rtol=1e-12, atol=1e-12 * np.nanmax(np.abs(expected)))
    if shrinkage == "ledoit_wolf":  # the shrinkage must have done something
        plain = factor_covariance(_frame(gappy_returns), replace(config, shrinkage="none"))
        assert np.nanmax(np.abs(plain.values - result.values)) > 1e-8


def test_no_lags_equal_half_lives_is_closed_form_ewma() -> None:
    rng = np.random.default_rng(2)
    returns = 0.01 * rng.standard_normal((60, 3))
    half_life = 10.0
    config = CovarianceConfig(vol_half_life=half_life, corr_half_life=half_life, vol_nw_lags=0, corr_nw_lags=0)
    config = replace(config, min_periods=2)
    result = factor_covariance(_frame(returns), config)
    t = np.arange(60)
    weights = np.where(t[:, None] >= t[None, :], 0.5 ** ((t[:, None] - t[None, :]) / half_life), 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    expected = np.einsum("ts,si,sj->tij", weights, returns, returns)[1:]
    np.testing.assert_allclose(result.values, expected, rtol=1e-12)


def _sklearn_ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """sklearn.covariance.ledoit_wolf(x, assume_centered=True), re-derived in closed form."""
    n, p = x.shape
    emp_cov = x.T @ x / n
    mu = np.trace(emp_cov) / p
    beta_ = np.sum((x**2).T @ x**2) / n - np.sum(emp_cov**2)
    beta = beta_ / (n * p)
    delta = np.sum((emp_cov - mu * np.eye(p)) ** 2) / p
    shrinkage = 0.0 if beta == 0 else min(beta, delta) / delta
    return (1 - shrinkage) * emp_cov + shrinkage * mu * np.eye(p), shrinkage


def test_ledoit_wolf_matches_closed_form_with_equal_weights() -> None:
    rng = np.random.default_rng(4)
    mixing = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.6, 0.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    returns = 0.01 * rng.standard_normal((20, 4)) @ mixing
    config = CovarianceConfig(
        vol_half_life=math.inf,
        corr_half_life=math.inf,
        vol_nw_lags=0,
        corr_nw_lags=0,
        min_periods=12,
        shrinkage="ledoit_wolf",
    )
    result = factor_covariance(_frame(returns), config)
    vol = np.sqrt(np.mean(returns**2, axis=0))
    shrunk, intensity = _sklearn_ledoit_wolf(returns / vol)
    assert 0.05 < intensity < 0.95
    np.testing.assert_allclose(result.values[-1], np.outer(vol, vol) * shrunk, rtol=1e-12)


def test_iid_gaussian_recovers_known_covariance() -> None:
    rng = np.random.default_rng(5)
    vols = np.array([0.01, 0.012, 0.003, 0.005])
    correlation = np.array([[1.0, 0.5, -0.2, 0.0], [0.5, 1.0, 0.1, 0.3], [-0.2, 0.1, 1.0, -0.4], [0.0, 0.3, -0.4, 1.0]])
    sigma = np.outer(vols, vols) * correlation
    returns = rng.multivariate_normal(np.zeros(4), sigma, size=5000)
    config = CovarianceConfig(vol_half_life=504, corr_half_life=504)
    forecast = factor_covariance(_frame(returns), config).values[-1]
    forecast_vol = np.sqrt(np.diag(forecast))
    assert np.max(np.abs(forecast_vol / vols - 1)) < 0.10
    forecast_corr = forecast / np.outer(forecast_vol, forecast_vol)
    assert np.max(np.abs(forecast_corr - correlation)) < 0.1


def test_newey_west_captures_ar1_long_run_variance() -> None:
    rng = np.random.default_rng(6)
    phi, n_dates = 0.3, 5000
    shocks = rng.standard_normal(n_dates)
    series = np.empty(n_dates)
    series[0] = shocks[0] / math.sqrt(1 - phi**2)
    for t in range(1, n_dates):
        series[t] = phi * series[t - 1] + shocks[t]
    frame = _frame(0.01 * series[:, None])
    long_run = 1e-4 / (1 - phi) ** 2
    base = CovarianceConfig(vol_half_life=math.inf, corr_half_life=math.inf)
    plain = factor_covariance(frame, replace(base, vol_nw_lags=0)).values[-1, 0, 0]
    newey_west = factor_covariance(frame, replace(base, vol_nw_lags=5)).values[-1, 0, 0]
    assert newey_west > plain
    assert abs(newey_west - long_run) < abs(plain - long_run)


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    n_dates=st.integers(3, 30),
    n_factors=st.integers(1, 5),
    duplicate=st.booleans(),
    null_share=st.sampled_from([0.0, 0.1, 0.3]),
    lags=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    half_lives=st.tuples(st.floats(0.5, 100.0), st.floats(0.5, 100.0)),
    shrinkage=st.sampled_from(["none", "ledoit_wolf"]),
)
def test_forecasts_are_symmetric_psd(
    data: st.DataObject,
    n_dates: int,
    n_factors: int,
    duplicate: bool,
    null_share: float,
    lags: tuple[int, int],
    half_lives: tuple[float, float],
    shrinkage: Shrinkage,
) -> None:
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    returns = 0.01 * rng.standard_normal((n_dates, n_factors))
    returns[rng.random(returns.shape) < null_share] = np.nan
    if duplicate:  # rank-deficient: two identical factors
        returns = np.column_stack([returns, returns[:, 0]])
    config = CovarianceConfig(
        vol_half_life=half_lives[0],
        corr_half_life=half_lives[1],
        vol_nw_lags=lags[0],
        corr_nw_lags=lags[1],
        min_periods=2,
        shrinkage=shrinkage,
    )
    result = factor_covariance(_frame(returns), config)
    for matrix in result.values:
        np.testing.assert_array_equal(matrix, matrix.T)
        defined = ~np.isnan(np.diag(matrix))
        block = matrix[np.ix_(defined, defined)]
        assert not np.isnan(block).any()
        if block.size:
            assert np.linalg.eigvalsh(block)[0] >= -1e-12 * np.trace(block)


@pytest.fixture(scope="module")
def random_forecast() -> FactorCovariance:
    rng = np.random.default_rng(8)
    returns = 0.01 * rng.standard_normal((30, 3))
    returns[:12, 2] = np.nan  # a factor without enough history at first
    return factor_covariance(_frame(returns, ["market", "size", "value"]), CovarianceConfig(min_periods=10))


def test_late_factor_is_undefined_until_min_periods(random_forecast: FactorCovariance) -> None:
    values = random_forecast.values
    # value has 10 observations from row 21 on, the forecasts start at row 9
    assert np.isnan(values[:12, 2]).all()
    assert np.isnan(values[:12, :, 2]).all()
    assert not np.isnan(values[:12, :2, :2]).any()
    assert not np.isnan(values[12:]).any()


def test_horizon_scales_exactly() -> None:
    rng = np.random.default_rng(9)
    frame = _frame(0.01 * rng.standard_normal((80, 3)))
    daily = factor_covariance(frame, CovarianceConfig())
    monthly = factor_covariance(frame, CovarianceConfig(horizon=21))
    assert monthly.horizon == 21
    np.testing.assert_array_equal(monthly.values, 21 * daily.values)


def test_frame_round_trip_is_exact(random_forecast: FactorCovariance) -> None:
    frame = random_forecast.to_frame()
    assert frame.columns == ["date", "factor", "market", "size", "value"]
    assert frame.schema["value"] == pl.Float64
    assert frame.height == 3 * random_forecast.dates.len()
    assert frame["value"].null_count() > 0
    for candidate in (frame, frame.sample(fraction=1.0, shuffle=True, seed=1)):
        back = FactorCovariance.from_frame(candidate, horizon=random_forecast.horizon)
        assert back.factors == random_forecast.factors
        assert back.dates.to_list() == random_forecast.dates.to_list()
        np.testing.assert_array_equal(back.values, random_forecast.values)


def test_from_frame_errors(random_forecast: FactorCovariance) -> None:
    frame = random_forecast.to_frame()
    with pytest.raises(ValueError, match="missing column"):
        FactorCovariance.from_frame(frame.drop("factor"))
    with pytest.raises(ValueError, match="one row per"):
        FactorCovariance.from_frame(frame.slice(1))
    with pytest.raises(ValueError, match="no column"):
        FactorCovariance.from_frame(frame.drop("value"))


def test_at_and_volatility(random_forecast: FactorCovariance) -> None:
    date = random_forecast.dates[5]
    np.testing.assert_array_equal(random_forecast.at(date), random_forecast.values[5])
    with pytest.raises(KeyError, match="1999-01-01"):
        random_forecast.at(datetime.date(1999, 1, 1))
    vol = random_forecast.volatility()
    assert vol.columns == ["date", "market", "size", "value"]
    np.testing.assert_array_equal(vol["size"].to_numpy(), np.sqrt(random_forecast.values[:, 1, 1]))
    assert vol["value"].null_count() == 12


def test_unsorted_dates_are_sorted() -> None:
    rng = np.random.default_rng(10)
    frame = _frame(0.01 * rng.standard_normal((70, 2)))
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=3)
    expected = factor_covariance(frame)
    result = factor_covariance(shuffled)
    assert result.dates.to_list() == expected.dates.to_list()
    np.testing.assert_array_equal(result.values, expected.values)


def test_short_history_gives_no_forecast() -> None:
    result = factor_covariance(_frame(np.zeros((5, 2))), CovarianceConfig(min_periods=6))
    assert result.values.shape == (0, 2, 2)
    assert result.dates.len() == 0


def test_input_errors() -> None:
    frame = _frame(0.01 * np.ones((10, 2)))
    with pytest.raises(ValueError, match="no 'date' column"):
        factor_covariance(frame.drop("date"))
    with pytest.raises(ValueError, match=r"\['f1'\] must be numeric"):
        factor_covariance(frame.with_columns(pl.col("f1").cast(pl.String)))
    with pytest.raises(ValueError, match="no factor columns"):
        factor_covariance(frame.select("date"))
    with pytest.raises(ValueError, match="duplicate dates"):
        factor_covariance(pl.concat([frame, frame.head(1)]))
    with pytest.raises(ValueError, match="infinite"):
        factor_covariance(frame.with_columns(pl.lit(math.inf).alias("f0")))
    with pytest.raises(ValueError, match="may not be named 'factor'"):
        factor_covariance(frame.rename({"f0": "factor"}))
    with pytest.raises(ValueError, match="'date' has null values"):
        factor_covariance(frame.with_columns(pl.when(pl.int_range(pl.len()) > 0).then(pl.col("date")).alias("date")))
    with pytest.raises(TypeError, match="must be a polars DataFrame"):
        factor_covariance(frame.to_dict())  # type: ignore[arg-type]
    assert factor_covariance(frame.lazy(), CovarianceConfig(min_periods=2)).values.shape == (9, 2, 2)
    with pytest.raises(ValueError, match="not a date"):
        factor_covariance(frame.with_columns(pl.col("date").cast(pl.String)))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("vol_half_life", 0, "vol_half_life must be a positive"),
        ("corr_half_life", -5.0, "corr_half_life must be a positive"),
        ("corr_half_life", math.nan, "corr_half_life must be a positive"),
        ("vol_nw_lags", -1, "vol_nw_lags must be a non-negative integer"),
        ("corr_nw_lags", 1.5, "corr_nw_lags must be a non-negative integer"),
        ("min_periods", 1, "min_periods must be an integer ≥ 2"),
        ("horizon", 0, "horizon must be a positive integer"),
        ("shrinkage", "oas", "shrinkage must be one of"),
    ],
)
def test_config_errors(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CovarianceConfig(**{field: value})  # type: ignore[arg-type]


def test_forecast_vols_track_synthetic_truth() -> None:
    """End to end: estimated factor returns of the synthetic market give forecast vols near the true ones."""
    market = generate_market(300, 600, seed=3)
    panel, truth = market.panel, market.truth
    result = estimate_from_panel(
        panel,
        truth.exposures,
    )
    forecast = factor_covariance(result.factor_returns)
    vol = forecast.volatility()
    # the forecast at the close of date t is for the return of the next date
    next_date = dict(zip(vol["date"].to_list()[:-1], vol["date"].to_list()[1:], strict=True))
    checked = ("market", *truth.styles)
    index = [truth.factors.index(name) for name in checked]
    true_vols, forecast_vols = [], []
    for row, date in enumerate(vol["date"].to_list()[:-1:5]):
        true_cov = truth.factor_covariance_on(next_date[date])
        true_vols.append(np.sqrt(np.diag(true_cov)[index]))
        forecast_vols.append([vol[name][5 * row] for name in checked])
    ratio = np.mean(forecast_vols, axis=0) / np.mean(true_vols, axis=0)
    assert np.all((ratio > 1 / 1.5) & (ratio < 1.5)), dict(zip(checked, ratio, strict=True))
