"""Parity with toraniko 1.1.1 through the golden files in ``tests/results`` (produced by bench/make_golden.py).

toraniko itself is never imported: its outputs were computed once in its own venv. Every comparison joins
on (date, symbol) or date, treats NaN and null as the same "missing", requires the sets of non-missing rows
to be equal and the values to agree within 1e-9.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from factor_engine import estimate_factor_returns, styles
from factor_engine.regression import MARKET

ATOL = 1e-9
KEYS = ["date", "symbol"]
FIXTURE_DATE = dt.date(2024, 1, 2)
FrameMatcher = Callable[..., None]
RESIDUALIZE = [pytest.param(True, "residualized", id="residualized"), pytest.param(False, "raw", id="raw")]


def test_frames_match_detects_value_and_presence_differences(frames_match: FrameMatcher) -> None:
    """The comparison helper used below must fail on a value difference and on a missingness difference."""
    assert_frames_match = frames_match
    expected = pl.DataFrame({"k": [1, 2, 3], "x": [1.0, None, float("nan")]})
    assert_frames_match(expected.with_columns(pl.col("x").fill_nan(None)), expected, ["k"], atol=0.0)
    with pytest.raises(AssertionError, match=r"x: 1 value\(s\) differ beyond atol=0.001"):
        assert_frames_match(expected.with_columns(pl.Series("x", [1.1, None, None])), expected, ["k"], atol=1e-3)
    with pytest.raises(AssertionError, match=r"x: missing in one frame only on 1 key"):
        assert_frames_match(expected.with_columns(pl.Series("x", [1.0, 2.0, None])), expected, ["k"], atol=1e-3)
    with pytest.raises(AssertionError, match=r"x: missing in one frame only on 2 key"):
        assert_frames_match(expected.head(2), expected.with_columns(pl.lit(0.0).alias("x")), ["k"], atol=1.0)
    with pytest.raises(AssertionError, match=r"expected frame has 1 duplicate key rows"):
        assert_frames_match(expected, pl.concat([expected, expected.head(1)]), ["k"], atol=1.0)


# --------------------------------------------------------------------------------------------------------------
# toraniko's own unit-test fixture: one cross-section, non-one-hot sector scores


@pytest.fixture(scope="module")
def fixture_arrays(golden_dir: Path) -> dict[str, np.ndarray]:
    with np.load(golden_dir / "toraniko_fixture.npz") as data:
        return {name: data[name] for name in data.files}


def _fixture_frames(arrays: dict[str, np.ndarray]) -> tuple[pl.DataFrame, ...]:
    """One-date frames; symbols, sectors (sec0..sec9) and styles (sty0..sty4) sort in fixture order."""
    n_assets = arrays["returns"].shape[0]
    keys = pl.DataFrame({"date": [FIXTURE_DATE] * n_assets, "symbol": [f"A{i:03d}" for i in range(n_assets)]})
    sector_scores, style_scores = arrays["sector_scores"], arrays["style_scores"]
    return (
        keys.with_columns(pl.Series("asset_returns", arrays["returns"][:, 0])),
        keys.with_columns(pl.Series("market_cap", arrays["mkt_caps"][:, 0])),
        keys.with_columns(
            pl.Series(f"sec{k}", sector_scores[:, k].astype(np.float64)) for k in range(sector_scores.shape[1])
        ),
        keys.with_columns(pl.Series(f"sty{k}", style_scores[:, k]) for k in range(style_scores.shape[1])),
    )


def test_fixture_inputs_are_not_one_hot_and_outputs_depend_on_residualization(
    fixture_arrays: dict[str, np.ndarray],
) -> None:
    """Guards that make the fixture tests meaningful: sector rows are not one-hot dummies (the dense exposure
    path is exercised) and the two residualization modes give different style returns."""
    row_sums = fixture_arrays["sector_scores"].sum(axis=1)
    assert (row_sums != 1).sum() > 50
    difference = fixture_arrays["factor_returns_residualized"] - fixture_arrays["factor_returns_raw"]
    assert np.abs(difference[11:]).max() > 1e-3
    assert np.abs(difference[:11]).max() == 0.0


@pytest.mark.parametrize(("residualize", "suffix"), RESIDUALIZE)
def test_fixture_factor_returns_and_residuals_match_toraniko(
    fixture_arrays: dict[str, np.ndarray], residualize: bool, suffix: str
) -> None:
    returns, caps, sectors, style_scores = _fixture_frames(fixture_arrays)
    result = estimate_factor_returns(
        returns, caps, sectors, style_scores, method="toraniko", winsor_factor=None, residualize_styles=residualize
    )
    expected_factors = (MARKET, *(f"sec{k}" for k in range(10)), *(f"sty{k}" for k in range(5)))
    assert result.factors == expected_factors
    assert result.factor_returns["date"].to_list() == [FIXTURE_DATE]
    ours = np.array(result.factor_returns.select(expected_factors).row(0))
    np.testing.assert_allclose(ours, fixture_arrays[f"factor_returns_{suffix}"][:, 0], rtol=0, atol=ATOL)

    residuals = result.residuals.sort("symbol")
    assert residuals["symbol"].to_list() == returns["symbol"].to_list()
    np.testing.assert_allclose(
        residuals["residual"].to_numpy(), fixture_arrays[f"residuals_{suffix}"][:, 0], rtol=0, atol=ATOL
    )


# --------------------------------------------------------------------------------------------------------------
# style scores on the small unbalanced panel


def _golden_scores(golden_dir: Path, prefix: str) -> pl.DataFrame:
    return pl.read_parquet(golden_dir / f"{prefix}_scores.parquet")


def test_momentum_matches_golden(
    golden_panel: pl.DataFrame, golden_meta: dict[str, Any], golden_dir: Path, frames_match: FrameMatcher
) -> None:
    golden = _golden_scores(golden_dir, "mom")
    ours = styles.momentum(golden_panel, **golden_meta["params"]["momentum"])
    frames_match(ours, golden, KEYS, ["mom_score"], atol=ATOL)
    scored = golden["mom_score"].fill_nan(None).drop_nulls().len()
    assert 10_000 < scored < golden.height  # both scored and unscored rows are compared


def _nan_feature_date(golden_meta: dict[str, Any]) -> dt.date:
    (date, _symbol), *_ = golden_meta["planted"]["nan_cf_price"]
    return dt.date.fromisoformat(date)


def test_value_matches_golden_on_dates_without_nan_features(
    golden_panel: pl.DataFrame, golden_meta: dict[str, Any], golden_dir: Path, frames_match: FrameMatcher
) -> None:
    """Includes the dates with a null book_price (toraniko averages the remaining two features there)."""
    nan_date = _nan_feature_date(golden_meta)
    golden = _golden_scores(golden_dir, "val").filter(pl.col("date") != nan_date)
    ours = styles.value(golden_panel, **golden_meta["params"]["value"]).filter(pl.col("date") != nan_date)
    frames_match(ours, golden, KEYS, ["val_score"], atol=ATOL)
    null_book = [(dt.date.fromisoformat(d), s) for d, s in golden_meta["planted"]["null_book_price"]]
    scored_null_book = golden.filter(
        pl.struct("date", "symbol").is_in([{"date": d, "symbol": s} for d, s in null_book])
        & pl.col("val_score").is_finite()
    )
    assert scored_null_book.height == len(null_book)


def test_value_matches_golden_on_the_date_with_a_nan_cash_flow(
    golden_panel: pl.DataFrame, golden_meta: dict[str, Any], golden_dir: Path, frames_match: FrameMatcher
) -> None:
    """toraniko's val_score is NaN for the row whose cf_price is NaN (mean_horizontal propagates NaN) and that
    row is left out of the date's final standardization (golden_meta ``planted.nan_cf_price``)."""
    nan_date = _nan_feature_date(golden_meta)
    golden = _golden_scores(golden_dir, "val").filter(pl.col("date") == nan_date)
    ours = styles.value(golden_panel, **golden_meta["params"]["value"]).filter(pl.col("date") == nan_date)
    assert golden.height > 50
    frames_match(ours, golden, KEYS, ["val_score"], atol=ATOL)


def test_size_matches_golden(
    golden_panel: pl.DataFrame, golden_meta: dict[str, Any], golden_dir: Path, frames_match: FrameMatcher
) -> None:
    golden = _golden_scores(golden_dir, "sze")
    ours = styles.size(golden_panel, **golden_meta["params"]["size"])
    frames_match(ours, golden, KEYS, ["sze_score"], atol=ATOL)
    zero_share = (golden["sze_score"] == 0.0).mean()
    assert 0.5 < zero_share < 0.7  # the middle 60 % is zeroed


# --------------------------------------------------------------------------------------------------------------
# factor returns on the golden regression inputs


@pytest.fixture(scope="module", params=[(True, "residualized"), (False, "raw")], ids=["residualized", "raw"])
def golden_regression(
    request: pytest.FixtureRequest,
    golden_regression_inputs: dict[str, pl.DataFrame],
    golden_meta: dict[str, Any],
    golden_dir: Path,
) -> tuple[Any, pl.DataFrame, pl.DataFrame]:
    residualize, suffix = request.param
    inputs = golden_regression_inputs
    result = estimate_factor_returns(
        inputs["returns"],
        inputs["mkt_cap"],
        inputs["sector"],
        inputs["style"],
        method="toraniko",
        winsor_factor=golden_meta["regression"]["winsor_factor"],
        residualize_styles=residualize,
    )
    golden_factor_returns = pl.read_parquet(golden_dir / f"factor_returns_{suffix}.parquet")
    golden_residuals = pl.read_parquet(golden_dir / f"residuals_{suffix}.parquet")
    return result, golden_factor_returns, golden_residuals


def test_factor_returns_match_golden(
    golden_regression: Any, golden_meta: dict[str, Any], frames_match: FrameMatcher
) -> None:
    result, golden_factor_returns, _ = golden_regression
    assert result.factors == (MARKET, *golden_meta["sectors"], *golden_meta["styles"])
    assert result.factor_returns.columns == golden_factor_returns.columns
    frames_match(result.factor_returns, golden_factor_returns, ["date"], atol=ATOL)


def test_residuals_match_golden(
    golden_regression: Any, golden_meta: dict[str, Any], frames_match: FrameMatcher
) -> None:
    result, _, golden_residuals = golden_regression
    assert golden_residuals.height == golden_meta["rows"]["regression"]
    frames_match(result.residuals, golden_residuals, KEYS, ["residual"], atol=ATOL)


def test_rank_deficient_dates_give_toraniko_minimum_norm_solution(
    golden_regression: Any, golden_regression_inputs: dict[str, pl.DataFrame], golden_meta: dict[str, Any]
) -> None:
    """On the dates where the one-member sector (Utilities) has no row, the system is singular; toraniko's
    lstsq returns the minimum-norm solution, which puts Utilities at minus the market return."""
    result, golden_factor_returns, _ = golden_regression
    late = golden_meta["planted"]["late_sector"]
    deficient = [dt.date.fromisoformat(d) for d in late["rank_deficient_regression_dates"]["dates"]]
    members = golden_regression_inputs["sector"].group_by("date").agg(pl.col(late["sector"]).sum().alias("members"))
    empty_dates = members.filter(pl.col("members") == 0)["date"].sort().to_list()
    assert empty_dates == deficient  # exactly the planted dates are singular

    ours = result.factor_returns.filter(pl.col("date").is_in(deficient)).sort("date")
    golden = golden_factor_returns.filter(pl.col("date").is_in(deficient)).sort("date")
    assert ours.height == golden.height == len(deficient)
    for frame in (ours, golden):
        np.testing.assert_allclose(frame[late["sector"]].to_numpy(), -frame[MARKET].to_numpy(), rtol=0, atol=1e-15)
    factor_columns = [c for c in golden.columns if c != "date"]
    np.testing.assert_allclose(
        ours.select(factor_columns).to_numpy(), golden.select(factor_columns).to_numpy(), rtol=0, atol=ATOL
    )
