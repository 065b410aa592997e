"""USE4's fundamental styles (earnings yield, growth, leverage, dividend yield, book-to-price) and custom
descriptor styles (register_descriptor_style) against per-date loops of USE4's pipeline written from the
formulas (test_liquidity's references), their requirements (inputs, any_of, unless) and errors, and a custom
style through compute_styles and build_model."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
import pytest
from test_liquidity import assert_same, dense, present, reference_size, reference_style

from factor_engine import styles
from factor_engine.config import STYLE_PRESETS, ModelConfig, StylesConfig, UniverseConfig
from factor_engine.model import build_model
from factor_engine.panel import FUNDAMENTAL_COLUMNS
from factor_engine.styles import Descriptor, DescriptorStyle, register_descriptor_style
from factor_engine.styles.use4 import beta
from factor_engine.synthetic import generate_market

FUNDAMENTALS = FUNDAMENTAL_COLUMNS


@pytest.fixture(scope="module")
def fundamentals_panel() -> pl.DataFrame:
    """The synthetic market (listings, delistings) with every fundamental column, each missing on some rows;
    a few outliers that the 3σ trim must bound."""
    panel = generate_market(50, 60, seed=21).panel
    rng = np.random.default_rng(22)
    n = panel.height
    values = {
        "earnings_price": rng.normal(0.05, 0.04, n),
        "forecast_earnings_price": rng.normal(0.06, 0.03, n),
        "dividend_yield": np.abs(rng.normal(0.02, 0.015, n)),
        "earnings_growth": rng.normal(0.08, 0.15, n),
        "sales_growth": rng.normal(0.06, 0.10, n),
        "forecast_growth": rng.normal(0.10, 0.05, n),
        "market_leverage": 1.0 + rng.gamma(1.0, 0.4, n),
        "book_leverage": 1.0 + rng.gamma(1.0, 0.8, n),
        "debt_to_assets": rng.uniform(0.0, 0.7, n),
    }
    for name, column in values.items():
        column[rng.random(n) < 0.12] = np.nan
        column[rng.integers(0, n, 3)] = 40.0 if name != "dividend_yield" else 3.0  # outliers
    return panel.with_columns(pl.Series(name, column, nan_to_null=True) for name, column in values.items())


def expected_style(
    panel: pl.DataFrame, columns: list[str], weights: list[float], against: list[np.ndarray] | None = None
) -> np.ndarray:
    caps = dense(panel, "market_cap")
    return reference_style([dense(panel, c) for c in columns], weights, caps, against or [])


def actual_style(scores: pl.DataFrame, score: str) -> np.ndarray:
    return dense(scores, score)


# --------------------------------------------------------------------------------------------------------------
# USE4's fundamental styles


@pytest.mark.parametrize(
    ("name", "score", "columns", "weights"),
    [
        (
            "earnings_yield",
            "ey_score",
            ["forecast_earnings_price", "earnings_price", "cf_price"],
            [0.68, 0.21, 0.11],
        ),
        ("growth", "growth_score", ["forecast_growth", "earnings_growth", "sales_growth"], [0.18, 0.24, 0.47]),
        ("leverage", "lev_score", ["market_leverage", "debt_to_assets", "book_leverage"], [0.38, 0.35, 0.27]),
        ("dividend_yield", "divyld_score", ["dividend_yield"], [1.0]),
        ("btop", "btop_score", ["book_price"], [1.0]),
    ],
)
def test_fundamental_style_matches_reference(
    fundamentals_panel: pl.DataFrame, name: str, score: str, columns: list[str], weights: list[float]
) -> None:
    shuffled = fundamentals_panel.sample(fraction=1.0, shuffle=True, seed=3)
    scores = styles.compute_styles(shuffled, [name])
    assert scores.columns == ["date", "symbol", score]
    assert scores.select("date", "symbol").equals(fundamentals_panel.select("date", "symbol").sort("date", "symbol"))
    actual = actual_style(scores, score)
    assert_same(actual, expected_style(fundamentals_panel, columns, weights), rtol=1e-9, atol=1e-11)
    factor = styles.get_style(name)
    assert factor.score == score and factor.fill_missing and factor.default


@pytest.mark.parametrize(
    ("name", "score", "dropped", "columns", "weights"),
    [
        # ETOP alone: EPIBS and CETOP are optional
        ("earnings_yield", "ey_score", ["forecast_earnings_price", "cf_price"], ["earnings_price"], [0.21]),
        ("earnings_yield", "ey_score", ["cf_price"], ["forecast_earnings_price", "earnings_price"], [0.68, 0.21]),
        # SGRO alone, EGRO and EGRLF
        ("growth", "growth_score", ["forecast_growth", "earnings_growth"], ["sales_growth"], [0.47]),
        ("growth", "growth_score", ["sales_growth"], ["forecast_growth", "earnings_growth"], [0.18, 0.24]),
        ("leverage", "lev_score", ["market_leverage", "book_leverage"], ["debt_to_assets"], [0.35]),
        ("leverage", "lev_score", ["debt_to_assets"], ["market_leverage", "book_leverage"], [0.38, 0.27]),
    ],
)
def test_fundamental_style_with_the_columns_present(
    fundamentals_panel: pl.DataFrame,
    name: str,
    score: str,
    dropped: list[str],
    columns: list[str],
    weights: list[float],
) -> None:
    panel = fundamentals_panel.drop(dropped)
    actual = actual_style(styles.compute_styles(panel, [name]), score)
    assert_same(actual, expected_style(fundamentals_panel, columns, weights), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(
    ("name", "score", "columns", "weights"),
    [
        ("leverage", "lev_score", ["market_leverage", "debt_to_assets", "book_leverage"], [0.38, 0.35, 0.27]),
        ("earnings_yield", "ey_score", ["forecast_earnings_price", "earnings_price", "cf_price"], [0.68, 0.21, 0.11]),
    ],
)
def test_fundamental_styles_without_caps_are_equal_weighted(
    fundamentals_panel: pl.DataFrame, name: str, score: str, columns: list[str], weights: list[float]
) -> None:
    """Without market_cap a fundamental style is still computed, every cap taken as 1: the reference pipeline
    with equal caps (equal-weighted means), which differs from the cap-weighted style."""
    actual = actual_style(styles.compute_styles(fundamentals_panel.drop("market_cap"), [name]), score)
    equal = fundamentals_panel.with_columns(pl.lit(1.0).alias("market_cap"))
    assert_same(actual, expected_style(equal, columns, weights), rtol=1e-9, atol=1e-11)
    cap_weighted = expected_style(fundamentals_panel, columns, weights)
    both = np.isfinite(actual) & np.isfinite(cap_weighted)
    assert both.sum() > 100 and np.max(np.abs(actual[both] - cap_weighted[both])) > 1e-3


def test_fundamental_styles_missing_inputs(fundamentals_panel: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"style 'earnings_yield' needs column\(s\) \['earnings_price'\], which"):
        styles.compute_styles(fundamentals_panel.drop("earnings_price"), ["earnings_yield"])
    with pytest.raises(
        ValueError, match=r"style 'growth' needs one of the columns earnings_growth, sales_growth, which the panel"
    ):
        styles.compute_styles(fundamentals_panel.drop("earnings_growth", "sales_growth"), ["growth"])
    # market_cap only weights the style: without it the message names the leverage columns alone
    with pytest.raises(ValueError, match=r"style 'leverage' needs one of the columns market_leverage, debt_to_assets"):
        styles.compute_styles(
            fundamentals_panel.drop("market_cap", "market_leverage", "book_leverage", "debt_to_assets"), ["leverage"]
        )
    # the style functions check too when called directly
    with pytest.raises(ValueError, match=r"earnings_yield: missing column\(s\) \['earnings_price'\]"):
        styles.get_style("earnings_yield").function(fundamentals_panel.drop("earnings_price"))
    with pytest.raises(ValueError, match=r"style 'growth': the panel has none of its descriptors' columns"):
        styles.get_style("growth").function(
            fundamentals_panel.drop("earnings_growth", "sales_growth", "forecast_growth")
        )


def test_default_styles_follow_any_of_and_unless(fundamentals_panel: pl.DataFrame) -> None:
    with_value = styles.compute_styles(fundamentals_panel.drop("asset_returns", "earnings_growth", "sales_growth"))
    # value is used, so book-to-price is left out; growth lacks both its required alternatives
    assert with_value.columns == [
        "date",
        "symbol",
        "val_score",
        "sze_score",
        "nlsize_score",
        "ey_score",
        "lev_score",
        "divyld_score",
    ]
    without_value = styles.compute_styles(fundamentals_panel.drop("asset_returns", "sales_price", "forecast_growth"))
    assert "val_score" not in without_value.columns
    assert {"btop_score", "growth_score"} <= set(without_value.columns)
    used, skipped = styles.select_styles(styles.available_styles(), fundamentals_panel.columns)
    assert "btop" not in [s.name for s in used] and skipped["btop"].startswith("covered by style 'value'")
    assert styles.get_style("btop").unless == ("value",)
    assert styles.get_style("growth").any_of == (("earnings_growth",), ("sales_growth",))
    assert styles.get_style("growth").requirement == (
        "one of earnings_growth, sales_growth (market_cap optional: equal weights without it)"
    )
    assert styles.get_style("liquidity").any_of == (("turnover",), ("volume", "shares_outstanding"))


def test_use4_preset_on_a_panel_with_every_column(fundamentals_panel: pl.DataFrame) -> None:
    config = StylesConfig(preset="use4")
    panel = fundamentals_panel.with_columns((pl.col("market_cap") * 1e-12).alias("turnover"))
    used, skipped = config.resolve(panel.columns)
    assert used == STYLE_PRESETS["use4"]  # every one of USE4's styles (the list itself: tests/test_config.py)
    assert skipped == {}


# --------------------------------------------------------------------------------------------------------------
# custom descriptor styles


@pytest.fixture
def quality() -> Iterator[styles.StyleFactor]:
    factor = register_descriptor_style(
        "quality_test",
        descriptors=[
            Descriptor("roe", weight=0.6),
            Descriptor("accruals", weight=0.4, expr=-pl.col("accruals")),
            Descriptor("margin", weight=0.2, expr=pl.col("profit") / pl.col("sales"), optional=True),
        ],
        orthogonal_to=("size",),
        score="quality_score",
    )
    try:
        yield factor
    finally:
        styles.unregister_style("quality_test")


@pytest.fixture(scope="module")
def quality_panel() -> pl.DataFrame:
    panel = generate_market(60, 300, seed=31).panel
    rng = np.random.default_rng(32)
    n = panel.height
    roe = rng.normal(0.1, 0.08, n) - 0.02 * np.log(panel["market_cap"].to_numpy() / 1e9)  # related to size
    accruals = rng.normal(0.0, 0.05, n)
    roe[rng.random(n) < 0.1] = np.nan
    accruals[rng.random(n) < 0.1] = np.nan
    return panel.with_columns(
        pl.Series("roe", roe, nan_to_null=True),
        pl.Series("accruals", accruals, nan_to_null=True),
        pl.Series("profit", rng.uniform(1.0, 3.0, n)),
        pl.Series("sales", rng.uniform(5.0, 20.0, n)),
    )


def test_custom_descriptor_style_matches_reference(quality: styles.StyleFactor, quality_panel: pl.DataFrame) -> None:
    assert quality.inputs == ("date", "symbol", "market_cap", "roe", "accruals")
    assert quality.description == "0.6 roe + 0.4 accruals + 0.2 margin, orthogonal to size"
    assert quality.fill_missing and quality.default
    assert isinstance(quality.function, DescriptorStyle)
    caps = dense(quality_panel, "market_cap")
    size = reference_size(caps)
    scores = styles.compute_styles(quality_panel, ["size", "quality_test"])
    descriptors = [dense(quality_panel, "roe"), -dense(quality_panel, "accruals")]
    margin = dense(quality_panel, "profit") / dense(quality_panel, "sales")
    expected = reference_style([*descriptors, margin], [0.6, 0.4, 0.2], caps, [size])
    actual = dense(scores, "quality_score")
    assert_same(actual, expected, rtol=1e-8, atol=1e-10)
    # without the optional descriptor's columns: the other two, weights renormalized
    without_margin = styles.compute_styles(quality_panel.drop("profit"), ["quality_test"])
    assert_same(
        dense(without_margin, "quality_score"),
        reference_style(descriptors, [0.6, 0.4], caps, [size]),
        rtol=1e-8,
        atol=1e-10,
    )
    # orthogonal to size: roe was built to load on size, the style no longer does
    for t in range(0, actual.shape[0], 37):
        keep = np.isfinite(actual[t]) & np.isfinite(size[t])
        w = caps[t, keep] / caps[t, keep].sum()
        assert np.sum(w * actual[t, keep] * (size[t, keep] - np.sum(w * size[t, keep]))) == pytest.approx(0, abs=1e-10)
    with pytest.raises(ValueError, match=r"style 'quality_test' needs column\(s\) \['accruals'\], which the panel"):
        styles.compute_styles(quality_panel.drop("accruals"), ["quality_test"])


def test_custom_styles_without_caps(quality: styles.StyleFactor, quality_panel: pl.DataFrame) -> None:
    """Without market_cap: a descriptor style runs equal-weighted (the reference with every cap 1; size, which
    then has no dispersion, drops out of its orthogonalization); a descriptor reading market_cap makes the style
    need it; a function style gets caps of 1 only if it registered caps_as_weights."""
    assert quality.caps_as_weights and "market_cap optional" in quality.requirement
    no_caps = quality_panel.drop("market_cap")
    ones = np.where(present(quality_panel), 1.0, np.nan)
    descriptors = [dense(quality_panel, "roe"), -dense(quality_panel, "accruals")]
    margin = dense(quality_panel, "profit") / dense(quality_panel, "sales")
    assert np.isnan(reference_size(ones)).all()
    expected = reference_style([*descriptors, margin], [0.6, 0.4, 0.2], ones, [reference_size(ones)])
    actual = dense(styles.compute_styles(no_caps, ["quality_test"]), "quality_score")
    assert_same(actual, expected, rtol=1e-8, atol=1e-10)
    register_descriptor_style("cap_test", [Descriptor("log_cap", expr=pl.col("market_cap").log())])

    def demeaned(df: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
        """roe less its cap-weighted mean of the date."""
        weighted = (pl.col("roe") * pl.col("market_cap")).sum() / pl.col("market_cap").filter(
            pl.col("roe").is_not_null()
        ).sum()
        return (
            df.lazy()
            .select("date", "symbol", (pl.col("roe") - weighted.over("date")).alias("demeaned_score"))
            .collect()
        )

    try:
        assert not styles.get_style("cap_test").caps_as_weights
        with pytest.raises(ValueError, match=r"style 'cap_test' needs column\(s\) \['market_cap'\]"):
            styles.compute_styles(no_caps, ["cap_test"])
        for opt_in in (False, True):
            styles.register_style(
                "demeaned", demeaned, inputs=("roe", "market_cap"), caps_as_weights=opt_in, replace=True
            )
            if not opt_in:
                with pytest.raises(ValueError, match=r"style 'demeaned' needs column\(s\) \['market_cap'\]"):
                    styles.compute_styles(no_caps, ["demeaned"])
                continue
            scores = styles.compute_styles(no_caps, ["demeaned"]).join(quality_panel, on=["date", "symbol"])
            equal = scores.select(pl.col("roe") - pl.col("roe").mean().over("date"))
            np.testing.assert_allclose(
                scores["demeaned_score"].to_numpy(), equal.to_series().to_numpy(), rtol=1e-12, atol=1e-15
            )
    finally:
        styles.unregister_style("cap_test")
        styles.unregister_style("demeaned")


def test_custom_descriptor_style_orthogonal_to_size_and_beta(quality_panel: pl.DataFrame) -> None:
    register_descriptor_style("roe_test", [Descriptor("roe")], orthogonal_to=("size", "beta"), default=False)
    try:
        factor = styles.get_style("roe_test")
        assert factor.inputs == ("date", "symbol", "market_cap", "asset_returns", "roe")
        assert factor.score == "roe_test_score" and not factor.default
        scores = styles.compute_styles(quality_panel, ["beta", "roe_test"])
        caps = dense(quality_panel, "market_cap")
        beta_exposure = dense(beta(quality_panel), "beta_score")
        assert np.isfinite(beta_exposure).sum() > 1000
        expected = reference_style([dense(quality_panel, "roe")], [1.0], caps, [reference_size(caps), beta_exposure])
        expected = np.where(present(quality_panel), expected, np.nan)
        assert_same(dense(scores, "roe_test_score"), expected, rtol=1e-8, atol=1e-10)
        assert "roe_test_score" not in styles.compute_styles(quality_panel).columns  # default=False
    finally:
        styles.unregister_style("roe_test")


def test_custom_descriptor_style_in_a_model(quality: styles.StyleFactor, quality_panel: pl.DataFrame) -> None:
    config = ModelConfig(universe=UniverseConfig(size=0), styles=StylesConfig(names=("size", "quality_test")))
    panel = quality_panel.drop("profit")  # without the margin, a row lacking roe and accruals has no score
    model = build_model(panel, config)
    assert "quality_score" in model.factors and "quality_score" in model.exposures.columns
    assert model.notes["styles"]["used"] == ["size", "quality_test"]
    lacking = panel.filter(pl.col("roe").is_null() & pl.col("accruals").is_null()).height
    assert lacking > 50
    assert 0 < model.notes["styles"]["filled"]["quality_test"] <= lacking  # filled by sectors and size (USE4)
    assert model.factor_returns.get_column("quality_score").drop_nulls().len() > 200
    # by default (no names) the custom style joins the model too
    default = build_model(quality_panel, ModelConfig(universe=UniverseConfig(size=0)))
    assert "quality_score" in default.factors


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: Descriptor(""), "descriptor name must be a non-empty string"),
        (lambda: Descriptor("x", weight=0.0), r"descriptor 'x': weight must be a positive number, got 0.0"),
        (lambda: Descriptor("x", weight=float("inf")), "weight must be a positive number"),
        (lambda: Descriptor("x", expr=pl.lit(1.0)), "descriptor 'x': its expression reads no column"),
        (
            lambda: register_descriptor_style("bad_test", [Descriptor("a", optional=True)]),
            r"style 'bad_test': every descriptor is optional; give any_of",
        ),
        (
            lambda: register_descriptor_style("bad_test", [Descriptor("a", optional=True)], any_of=("b",)),
            r"style 'bad_test': any_of names column\(s\) \['b'\] that no descriptor reads",
        ),
        (
            lambda: register_descriptor_style("bad_test", [Descriptor("a")], orthogonal_to=("momentum",)),
            r"style 'bad_test': cannot be made orthogonal to \['momentum'\]; choose among \['size', 'beta'\]",
        ),
        (
            lambda: register_descriptor_style("bad_test", [Descriptor("a"), Descriptor("a", expr=pl.col("b"))]),
            r"descriptor name\(s\) \['a'\] appear more than once",
        ),
        (
            lambda: register_descriptor_style("growth", [Descriptor("a")]),
            r"style 'growth' is already registered; pass replace=True",
        ),
        (
            lambda: styles.register_style("bad_test", lambda df: df, any_of="abc"),
            "any_of must be a sequence of column names or groups of them, not the string 'abc'",
        ),
        (
            lambda: styles.register_style("bad_test", lambda df: df, unless=("bad_test",)),
            r"style 'bad_test' cannot be left out because of itself",
        ),
    ],
)
def test_descriptor_style_errors(call: object, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        call()  # type: ignore[operator]
    assert "bad_test" not in [s.name for s in styles.available_styles()]


def test_descriptor_expr_must_be_a_polars_expression() -> None:
    with pytest.raises(TypeError, match=r"descriptor 'x': expr must be a polars expression, got str"):
        Descriptor("x", expr="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="descriptors must be a non-empty sequence of Descriptor"):
        register_descriptor_style("bad_test", [])


def test_data_contract_types_and_checks_the_fundamental_columns(fundamentals_panel: pl.DataFrame) -> None:
    from factor_engine.panel import FUNDAMENTAL_COLUMNS, OPTIONAL_COLUMNS, PanelError, validate_panel

    assert set(FUNDAMENTALS) == set(FUNDAMENTAL_COLUMNS) and set(FUNDAMENTALS) <= set(OPTIONAL_COLUMNS)
    loose = fundamentals_panel.head(30).with_columns(
        pl.col("dividend_yield").cast(pl.Float32),
        pl.col("debt_to_assets").fill_null(float("nan")),
    )
    clean = validate_panel(loose)
    assert all(clean.schema[c] == pl.Float64 for c in FUNDAMENTALS)
    assert clean["debt_to_assets"].null_count() == fundamentals_panel.head(30)["debt_to_assets"].null_count()
    assert clean.columns[-len(FUNDAMENTALS) :] == list(FUNDAMENTALS)  # in the contract's order
    bad = loose.with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(float("-inf")).otherwise("earnings_price").alias("earnings_price")
    )
    row = loose.row(2, named=True)
    with pytest.raises(
        PanelError, match=rf"earnings_price must not be infinite: 1 bad row, e.g. \({row['date']}, {row['symbol']}\)"
    ):
        validate_panel(bad)
