"""The synthetic market's ``beta`` style: true market betas with dispersion, checked against USE4's estimates.

With ``"beta"`` among the styles, the beta factor return is ``beta_dispersion · f_market`` and each asset's
true market beta is ``1 + beta_dispersion · X_beta`` (``truth.betas``). The default market must not change:
:func:`test_default_market_is_unchanged` compares fingerprints taken with the generator of commit 4697e91,
before the beta style existed (tests/test_synthetic.py and the truth tests rely on the same output).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import polars as pl
import pytest

from factor_engine.config import ModelConfig
from factor_engine.model import build_model
from factor_engine.styles.use4 import beta_descriptors, market_return
from factor_engine.synthetic import SyntheticMarket, base_factor_covariance, generate_market

STYLES = ("momentum", "value", "size", "beta")
DISPERSION = 0.3
WARM_UP = 252  # dates before the beta regression's window is full

# fingerprints of (panel, the truth's frames, factor_covariance) from the generator before the beta style
DEFAULT_FINGERPRINTS: list[tuple[dict[str, Any], str]] = [
    ({"n_assets": 80, "n_days": 60, "seed": 3}, "e8ba4f8eead24330"),
    (
        {"n_assets": 50, "n_days": 40, "seed": 1, "regimes": False, "specific_df": float("inf")},
        "d9644f9624678a20",
    ),
    (
        {
            "n_assets": 60,
            "n_days": 50,
            "seed": 8,
            "styles": ("quality", "size"),
            "sectors": "seed",
            "sector_gaps": {"Energy": (10, 15)},
        },
        "462769b1c0a8a468",
    ),
]


def _fingerprint(frame: pl.DataFrame) -> str:
    """Hash of a frame's names, dtypes and values (floats to 10 significant digits, so BLAS-level rounding
    differences between platforms do not count)."""
    digest = hashlib.sha256()
    for name in frame.columns:
        column = frame[name]
        digest.update(f"{name}:{column.dtype};".encode())
        if column.dtype == pl.String:
            digest.update("\x00".join(column.fill_null("<null>").to_list()).encode())
        elif column.dtype == pl.Date:
            digest.update(column.cast(pl.Int32).to_numpy().tobytes())
        else:
            values = column.cast(pl.Float64).fill_null(float("nan")).to_numpy()
            digest.update(",".join(np.char.mod("%.10g", values)).encode())
    return digest.hexdigest()[:16]


def _market_fingerprint(market: SyntheticMarket) -> str:
    truth = market.truth
    frames = [
        market.panel,
        truth.factor_returns,
        truth.exposures,
        truth.specific_returns,
        truth.specific_vol,
        truth.factor_vol_multiplier,
        truth.sector_weights,
        pl.DataFrame(truth.factor_covariance),
    ]
    return hashlib.sha256("".join(_fingerprint(frame) for frame in frames).encode()).hexdigest()[:16]


@pytest.mark.parametrize(("options", "expected"), DEFAULT_FINGERPRINTS)
def test_default_market_is_unchanged(options: dict[str, Any], expected: str) -> None:
    market = generate_market(**options)
    assert _market_fingerprint(market) == expected
    # without a beta style every asset loads exactly 1 on the market factor
    assert market.truth.betas.select("date", "symbol").equals(market.truth.exposures.select("date", "symbol"))
    assert (market.truth.betas["beta"] == 1.0).all()


def test_fingerprint_sees_a_changed_value() -> None:
    market = generate_market(80, 60, seed=3)
    changed = SyntheticMarket(panel=market.panel.with_columns(pl.col("market_cap") * (1 + 1e-8)), truth=market.truth)
    assert _market_fingerprint(changed) != DEFAULT_FINGERPRINTS[0][1]


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    # 1,000 assets: the beta factor return's estimate needs the breadth (400 assets give 0.89-0.91)
    return generate_market(1000, 800, seed=0, styles=STYLES, beta_dispersion=DISPERSION)


def _wide(frame: pl.DataFrame, column: str) -> np.ndarray:
    """(dates, symbols) array of ``column``, NaN where the frame has no row."""
    wide = frame.pivot(on="symbol", index="date", values=column, sort_columns=True).sort("date")
    return wide.drop("date").to_numpy().astype(np.float64)


def test_true_betas_have_the_requested_dispersion(market: SyntheticMarket) -> None:
    truth = market.truth
    assert truth.beta_dispersion == DISPERSION
    assert truth.betas.select("date", "symbol").equals(truth.exposures.select("date", "symbol"))
    assert np.allclose(truth.betas["beta"].to_numpy(), 1.0 + DISPERSION * truth.exposures["beta"].to_numpy())
    # equal-weighted over the assets alive each date: mean 1, std (ddof=1) the dispersion, exactly
    moments = truth.betas.group_by("date").agg(pl.col("beta").mean().alias("mean"), pl.col("beta").std().alias("std"))
    assert np.max(np.abs(moments["mean"].to_numpy() - 1.0)) < 1e-12
    assert np.max(np.abs(moments["std"].to_numpy() - DISPERSION)) < 1e-12
    # the beta factor return is the market's times the dispersion, exactly
    factor_returns = truth.factor_returns
    assert factor_returns["beta"].equals(factor_returns["market"] * DISPERSION, check_names=False)
    # betas drift slowly: a year apart the exposures still correlate clearly, but not perfectly
    exposures = _wide(truth.exposures, "beta")
    both = np.isfinite(exposures[0]) & np.isfinite(exposures[252])
    lag_year = np.corrcoef(exposures[0, both], exposures[252, both])[0, 1]
    assert 0.6 < lag_year < 0.95, lag_year


def test_true_betas_drive_the_returns(market: SyntheticMarket) -> None:
    """r[t] = β[t−1]·f_market[t] + f_sector[t] + Σ_{other styles} X[t−1]·f[t] + u[t], to rounding."""
    panel, truth = market.panel, market.truth
    dates = panel["date"].unique().sort()
    previous = pl.DataFrame({"date": dates[1:], "exposure_date": dates[:-1]})
    market_betas = truth.betas.rename({"beta": "market_beta"})
    lagged = truth.exposures.join(market_betas, on=["date", "symbol"]).rename({"date": "exposure_date"})
    sector_returns = truth.factor_returns.unpivot(
        index="date", on=list(truth.sectors), variable_name="sector", value_name="sector_return"
    )
    factor_returns = truth.factor_returns.select("date", *[pl.col(s).alias(f"{s}_return") for s in ("market", *STYLES)])
    rows = (
        panel.drop_nulls("asset_returns")
        .join(previous, on="date")
        .join(lagged, on=["exposure_date", "symbol"])
        .join(sector_returns, on=["date", "sector"])
        .join(factor_returns, on="date")
        .join(truth.specific_returns, on=["date", "symbol"])
    )
    assert rows.height == truth.specific_returns.height
    rebuilt = rows.select(
        pl.col("market_beta") * pl.col("market_return")
        + pl.col("sector_return")
        + sum(pl.col(s) * pl.col(f"{s}_return") for s in ("momentum", "value", "size"))
        + pl.col("specific_return")
    ).to_series()
    assert np.max(np.abs(rebuilt.to_numpy() - rows["asset_returns"].to_numpy())) < 1e-12


def test_beta_covariance_is_tied_to_the_market(market: SyntheticMarket) -> None:
    truth = market.truth
    covariance = truth.factor_covariance
    beta, market_index = truth.factors.index("beta"), truth.factors.index("market")
    assert np.allclose(covariance[beta], DISPERSION * covariance[market_index], rtol=1e-12, atol=0.0)
    on_date = truth.factor_covariance_on(truth.factor_returns["date"][100])
    assert np.allclose(on_date[beta], DISPERSION * on_date[market_index], rtol=1e-12, atol=0.0)
    # the other styles keep their base covariance
    without_beta = base_factor_covariance(STYLES[:3])
    kept = [k for k in range(len(truth.factors)) if k != beta]
    assert np.array_equal(covariance[np.ix_(kept, kept)], without_beta)


@pytest.mark.parametrize("dispersion", [-0.1, float("nan"), float("inf")])
def test_invalid_beta_dispersion_is_refused(dispersion: float) -> None:
    with pytest.raises(ValueError, match=r"beta_dispersion must be a finite number ≥ 0"):
        generate_market(20, 10, styles=STYLES, beta_dispersion=dispersion)


def _correlations(estimated: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """(mean over the dates after the warm-up of the per-date cross-sectional correlation, pooled correlation)."""
    per_date = []
    for t in range(WARM_UP, estimated.shape[0]):
        both = np.isfinite(estimated[t]) & np.isfinite(true[t])
        per_date.append(np.corrcoef(estimated[t, both], true[t, both])[0, 1])
    both = np.isfinite(estimated[WARM_UP:]) & np.isfinite(true[WARM_UP:])
    pooled = np.corrcoef(estimated[WARM_UP:][both], true[WARM_UP:][both])[0, 1]
    return float(np.mean(per_date)), float(pooled)


@pytest.fixture(scope="module")
def dense(market: SyntheticMarket) -> dict[str, np.ndarray]:
    """(dates, symbols) returns, caps, true betas and the truth's sector and specific return of each row."""
    panel, truth = market.panel, market.truth
    sector_returns = truth.factor_returns.unpivot(
        index="date", on=list(truth.sectors), variable_name="sector", value_name="sector_return"
    )
    rows = panel.join(sector_returns, on=["date", "sector"], how="left").join(
        truth.specific_returns, on=["date", "symbol"], how="left"
    )
    # the true beta of date t's return is the one known at the close of t − 1
    betas = _wide(truth.betas, "beta")
    return_betas = np.full(betas.shape, np.nan)
    return_betas[1:] = betas[:-1]
    # the exact beta of each return on the cap-weighted market under the true model (truth.market_betas)
    implied = _wide(truth.market_betas, "market_beta")
    market_betas = np.full(betas.shape, np.nan)
    market_betas[1:] = implied
    return {
        "market_betas": market_betas,
        "returns": _wide(rows, "asset_returns"),
        "caps": _wide(rows, "market_cap"),
        "sector": np.nan_to_num(_wide(rows, "sector_return")),
        "specific": np.nan_to_num(_wide(rows, "specific_return")),
        "betas": return_betas,
        "market": np.concatenate([[np.nan], truth.factor_returns["market"].to_numpy()]),
    }


@pytest.mark.xfail(
    strict=True,
    reason=(
        "issue 11 asks ≥ 0.9; measured per date 0.73 against 1 + d·X_beta and 0.75 against the exact beta on "
        "the cap-weighted market (truth.market_betas); pooled 0.73 against the first (0.72 with 400 assets), at "
        "beta_dispersion 0.3: a 252-day, half-life-63 regression's sampling error (specific 1-2.5 %, sector "
        "1.2 %) is ~0.2 against the 0.3 spread of the true betas. Without the sector returns 0.77 / 0.79, "
        "without the specific returns 0.86 / 0.87, without both (on the true market factor) 0.91; an "
        "equal-weighted 252-day window 0.75 / 0.76, 504 days 0.74 (the betas drift); the model's predicted "
        "beta (exposures, forecast covariance) 0.64 / 0.71. No causal estimator reaches 0.9 here: the exact Bayes "
        "filter of the true model, knowing all but the specific returns, gets 0.871 (bench/bench_beta_bound.py)"
    ),
)
@pytest.mark.parametrize("truth", ["betas", "market_betas"])
def test_estimated_betas_track_the_true_betas(dense: dict[str, np.ndarray], truth: str) -> None:
    returns, caps = dense["returns"], dense["caps"]
    estimated, _ = beta_descriptors(returns, market_return(returns, caps))
    per_date, pooled = _correlations(estimated, dense[truth])
    assert per_date >= 0.9 and pooled >= 0.9, f"per-date {per_date:.3f}, pooled {pooled:.3f}"


def test_market_betas_are_closer_to_the_estimates(dense: dict[str, np.ndarray]) -> None:
    """The exact beta on the cap-weighted market also carries the other styles' covariances with it (size,
    momentum) and the cap-weighted mean exposures: the estimates track it better than ``1 + d·X_beta``, if
    not to the issue's 0.9 (recorded above)."""
    returns, caps = dense["returns"], dense["caps"]
    estimated, _ = beta_descriptors(returns, market_return(returns, caps))
    against_betas, _ = _correlations(estimated, dense["betas"])
    against_market_betas, _ = _correlations(estimated, dense["market_betas"])
    assert against_betas < against_market_betas < 0.9, (against_betas, against_market_betas)
    # the two truths differ by the other styles' part only
    same_dates, _ = _correlations(dense["betas"], dense["market_betas"])
    assert 0.9 < same_dates < 0.99, same_dates


def test_estimated_betas_recover_the_true_betas_without_noise(dense: dict[str, np.ndarray]) -> None:
    """Without the sector and specific returns and against the true market return, the estimator's error is
    the other styles' returns and the betas' drift only: the estimates must then track the truth."""
    returns = dense["returns"] - dense["sector"] - dense["specific"]
    estimated, _ = beta_descriptors(returns, dense["market"])
    per_date, pooled = _correlations(estimated, dense["betas"])
    assert per_date >= 0.9 and pooled >= 0.9, f"per-date {per_date:.3f}, pooled {pooled:.3f}"
    # with the noise, the estimates still track the truth, just less closely (0.729 / 0.725; the xfail above):
    # a guard against losing what USE4's estimator can get here (the best causal estimator gets 0.871,
    # bench/bench_beta_bound.py)
    noisy, _ = beta_descriptors(dense["returns"], market_return(dense["returns"], dense["caps"]))
    noisy_per_date, noisy_pooled = _correlations(noisy, dense["betas"])
    assert 0.72 < noisy_per_date < per_date and noisy_pooled > 0.72, (
        f"with noise {noisy_per_date:.3f}, {noisy_pooled:.3f}"
    )


def test_beta_factor_returns_track_the_true_ones(market: SyntheticMarket) -> None:
    config = ModelConfig.from_mapping({"styles": {"names": list(STYLES)}})
    model = build_model(market.panel, config)
    true_returns = market.truth.factor_returns.select("date", pl.col("beta").alias("true beta"))
    # over the dates where the beta score exists (it needs 63 returns first)
    both = model.factor_returns.select("date", "beta_score").join(true_returns, on="date").drop_nulls()
    assert both.height >= 700
    corr = float(np.corrcoef(both["beta_score"].to_numpy(), both["true beta"].to_numpy())[0, 1])
    assert corr >= 0.9, f"beta_score vs true beta factor return: {corr:.3f} over {both.height} dates"
