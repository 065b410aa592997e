"""The model follows the user's data: any sector taxonomy, styles whose inputs exist, optional market caps,
dead factors left out with a reason, thin sectors warned about, custom style modules from the configuration."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from factor_engine import styles
from factor_engine.config import ConfigError, ModelConfig, RegressionConfig, StylesConfig, load_config
from factor_engine.model import ModelError, RiskModel, build_model, load_model
from factor_engine.panel import GICS_SECTORS, SEED_SECTORS
from factor_engine.portfolio import decompose_risk
from factor_engine.portfolio.snapshot import snapshot_at
from factor_engine.report import write_report
from factor_engine.synthetic import generate_market
from style_modules import write_reversal_module

FAST_MOMENTUM = {"momentum": {"trailing_days": 60, "half_life": 20, "lag": 5}}
ARBITRARY = ("Widgets", "4510", "Crypto & Co", "Ölwerte", "Banks", "x")


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    return generate_market(160, 360, seed=21).panel


@pytest.fixture(scope="module")
def gics_model(panel: pl.DataFrame) -> RiskModel:
    return build_model(panel, ModelConfig(styles=StylesConfig(params=FAST_MOMENTUM)))


def relabel(panel: pl.DataFrame, labels: tuple[str, ...]) -> tuple[pl.DataFrame, dict[str, str]]:
    """The panel with each GICS sector renamed to one of ``labels`` (one to one, in order)."""
    mapping = dict(zip(GICS_SECTORS, labels, strict=False))
    return panel.with_columns(pl.col("sector").replace_strict(mapping)), mapping


@pytest.mark.parametrize("labels", [SEED_SECTORS, (*ARBITRARY, "a", "b", "c", "d", "e")])
def test_any_taxonomy_gives_the_same_model_under_its_own_names(
    panel: pl.DataFrame, gics_model: RiskModel, labels: tuple[str, ...]
) -> None:
    relabelled, mapping = relabel(panel, labels)
    model = build_model(relabelled, ModelConfig(styles=StylesConfig(params=FAST_MOMENTUM)))
    assert model.sectors == tuple(sorted(mapping.values()))
    renamed = gics_model.factor_returns.rename(mapping).select(model.factor_returns.columns)
    np.testing.assert_allclose(
        model.factor_returns.drop("date").to_numpy(), renamed.drop("date").to_numpy(), rtol=1e-9, atol=1e-15
    )
    assert model.notes["sectors"]["labels"] == list(model.sectors)


def test_sectors_config_relabels_and_restricts(panel: pl.DataFrame, gics_model: RiskModel, tmp_path: Path) -> None:
    codes = {name: str(4510 + 10 * i) for i, name in enumerate(GICS_SECTORS)}
    coded = panel.with_columns(pl.col("sector").replace_strict(codes))
    config_file = tmp_path / "model.toml"
    relabel_table = "\n".join(f'"{code}" = "{name}"' for name, code in codes.items())
    config_file.write_text(
        f'[sectors]\ntaxonomy = "gics"\n[sectors.relabel]\n{relabel_table}\n[styles.momentum]\n'
        "trailing_days = 60\nhalf_life = 20\nlag = 5\n"
    )
    model = build_model(coded, load_config(config_file))
    assert model.sectors == gics_model.sectors
    assert model.factor_returns.equals(gics_model.factor_returns)
    assert model.notes["sectors"]["relabelled"] == {code: name for name, code in codes.items()}
    # labels outside the declared taxonomy: an error listing them, the allowed names and the key to change
    with pytest.raises(ModelError, match=r"sector label\(s\) '4510', '4520', .* are not allowed by \[sectors\] "):
        build_model(coded, ModelConfig.from_mapping({"sectors": {"taxonomy": "gics"}}))
    with pytest.raises(ModelError, match=r"allowed: 'Basic Materials', .*\[sectors.relabel\]"):
        build_model(panel, ModelConfig.from_mapping({"sectors": {"taxonomy": "seed"}}))
    with pytest.raises(ConfigError, match=r"\[sectors\] taxonomy must be one of \['gics', 'seed'\], got 'icb'"):
        ModelConfig.from_mapping({"sectors": {"taxonomy": "icb"}})
    with pytest.raises(ConfigError, match=r"\[sectors\] give either taxonomy or allowed, not both"):
        ModelConfig.from_mapping({"sectors": {"taxonomy": "gics", "allowed": ["A"]}})


def test_styles_follow_the_columns_present(panel: pl.DataFrame) -> None:
    without_value = panel.drop("book_price", "sales_price", "cf_price")
    model = build_model(without_value, ModelConfig(styles=StylesConfig(params=FAST_MOMENTUM)))
    assert model.styles == ("beta_score", "mom_score", "nlsize_score", "resvol_score", "sze_score")
    notes = model.notes["styles"]
    assert notes["used"] == ["momentum", "size", "beta", "resvol", "nlsize"]
    assert notes["skipped"]["value"] == "the panel has no book_price, sales_price, cf_price columns"
    assert set(notes["filled"]) == {"beta", "resvol", "nlsize"}
    assert any("style 'value' left out" in w for w in model.warnings)
    # a style named explicitly whose inputs are missing stays an error naming the columns and the key
    explicit = ModelConfig(styles=StylesConfig(names=("momentum", "value"), params=FAST_MOMENTUM))
    with pytest.raises(
        ConfigError,
        match=r"style 'value' needs column\(s\) \['book_price', 'sales_price', 'cf_price'\], which the panel "
        r"lacks; remove it from \[styles\] names",
    ):
        build_model(without_value, explicit)


def constrained_wls_reference(
    exposures: np.ndarray, returns: np.ndarray, weights: np.ndarray, constraint: np.ndarray
) -> np.ndarray:
    """Weighted least squares with one linear equality constraint, solved as the KKT system by lstsq."""
    root = np.sqrt(weights)[:, None]
    a, b = exposures * root, returns * root[:, 0]
    k = exposures.shape[1]
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = a.T @ a
    kkt[:k, k] = kkt[k, :k] = constraint
    rhs = np.concatenate([a.T @ b, [0.0]])
    solution: np.ndarray = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:k]
    return solution


def test_without_market_cap_assets_weigh_equally(panel: pl.DataFrame) -> None:
    """No market_cap: unit regression weights and a sector constraint weighted by asset counts, checked against
    a per-date KKT solve; no size style, no cap-ranked universe, all recorded."""
    no_caps = panel.drop("market_cap")
    config = ModelConfig(styles=StylesConfig(params=FAST_MOMENTUM), regression=RegressionConfig(winsor_factor=None))
    model = build_model(no_caps, config)
    assert "sze_score" not in model.factors and model.notes["styles"]["skipped"]["size"].endswith("market_cap column")
    assert model.notes["market_cap"].startswith("absent: equal regression weights")
    assert "no cap-ranked universe" in model.notes["market_cap"] and "not applied" in model.notes["universe"]
    dates = model.factor_returns["date"]
    for day in (dates[3], dates[-1]):
        exposure_dates = model.exposures["date"].unique().sort()
        previous = exposure_dates.filter(exposure_dates < day)[-1]
        rows = (
            no_caps.filter(pl.col("date") == day)
            .select("symbol", "asset_returns")
            .join(model.exposures.filter(pl.col("date") == previous), on="symbol")
            .drop_nulls("asset_returns")
            .fill_nan(None)
        )
        present = [f for f in model.factors if rows[f].is_not_null().any()]  # momentum may still warm up
        rows = rows.drop_nulls(present)
        exposures = rows.select(present).to_numpy()
        counts = exposures[:, 1 : 1 + len(model.sectors)].sum(axis=0)
        constraint = np.concatenate([[0.0], counts, np.zeros(len(present) - 1 - len(model.sectors))])
        expected = constrained_wls_reference(
            exposures, rows["asset_returns"].to_numpy(), np.ones(rows.height), constraint
        )
        estimated = model.factor_returns.filter(pl.col("date") == day).select(present).to_numpy()[0]
        np.testing.assert_allclose(estimated, expected, rtol=1e-8, atol=1e-12)
    assert model.specific_risk is not None and model.specific_risk["specific_vol"].is_finite().all()


def test_without_market_cap_use4_styles_are_equal_weighted_and_filled_by_sector(panel: pl.DataFrame) -> None:
    """No market_cap: beta and residual volatility are still priced (on the equal-weighted market, see
    tests/styles/test_use4.py), size and non-linear size are left out, and an asset too young for a beta gets
    the equal-weighted mean beta of its sector that date (size has no dispersion without caps): checked against
    a per-(date, sector) mean of the unfilled scores."""
    no_caps = panel.drop("market_cap")
    config = ModelConfig(styles=StylesConfig(names=["momentum", "beta", "resvol"], params=FAST_MOMENTUM))
    model = build_model(no_caps, config)
    assert {"beta_score", "resvol_score"} <= set(model.factors)
    assert "beta on the equal-weighted market" in model.notes["market_cap"]
    filled = model.notes["styles"]["filled"]
    assert filled["beta"] > 0 and filled["resvol"] > 0
    raw = styles.compute_styles(no_caps, ["beta"]).rename({"beta_score": "raw"})
    rows = (
        model.exposures.select("date", "symbol", "beta_score")
        .join(raw, on=["date", "symbol"])
        .join(no_caps.select("date", "symbol", "sector"), on=["date", "symbol"])
    )
    has_raw = rows.filter(pl.col("raw").is_not_null())
    assert (has_raw["beta_score"] - has_raw["raw"]).abs().max() < 1e-12  # an asset with a beta keeps it
    means = has_raw.group_by("date", "sector").agg(pl.col("raw").mean().alias("expected"), pl.len().alias("n"))
    young = rows.filter(pl.col("raw").is_null() & pl.col("beta_score").is_not_null()).join(means, on=["date", "sector"])
    assert young.height == filled["beta"] and young["n"].min() >= 1  # type: ignore[operator]
    np.testing.assert_allclose(young["beta_score"].to_numpy(), young["expected"].to_numpy(), rtol=1e-10, atol=1e-12)
    defaults = build_model(no_caps, ModelConfig(styles=StylesConfig(params=FAST_MOMENTUM)))
    assert {"size", "nlsize"} <= set(defaults.notes["styles"]["skipped"]) and "beta_score" in defaults.factors


def test_equal_caps_drop_size_with_a_reason_and_the_model_works(panel: pl.DataFrame, tmp_path: Path) -> None:
    equal = panel.with_columns(pl.lit(2e9).alias("market_cap"))
    model = build_model(equal, ModelConfig(styles=StylesConfig(params=FAST_MOMENTUM)))
    assert "sze_score" not in model.factors and "sze_score" not in model.exposures.columns
    reason = model.notes["factors_dropped"]["sze_score"]
    assert reason.startswith("no exposure on any date") and "could not be estimated on any of the" in reason
    assert any(w.startswith("factor 'sze_score' left out of the model: no exposure") for w in model.warnings)
    snapshot = snapshot_at(load_model(model.save(tmp_path / "model")))
    weights = np.full(len(snapshot.symbols), 1.0 / len(snapshot.symbols))
    risk = decompose_risk(snapshot, weights)
    assert np.isfinite(risk.total_risk) and 0.001 < risk.total_risk < 0.05  # daily, a plausible equal-weight vol
    assert json_round_trip(tmp_path / "model") == model.notes
    page = write_report(model, tmp_path / "report.html").read_text()
    assert "What the build did with the data" in page
    assert "factor &#x27;sze_score&#x27; left out of the model: no exposure on any date" in page


def json_round_trip(folder: Path) -> dict[str, object]:
    return load_model(folder).notes


def test_a_thin_sector_is_warned_about(panel: pl.DataFrame) -> None:
    alone = panel["symbol"].sort()[0]
    lonely = panel.filter((pl.col("sector") != "Energy") | (pl.col("symbol") == alone)).with_columns(
        pl.when(pl.col("symbol") == alone).then(pl.lit("Energy")).otherwise(pl.col("sector")).alias("sector")
    )
    model = build_model(lonely, ModelConfig(styles=StylesConfig(params=FAST_MOMENTUM)))
    energy = model.notes["sectors"]["assets"]["Energy"]
    assert energy["min_assets"] == 1 and energy["dates_below"] == energy["dates"]
    assert any(w.startswith("sector 'Energy' has fewer than 5 assets on") and "absorbs" in w for w in model.warnings), (
        model.warnings
    )


def test_custom_style_modules_are_imported_from_the_configuration(
    panel: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_reversal_module(tmp_path, "fe_test_custom_styles", "reversal_test", "rev_score")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        config_file = tmp_path / "model.toml"
        config_file.write_text(
            '[styles]\nmodules = ["fe_test_custom_styles"]\nnames = ["momentum", "reversal_test"]\n'
            "[styles.reversal_test]\nwindow = 10\n[styles.momentum]\ntrailing_days = 60\nhalf_life = 20\nlag = 5\n"
        )
        model = build_model(panel, load_config(config_file))
        assert model.styles == ("mom_score", "rev_score")
        expected = styles.compute_styles(panel, ["reversal_test"], params={"reversal_test": {"window": 10}})
        joined = model.exposures.join(expected, on=["date", "symbol"], suffix="_expected")
        np.testing.assert_allclose(
            joined["rev_score"].to_numpy(), joined["rev_score_expected"].to_numpy(), equal_nan=True
        )
        assert model.config["styles"]["modules"] == ["fe_test_custom_styles"]
        with pytest.raises(ConfigError, match=r"\[styles\] modules: cannot import 'no_such_module_x'"):
            ModelConfig.from_mapping({"styles": {"modules": ["no_such_module_x"]}})
    finally:
        styles.unregister_style("reversal_test")
        sys.modules.pop("fe_test_custom_styles", None)


def test_build_command_imports_a_style_module_next_to_its_configuration(
    panel: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`factor-engine build --config model.toml` with `[styles] modules = ["my_cli_factors"]`: the module beside
    the configuration file registers a style the model then uses (the console script's sys.path lacks it)."""
    from cli_runner import invoke

    folder = tmp_path / "project"
    folder.mkdir()
    write_reversal_module(folder, "my_cli_factors", "cli_reversal", "cli_rev_score")
    (folder / "model.toml").write_text('[styles]\nmodules = ["my_cli_factors"]\nnames = ["size", "cli_reversal"]\n')
    panel.write_parquet(tmp_path / "panel.parquet")
    monkeypatch.chdir(tmp_path)  # not the configuration's folder
    try:
        code, _, stderr = invoke(
            "build", "--data", "panel.parquet", "--out", "model", "--config", str(folder / "model.toml")
        )
        assert code == 0, stderr
        assert load_model(tmp_path / "model").styles == ("cli_rev_score", "sze_score")
        assert str(folder.resolve()) not in sys.path  # the search path is restored
    finally:
        styles.unregister_style("cli_reversal")
        sys.modules.pop("my_cli_factors", None)
