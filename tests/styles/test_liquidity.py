"""USE4 liquidity (STOM, STOQ, STOA and the style) against plain per-asset / per-date loops written from the
formulas (Menchero, Orr, Wang, USE4 Methodology Notes, Appendix A), and its inputs, errors and registration.

The reference pipeline (test_use4's per-date standardize, trim and orthogonalize, a per-asset combine) is
written from USE4's description and is reused by test_fundamental_styles.py."""

from __future__ import annotations

import math
import re

import numpy as np
import polars as pl
import pytest
from test_use4 import _dense as dense
from test_use4 import _present as present
from test_use4 import reference_orthogonalize, reference_standardize, reference_trim

from factor_engine import styles
from factor_engine.styles.liquidity import (
    liquidity,
    liquidity_descriptors,
    share_turnover,
)
from factor_engine.synthetic import generate_market

MONTH_DAYS = 5  # short months keep the panels small: windows of 5, 15 and 60 dates
MIN_FRACTION = 0.6


def assert_same(actual: np.ndarray, expected: np.ndarray, *, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    """Same NaN and infinity pattern exactly; where finite ``|a - e| <= atol + rtol * |e|``."""
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg="NaN patterns differ")
    np.testing.assert_array_equal(np.isinf(actual), np.isinf(expected), err_msg="infinite values differ")
    np.testing.assert_array_equal(actual[np.isinf(actual)], expected[np.isinf(expected)])
    finite = np.isfinite(expected)
    assert finite.any(), "the comparison covers no finite value"
    error = np.abs(actual[finite] - expected[finite]) / (atol + rtol * np.abs(expected[finite]))
    assert error.max() <= 1.0, f"max error {error.max():.3g} times the tolerance"


# --------------------------------------------------------------------------------------------------------------
# references written from the formulas


def reference_turnover(turnover: np.ndarray, months: int, month_days: int, min_fraction: float) -> np.ndarray:
    """ln((1/months) · Σ turnover · W / observed) over the last W = months · month_days dates, per asset."""
    window = months * month_days
    needed = math.ceil(min_fraction * window)
    result = np.full(turnover.shape, np.nan)
    for i in range(turnover.shape[1]):
        for t in range(turnover.shape[0]):
            days = turnover[max(0, t - window + 1) : t + 1, i]
            observed = [v for v in days if np.isfinite(v) and v >= 0]
            if len(observed) < needed:
                continue
            total = sum(observed) * window / len(observed)
            result[t, i] = np.log(total / months) if total > 0 else -np.inf
    return result


def reference_combine(descriptors: list[np.ndarray], weights: list[float]) -> np.ndarray:
    result = np.full(descriptors[0].shape, np.nan)
    for t in range(result.shape[0]):
        for i in range(result.shape[1]):
            have = [(w, d[t, i]) for w, d in zip(weights, descriptors, strict=True) if np.isfinite(d[t, i])]
            if have:
                result[t, i] = sum(w * v for w, v in have) / sum(w for w, _ in have)
    return result


def reference_style(
    descriptors: list[np.ndarray], weights: list[float], caps: np.ndarray, against: list[np.ndarray]
) -> np.ndarray:
    """USE4: each descriptor trimmed and standardized, combined, standardized, orthogonalized (if any),
    standardized."""
    style = reference_standardize(reference_combine([reference_trim(d, caps) for d in descriptors], weights), caps)
    if against:
        style = reference_standardize(reference_orthogonalize(style, against, caps), caps)
    return style


def reference_size(caps: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return reference_trim(np.where(caps > 0, np.log(caps), np.nan), caps)


# --------------------------------------------------------------------------------------------------------------
# descriptors


@pytest.fixture(scope="module")
def turnover() -> np.ndarray:
    """(T, N) daily turnover with missing days, a late starter, a long gap, negative and infinite (missing)
    values, an asset that never trades (zero turnover) and one that stops trading for a while."""
    rng = np.random.default_rng(20240612)
    values = np.exp(rng.normal(-5.0, 1.0, (90, 7)))
    values[rng.random(values.shape) < 0.1] = np.nan
    values[:40, 1] = np.nan  # lists late
    values[20:50, 2] = np.nan  # a long gap
    values[10, 3], values[11, 3], values[12, 3] = -0.01, np.inf, np.nan  # not observations
    values[:, 4] = 0.0  # listed, never traded
    values[60:80, 5] = 0.0  # stops trading for 20 days
    values[:, 6] = np.nan  # no turnover at all
    return values


@pytest.mark.parametrize(("months", "name"), [(1, "STOM"), (3, "STOQ"), (12, "STOA")])
def test_share_turnover_matches_loop(turnover: np.ndarray, months: int, name: str) -> None:
    actual = share_turnover(turnover, months, month_days=MONTH_DAYS, min_fraction=MIN_FRACTION)
    expected = reference_turnover(turnover, months, MONTH_DAYS, MIN_FRACTION)
    assert_same(actual, expected)
    # what the panel is meant to exercise
    assert np.isneginf(actual[-1, 4]) and np.isnan(actual[:, 6]).all(), name
    needed = math.ceil(MIN_FRACTION * months * MONTH_DAYS)
    assert np.isnan(actual[: needed - 1, 0]).all(), f"{name} before {needed} observations"


def test_share_turnover_values_by_hand() -> None:
    """A constant turnover v gives ln(month_days · v) for every horizon (the monthly turnover); a missing day
    is scaled away, not counted as zero; a window of zeros is −∞."""
    v = 0.004
    turnover = np.full((40, 3), v)
    turnover[::2, 1] = np.nan  # every other day missing: the observed days stand for the window
    turnover[:, 2] = 0.0
    stom, stoq, stoa = liquidity_descriptors(turnover, months=(1, 3, 12), month_days=3, min_fraction=0.5)
    assert stom[-1, 0] == pytest.approx(np.log(3 * v), rel=1e-12)
    assert stoq[-1, 0] == pytest.approx(np.log(3 * v), rel=1e-12)
    assert stoa[-1, 0] == pytest.approx(np.log(3 * v), rel=1e-12)
    assert stoq[-1, 1] == pytest.approx(np.log(3 * v), rel=1e-12)  # 4 or 5 of 9 days observed, scaled to 9
    assert np.isnan(stoa[16, 0]) and np.isfinite(stoa[17, 0])  # 18 of 36 days needed
    assert np.isneginf(stom[-1, 2])


def test_liquidity_descriptors_are_the_three_share_turnovers(turnover: np.ndarray) -> None:
    stom, stoq, stoa = liquidity_descriptors(turnover)  # USE4's windows: 21, 63, 252 dates (90 dates here)
    assert_same(stom, reference_turnover(turnover, 1, 21, 0.5))
    assert_same(stoq, reference_turnover(turnover, 3, 21, 0.5))
    assert np.isnan(stoa).all()  # 126 observed days needed, 90 dates
    rows = np.random.default_rng(1).random(turnover.shape) < 0.8
    masked = liquidity_descriptors(turnover, months=(1,), on_rows=rows)[0]
    assert_same(masked, np.where(rows, stom, np.nan))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"month_days": 0}, "month_days must be a positive integer, got 0"),
        ({"month_days": 2.5}, "month_days must be a positive integer, got 2.5"),
        ({"min_fraction": 0.0}, r"min_fraction must be in \(0, 1\], got 0.0"),
        ({"min_fraction": 1.5}, r"min_fraction must be in \(0, 1\], got 1.5"),
        ({"months": ()}, r"months must be positive integers, got \(\)"),
        ({"months": (1, 0)}, r"months must be positive integers, got \(1, 0\)"),
    ],
)
def test_liquidity_descriptors_reject_bad_parameters(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        liquidity_descriptors(np.ones((5, 2)), **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------------
# the style on a synthetic market


@pytest.fixture(scope="module")
def volume_panel() -> pl.DataFrame:
    """The synthetic market (listings and delistings) with shares outstanding, volume (missing on some days,
    zero for one asset over a stretch) and the turnover they give."""
    panel = generate_market(40, 110, seed=5).panel
    rng = np.random.default_rng(6)
    shares = rng.uniform(1e7, 1e9, panel.height)
    volume = shares * np.exp(rng.normal(-5.0, 0.8, panel.height))
    volume[rng.random(panel.height) < 0.07] = np.nan
    panel = panel.with_columns(
        pl.Series("shares_outstanding", shares), pl.Series("volume", volume, nan_to_null=True)
    ).with_columns(
        pl.when((pl.col("symbol") == "S00003") & (pl.col("date") >= pl.col("date").unique().sort().get(50)))
        .then(0.0)
        .otherwise(pl.col("volume"))
        .alias("volume")
    )
    return panel.with_columns((pl.col("volume") / pl.col("shares_outstanding")).alias("turnover"))


def test_liquidity_style_matches_reference_pipeline(volume_panel: pl.DataFrame) -> None:
    shuffled = volume_panel.drop("turnover").sample(fraction=1.0, shuffle=True, seed=1)
    scores = liquidity(shuffled, month_days=MONTH_DAYS, min_fraction=MIN_FRACTION)
    assert scores.columns == ["date", "symbol", "liq_score"]
    assert scores.height == volume_panel.height
    caps, rows = dense(volume_panel, "market_cap"), present(volume_panel)
    turnover = dense(volume_panel, "volume") / dense(volume_panel, "shares_outstanding")
    descriptors = [
        np.where(rows, reference_turnover(turnover, m, MONTH_DAYS, MIN_FRACTION), np.nan) for m in (1, 3, 12)
    ]
    expected = reference_style(descriptors, [0.35, 0.35, 0.30], caps, [reference_size(caps)])
    actual = dense(scores, "liq_score")
    assert_same(actual, np.where(rows, expected, np.nan), rtol=1e-8, atol=1e-10)
    # the stretch without trading: STOM is −∞, trimmed to the lower bound: the least liquid asset
    late = np.isfinite(actual[-1])
    assert np.isneginf(descriptors[0][-1, 2]) and actual[-1, 2] == actual[-1, late].min()
    # orthogonal to size (cap-weighted) and standardized, on every date with scores
    size = reference_size(caps)
    for t in np.flatnonzero(np.isfinite(actual).sum(axis=1) > 5):
        keep = np.isfinite(actual[t]) & np.isfinite(size[t])
        w = caps[t, keep] / caps[t, keep].sum()
        assert np.sum(w * actual[t, keep]) == pytest.approx(0.0, abs=1e-10)
        assert np.sum(w * actual[t, keep] * (size[t, keep] - np.sum(w * size[t, keep]))) == pytest.approx(0, abs=1e-10)
        assert np.std(actual[t, np.isfinite(actual[t])], ddof=1) == pytest.approx(1.0, abs=1e-10)


def test_turnover_column_wins_over_volume_and_shares(volume_panel: pl.DataFrame) -> None:
    from_turnover = liquidity(volume_panel.drop("volume", "shares_outstanding"), month_days=MONTH_DAYS)
    from_volume = liquidity(volume_panel.drop("turnover"), month_days=MONTH_DAYS)
    np.testing.assert_allclose(from_turnover["liq_score"].to_numpy(), from_volume["liq_score"].to_numpy(), rtol=1e-9)
    doubled = volume_panel.with_columns(pl.col("turnover") * 2.0)  # differs from volume / shares: turnover is used
    from_both = liquidity(doubled, month_days=MONTH_DAYS)
    expected = liquidity(doubled.drop("volume"), month_days=MONTH_DAYS)
    assert from_both.equals(expected)
    # doubling every turnover adds ln 2 to every descriptor: the standardized style does not move
    np.testing.assert_allclose(
        from_both["liq_score"].to_numpy(), from_turnover["liq_score"].to_numpy(), rtol=1e-8, atol=1e-10
    )


def test_liquidity_through_compute_styles_with_other_styles(volume_panel: pl.DataFrame) -> None:
    scores = styles.compute_styles(
        volume_panel, ["size", "liquidity", "nlsize"], params={"liquidity": {"month_days": MONTH_DAYS}}
    )
    alone = liquidity(volume_panel, month_days=MONTH_DAYS)
    assert scores.select("date", "symbol").equals(alone.select("date", "symbol"))
    np.testing.assert_array_equal(scores["liq_score"].to_numpy(), alone["liq_score"].to_numpy())
    assert styles.get_style("liquidity").fill_missing and styles.get_style("liquidity").score == "liq_score"


def test_liquidity_missing_inputs(volume_panel: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"liquidity needs a 'turnover' column, or 'volume' and 'shares_outstanding'"):
        liquidity(volume_panel.drop("turnover", "shares_outstanding"))
    with pytest.raises(ValueError, match=r"liquidity: missing column\(s\) \['market_cap'\]"):
        liquidity(volume_panel.drop("market_cap"))
    with pytest.raises(
        ValueError,
        match=r"style 'liquidity' needs one of the columns turnover, volume \+ shares_outstanding, which the panel "
        "lacks",
    ):
        styles.compute_styles(volume_panel.drop("turnover", "volume"), ["liquidity"])
    with pytest.raises(ValueError, match=r"month_days must be a positive integer"):
        liquidity(volume_panel, month_days=0)
    # by default it is computed when the panel has what it needs, and left out otherwise
    assert "liq_score" in styles.compute_styles(volume_panel.drop("turnover")).columns
    assert "liq_score" not in styles.compute_styles(volume_panel.drop("turnover", "shares_outstanding")).columns


def test_data_contract_types_and_checks_the_trading_columns(volume_panel: pl.DataFrame) -> None:
    from factor_engine.panel import OPTIONAL_COLUMNS, PanelError, validate_panel

    assert {"volume", "shares_outstanding", "turnover"} <= set(OPTIONAL_COLUMNS)
    loose = volume_panel.head(40).with_columns(
        pl.col("volume").round(0).cast(pl.Int64),
        pl.col("shares_outstanding").cast(pl.Float32),
        pl.when(pl.int_range(pl.len()) == 3).then(float("nan")).otherwise("turnover").alias("turnover"),
    )
    clean = validate_panel(loose)
    assert {clean.schema[c] for c in ("volume", "shares_outstanding", "turnover")} == {pl.Float64}
    assert clean["turnover"].null_count() == loose["turnover"].null_count() + 1  # NaN is a missing value
    row = loose.row(5, named=True)
    for column, value, message in [
        ("volume", -1, "volume must not be negative (null is allowed): 1 bad row"),
        ("turnover", float("inf"), "turnover must not be infinite: 1 bad row"),
        ("shares_outstanding", 0.0, "shares_outstanding must be positive (null is allowed): 1 bad row"),
    ]:
        bad = loose.with_columns(
            pl.when(pl.int_range(pl.len()) == 5).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
        )
        with pytest.raises(PanelError, match=re.escape(f"{message}, e.g. ({row['date']}, {row['symbol']})")):
            validate_panel(bad)
