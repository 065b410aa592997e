"""USE4's beta regression on real prices: skfolio's packaged S&P 500 closes (20 stocks, 1990-2022), checked
against statsmodels' weighted least squares asset by asset, and plausible for stocks whose betas are known."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm

from factor_engine._grid import build_grid
from factor_engine.prepare import prepare_files
from factor_engine.styles import compute_styles
from factor_engine.styles.use4 import beta_descriptors, dastd, market_return
from real_data import sp500_prices_path, sp500_sectors_path

WINDOW, HALF_LIFE = 252, 63


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    prepared = prepare_files(sp500_prices_path(), sp500_sectors_path()).panel
    # no caps in the data: every stock weighs the same (the market is the equal-weighted mean of the 20)
    return prepared.with_columns(pl.lit(1.0).alias("market_cap"))


@pytest.fixture(scope="module")
def dense(panel: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, pl.Series]:
    grid = build_grid([panel])
    t, n = grid.locate(panel)
    return (
        grid.scatter(t, n, panel["asset_returns"].to_numpy()),
        grid.scatter(t, n, panel["market_cap"].to_numpy()),
        grid.symbols,
    )


def _wls_reference(returns: np.ndarray, market: np.ndarray, end: int) -> tuple[np.ndarray, np.ndarray]:
    """Per asset, statsmodels WLS of its returns on a constant and the market over the WINDOW dates ending at
    ``end``, weights 0.5^(age / HALF_LIFE): the slope and sqrt(Σ w e² / Σ w)."""
    ages = np.arange(WINDOW)[::-1]
    weights = 0.5 ** (ages / HALF_LIFE)
    rows = slice(end - WINDOW + 1, end + 1)
    slopes, sigmas = [], []
    for i in range(returns.shape[1]):
        y, x = returns[rows, i], market[rows]
        ok = np.isfinite(y) & np.isfinite(x)
        fit = sm.WLS(y[ok], sm.add_constant(x[ok]), weights=weights[ok]).fit()
        slopes.append(fit.params[1])
        sigmas.append(np.sqrt(np.sum(weights[ok] * fit.resid**2) / np.sum(weights[ok])))
    return np.array(slopes), np.array(sigmas)


@pytest.mark.parametrize("end_from_last", [0, 1000, 5000])
def test_beta_and_hsigma_match_statsmodels_wls(
    dense: tuple[np.ndarray, np.ndarray, pl.Series], end_from_last: int
) -> None:
    returns, caps, _ = dense
    market = market_return(returns, caps)
    slope, sigma = beta_descriptors(returns, market, window=WINDOW, half_life=HALF_LIFE, min_observations=63)
    end = returns.shape[0] - 1 - end_from_last
    expected_slope, expected_sigma = _wls_reference(returns, market, end)
    np.testing.assert_allclose(slope[end], expected_slope, rtol=1e-8)
    np.testing.assert_allclose(sigma[end], expected_sigma, rtol=1e-8)


def test_real_betas_and_volatilities_are_plausible(
    panel: pl.DataFrame, dense: tuple[np.ndarray, np.ndarray, pl.Series]
) -> None:
    """On the last date (December 2022): a chip maker's beta above the market's and consumer staples' below,
    the same order for their volatility (DASTD) and their residual volatility (orthogonal to beta: with equal
    caps USE4's size has no dispersion and is left out), whose highest is the one small oil and gas producer."""
    scores = compute_styles(panel, ["beta", "resvol"])
    last = scores.filter(pl.col("date") == scores["date"].max())
    assert last["beta_score"].null_count() == 0 and last["resvol_score"].null_count() == 0
    beta = dict(zip(last["symbol"], last["beta_score"], strict=True))
    resvol = dict(zip(last["symbol"], last["resvol_score"], strict=True))
    assert beta["AMD"] > 1.0 > max(beta["KO"], beta["PG"], beta["PEP"])
    assert resvol["AMD"] > max(resvol["KO"], resvol["PG"], resvol["PEP"])
    assert max(resvol, key=lambda symbol: resvol[symbol]) == "RRC"
    returns, _, symbols = dense
    volatility = dict(zip(symbols, dastd(returns)[-1], strict=True))
    assert volatility["AMD"] > 2 * max(volatility["KO"], volatility["PG"], volatility["PEP"])
