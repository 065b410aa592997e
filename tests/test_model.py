"""Risk model artifact: build from a synthetic panel, save, load back identically; universe selection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from factor_engine import estimate_factor_returns, styles
from factor_engine.config import ModelConfig, RegressionConfig, StylesConfig, UniverseConfig
from factor_engine.model import ModelError, RiskModel, build_model, load_model, select_universe
from factor_engine.portfolio.snapshot import snapshot_at
from factor_engine.styles.fill import fill_missing_exposures
from factor_engine.synthetic import generate_market


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    return generate_market(150, 320, seed=11).panel


@pytest.fixture(scope="module")
def model(panel: pl.DataFrame) -> RiskModel:
    config = ModelConfig(
        styles=StylesConfig(params={"momentum": {"trailing_days": 60, "half_life": 20, "lag": 5}}),
    )
    return build_model(panel, config)


def test_build_matches_the_library_stages(panel: pl.DataFrame, model: RiskModel) -> None:
    computed = styles.compute_styles(panel, params={"momentum": {"trailing_days": 60, "half_life": 20, "lag": 5}})
    assert computed.columns[2:] == ["mom_score", "val_score", "sze_score", "beta_score", "resvol_score", "nlsize_score"]
    # USE4's styles have their missing exposures filled by regression on sectors and size
    scores, _, _ = fill_missing_exposures(panel, computed, ["beta_score", "resvol_score", "nlsize_score"])
    assert scores["beta_score"].null_count() < computed["beta_score"].null_count()
    direct = estimate_factor_returns(
        panel.select("date", "symbol", "asset_returns"),
        panel.select("date", "symbol", "market_cap"),
        panel.select("date", "symbol", "sector"),
        scores,
    )
    assert model.factor_returns.equals(direct.factor_returns)
    assert model.residuals.equals(direct.residuals)
    assert model.factors == direct.factors
    # exposures at each date's close: market 1, the sector dummy, the style scores of that date
    row = model.exposures.filter(pl.col("mom_score").is_not_null()).row(0, named=True)
    source = panel.filter((pl.col("date") == row["date"]) & (pl.col("symbol") == row["symbol"])).row(0, named=True)
    assert row["market"] == 1.0
    assert row[source["sector"]] == 1.0
    assert sum(row[s] for s in model.sectors) == 1.0
    score = scores.filter((pl.col("date") == row["date"]) & (pl.col("symbol") == row["symbol"]))
    assert row["mom_score"] == score["mom_score"].item()
    # the exposures that explained date t's returns are the close-of-(t-1) exposures saved here
    used = direct.exposures.filter(pl.col("date") == model.factor_returns["date"][5])
    dates = model.exposures["date"].unique().sort()
    previous = dates[dates.search_sorted(model.factor_returns["date"][5]) - 1]
    saved = model.exposures.filter(pl.col("date") == previous).join(used.select("symbol"), on="symbol")
    joined = used.join(saved, on="symbol", suffix=" saved")
    for factor in model.factors:
        np.testing.assert_array_equal(joined[factor].to_numpy(), joined[f"{factor} saved"].to_numpy())


def test_save_and_load_round_trip(model: RiskModel, tmp_path: Path) -> None:
    folder = model.save(tmp_path / "model")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "diagnostics/part-000000.parquet",
        "exposures/part-000000.parquet",
        "factor_covariance/part-000000.parquet",
        "factor_returns/part-000000.parquet",
        "model.json",
        "residuals/part-000000.parquet",
        "specific_risk/part-000000.parquet",
        "state/factor_covariance-000000.npz",  # what an update continues from
        "state/specific_risk-000000.npz",
        "state/universe-000000.npz",
    ]
    loaded = load_model(folder)
    for name in ("factor_returns", "exposures", "residuals", "diagnostics"):
        assert getattr(loaded, name).equals(getattr(model, name)), name
    assert loaded.factors == model.factors and loaded.config == model.config
    assert model.factor_covariance is not None and loaded.factor_covariance is not None
    np.testing.assert_array_equal(loaded.factor_covariance.values, model.factor_covariance.values)
    assert loaded.factor_covariance.dates.equals(model.factor_covariance.dates)
    assert loaded.specific_risk is not None and model.specific_risk is not None
    assert loaded.specific_risk.equals(model.specific_risk)
    meta = json.loads((folder / "model.json").read_text())
    assert meta["units"].startswith("daily")
    assert meta["config"]["styles"]["params"]["momentum"]["trailing_days"] == 60
    assert meta["date_range"][0] == str(model.factor_returns["date"].min())


def test_covariance_follows_the_configuration(model: RiskModel) -> None:
    from factor_engine.config import ModelConfig as Config
    from factor_engine.model import forecast_factor_covariance
    from factor_engine.risk import eigenfactor_adjustment, factor_covariance, volatility_regime_adjustment

    covariance = model.factor_covariance
    assert covariance is not None
    assert covariance.factors == model.factors
    assert covariance.dates[0] == model.factor_returns["date"][62]  # min_periods = 63 solved dates
    raw = factor_covariance(model.factor_returns, Config().covariance)
    decay = 0.5 ** (1 / 504)
    expected = volatility_regime_adjustment(
        eigenfactor_adjustment(raw, effective_observations=(1 + decay) / (1 - decay), n_simulations=1000),
        model.factor_returns,
        half_life=42,
    )
    np.testing.assert_allclose(covariance.values, expected.values, rtol=1e-12, atol=0)
    plain = forecast_factor_covariance(
        model.factor_returns,
        Config.from_mapping({"adjustments": {"eigenfactor": False, "vra_half_life": False}}),
    )
    np.testing.assert_array_equal(plain.values, raw.values)
    # PSD over the factors with a forecast (momentum, warming up, gets one later than the others)
    has = np.isfinite(np.diagonal(covariance.values, axis1=1, axis2=2))
    assert has[-1].all() and not has[0].all()
    for t in range(covariance.dates.len()):
        active = np.flatnonzero(has[t])
        assert np.linalg.eigvalsh(covariance.values[t][np.ix_(active, active)]).min() >= -1e-18


def test_specific_risk_is_the_configured_forecast(panel: pl.DataFrame, model: RiskModel) -> None:
    from factor_engine.risk import SpecificRiskConfig, specific_risk

    assert model.specific_risk is not None
    expected = specific_risk(
        model.residuals, panel.select("date", "symbol", "market_cap"), model.exposures, SpecificRiskConfig()
    )
    assert model.specific_risk.equals(expected)
    assert model.specific_risk.columns == ["date", "symbol", "specific_vol"]
    vols = model.specific_risk["specific_vol"].drop_nulls().to_numpy()
    assert vols.size > 0 and (vols > 0).all() and np.median(vols) < 0.1  # daily sd, fraction


def _largest_by_previous_cap(panel: pl.DataFrame, size: int) -> dict[object, set[str]]:
    """Slow reference: per date, the ``size`` symbols with the largest cap at their previous row (symbols
    without a previous row fill the remaining places in symbol order)."""
    last_cap: dict[str, float] = {}
    kept: dict[object, set[str]] = {}
    for (date,), rows in panel.sort("date", "symbol").group_by("date", maintain_order=True):
        ranked = sorted(
            rows["symbol"].to_list(), key=lambda s: (s not in last_cap, -last_cap.get(s, 0.0))
        )  # stable: ties in symbol order
        kept[date] = set(ranked[:size])
        last_cap.update(zip(rows["symbol"].to_list(), rows["market_cap"].to_list(), strict=True))
    return kept


def test_universe_keeps_largest_caps_at_the_previous_close(panel: pl.DataFrame) -> None:
    kept = select_universe(panel, 40)
    counts = kept.group_by("date").len()["len"]
    assert counts.max() == 40
    expected = _largest_by_previous_cap(panel, 40)
    for (date,), rows in kept.group_by("date"):
        assert set(rows["symbol"]) == expected[date], date
    # not the same day's caps: that ranking differs on some date (the day's own return moves the cap)
    same_day = {d: set(r.top_k(40, by="market_cap")["symbol"]) for (d,), r in panel.group_by("date") if r.height > 40}
    assert any(same_day[d] != expected[d] for d in same_day)
    assert select_universe(panel, 0) is panel
    assert select_universe(panel.drop("market_cap"), 40).height == panel.height  # no caps: every asset


def test_universe_include_keeps_named_symbols_on_top_of_the_largest(panel: pl.DataFrame) -> None:
    day = panel["date"][-1]
    smallest = panel.filter(pl.col("date") == day).sort("market_cap")["symbol"][:2].to_list()
    kept = select_universe(panel, 40, include=smallest)
    largest = _largest_by_previous_cap(panel, 40)
    for (date,), rows in kept.group_by("date"):
        on_date = panel.filter(pl.col("date") == date)
        expected = largest[date] | (set(smallest) & set(on_date["symbol"]))
        assert set(rows["symbol"]) == expected
    assert kept.filter(pl.col("date") == day).height == 42
    assert kept.select("date", "symbol").is_duplicated().sum() == 0


def test_between_keeps_the_dates_in_range_and_the_same_snapshots(model: RiskModel) -> None:
    dates = model.factor_returns["date"]
    start, end = dates[100], dates[150]
    window = model.between(start, end)
    assert window.factor_returns.equals(model.factor_returns.filter(pl.col("date").is_between(start, end)))
    assert window.exposures.equals(model.exposures.filter(pl.col("date").is_between(start, end)))
    assert window.residuals["date"].is_between(start, end).all()
    assert window.specific_risk is not None and window.specific_risk["date"].is_between(start, end).all()
    assert window.factor_covariance is not None and model.factor_covariance is not None
    assert window.factor_covariance.dates.to_list() == [d for d in model.factor_covariance.dates if start <= d <= end]
    np.testing.assert_array_equal(window.factor_covariance.at(end), model.factor_covariance.at(end))
    one_day = model.between(end, end)
    full, single = snapshot_at(model, end), snapshot_at(one_day, end)
    assert full.symbols == single.symbols
    np.testing.assert_array_equal(full.exposures, single.exposures)
    np.testing.assert_array_equal(full.factor_covariance, single.factor_covariance)
    assert model.between().factor_returns.equals(model.factor_returns)


def test_a_panel_without_any_estimable_date_says_why() -> None:
    short = generate_market(60, 120, seed=3).panel
    # momentum needs 272 observations: no exposure ever, so it is left out and the rest is estimated
    model = build_model(short)
    assert "mom_score" not in model.factors and "no exposure on any date" in model.notes["factors_dropped"]["mom_score"]
    # a panel where no asset ever has a return: nothing can be estimated, and the error says why
    blank_returns = short.with_columns(pl.lit(None, dtype=pl.Float64).alias("asset_returns"))
    with pytest.raises(ModelError, match=r"no date could be estimated: .*rows left out: missing return"):
        build_model(blank_returns)
    # (a panel without any cap is one without market_cap: built equal-weighted, tests/test_missing_caps.py)
    blank_caps = short.with_columns(pl.lit(None, dtype=pl.Float64).alias("market_cap"))
    assert build_model(blank_caps).notes["market_cap"].startswith("absent")


def test_toraniko_method_through_config(panel: pl.DataFrame) -> None:
    config = ModelConfig(
        universe=UniverseConfig(size=100),
        styles=StylesConfig(names=("value", "size")),
        regression=RegressionConfig(method="toraniko"),
    )
    model = build_model(panel, config)
    assert model.config["regression"]["exposure_lag"] == 0
    assert model.styles == ("sze_score", "val_score")
    # toraniko's equal-weight constraint: sector returns sum to zero
    sums = model.factor_returns.select(pl.sum_horizontal(model.sectors)).to_series().to_numpy()
    assert np.max(np.abs(sums)) < 1e-12


def test_load_errors_name_the_file(model: RiskModel, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"not a model folder: model.json is missing"):
        load_model(tmp_path)
    folder = model.save(tmp_path / "m")
    (folder / "residuals" / "part-000000.parquet").unlink()
    with pytest.raises(ModelError, match=r"lacks residuals/part-000000.parquet"):
        load_model(folder)
    (folder / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"model.json is not valid JSON"):
        load_model(folder)


def test_a_covered_style_is_noted_not_warned(model: RiskModel) -> None:
    """Book-to-price left out because value (which holds it) is used: a choice recorded in the notes, not a
    warning asking for columns the panel already has."""
    assert model.notes["styles"]["skipped"]["btop"].startswith("covered by style 'value'")
    assert not any("'btop'" in warning for warning in model.warnings)
    assert any("style 'liquidity' left out: the panel has none of turnover" in w for w in model.warnings)
