"""Tests of the synthetic market: the panel must be exactly what the stored truth implies."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from scipy import stats

from cli_runner import invoke
from factor_engine.panel import GICS_SECTORS, SEED_SECTORS, validate_panel
from factor_engine.synthetic import (
    SyntheticMarket,
    base_factor_covariance,
    generate_market,
    sector_constraint_projection,
)

STYLES = ("momentum", "value", "size")
VALUE_FEATURES = ("book_price", "sales_price", "cf_price")


@pytest.fixture(scope="module")
def small() -> SyntheticMarket:
    return generate_market(120, 250, seed=11)


@pytest.fixture(scope="module")
def large() -> SyntheticMarket:
    return generate_market(500, 750, seed=5)


def _previous_dates(panel: pl.DataFrame) -> pl.DataFrame:
    """Map each panel date to the previous panel date (``prev_date``)."""
    dates = panel.select(pl.col("date").unique().sort())
    return dates.with_columns(pl.col("date").shift(1).alias("prev_date"))


def _max_identity_error(market: SyntheticMarket) -> tuple[float, int]:
    """Largest |r − (f_m + f_sector + Σ X[t−1] f + u)| over all non-null returns, by a per-date loop."""
    truth = market.truth
    panel = market.panel.join(_previous_dates(market.panel), on="date")
    lagged = truth.exposures.rename({"date": "prev_date"})
    rows = (
        panel.filter(pl.col("asset_returns").is_not_null())
        .join(truth.specific_returns, on=["date", "symbol"], how="left")
        .join(lagged, on=["prev_date", "symbol"], how="left")
    )
    worst, checked = 0.0, 0
    for (date,), day in rows.partition_by("date", as_dict=True, maintain_order=True).items():
        factor_row = truth.factor_returns.filter(pl.col("date") == date)
        market_return = factor_row["market"][0]
        sector_return = np.array([factor_row[s][0] for s in day["sector"]])
        style_returns = np.array([factor_row[s][0] for s in truth.styles])
        exposures = day.select(truth.styles).to_numpy().reshape(day.height, len(truth.styles))
        if np.isnan(exposures).any() or day["specific_return"].null_count():
            raise AssertionError(f"missing lagged exposure or specific return on {date}")
        style_part = exposures @ style_returns
        rebuilt = market_return + sector_return + style_part + day["specific_return"].to_numpy()
        worst = max(worst, float(np.max(np.abs(rebuilt - day["asset_returns"].to_numpy()))))
        checked += day.height
    return worst, checked


def _max_constraint_error(market: SyntheticMarket) -> float:
    """Largest |Σ_s c_s[t−1] f_s[t]| / Σ_s c_s[t−1] over the sectors populated on t, with the panel's own caps.

    A sector is populated on t when its true return of t is not null; ``c_s[t−1]`` is 0 for a sector with no
    row on the previous date.
    """
    sector_caps = market.panel.group_by("date", "sector").agg(pl.col("market_cap").sum())
    previous = _previous_dates(market.panel).drop_nulls()
    worst = 0.0
    for date, prev_date in previous.iter_rows():
        caps = dict(sector_caps.filter(pl.col("date") == prev_date).select("sector", "market_cap").iter_rows())
        factor_row = market.truth.factor_returns.filter(pl.col("date") == date)
        present = [s for s in market.truth.sectors if factor_row[s][0] is not None]
        weighted = sum(caps.get(s, 0.0) * factor_row[s][0] for s in present)
        worst = max(worst, abs(weighted) / sum(caps.get(s, 0.0) for s in present))
    return worst


def test_same_seed_identical_different_seed_differs() -> None:
    first = generate_market(60, 80, seed=3)
    second = generate_market(60, 80, seed=3)
    other = generate_market(60, 80, seed=4)
    assert_frame_equal(first.panel, second.panel)
    for name in ("factor_returns", "exposures", "specific_returns", "specific_vol", "factor_vol_multiplier"):
        assert_frame_equal(getattr(first.truth, name), getattr(second.truth, name))
    np.testing.assert_array_equal(first.truth.factor_covariance, second.truth.factor_covariance)
    assert not first.panel.equals(other.panel)
    assert not first.truth.factor_returns.equals(other.truth.factor_returns)


def test_panel_schema_sorted_and_unbalanced(large: SyntheticMarket) -> None:
    panel = large.panel
    assert panel.schema == pl.Schema(
        {
            "date": pl.Date,
            "symbol": pl.String,
            "asset_returns": pl.Float64,
            "market_cap": pl.Float64,
            "sector": pl.String,
            "book_price": pl.Float64,
            "sales_price": pl.Float64,
            "cf_price": pl.Float64,
        }
    )
    assert panel.equals(panel.sort("date", "symbol"))
    assert panel.select(pl.struct("date", "symbol").is_unique().all()).item()
    assert set(panel["sector"].unique()) == set(GICS_SECTORS)
    sector_counts = panel.group_by("symbol").agg(pl.col("sector").n_unique())
    assert sector_counts["sector"].max() == 1
    assert panel["symbol"].n_unique() == 500
    assert panel["symbol"].str.contains(r"^S\d{5}$").all()
    dates = panel["date"].unique().sort()
    assert dates.len() == 750
    assert dates[0] == datetime.date(2015, 1, 2)
    assert (dates.dt.weekday() <= 5).all()
    np.testing.assert_array_equal(
        dates.to_numpy(), np.busday_offset(np.datetime64("2015-01-02"), np.arange(750), roll="forward")
    )
    first_day = panel.filter(pl.col("date") == dates[0])["symbol"].n_unique()
    last_day = panel.filter(pl.col("date") == dates[-1])["symbol"].n_unique()
    assert 350 < first_day < 500
    assert 350 < last_day < 500
    spans = panel.group_by("symbol").agg(pl.col("date").min().alias("first"), pl.col("date").max().alias("last"))
    late_or_gone = spans.filter((pl.col("first") > dates[0]) | (pl.col("last") < dates[-1])).height
    assert 0.08 * 500 < late_or_gone < 0.25 * 500
    # each symbol's dates are contiguous: no gaps between listing and delisting
    rows_per_symbol = panel.group_by("symbol").len().join(spans, on="symbol")
    date_position = {d: k for k, d in enumerate(dates.to_list())}
    for symbol, n_rows, first, last in rows_per_symbol.iter_rows():
        assert n_rows == date_position[last] - date_position[first] + 1, symbol
    assert (panel.select(VALUE_FEATURES).to_numpy() > 0).all()
    assert (panel["market_cap"] > 0).all()
    caps = panel.filter(pl.col("date") == dates[0])["market_cap"].to_numpy()
    assert caps.min() < 1e9 and caps.max() > 1e11


def test_null_return_exactly_on_listing_dates(large: SyntheticMarket) -> None:
    flagged = large.panel.with_columns((pl.col("date") == pl.col("date").min().over("symbol")).alias("listing_date"))
    assert (flagged["asset_returns"].is_null() == flagged["listing_date"]).all()
    assert flagged["asset_returns"].is_nan().sum() == 0
    with_returns = flagged.filter(pl.col("asset_returns").is_not_null()).select("date", "symbol")
    assert_frame_equal(with_returns, large.truth.specific_returns.select("date", "symbol"))
    assert_frame_equal(with_returns, large.truth.specific_vol.select("date", "symbol"))


def test_truth_schemas(large: SyntheticMarket) -> None:
    truth = large.truth
    factors = ("market", *GICS_SECTORS, *STYLES)
    assert truth.styles == STYLES
    assert truth.factors == factors
    assert truth.factor_returns.columns == ["date", *factors]
    assert truth.factor_returns.schema["date"] == pl.Date
    assert all(truth.factor_returns.schema[f] == pl.Float64 for f in factors)
    return_dates = large.panel["date"].unique().sort()[1:]
    assert_frame_equal(truth.factor_returns.select("date"), return_dates.to_frame())
    assert truth.factor_returns.null_count().sum_horizontal().item() == 0
    assert truth.exposures.columns == ["date", "symbol", *STYLES]
    assert_frame_equal(truth.exposures.select("date", "symbol"), large.panel.select("date", "symbol"))
    assert truth.specific_returns.columns == ["date", "symbol", "specific_return"]
    assert truth.specific_vol.columns == ["date", "symbol", "specific_vol"]
    assert truth.factor_vol_multiplier.columns == ["date", "factor_regime", "specific_regime"]
    assert_frame_equal(truth.factor_vol_multiplier.select("date"), return_dates.to_frame())
    assert truth.sector_weights.columns == ["date", *GICS_SECTORS]
    assert truth.sectors == GICS_SECTORS
    assert truth.factor_covariance.shape == (len(factors), len(factors))


def test_return_identity_holds_exactly(small: SyntheticMarket) -> None:
    worst, checked = _max_identity_error(small)
    assert checked == small.panel["asset_returns"].is_not_null().sum()
    assert checked > 20_000
    assert worst < 1e-12


def test_identity_uses_previous_date_exposures_not_same_date(small: SyntheticMarket) -> None:
    """Guard against a look-ahead: same-date exposures must not reproduce the returns."""
    truth = small.truth
    rows = (
        small.panel.filter(pl.col("asset_returns").is_not_null())
        .join(truth.specific_returns, on=["date", "symbol"])
        .join(truth.exposures, on=["date", "symbol"])
        .join(truth.factor_returns, on="date")
    )
    sector_return = pl.coalesce([pl.when(pl.col("sector") == s).then(pl.col(s)) for s in GICS_SECTORS])
    same_date = pl.col("market") + sector_return + pl.col("specific_return")
    for style in STYLES:
        same_date = same_date + pl.col(style) * pl.col(f"{style}_right")
    error = rows.select((same_date - pl.col("asset_returns")).abs().max()).item()
    assert error > 1e-6


def test_sector_constraint_with_previous_close_caps(small: SyntheticMarket) -> None:
    assert _max_constraint_error(small) < 1e-12
    sector_returns = small.truth.factor_returns.select(GICS_SECTORS).to_numpy()
    assert sector_returns.std() > 1e-3  # the constraint is not met by zero sector returns
    weights = small.truth.sector_weights.select(GICS_SECTORS).to_numpy()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.einsum("ts,ts->t", weights, sector_returns), 0.0, rtol=0, atol=1e-15)


def test_market_cap_follows_returns(large: SyntheticMarket) -> None:
    recursion = (
        large.panel.sort("symbol", "date")
        .with_columns(pl.col("market_cap").shift(1).over("symbol").alias("previous_cap"))
        .filter(pl.col("asset_returns").is_not_null())
    )
    expected = recursion["previous_cap"].to_numpy() * (1.0 + recursion["asset_returns"].to_numpy())
    np.testing.assert_allclose(recursion["market_cap"].to_numpy(), expected, rtol=1e-12, atol=0)
    assert recursion["asset_returns"].to_numpy().min() >= -0.95 - 1e-12


def test_return_floor_clips_the_specific_return_and_keeps_the_identity() -> None:
    market = generate_market(200, 300, seed=1, specific_df=2.5)  # fat enough tails to hit the floor
    floored = market.panel.filter((pl.col("asset_returns") + 0.95).abs() < 1e-12)
    assert floored.height >= 1
    assert market.panel["asset_returns"].drop_nulls().to_numpy().min() >= -0.95 - 1e-15
    assert _max_identity_error(market)[0] < 1e-12
    assert (market.panel["market_cap"] > 0).all()


def test_exposures_standardized_persistent_and_size_tied_to_cap(large: SyntheticMarket) -> None:
    moments = large.truth.exposures.group_by("date").agg(
        *[pl.col(s).mean().abs().alias(f"{s}_mean") for s in STYLES],
        *[(pl.col(s).std(ddof=1) - 1.0).abs().alias(f"{s}_std") for s in STYLES],
    )
    assert moments.drop("date").max().to_numpy().max() < 1e-10
    autocorrelation = (
        large.truth.exposures.sort("symbol", "date")
        .with_columns(pl.col("momentum").shift(1).over("symbol").alias("lagged"))
        .drop_nulls()
        .select(pl.corr("momentum", "lagged"))
        .item()
    )
    assert autocorrelation > 0.95
    size_vs_cap = (
        large.truth.exposures.join(large.panel, on=["date", "symbol"])
        .group_by("date")
        .agg(pl.corr("size", -pl.col("market_cap").log()))
    )
    assert size_vs_cap["size"].to_numpy().min() > 0.85


def test_specific_returns_unit_variance_fat_tails_and_size_dependent(large: SyntheticMarket) -> None:
    joined = large.truth.specific_returns.join(large.truth.specific_vol, on=["date", "symbol"])
    standardized = (joined["specific_return"] / joined["specific_vol"]).to_numpy()
    assert standardized.size > 300_000
    assert abs(standardized.var() - 1.0) < 0.1
    assert stats.kurtosis(standardized) > 0.5
    assert abs(standardized.mean()) < 0.01

    with_caps = (
        large.panel.sort("symbol", "date")
        .with_columns(pl.col("market_cap").shift(1).over("symbol").alias("previous_cap"))
        .join(large.truth.specific_vol, on=["date", "symbol"])
        .with_columns(pl.col("previous_cap").rank().over("date").alias("cap_rank"), pl.len().over("date"))
    )
    small_caps = with_caps.filter(pl.col("cap_rank") <= 0.2 * pl.col("len"))["specific_vol"].mean()
    large_caps = with_caps.filter(pl.col("cap_rank") > 0.8 * pl.col("len"))["specific_vol"].mean()
    assert isinstance(small_caps, float) and isinstance(large_caps, float)
    assert small_caps > 1.3 * large_caps
    assert 0.01 < large_caps < 0.025 < small_caps < 0.06


def test_normal_specific_shocks_have_no_excess_kurtosis() -> None:
    market = generate_market(300, 400, seed=2, specific_df=float("inf"))
    joined = market.truth.specific_returns.join(market.truth.specific_vol, on=["date", "symbol"])
    standardized = (joined["specific_return"] / joined["specific_vol"]).to_numpy()
    assert abs(stats.kurtosis(standardized)) < 0.1
    assert abs(standardized.var() - 1.0) < 0.02


def test_factor_regime_raises_realized_volatility(large: SyntheticMarket) -> None:
    joined = large.truth.factor_returns.join(large.truth.factor_vol_multiplier, on="date")
    assert set(joined["factor_regime"].unique()) == {1.0, 2.0}
    calm = joined.filter(pl.col("factor_regime") == 1.0)
    stressed = joined.filter(pl.col("factor_regime") == 2.0)
    assert calm.height > 100 and stressed.height > 50
    for factor in ("market", "momentum", "Energy"):
        assert stressed[factor].to_numpy().std() > 1.4 * calm[factor].to_numpy().std()
    # the specific regime scales the realized cross-sectional dispersion of specific returns
    dispersion = (
        large.truth.specific_returns.group_by("date")
        .agg(pl.col("specific_return").std())
        .join(large.truth.factor_vol_multiplier, on="date")
        .group_by("specific_regime")
        .agg(pl.col("specific_return").mean())
        .sort("specific_regime")
    )
    assert dispersion["specific_regime"].to_list() == [1.0, 1.5]
    assert dispersion["specific_return"][1] > 1.3 * dispersion["specific_return"][0]


def test_no_regimes_means_unit_multipliers() -> None:
    market = generate_market(40, 60, seed=1, regimes=False)
    multipliers = market.truth.factor_vol_multiplier.select("factor_regime", "specific_regime").to_numpy()
    np.testing.assert_array_equal(multipliers, 1.0)


def test_factor_returns_follow_base_covariance(large: SyntheticMarket) -> None:
    truth = large.truth
    covariance = truth.factor_covariance
    np.testing.assert_array_equal(covariance, covariance.T)
    assert np.linalg.eigvalsh(covariance).min() > 0
    vols = np.sqrt(np.diag(covariance))
    np.testing.assert_allclose(vols[0], 0.01)
    np.testing.assert_allclose(vols[1:12], 0.012)
    np.testing.assert_allclose(vols[12:], 0.003)
    np.testing.assert_array_equal(covariance, base_factor_covariance(STYLES))
    # market and styles are not touched by the sector constraint: regime-scaled back they have Σ's vols
    joined = truth.factor_returns.join(truth.factor_vol_multiplier, on="date")
    unscaled = joined.select(pl.col("market", *STYLES) / pl.col("factor_regime")).to_numpy()
    realized = np.cov(unscaled, rowvar=False)
    index = [0, 12, 13, 14]
    np.testing.assert_allclose(np.sqrt(np.diag(realized)), vols[index], rtol=0.1)
    realized_corr = np.corrcoef(unscaled, rowvar=False)
    target_corr = covariance[np.ix_(index, index)] / np.outer(vols[index], vols[index])
    np.testing.assert_allclose(realized_corr, target_corr, atol=0.1)


def test_conditional_covariance_respects_constraint(small: SyntheticMarket) -> None:
    truth = small.truth
    date = truth.factor_returns["date"][40]
    conditional = truth.factor_covariance_on(date)
    weights = truth.sector_weights.filter(pl.col("date") == date).select(GICS_SECTORS).to_numpy()[0]
    sector_block = conditional[1:12, 1:12]
    assert abs(weights @ sector_block @ weights) < 1e-18
    multiplier = truth.factor_vol_multiplier.filter(pl.col("date") == date)["factor_regime"][0]
    np.testing.assert_allclose(conditional[0, 0], multiplier**2 * 1e-4)
    projection = sector_constraint_projection(weights, n_factors=len(truth.factors))
    draw = np.random.default_rng(0).standard_normal(len(truth.factors))
    assert abs(weights @ (projection @ draw)[1:12]) < 1e-15
    with pytest.raises(ValueError, match="not a return date"):
        truth.factor_covariance_on(small.panel["date"][0])


def test_value_fundamentals_track_value_exposure(large: SyntheticMarket) -> None:
    joined = large.panel.join(large.truth.exposures, on=["date", "symbol"])
    for feature in VALUE_FEATURES:
        log_corr = joined.select(pl.corr(pl.col(feature).log(), "value")).item()
        raw_corr = joined.select(pl.corr(feature, "value")).item()
        assert log_corr > 0.3, feature
        assert raw_corr > 0.3, feature
        assert abs(joined.select(pl.corr(pl.col(feature).log(), "momentum")).item()) < 0.1
    # slowly varying: day-on-day log changes are small next to the cross-sectional spread
    daily_change = (
        large.panel.sort("symbol", "date").select(pl.col("book_price").log().diff().over("symbol").std()).item()
    )
    assert daily_change < 0.2 * large.panel.select(pl.col("book_price").log().std()).item()


def test_custom_and_empty_styles() -> None:
    custom = generate_market(30, 40, seed=8, styles=("quality", "size"))
    assert custom.truth.factors == ("market", *GICS_SECTORS, "quality", "size")
    assert custom.truth.exposures.columns == ["date", "symbol", "quality", "size"]
    worst, _ = _max_identity_error(custom)
    assert worst < 1e-12
    bare = generate_market(30, 40, seed=8, styles=())
    assert bare.truth.factors == ("market", *GICS_SECTORS)
    assert _max_identity_error(bare)[0] < 1e-12
    assert _max_constraint_error(bare) < 1e-12


def test_start_on_weekend_rolls_forward() -> None:
    market = generate_market(20, 10, seed=0, start=datetime.date(2021, 1, 2))  # a Saturday
    assert market.panel["date"].min() == datetime.date(2021, 1, 4)
    assert market.panel["date"].n_unique() == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_assets": 10}, "n_assets must be at least 11"),
        ({"n_days": 4}, "n_days must be at least 5"),
        ({"listing_rate": 1.5}, "listing_rate must be a fraction"),
        ({"delisting_rate": -0.1}, "delisting_rate must be a fraction"),
        ({"specific_df": 2.0}, "specific_df must exceed 2"),
        ({"styles": ("value", "value")}, "styles must be unique"),
        ({"styles": ("Energy",)}, "clash"),
        ({"styles": ("market",)}, "clash"),
        ({"styles": "value"}, "sequence of names"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_market(**kwargs)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_assets=st.integers(11, 40),
    n_days=st.integers(5, 30),
    seed=st.integers(0, 2**32 - 1),
    listing_rate=st.floats(0.0, 1.0),
    delisting_rate=st.floats(0.0, 1.0),
)
def test_invariants_hold_for_any_small_market(
    n_assets: int, n_days: int, seed: int, listing_rate: float, delisting_rate: float
) -> None:
    market = generate_market(n_assets, n_days, seed=seed, listing_rate=listing_rate, delisting_rate=delisting_rate)
    assert market.panel["date"].n_unique() == n_days
    assert set(market.panel["sector"].unique()) == set(GICS_SECTORS)
    assert _max_identity_error(market)[0] < 1e-12
    assert _max_constraint_error(market) < 1e-12
    lifetimes = market.panel.group_by("symbol").len()["len"]
    assert lifetimes.to_numpy().min() >= 2
    moments = market.truth.exposures.group_by("date").agg(
        *[pl.col(s).mean().abs().alias(f"{s}_mean") for s in STYLES],
        *[(pl.col(s).std() - 1.0).abs().alias(f"{s}_std") for s in STYLES],
    )
    assert moments.drop("date").max().to_numpy().max() < 1e-10


# ---------------------------------------------------------------------------------------------------------
# taxonomies and sparse sectors

SPARSE_START = 600
SPARSE_GAP = (300, 359)


@pytest.fixture(scope="module")
def sparse() -> SyntheticMarket:
    """Energy has no row before date index 600, Utilities none on date indices 300 to 359."""
    return generate_market(
        600, 900, seed=1, sector_start={"Energy": SPARSE_START}, sector_gaps={"Utilities": SPARSE_GAP}
    )


def _sectors_by_date(panel: pl.DataFrame) -> dict[datetime.date, set[str]]:
    grouped = panel.group_by("date").agg(pl.col("sector").unique())
    return {date: set(sectors) for date, sectors in grouped.iter_rows()}


def _null_return_without_previous_row(panel: pl.DataFrame) -> bool:
    """A return is null exactly when the symbol has no row on the previous panel date."""
    flagged = (
        panel.join(_previous_dates(panel), on="date")
        .join(
            panel.select(pl.col("date").alias("prev_date"), "symbol", pl.lit(True).alias("had_row")),
            on=["prev_date", "symbol"],
            how="left",
        )
        .with_columns(pl.col("had_row").fill_null(False))
    )
    return bool((flagged["asset_returns"].is_null() == ~flagged["had_row"]).all())


def test_default_output_is_unchanged() -> None:
    """Numbers of generate_market(300, 400, seed=0) recorded before sectors became configurable."""
    market = generate_market(300, 400, seed=0)
    panel, truth = market.panel, market.truth
    assert (panel.height, panel["symbol"].n_unique(), truth.specific_returns.height) == (113540, 300, 113240)
    counts = dict(panel.group_by("sector").len().iter_rows())
    assert counts == {
        "Communication Services": 5801,
        "Consumer Discretionary": 12063,
        "Consumer Staples": 6343,
        "Energy": 4390,
        "Financials": 14428,
        "Health Care": 13276,
        "Industrials": 13587,
        "Information Technology": 15848,
        "Materials": 8800,
        "Real Estate": 8875,
        "Utilities": 10129,
    }
    assert panel["asset_returns"].sum() == pytest.approx(-72.17769367289797, rel=1e-12)
    assert panel["market_cap"].log().sum() == pytest.approx(2457530.3802218856, rel=1e-14)
    assert panel["book_price"].log().sum() == pytest.approx(-105603.93287481529, rel=1e-12)
    row = panel.row(1000)
    assert (row[0], row[1], row[4]) == (datetime.date(2015, 1, 7), "S00154", "Industrials")
    numbers = [-0.02156078008282463, 813064381.6079473, 0.3008135788752028, 0.27009611342965595, 0.032293710379238505]
    assert [row[2], row[3], *row[5:]] == pytest.approx(numbers, rel=1e-12)
    last = truth.factor_returns.row(-1)
    assert last[0] == datetime.date(2016, 7, 14)
    assert list(last[1:]) == pytest.approx(
        [
            0.009418301855797447,
            0.003184273253891673,
            -0.017459040872443307,
            0.017796850217253694,
            -0.035564920132091796,
            -0.03552311589299724,
            0.01115088305377417,
            0.011923294575212556,
            0.018556413710666634,
            -0.025735127845099945,
            -0.022717111068658244,
            0.03923042794395716,
            0.008780393644816727,
            -0.00405756303592952,
            -0.00813201223371765,
        ],
        rel=1e-10,
    )
    assert truth.exposures["size"].abs().sum() == pytest.approx(91110.20548637459, rel=1e-12)
    assert truth.specific_vol["specific_vol"].sum() == pytest.approx(2788.5204420838504, rel=1e-12)
    # naming the default taxonomy, as a name or as its labels, is the default
    for sectors in ("gics", GICS_SECTORS, list(GICS_SECTORS)):
        named = generate_market(300, 400, seed=0, sectors=sectors)
        assert_frame_equal(named.panel, panel, check_exact=True)
        assert_frame_equal(named.truth.factor_returns, truth.factor_returns, check_exact=True)


def test_seed_taxonomy() -> None:
    market = generate_market(2000, 30, seed=4, sectors="seed")
    panel, truth = market.panel, market.truth
    assert truth.sectors == SEED_SECTORS
    assert truth.factors == ("market", *SEED_SECTORS, *STYLES)
    assert truth.factor_returns.columns == ["date", *truth.factors]
    assert truth.sector_weights.columns == ["date", *SEED_SECTORS]
    assert set(panel["sector"].unique()) == set(SEED_SECTORS)
    assert truth.factor_returns.null_count().sum_horizontal().item() == 0
    # the default shares follow the GICS shares matched by meaning: Financial Services 13 %, Basic Materials 6 %
    shares = panel.unique("symbol").group_by("sector").len().with_columns(pl.col("len") / 2000)
    share = dict(shares.iter_rows())
    assert share["Financial Services"] == pytest.approx(0.13, abs=0.03)
    assert share["Technology"] == pytest.approx(0.12, abs=0.03)
    assert share["Basic Materials"] == pytest.approx(0.06, abs=0.02)
    assert share["Communication Services"] == pytest.approx(0.06, abs=0.02)
    assert _max_identity_error(market)[0] < 1e-12
    assert _max_constraint_error(market) < 1e-12


def test_arbitrary_labels_with_weights() -> None:
    labels = ("4510", "4520", "Alpha")
    market = generate_market(2000, 20, seed=6, sectors=labels, sector_weights=(0.7, 0.2, 0.1))
    panel, truth = market.panel, market.truth
    assert truth.sectors == labels
    assert truth.factors == ("market", "4510", "4520", "Alpha", *STYLES)
    assert truth.factor_covariance.shape == (7, 7)
    assert panel.schema["sector"] == pl.String
    assert set(panel["sector"].unique()) == set(labels)
    assert_frame_equal(validate_panel(panel), panel)
    share = dict(panel.unique("symbol").group_by("sector").len().with_columns(pl.col("len") / 2000).iter_rows())
    assert share["4510"] == pytest.approx(0.7, abs=0.04)
    assert share["4520"] == pytest.approx(0.2, abs=0.04)
    assert share["Alpha"] == pytest.approx(0.1, abs=0.03)
    assert _max_identity_error(market)[0] < 1e-12
    assert _max_constraint_error(market) < 1e-12
    # weights are shares: scaling them changes nothing
    scaled = generate_market(2000, 20, seed=6, sectors=labels, sector_weights=(7, 2, 1))
    assert_frame_equal(scaled.panel, panel)


def test_arbitrary_labels_default_to_equal_shares() -> None:
    labels = ("Beta", "Alpha", "Gamma", "Delta")
    market = generate_market(2000, 10, seed=9, sectors=labels, styles=("quality",))
    assert market.truth.factors == ("market", *labels, "quality")
    shares = market.panel.unique("symbol").group_by("sector").len()["len"].to_numpy() / 2000
    np.testing.assert_allclose(shares, 0.25, atol=0.04)
    assert _max_identity_error(market)[0] < 1e-12


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sectors": "icb"}, r"unknown sector taxonomy 'icb' \(known: 'gics', 'seed'\)"),
        ({"sectors": ("Alpha", "market")}, r"sector labels \['market'\] clash with the market factor"),
        ({"sectors": ("Alpha", "date")}, r"sector labels \['date'\] clash .* date/symbol key columns"),
        ({"sectors": ("symbol", "Alpha")}, r"sector labels \['symbol'\] clash"),
        ({"sectors": ("Alpha", "momentum")}, r"sector labels \['momentum'\] clash with the style names"),
        ({"sectors": ("Alpha", "")}, r"sector labels must be non-empty, got \[''\]"),
        ({"sectors": ("Alpha", "  ")}, "sector labels must be non-empty"),
        ({"sectors": ("Alpha", "Beta", "Alpha")}, r"sector labels must be distinct, \['Alpha'\] repeat"),
        ({"sectors": ("Alpha",)}, "at least 2 sector labels are needed"),
        ({"sectors": ("Alpha", 4510)}, r"sector labels must be text, got \[4510\]"),
        ({"sectors": ("A", "B", "C"), "n_assets": 2}, r"n_assets must be at least 3 \(one per sector\)"),
        ({"sector_weights": (0.5, 0.5)}, r"one share per sector \(11\), got 2"),
        ({"sectors": ("A", "B"), "sector_weights": (1.0, -0.5)}, "finite, non-negative and not all zero"),
        ({"sectors": ("A", "B"), "sector_weights": (0.0, 0.0)}, "not all zero"),
        ({"sector_start": {"Energy": 59}}, r"sector_start\['Energy'\] = 59 is outside the calendar.*\[0, 58\]"),
        ({"sector_start": {"Energy": 100}}, r"sector_start\['Energy'\] = 100 is outside the calendar"),
        ({"sector_start": {"Energy": -1}}, "outside the calendar"),
        ({"sector_start": {"Energy": 2.5}}, "outside the calendar"),
        ({"sector_start": {"Oil": 10}}, r"sector_start names sectors that are not in the taxonomy: \['Oil'\]"),
        ({"sector_gaps": {"Oil": (5, 9)}}, r"sector_gaps names sectors that are not in the taxonomy: \['Oil'\]"),
        ({"sector_gaps": {"Utilities": (0, 9)}}, r"sector_gaps\['Utilities'\] = \(0, 9\) is outside.*1 <= first"),
        ({"sector_gaps": {"Utilities": (50, 58)}}, r"first <= last <= 57"),
        ({"sector_gaps": {"Utilities": (20, 10)}}, "is outside the calendar"),
        ({"sector_gaps": {"Utilities": (10,)}}, "a pair"),
        ({"sector_start": {"Energy": 20}, "sector_gaps": {"Energy": (15, 25)}}, r"21 <= first"),
        ({"sectors": ("A", "B"), "sector_gaps": {"A": (5, 9)}}, "at least 2 sectors must be populated.*index 5"),
        (
            {
                "sectors": ("A", "B", "C", "D"),
                "sector_start": {"C": 5, "D": 5},
                "sector_gaps": {"A": (5, 9), "B": (5, 9)},
            },
            "no sector is populated on both date indices 4 and 5",
        ),
    ],
)
def test_invalid_sector_options_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_market(**{"n_assets": 40, "n_days": 60, **kwargs})


def test_sparse_sectors_populated_exactly_when_their_true_return_exists(sparse: SyntheticMarket) -> None:
    panel, truth = sparse.panel, sparse.truth
    dates = panel["date"].unique().sort().to_list()
    assert len(dates) == 900
    present = _sectors_by_date(panel)
    always = set(GICS_SECTORS) - {"Energy", "Utilities"}
    for index, date in enumerate(dates):
        expected = set(always)
        if index >= SPARSE_START:
            expected.add("Energy")
        if not SPARSE_GAP[0] <= index <= SPARSE_GAP[1]:
            expected.add("Utilities")
        assert present[date] == expected, (index, date)
    # the truth's non-null sector returns (and constraint weights) name the same sectors on every return date
    for frame in (truth.factor_returns, truth.sector_weights):
        for row in frame.iter_rows(named=True):
            assert {s for s in GICS_SECTORS if row[s] is not None} == present[row["date"]], row["date"]
    assert truth.factor_returns.select("market", *STYLES).null_count().sum_horizontal().item() == 0
    assert truth.factor_returns["Energy"].null_count() == SPARSE_START - 1
    assert truth.factor_returns["Utilities"].null_count() == SPARSE_GAP[1] - SPARSE_GAP[0] + 1
    energy = panel.filter(pl.col("sector") == "Energy")
    assert energy["date"].min() == dates[SPARSE_START]
    assert energy.filter(pl.col("date") == dates[SPARSE_START]).height > 10  # it arrives with most of its assets
    assert_frame_equal(validate_panel(panel), panel)


def test_sparse_sectors_keep_the_return_identity_and_constraint(sparse: SyntheticMarket) -> None:
    panel, truth = sparse.panel, sparse.truth
    worst, checked = _max_identity_error(sparse)
    assert checked == panel["asset_returns"].is_not_null().sum() > 300_000
    assert worst < 1e-12
    assert _max_constraint_error(sparse) < 1e-12
    weights = truth.sector_weights.select(GICS_SECTORS).fill_null(0.0).to_numpy()
    sector_returns = truth.factor_returns.select(GICS_SECTORS).fill_null(0.0).to_numpy()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.einsum("ts,ts->t", weights, sector_returns), 0.0, rtol=0, atol=1e-15)
    # a sector back on a date with no row the day before has no previous-close cap in the constraint
    dates = panel["date"].unique().sort()
    energy_first = truth.sector_weights.filter(pl.col("date") == dates[SPARSE_START])
    utilities_back = truth.sector_weights.filter(pl.col("date") == dates[SPARSE_GAP[1] + 1])
    assert energy_first["Energy"].item() == 0.0 and energy_first["Utilities"].item() > 0.0
    assert utilities_back["Utilities"].item() == 0.0 and utilities_back["Energy"].item() is None
    # the stored specific returns and vols cover exactly the non-null returns
    with_returns = panel.filter(pl.col("asset_returns").is_not_null()).select("date", "symbol")
    assert_frame_equal(with_returns, truth.specific_returns.select("date", "symbol"))
    assert_frame_equal(with_returns, truth.specific_vol.select("date", "symbol"))
    assert_frame_equal(truth.exposures.select("date", "symbol"), panel.select("date", "symbol"))
    moments = truth.exposures.group_by("date").agg(
        *[pl.col(s).mean().abs().alias(f"{s}_mean") for s in STYLES],
        *[(pl.col(s).std(ddof=1) - 1.0).abs().alias(f"{s}_std") for s in STYLES],
    )
    assert moments.drop("date").max().to_numpy().max() < 1e-10


def test_sparse_sector_rows_returns_and_caps(sparse: SyntheticMarket) -> None:
    panel = sparse.panel
    dates = panel["date"].unique().sort()
    assert panel["symbol"].n_unique() == 600
    assert panel.group_by("symbol").len()["len"].min() >= 2
    # null returns: on a listing date, on Energy's first date and on the first date after the gap
    assert _null_return_without_previous_row(panel)
    for sector, index in (("Energy", SPARSE_START), ("Utilities", SPARSE_GAP[1] + 1)):
        back = panel.filter((pl.col("sector") == sector) & (pl.col("date") == dates[index]))
        assert back.height > 10 and back["asset_returns"].null_count() == back.height, sector
    # caps are frozen through the gap: the first close after it is the last close before it
    before = panel.filter(pl.col("date") == dates[SPARSE_GAP[0] - 1]).select("symbol", "market_cap")
    after = panel.filter((pl.col("date") == dates[SPARSE_GAP[1] + 1]) & (pl.col("sector") == "Utilities"))
    frozen = after.join(before, on="symbol", suffix="_before")
    assert frozen.height > 10
    assert (frozen["market_cap"] == frozen["market_cap_before"]).all()
    # elsewhere caps follow the returns
    recursion = (
        panel.sort("symbol", "date")
        .with_columns(pl.col("market_cap").shift(1).over("symbol").alias("previous_cap"))
        .filter(pl.col("asset_returns").is_not_null())
    )
    expected = recursion["previous_cap"].to_numpy() * (1.0 + recursion["asset_returns"].to_numpy())
    np.testing.assert_allclose(recursion["market_cap"].to_numpy(), expected, rtol=1e-12, atol=0)


def test_conditional_covariance_of_a_date_with_an_absent_sector(sparse: SyntheticMarket) -> None:
    truth = sparse.truth
    factors = list(truth.factors)
    date = sparse.panel["date"].unique().sort()[SPARSE_GAP[0] + 10]
    conditional = truth.factor_covariance_on(date)
    absent = [factors.index("Energy"), factors.index("Utilities")]
    assert np.isnan(conditional[absent, :]).all() and np.isnan(conditional[:, absent]).all()
    kept = [k for k in range(len(factors)) if k not in absent]
    block = conditional[np.ix_(kept, kept)]
    assert np.isfinite(block).all()
    assert np.linalg.eigvalsh(block).min() > -1e-18
    weights = truth.sector_weights.filter(pl.col("date") == date).select(GICS_SECTORS).fill_null(0.0).to_numpy()[0]
    sector_block = conditional[1:12, 1:12]
    present = weights > 0
    assert abs(weights[present] @ sector_block[np.ix_(present, present)] @ weights[present]) < 1e-18


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    n_sectors=st.integers(4, 7),
    n_days=st.integers(8, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_invariants_hold_for_any_sparse_taxonomy(data: st.DataObject, n_sectors: int, n_days: int, seed: int) -> None:
    labels = tuple(f"{4510 + 10 * k}" for k in range(n_sectors))
    late = data.draw(st.integers(0, n_days - 2), label="start of the first sector")
    gap_first = data.draw(st.integers(1, n_days - 3), label="gap start of the second sector")
    gap_last = data.draw(st.integers(gap_first, n_days - 3), label="gap end")
    market = generate_market(
        data.draw(st.integers(n_sectors, 60), label="n_assets"),
        n_days,
        seed=seed,
        sectors=labels,
        sector_start={labels[0]: late},
        sector_gaps={labels[1]: (gap_first, gap_last)},
        listing_rate=data.draw(st.floats(0.0, 1.0), label="listing_rate"),
        delisting_rate=data.draw(st.floats(0.0, 1.0), label="delisting_rate"),
    )
    panel, truth = market.panel, market.truth
    dates = panel["date"].unique().sort().to_list()
    assert len(dates) == n_days
    present = _sectors_by_date(panel)
    for index, date in enumerate(dates):
        expected = set(labels[2:]) | ({labels[0]} if index >= late else set())
        expected |= set() if gap_first <= index <= gap_last else {labels[1]}
        assert present[date] == expected
    for row in truth.factor_returns.iter_rows(named=True):
        assert {s for s in labels if row[s] is not None} == present[row["date"]]
    assert _null_return_without_previous_row(panel)
    assert _max_identity_error(market)[0] < 1e-12
    assert _max_constraint_error(market) < 1e-12
    assert panel.group_by("symbol").len()["len"].min() >= 2


def test_cli_synthetic_taxonomy(tmp_path: Path) -> None:
    out = tmp_path / "panel.parquet"
    code, _, stderr = invoke(
        "synthetic", "--assets", "40", "--days", "12", "--seed", "2", "--taxonomy", "seed", "--out", str(out)
    )
    assert code == 0, stderr
    assert_frame_equal(pl.read_parquet(out), generate_market(40, 12, seed=2, sectors="seed").panel)
    assert set(pl.read_parquet(out)["sector"].unique()) == set(SEED_SECTORS)
    code, _, stderr = invoke("synthetic", "--taxonomy", "icb", "--out", str(tmp_path / "other.parquet"))
    assert code == 2
    message = " ".join(stderr.replace("│", " ").split())
    assert "Invalid value for '--taxonomy'" in message and "'icb' is not one of 'gics', 'seed'" in message


def test_cli_synthetic_styles(tmp_path: Path) -> None:
    """--style chooses the true styles: USE4's add the columns their styles read, the truth holds market betas."""
    out, truth = tmp_path / "panel.parquet", tmp_path / "truth"
    styles = ("momentum", "size", "beta", "liquidity", "dividend_yield")
    arguments = [a for style in styles for a in ("--style", style)]
    code, _, stderr = invoke(
        "synthetic", "--assets", "60", "--days", "40", "--seed", "3", *arguments, "--out", str(out),
        "--truth-dir", str(truth),
    )  # fmt: skip
    assert code == 0, stderr
    market = generate_market(60, 40, seed=3, styles=styles)
    assert_frame_equal(pl.read_parquet(out), market.panel)
    assert {"volume", "shares_outstanding", "dividend_yield"} <= set(market.panel.columns)
    assert_frame_equal(pl.read_parquet(truth / "market_betas.parquet"), market.truth.market_betas)
    code, _, stderr = invoke("synthetic", "--style", "market", "--out", str(tmp_path / "other.parquet"))
    assert code == 1 and "market" in stderr  # a style cannot take the market factor's name
