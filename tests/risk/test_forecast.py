"""The model's covariance forecast extended from the state of an earlier run equals one run over all dates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from factor_engine.config import ModelConfig
from factor_engine.model import forecast_factor_covariance
from factor_engine.risk import CovarianceConfig
from factor_engine.risk.forecast import CovarianceAdjustments, CovarianceState, forecast_covariance

CONFIG = CovarianceConfig(vol_half_life=30, corr_half_life=200, vol_nw_lags=3, corr_nw_lags=1, min_periods=60)


@pytest.fixture(scope="module")
def factor_returns() -> pl.DataFrame:
    """900 dates of 6 factors with a volatility regime; the last one enters after 500 dates."""
    rng = np.random.default_rng(21)
    returns = rng.standard_normal((900, 6)) * 0.01 * np.where(np.arange(900) < 600, 1.0, 1.8)[:, None]
    returns[:500, 5] = np.nan
    returns[rng.random(returns.shape) < 0.01] = np.nan  # scattered missing returns
    start = dt.date(2015, 1, 1)
    dates = pl.date_range(start, start + dt.timedelta(days=899), eager=True)
    return pl.DataFrame({"date": dates, **{f"f{k}": returns[:, k] for k in range(6)}})


def _saved(arrays: dict[str, np.ndarray], folder: Path) -> dict[str, np.ndarray]:
    """``arrays`` written to an ``.npz`` file and read back."""
    np.savez(folder / "state.npz", **arrays)
    with np.load(folder / "state.npz") as saved:
        return {name: saved[name] for name in saved.files}


@pytest.mark.parametrize(
    "adjustments",
    [
        CovarianceAdjustments(simulations=40, every=50, seed=2),
        CovarianceAdjustments(eigenfactor=False),
        CovarianceAdjustments(simulations=40, every=50, vra_half_life=None),
    ],
    ids=["both", "vra-only", "eigenfactor-only"],
)
def test_extension_equals_one_run(
    factor_returns: pl.DataFrame, adjustments: CovarianceAdjustments, tmp_path: Path
) -> None:
    full, full_state = forecast_covariance(factor_returns, CONFIG, adjustments)
    state: CovarianceState | None = None
    pieces, dates = [], []
    # cuts: before the first forecast, inside the history, before the new factor's forecasts, single dates
    for cut in (30, 300, 555, 560, 899, 900):
        if state is not None:  # through the arrays a model folder keeps
            state = CovarianceState.from_arrays(_saved(state.to_arrays(), tmp_path))
        piece, state = forecast_covariance(factor_returns.head(cut), CONFIG, adjustments, state=state)
        pieces.append(piece.values)
        dates.extend(piece.dates.to_list())
    assert dates == full.dates.to_list()
    extended = np.concatenate(pieces)
    assert extended.shape == full.values.shape
    finite = np.isfinite(full.values)
    np.testing.assert_array_equal(np.isfinite(extended), finite)
    # relative to each forecast's scale: entries near 0 (small covariances) differ by rounding of the largest
    scale = np.nanmax(np.abs(full.values), axis=(1, 2))[:, None, None] * np.ones_like(full.values)
    assert np.max(np.abs(extended[finite] - full.values[finite]) / scale[finite]) < 1e-12
    assert state is not None and full_state is not None and state.last_date == full_state.last_date


def test_the_model_forecast_is_the_chain_with_the_configured_adjustments(factor_returns: pl.DataFrame) -> None:
    config = ModelConfig()
    adjustments = config.adjustments
    chain, _ = forecast_covariance(
        factor_returns,
        config.covariance,
        CovarianceAdjustments(
            eigenfactor=adjustments.eigenfactor,
            simulations=adjustments.eigenfactor_simulations,
            scale=adjustments.eigenfactor_scale,
            every=adjustments.eigenfactor_every,
            vra_half_life=adjustments.vra_half_life,
        ),
    )
    np.testing.assert_array_equal(forecast_factor_covariance(factor_returns, config).values, chain.values)
