"""Specific risk: each step against an independent reference (slow loops, closed forms, the synthetic truth)."""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factor_engine.regression import estimate_from_panel
from factor_engine.risk import specific as specific_module
from factor_engine.risk.specific import SpecificRiskConfig, _blend_weight, specific_risk
from factor_engine.risk.specific_state import SpecificState, extend_specific_risk, specific_risk_with_state
from factor_engine.synthetic import SyntheticMarket, generate_market

START = datetime.date(2020, 1, 1)
# only the time-series step: no structural blend, no shrinkage, no regime adjustment
TS_ONLY = {"structural": False, "shrinkage": 0.0, "vra_half_life": None}


def _dates(n_dates: int) -> list[datetime.date]:
    return [START + datetime.timedelta(days=i) for i in range(n_dates)]


def _config(**changes: Any) -> SpecificRiskConfig:
    return SpecificRiskConfig(**changes)


def _long(values: np.ndarray, name: str, keep: np.ndarray | None = None) -> pl.DataFrame:
    """A long ``date, symbol, name`` frame of the (T, N) ``values`` at the cells where ``keep`` is True."""
    n_dates = values.shape[0]
    keep = np.ones(values.shape, dtype=bool) if keep is None else keep
    t, n = np.nonzero(keep)
    dates = _dates(n_dates)
    return pl.DataFrame(
        {
            "date": [dates[i] for i in t],
            "symbol": [f"S{j:03d}" for j in n],
            name: values[t, n],
        },
        schema={"date": pl.Date, "symbol": pl.String, name: pl.Float64},
    )


def _vol_frame(frame: pl.DataFrame, n_dates: int, n_assets: int, column: str = "specific_vol") -> np.ndarray:
    """``column`` of a frame built by :func:`_long` back on a (T, N) array, NaN where there is no row."""
    dense = np.full((n_dates, n_assets), np.nan)
    t = frame.select((pl.col("date") - pl.lit(START)).dt.total_days()).to_series().to_numpy()
    n = frame["symbol"].str.slice(1).cast(pl.Int64).to_numpy()
    dense[t, n] = frame[column].to_numpy()
    return dense


def _signs(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0)


# --- step 1: the Newey–West EWMA time-series estimate --------------------------------------------------------


def _slow_time_series(resid: np.ndarray, has_row: np.ndarray, config: SpecificRiskConfig) -> np.ndarray:
    """σ_TS by the definition: a loop over assets and dates summing over earlier observations."""
    n_dates, n_assets = resid.shape
    decay = 0.5 ** (1.0 / config.half_life)
    lags = config.nw_lags
    out = np.full((n_dates, n_assets), np.nan)
    for n in range(n_assets):
        observed = [s for s in range(n_dates) if has_row[s, n] and math.isfinite(resid[s, n])]
        for t in range(n_dates):
            if not has_row[t, n]:
                continue
            seen = [s for s in observed if s <= t]
            if len(seen) < config.min_periods:
                continue
            weights = {s: decay ** (t - s) for s in seen}
            gamma0 = sum(weights[s] * resid[s, n] ** 2 for s in seen) / sum(weights.values())
            variance = gamma0
            for lag in range(1, lags + 1):
                pairs = [s for s in seen if s - lag in weights]
                if pairs:
                    autocovariance = sum(weights[s] * resid[s, n] * resid[s - lag, n] for s in pairs) / sum(
                        weights[s] for s in pairs
                    )
                    variance += 2.0 * (1.0 - lag / (lags + 1)) * autocovariance
            out[t, n] = math.sqrt(variance if variance > 0 else gamma0)
    return out


@pytest.mark.parametrize("nw_lags", [3, 0])
def test_time_series_matches_slow_loop(nw_lags: int) -> None:
    rng = np.random.default_rng(11)
    n_dates, n_assets = 70, 6
    vols = rng.uniform(0.01, 0.03, n_assets)
    resid = rng.standard_normal((n_dates, n_assets)) * vols
    resid[1:, 0] += 0.6 * resid[:-1, 0]  # autocorrelated: the Newey–West terms matter
    has_row = rng.random((n_dates, n_assets)) > 0.15  # gaps
    has_row[:20, 1] = False  # listed late
    has_row[50:, 2] = False  # delisted
    resid[30, 3] = np.nan  # a row whose residual is missing still gets a forecast
    config = SpecificRiskConfig(half_life=12, nw_lags=nw_lags, min_periods=8, full_history=30, **TS_ONLY)
    caps = np.full((n_dates, n_assets), 1e9)
    result = specific_risk(_long(resid, "residual", has_row), _long(caps, "market_cap"), config=config)
    expected = _slow_time_series(resid, has_row, config)
    actual = _vol_frame(result, n_dates, n_assets)
    assert np.array_equal(np.isnan(actual), np.isnan(expected))
    assert np.isfinite(actual[30, 3])
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=0)
    assert result.columns == ["date", "symbol", "specific_vol"]
    assert result.equals(result.sort("date", "symbol"))


# --- step 3: Bayesian shrinkage --------------------------------------------------------------------------------


def test_shrinkage_matches_hand_computation() -> None:
    """Residuals ±a_i make σ_TS = a_i exactly (no lags); the shrunk values follow the closed form."""
    vols = np.array([0.010, 0.030, 0.020, 0.050, 0.015])
    caps = np.array([3e9, 1e9, 4e9, 2e9, 9e9])
    n_dates = 6
    rng = np.random.default_rng(3)
    resid = _signs(rng, (n_dates, vols.shape[0])) * vols
    q = 0.25
    base = {"half_life": 5, "nw_lags": 0, "min_periods": 2, "full_history": 4, "shrinkage": q, "structural": False}
    residuals, cap_frame = _long(resid, "residual"), _long(np.tile(caps, (n_dates, 1)), "market_cap")
    result = specific_risk(residuals, cap_frame, config=_config(**base, n_size_groups=2, vra_half_life=None))
    actual = _vol_frame(result, n_dates, vols.shape[0])[-1]
    # ranks by cap: asset 1 (0), 3 (1), 0 (2), 2 (3), 4 (4); group floor(2 r / 5): {1, 3, 0} and {2, 4}
    expected = np.empty_like(vols)
    for members in ([1, 3, 0], [2, 4]):
        sigma, weight = vols[members], caps[members]
        mean = float(np.sum(weight * sigma) / np.sum(weight))
        spread = math.sqrt(float(np.mean((sigma - mean) ** 2)))
        share = q * np.abs(sigma - mean) / (spread + q * np.abs(sigma - mean))
        expected[members] = share * mean + (1 - share) * sigma
    np.testing.assert_allclose(actual, expected, rtol=1e-12)
    # one asset per group: nothing to shrink toward but itself
    alone = specific_risk(residuals, cap_frame, config=_config(**base, n_size_groups=5, vra_half_life=None))
    np.testing.assert_allclose(_vol_frame(alone, n_dates, vols.shape[0])[-1], vols, rtol=1e-12)


def test_shrinkage_is_the_same_in_batches_of_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shrinkage runs on batches of dates in parallel: batches of 3 dates (uneven, the last shorter) give
    the values of one batch of every date, asset for asset."""
    rng = np.random.default_rng(11)
    sigma = np.abs(rng.normal(0.02, 0.006, (40, 30)))
    cap = np.exp(rng.normal(21.0, 1.0, (40, 30)))
    has_row = rng.random((40, 30)) > 0.15
    sigma[rng.random((40, 30)) < 0.05] = np.nan
    monkeypatch.setattr(specific_module, "_SHRINK_CELLS", 10_000)
    whole = specific_module._shrink(sigma, has_row, cap, 0.1, 4)
    monkeypatch.setattr(specific_module, "_SHRINK_CELLS", 3 * 30)
    batched = specific_module._shrink(sigma, has_row, cap, 0.1, 4)
    assert np.isfinite(whole).sum() > 900
    np.testing.assert_array_equal(batched, whole)


def test_regime_multiplier_is_the_same_in_batches_of_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The regime adjustment's bias statistics are computed on batches of dates in parallel: batches of 3 dates
    (the first one reaching back to the date before the history, through ``before``) give the multipliers and
    sums of one batch of every date, exactly."""
    rng = np.random.default_rng(12)
    sigma = np.abs(rng.normal(0.02, 0.006, (40, 30)))
    cap = np.exp(rng.normal(21.0, 1.0, (40, 30)))
    resid = rng.normal(0.0, 0.02, (40, 30))
    present = rng.random((40, 30)) > 0.15
    sigma[rng.random((40, 30)) < 0.05] = np.nan
    before = specific_module.RegimeContext(
        shrunk=np.abs(rng.normal(0.02, 0.006, 30)), cap=np.exp(rng.normal(21.0, 1.0, 30)), sums=np.array([1.3, 1.1])
    )
    for context in (None, before):
        monkeypatch.setattr(specific_module, "_REGIME_DATES", 1_000)
        whole = specific_module._regime_multiplier(resid, present, sigma, cap, 0.95, context)
        monkeypatch.setattr(specific_module, "_REGIME_DATES", 3)
        batched = specific_module._regime_multiplier(resid, present, sigma, cap, 0.95, context)
        assert np.ptp(whole[0]) > 0.01  # the multiplier moves
        np.testing.assert_array_equal(batched[0], whole[0])
        np.testing.assert_array_equal(batched[1], whole[1])


# --- step 2: structural model and blend ---------------------------------------------------------------------------


class StructuralCase(NamedTuple):
    residuals: pl.DataFrame
    caps: pl.DataFrame
    exposures: pl.DataFrame
    x: np.ndarray  # (N,) each asset's exposure
    cap: np.ndarray  # (N,) each asset's market cap
    vols: np.ndarray  # (N,) each asset's own (time-series) vol
    shape: tuple[int, int]


@pytest.fixture(scope="module")
def structural_case() -> StructuralCase:
    """Established assets whose vol is about exp(log 0.015 + 0.4 x), one late lister (25 observations at the
    last date) whose own vol is off the model, and one too new for a time-series estimate (5 observations)."""
    rng = np.random.default_rng(5)
    n_dates, n_assets = 80, 40
    x = rng.standard_normal(n_assets)
    vols = 0.015 * np.exp(0.4 * x + 0.2 * rng.standard_normal(n_assets))
    vols[-2] = 0.05  # the late lister's own vol, far above the model's
    resid = _signs(rng, (n_dates, n_assets)) * vols
    has_row = np.ones((n_dates, n_assets), dtype=bool)
    has_row[: n_dates - 25, -2] = False
    has_row[: n_dates - 5, -1] = False
    cap = rng.uniform(1e8, 1e11, n_assets)
    caps = np.tile(cap, (n_dates, 1))
    return StructuralCase(
        residuals=_long(resid, "residual", has_row),
        caps=_long(caps, "market_cap", has_row),
        exposures=_long(np.tile(x, (n_dates, 1)), "x", has_row),
        x=x,
        cap=cap,
        vols=vols,
        shape=(n_dates, n_assets),
    )


def test_structural_blend_uses_the_documented_gamma(structural_case: StructuralCase) -> None:
    case = structural_case
    vols = case.vols
    # reference: weighted least squares (weights sqrt cap) of log vol on [1, x] over the full-history assets
    design = np.column_stack([np.ones_like(case.x), case.x])
    root_weight = case.cap[:-2, None] ** 0.25
    coef = np.linalg.lstsq(design[:-2] * root_weight, np.log(vols[:-2]) * root_weight[:, 0], rcond=None)[0]
    bias = np.mean(vols[:-2] / np.exp(design[:-2] @ coef))
    model = bias * np.exp(design @ coef)
    assert abs(bias - 1.0) > 1e-3  # the log-bias correction matters here
    base = {"half_life": 20, "nw_lags": 0, "min_periods": 10, "full_history": 40, "blend_start": 10}
    base["vra_half_life"] = None
    blended = specific_risk(case.residuals, case.caps, case.exposures, _config(**base, shrinkage=0.0))
    last = _vol_frame(blended, *case.shape)[-1]
    gamma = (25 - 10) / (40 - 10)
    late_ts, late_str = vols[-2], model[-2]
    assert late_str < last[-2] < late_ts
    np.testing.assert_allclose(last[-2], gamma * late_ts + (1 - gamma) * late_str, rtol=1e-10)
    np.testing.assert_allclose(last[-1], model[-1], rtol=1e-10)  # no σ_TS yet: the structural value
    np.testing.assert_allclose(last[:-2], vols[:-2], rtol=1e-12)  # full history: γ = 1

    ts_only = specific_risk(case.residuals, case.caps, case.exposures, _config(**base, shrinkage=0.0, structural=False))
    last_ts = _vol_frame(ts_only, *case.shape)[-1]
    np.testing.assert_allclose(last_ts[:-1], vols[:-1], rtol=1e-12)
    assert np.isnan(last_ts[-1])  # 5 observations < min_periods and no structural model
    # with shrinkage: structural=False is the shrunk time-series estimate, the same as without exposures
    shrunk = _config(**base, structural=False)
    with_exposures = specific_risk(case.residuals, case.caps, case.exposures, shrunk)
    without = specific_risk(case.residuals, case.caps, None, shrunk)
    assert with_exposures.equals(without)
    assert not np.allclose(_vol_frame(without, *case.shape)[-1][:-1], vols[:-1])


def test_structural_model_with_sector_dummies_matches_the_full_regression(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model's exposures (a market column of ones, one-hot sector dummies, styles) take the structural
    model's sector shortcut (within-sector demeaning, Frisch–Waugh–Lovell): the estimate equals a per-date
    ``numpy.linalg.lstsq`` of log vol on the full design for the assets too new for a time-series estimate,
    and the general solve on the full design for every row, including a sector whose assets are all too new
    (no regression asset) and an asset without a style exposure."""
    from factor_engine.risk import specific

    rng = np.random.default_rng(17)
    n_dates, n_assets, n_sectors = 60, 48, 4
    sector = np.arange(n_assets) % n_sectors
    styles = rng.standard_normal((n_assets, 2))
    vols = 0.012 * np.exp(
        np.array([0.0, 0.3, -0.2, 0.5])[sector] + styles @ [0.3, -0.2] + 0.1 * rng.standard_normal(n_assets)
    )
    resid = _signs(rng, (n_dates, n_assets)) * vols
    has_row = np.ones((n_dates, n_assets), dtype=bool)
    new = (sector == 3) | (np.arange(n_assets) % 11 == 0)  # sector 3 has no established asset
    has_row[: n_dates - 4, new] = False  # 4 observations at the last date: no time-series estimate
    cap = rng.uniform(1e8, 1e11, n_assets)
    columns = {"market": np.ones(n_assets)} | {f"sector {k}": (sector == k).astype(float) for k in range(n_sectors)}
    columns |= {"style a": styles[:, 0], "style b": styles[:, 1]}
    exposures = pl.concat(
        [_long(np.tile(values, (n_dates, 1)), name, has_row).select(name) for name, values in columns.items()],
        how="horizontal",
    )
    exposures = _long(np.zeros((n_dates, n_assets)), "unused", has_row).select("date", "symbol").hstack(exposures)
    last = pl.col("date") == exposures["date"].max()
    exposures = exposures.with_columns(  # one asset without a style exposure on the last date
        pl.when(last & (pl.col("symbol") == "S005")).then(None).otherwise(pl.col("style a")).alias("style a")
    )
    config = _config(
        half_life=20, nw_lags=0, min_periods=10, full_history=40, blend_start=10, shrinkage=0.0, vra_half_life=None
    )
    residuals, caps = _long(resid, "residual", has_row), _long(np.tile(cap, (n_dates, 1)), "market_cap", has_row)
    calls: list[object] = []
    original = specific._one_hot_columns
    monkeypatch.setattr(specific, "_one_hot_columns", lambda numeric: calls.append(original(numeric)) or calls[-1])
    shortcut = _vol_frame(specific_risk(residuals, caps, exposures, config), n_dates, n_assets)
    assert calls and calls[-1] is not None  # the sector shortcut was taken
    monkeypatch.setattr(specific, "_one_hot_columns", lambda numeric: None)
    general = _vol_frame(specific_risk(residuals, caps, exposures, config), n_dates, n_assets)
    both = np.isfinite(general)
    assert np.array_equal(both, np.isfinite(shortcut))
    np.testing.assert_allclose(shortcut[both], general[both], rtol=1e-10)
    # the last date against lstsq: the established assets of sectors 0-2 (with both styles) are the regression
    established = ~new & (np.arange(n_assets) != 5)
    design = np.column_stack([np.ones(n_assets), *(sector == k for k in range(n_sectors)), styles])
    root = cap[established, None] ** 0.25
    time_series = specific_risk(residuals, caps, None, SpecificRiskConfig(**{**config.__dict__, "structural": False}))
    log_ts = np.log(_vol_frame(time_series, n_dates, n_assets)[-1, established])  # σ_TS of the regression assets
    coef = np.linalg.lstsq(design[established] * root, log_ts * root[:, 0], rcond=None)[0]
    bias = np.mean(np.exp(log_ts - design[established] @ coef))
    reference = bias * np.exp(design @ coef)
    in_present_sectors = new & (sector != 3)
    np.testing.assert_allclose(shortcut[-1, in_present_sectors], reference[in_present_sectors], rtol=1e-10)
    assert np.all(np.isfinite(shortcut[-1, sector == 3]))  # the sector without regression assets still gets one
    # without styles (market and sectors only) the general solve is used, and so is it for non-dummy columns
    numeric = exposures.drop("date", "symbol")
    assert original(numeric.drop("style a", "style b")) is None
    assert original(numeric.with_columns(pl.col("sector 0") * 2.0)) is None


def _fat_tail_reference(window: np.ndarray) -> float:
    """USE4's clip(exp(1 − Z), 0, 1) of one asset's observed residuals, with numpy's percentiles."""
    values = window[np.isfinite(window)]
    robust = (np.percentile(values, 75) - np.percentile(values, 25)) / 1.35
    plain = np.std(values[np.abs(values) <= 10 * robust], ddof=1)
    return float(min(1.0, np.exp(1.0 - abs(plain / robust - 1.0))))


def test_blend_weight_follows_use4() -> None:
    """γ = clip((h_W − b) / (W − b)) · clip(exp(1 − Z)) against a per-asset loop: a normal asset keeps its
    full weight, one with a few huge residuals (σ_eq > 2 σ̃) loses it, gaps shorten h_W."""
    rng = np.random.default_rng(12)
    n_dates, n_assets = 130, 6
    resid = 0.02 * rng.standard_normal((n_dates, n_assets))
    resid[5::10, 1] = 0.18  # fat tails: jumps of 9 sigma, inside the ±10 robust sigma kept for σ_eq
    resid[:70, 2] = np.nan  # a late lister
    resid[rng.random(n_dates) < 0.3, 3] = np.nan  # gaps
    resid[:, 4] = np.where(np.arange(n_dates) % 2, 0.0, 0.01)  # half the residuals 0: robust σ of the window
    resid[:, 5] = 0.0  # robust σ 0: Z infinite, no weight
    config = SpecificRiskConfig(full_history=50, blend_start=20, robust_every=7, min_periods=5)
    count = np.cumsum(np.isfinite(resid), axis=0)
    gamma = _blend_weight(resid, count, config)
    for t in range(n_dates):
        evaluated = (t // 7) * 7
        for n in range(n_assets):
            window = resid[max(0, t - 49) : t + 1, n]
            h = np.isfinite(window).sum()
            history = min(1.0, max(0.0, (h - 20) / 30))
            tail_window = resid[max(0, evaluated - 49) : evaluated + 1, n]
            if np.isfinite(tail_window).sum() < 2:
                tail = 1.0
            elif n == 5:
                tail = 0.0
            else:
                tail = _fat_tail_reference(tail_window)
            assert gamma[t, n] == pytest.approx(history * tail, rel=1e-12, abs=1e-15), (t, n)
    assert gamma[-1, 0] == 1.0 and gamma[-1, 1] < 0.5 and gamma[-1, 5] == 0.0


def _fat_tail_by_sorting(window: np.ndarray) -> np.ndarray:
    """The fat-tail factor of each column of a (W, N) window by sorting it whole (numpy's quantiles)."""
    factors = np.ones(window.shape[1])
    for n in range(window.shape[1]):
        values = window[np.isfinite(window[:, n]), n]
        if values.size < 2:
            continue
        robust = (np.quantile(values, 0.75) - np.quantile(values, 0.25)) / 1.35
        kept = values[np.abs(values) <= 10.0 * robust]
        if kept.size < 2:
            factors[n] = 0.0
        elif robust > 0:
            factors[n] = min(1.0, math.exp(1.0 - abs(np.std(kept, ddof=1) / robust - 1.0)))
        else:
            factors[n] = 0.0
    return factors


@pytest.mark.parametrize(("window", "every"), [(50, 7), (50, 1), (50, 30), (20, 60), (50, 50)])
def test_fat_tail_windows_kept_sorted_match_sorting_each_window(
    window: int, every: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fat-tail factor keeps each asset's window sorted from one evaluation to the next (values leaving and
    entering; anew when the windows are far apart or disjoint): it equals sorting every window, with ties
    (rounded residuals, runs of zeros), gaps, late listers and blocks of assets (3 wide, the last shorter)."""
    rng = np.random.default_rng(21)
    n_dates, n_assets = 170, 11
    resid = np.round(0.02 * rng.standard_t(3, (n_dates, n_assets)), 3)  # many equal values
    resid[rng.random((n_dates, n_assets)) < 0.2] = np.nan
    resid[:90, 2] = np.nan  # a late lister
    resid[40:80, 3] = 0.0  # a run of zeros: σ̃ 0 in some windows
    resid[:, 4] = np.nan  # never observed
    resid[::2, 5] = np.nan  # every other date
    resid[100:, 6] = -0.0
    config = SpecificRiskConfig(full_history=window, blend_start=window // 3, robust_every=every, min_periods=5)
    count = np.cumsum(np.isfinite(resid), axis=0)
    expected = np.empty((n_dates, n_assets))
    for t in range(n_dates):
        evaluated = t // every * every
        h = count[t] - (count[t - window] if t >= window else 0)
        history = np.clip((h - window // 3) / (window - window // 3), 0.0, 1.0)
        expected[t] = history * _fat_tail_by_sorting(resid[max(0, evaluated - window + 1) : evaluated + 1])
    monkeypatch.setattr(specific_module, "_KERNEL_COLUMNS", 3)
    gamma = _blend_weight(resid, count, config)
    np.testing.assert_allclose(gamma, expected, rtol=1e-12, atol=1e-15)
    assert np.count_nonzero(gamma == 0.0) > 0 and np.count_nonzero((gamma > 0) & (gamma < 1)) > 0
    last = (n_dates - 1) // every * every
    np.testing.assert_allclose(
        specific_module._fat_tail_factor(resid[max(0, last - window + 1) : last + 1]),
        _fat_tail_by_sorting(resid[max(0, last - window + 1) : last + 1]),
        rtol=1e-12,
    )


def test_time_series_is_the_same_in_blocks_of_assets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The time-series estimate and the blend weight run on blocks of assets in parallel: blocks of 4 assets
    (the last shorter) give those of one block, exactly, and so does an extension's continued recursion."""
    residuals, caps, exposures = _random_case(8, n_dates=70, n_assets=30)
    config = _config(**{**SMALL, "nw_lags": 3}, robust_every=7)
    whole = specific_module.time_series_specific_risk(residuals, caps, config)
    expected = specific_risk(residuals, caps, exposures, config)
    monkeypatch.setattr(specific_module, "_KERNEL_COLUMNS", 4)
    blocks = specific_module.time_series_specific_risk(residuals, caps, config)
    np.testing.assert_array_equal(blocks.sigma_ts, whole.sigma_ts)
    np.testing.assert_array_equal(blocks.gamma, whole.gamma)
    assert np.isfinite(whole.sigma_ts).sum() > 1000 and (whole.gamma > 0).sum() > 1000
    cut = START + datetime.timedelta(days=44)
    first, state = specific_risk_with_state(residuals.filter(pl.col("date") <= cut), caps, exposures, config)
    later, _ = extend_specific_risk(state, residuals, caps, exposures)
    extended = pl.concat([first, later])
    assert extended.select("date", "symbol").equals(expected.select("date", "symbol"))
    np.testing.assert_allclose(extended["specific_vol"].to_numpy(), expected["specific_vol"].to_numpy(), rtol=1e-12)


# --- step 4: volatility regime adjustment -------------------------------------------------------------------------


def test_regime_adjustment_tracks_doubled_residuals() -> None:
    """Residuals ±a_i for 1000 dates then ±2 a_i: λ stays 1 before, then rises toward 2.

    With residual magnitudes m_s a_i, σ_TS(t) = a_i sqrt(G_t), G_t the normalized EWMA of m_s², so the bias
    statistic is B_t = m_t / sqrt(G_{t−1}) for every weighting; λ_t² is the normalized EWMA of B²."""
    rng = np.random.default_rng(9)
    n_before, n_after, n_assets = 1000, 30, 8
    n_dates = n_before + n_after
    scale = np.where(np.arange(n_dates) < n_before, 1.0, 2.0)
    vols = rng.uniform(0.01, 0.03, n_assets)
    resid = _signs(rng, (n_dates, n_assets)) * vols * scale[:, None]
    caps = _long(np.tile(rng.uniform(1e9, 1e10, n_assets), (n_dates, 1)), "market_cap")
    half_life, vra_half_life, min_periods = 1e5, 5.0, 3
    base = {"half_life": half_life, "nw_lags": 0, "min_periods": min_periods, "full_history": 10, "shrinkage": 0.0}
    off = specific_risk(_long(resid, "residual"), caps, config=_config(**base, vra_half_life=None))
    on = specific_risk(_long(resid, "residual"), caps, config=_config(**base, vra_half_life=vra_half_life))
    ratio = _vol_frame(on, n_dates, n_assets) / _vol_frame(off, n_dates, n_assets)
    multiplier = ratio[:, 0]
    np.testing.assert_allclose(ratio, np.repeat(multiplier[:, None], n_assets, axis=1), rtol=1e-12, equal_nan=True)

    decay, vra_decay = 0.5 ** (1 / half_life), 0.5 ** (1 / vra_half_life)
    ewma_m2, ewma_w, bias_sum, bias_w = 0.0, 0.0, 0.0, 0.0
    expected = np.full(n_dates, np.nan)
    previous_g = None
    for t in range(n_dates):
        ewma_m2, ewma_w = decay * ewma_m2 + scale[t] ** 2, decay * ewma_w + 1.0
        bias_sum, bias_w = vra_decay * bias_sum, vra_decay * bias_w
        if previous_g is not None:  # a forecast exists on the previous date
            bias_sum += scale[t] ** 2 / previous_g
            bias_w += 1.0
        if t + 1 >= min_periods:
            expected[t] = math.sqrt(bias_sum / bias_w) if bias_w else 1.0
            previous_g = ewma_m2 / ewma_w
    np.testing.assert_allclose(multiplier, expected, rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(multiplier[min_periods - 1 : n_before], 1.0, rtol=1e-12)
    # σ_TS barely moves (half-life 1e5): λ² → the EWMA of the constant B² ≈ 4, 1 − δ^30 of the way there
    closed_form = math.sqrt(1 + 3 * (1 - vra_decay**n_after))
    assert 1.85 < multiplier[-1] < 2.0
    assert abs(multiplier[-1] - closed_form) < 0.05 * closed_form
    assert np.all(np.diff(multiplier[n_before - 1 : n_before + 15]) > 0)


def test_regime_adjustment_matches_slow_loop() -> None:
    """λ_t from a per-date loop over the previous date's forecasts and caps (full model, random panel)."""
    residuals, caps, exposures = _random_case(4)
    n_dates, n_assets = 60, 30
    vra_half_life = 6.0
    before = specific_risk(residuals, caps, exposures, _config(**SMALL, vra_half_life=None))
    after = specific_risk(residuals, caps, exposures, _config(**SMALL, vra_half_life=vra_half_life))
    sigma = _vol_frame(before, n_dates, n_assets)
    resid = _vol_frame(residuals, n_dates, n_assets, "residual")
    cap = _vol_frame(caps, n_dates, n_assets, "market_cap")
    decay = 0.5 ** (1 / vra_half_life)
    total, weight_sum = 0.0, 0.0
    expected = np.full((n_dates, n_assets), np.nan)
    for t in range(n_dates):
        total, weight_sum = decay * total, decay * weight_sum
        if t > 0:
            assets = [n for n in range(n_assets) if sigma[t - 1, n] > 0 and math.isfinite(resid[t, n])]
            if assets:
                weights = cap[t - 1, assets] / cap[t - 1, assets].sum()
                total += float(np.sum(weights * (resid[t, assets] / sigma[t - 1, assets]) ** 2))
                weight_sum += 1.0
        expected[t] = sigma[t] * (math.sqrt(total / weight_sum) if weight_sum else 1.0)
    actual = _vol_frame(after, n_dates, n_assets)
    np.testing.assert_allclose(actual, expected, rtol=1e-12, equal_nan=True)
    assert not np.allclose(actual, sigma, equal_nan=True)


# --- point in time, scaling --------------------------------------------------------------------------------------


def _random_case(seed: int, n_dates: int = 60, n_assets: int = 30) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_dates, n_assets, 2))
    vols = 0.02 * np.exp(0.3 * x[:, :, 0])
    resid = rng.standard_normal((n_dates, n_assets)) * vols
    has_row = rng.random((n_dates, n_assets)) > 0.1
    has_row[: n_dates // 2, : n_assets // 4] = False  # late listers: the structural model fills in
    caps = np.exp(rng.normal(21, 1.5, n_assets))[None, :] * np.exp(np.cumsum(0.01 * resid, axis=0))
    exposures = pl.concat(
        [_long(x[:, :, 0], "beta", has_row), _long(x[:, :, 1], "value", has_row).select("value")], how="horizontal"
    )
    return _long(resid, "residual", has_row), _long(caps, "market_cap", has_row), exposures


SMALL = {"half_life": 10, "nw_lags": 2, "min_periods": 5, "full_history": 20, "n_size_groups": 3}


def test_point_in_time() -> None:
    """Forecasts up to a date do not change when later residuals are dropped."""
    residuals, caps, exposures = _random_case(1)
    config = _config(**SMALL, vra_half_life=8)
    full = specific_risk(residuals, caps, exposures, config)
    cut = START + datetime.timedelta(days=40)
    early = specific_risk(residuals.filter(pl.col("date") <= cut), caps, exposures, config)
    head = full.filter(pl.col("date") <= cut)
    assert early.select("date", "symbol").equals(head.select("date", "symbol"))
    np.testing.assert_allclose(early["specific_vol"].to_numpy(), head["specific_vol"].to_numpy(), rtol=1e-12)
    # every residual row from some date on has a forecast (structural model for the short histories)
    assert full.height > 0.8 * residuals.height


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 1000),
    scale=st.floats(1e-3, 1e3),
    vra=st.sampled_from([None, 8.0]),
    structural=st.booleans(),
)
def test_scaling_residuals_scales_specific_vol(seed: int, scale: float, vra: float | None, structural: bool) -> None:
    residuals, caps, exposures = _random_case(seed, n_dates=40, n_assets=20)
    config = _config(**SMALL, vra_half_life=vra, structural=structural)
    base = specific_risk(residuals, caps, exposures, config)
    scaled = specific_risk(residuals.with_columns(pl.col("residual") * scale), caps, exposures, config)
    assert scaled.select("date", "symbol").equals(base.select("date", "symbol"))
    np.testing.assert_allclose(scaled["specific_vol"].to_numpy(), scale * base["specific_vol"].to_numpy(), rtol=1e-9)


def test_input_order_and_extra_rows_do_not_matter() -> None:
    residuals, caps, exposures = _random_case(2)
    config = _config(**SMALL)
    expected = specific_risk(residuals, caps, exposures, config)
    extra_caps = pl.concat(
        [caps, pl.DataFrame({"date": [START - datetime.timedelta(days=3)], "symbol": ["ZZZ"], "market_cap": [1.0]})]
    )
    shuffled = specific_risk(
        residuals.sample(fraction=1.0, shuffle=True, seed=1),
        extra_caps.sample(fraction=1.0, shuffle=True, seed=2),
        exposures.sample(fraction=1.0, shuffle=True, seed=3),
        config,
    )
    assert shuffled.select("date", "symbol").equals(expected.select("date", "symbol"))
    np.testing.assert_allclose(shuffled["specific_vol"].to_numpy(), expected["specific_vol"].to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("structural", [True, False])
@pytest.mark.parametrize("cuts", [(41,), (25, 40, 41, 63, 77)])
def test_extension_from_the_state_equals_one_run(structural: bool, cuts: tuple[int, ...], tmp_path: Path) -> None:
    """A model extended by later dates: their forecasts from the state of a run over the earlier dates equal a
    run over all dates, across fat-tail evaluation dates, late listers and an asset that first appears later."""
    residuals, caps, exposures = _random_case(4, n_dates=90, n_assets=30)
    newcomer = pl.col("symbol") == "S029"  # no residual before the last cut
    residuals = residuals.filter(~newcomer | (pl.col("date") > START + datetime.timedelta(days=cuts[-1])))
    config = _config(**SMALL, vra_half_life=8, robust_every=7, structural=structural)
    expected = specific_risk(residuals, caps, exposures, config)
    head = residuals.filter(pl.col("date") <= START + datetime.timedelta(days=cuts[0] - 1))
    first, state = specific_risk_with_state(head, caps, exposures, config)
    pieces = [first]
    for cut in (*cuts[1:], 90):
        np.savez(tmp_path / "state.npz", **state.to_arrays())  # through the file a model folder keeps
        with np.load(tmp_path / "state.npz") as saved:
            state = SpecificState.from_arrays({name: saved[name] for name in saved.files}, config)
        upto = residuals.filter(pl.col("date") <= START + datetime.timedelta(days=cut - 1))
        piece, state = extend_specific_risk(state, upto, caps, exposures)
        pieces.append(piece)
    extended = pl.concat(pieces)
    assert extended.select("date", "symbol").equals(expected.select("date", "symbol"))
    np.testing.assert_allclose(extended["specific_vol"].to_numpy(), expected["specific_vol"].to_numpy(), rtol=1e-12)
    assert extended.filter(pl.col("symbol") == "S029").height > 0
    assert state.last_date == expected["date"].max() and state.n_dates == 90


def test_extension_with_no_later_date_returns_the_state() -> None:
    residuals, caps, exposures = _random_case(6)
    config = _config(**SMALL)
    _, state = specific_risk_with_state(residuals, caps, exposures, config)
    piece, after = extend_specific_risk(state, residuals, caps, exposures)
    assert piece.height == 0 and after is state


# --- the synthetic market's truth --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return generate_market(400, 700, seed=5)


@pytest.fixture(scope="module")
def forecast(market: SyntheticMarket) -> tuple[pl.DataFrame, pl.DataFrame]:
    panel, truth = market.panel, market.truth
    result = estimate_from_panel(
        panel,
        truth.exposures,
    )
    vols = specific_risk(result.residuals, panel.select("date", "symbol", "market_cap"), result.exposures)
    return vols, result.residuals


def test_forecast_tracks_true_specific_vol(
    market: SyntheticMarket, forecast: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    vols, _ = forecast
    joined = vols.join(market.truth.specific_vol.rename({"specific_vol": "true_vol"}), on=["date", "symbol"])
    last_dates = joined["date"].unique().sort().tail(100)
    recent = joined.filter(pl.col("date").is_in(last_dates.implode()))
    rank_corr = recent.group_by("date").agg(pl.corr("specific_vol", "true_vol", method="spearman").alias("rho"))
    mean_rank_corr = rank_corr["rho"].mean()
    assert isinstance(mean_rank_corr, float)
    assert mean_rank_corr > 0.6
    mean_ratio = (recent["specific_vol"] / recent["true_vol"]).mean()
    assert isinstance(mean_ratio, float)
    assert 0.8 <= mean_ratio <= 1.25


def test_next_day_residuals_are_standardized(forecast: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    """The forecast of date t is for t + 1: u_{t+1} / σ_t has unit standard deviation."""
    vols, residuals = forecast
    dates = residuals["date"].unique().sort()
    following = pl.DataFrame({"date": dates[:-1], "next_date": dates[1:]})
    standardized = (
        vols.join(following, on="date")
        .join(residuals.rename({"date": "next_date"}), on=["next_date", "symbol"])
        .filter(pl.col("date").is_in(dates[-301:-1].implode()))
        .select(pl.col("residual") / pl.col("specific_vol"))
        .to_series()
    )
    assert standardized.len() > 300 * 300
    bias = standardized.std()
    assert isinstance(bias, float)
    assert 0.85 <= bias <= 1.15


# --- errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"half_life": 0}, "half_life must be a finite number > 0"),
        ({"nw_lags": -1}, "nw_lags must be an integer ≥ 0"),
        ({"nw_lags": 1.5}, "nw_lags must be an integer ≥ 0"),
        ({"min_periods": 0}, "min_periods must be an integer ≥ 1"),
        ({"min_periods": 30, "full_history": 30}, r"full_history \(30\) must be greater than min_periods \(30\)"),
        ({"blend_start": 180}, r"blend_start \(180\) must be less than full_history \(180\)"),
        ({"robust_every": 0}, "robust_every must be an integer ≥ 1"),
        ({"shrinkage": -0.1}, "shrinkage must be a finite number ≥ 0"),
        ({"shrinkage": "0.1"}, "shrinkage must be a finite number ≥ 0"),
        ({"n_size_groups": 0}, "n_size_groups must be an integer ≥ 1"),
        ({"structural": 1}, "structural must be a bool"),
        ({"vra_half_life": -5.0}, "vra_half_life must be a finite number > 0"),
    ],
)
def test_bad_config(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(**changes)


def test_bad_inputs() -> None:
    residuals, caps, exposures = _random_case(3, n_dates=10, n_assets=5)
    with pytest.raises(ValueError, match=r"residuals is missing column\(s\) \['residual'\]"):
        specific_risk(residuals.rename({"residual": "resid"}), caps)
    with pytest.raises(ValueError, match=r"market_cap is missing column\(s\) \['market_cap'\]"):
        specific_risk(residuals, caps.rename({"market_cap": "cap"}))
    with pytest.raises(ValueError, match=r"market_cap must be positive and finite for every residual row: 1 rows"):
        specific_risk(residuals, caps.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(0.0)
                                                   .otherwise(pl.col("market_cap")).alias("market_cap")))  # fmt: skip
    with pytest.raises(ValueError, match=r"market_cap must be positive and finite for every residual row: 2 rows"):
        specific_risk(residuals, caps.slice(2))
    with pytest.raises(ValueError, match=r"residuals: 2 rows share 1 \(date, symbol\) pairs"):
        specific_risk(pl.concat([residuals, residuals.head(1)]), caps)
    with pytest.raises(ValueError, match=r"market_cap: 2 rows share 1 \(date, symbol\) pairs"):
        specific_risk(residuals, pl.concat([caps, caps.head(1)]))
    with pytest.raises(ValueError, match=r"exposures: 2 rows share 1 \(date, symbol\) pairs"):
        specific_risk(residuals, caps, pl.concat([exposures, exposures.head(1)]))
    with pytest.raises(ValueError, match=r"exposures: column\(s\) \['sector'\] must be numeric"):
        specific_risk(residuals, caps, exposures.with_columns(sector=pl.lit("Energy")))
    with pytest.raises(ValueError, match="residuals: column 'residual' must be numeric"):
        specific_risk(residuals.with_columns(pl.col("residual").cast(pl.String)), caps)
    with pytest.raises(ValueError, match="residuals is empty"):
        specific_risk(residuals.clear(), caps)
    with pytest.raises(TypeError, match="config must be a SpecificRiskConfig"):
        specific_risk(residuals, caps, config={"half_life": 5})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="residuals must be a polars DataFrame or LazyFrame, got dict"):
        specific_risk(residuals.to_dict(), caps)  # type: ignore[arg-type]
    assert specific_risk(residuals.lazy(), caps).equals(specific_risk(residuals, caps))  # type: ignore[arg-type]
