"""Shared fixtures of the report tests: one synthetic market and the model built from it (longer than
520 dates, so the default sampling applies)."""

from __future__ import annotations

import polars as pl
import pytest

from factor_engine.model import RiskModel, build_model
from factor_engine.panel import validate_panel
from factor_engine.portfolio.snapshot import forecast_dates, snapshot_at
from factor_engine.synthetic import generate_market

N_ASSETS, N_DAYS, SEED = 100, 900, 7


@pytest.fixture(scope="session")
def report_panel() -> pl.DataFrame:
    return validate_panel(generate_market(N_ASSETS, N_DAYS, seed=SEED).panel)


@pytest.fixture(scope="session")
def report_model(report_panel: pl.DataFrame) -> RiskModel:
    model = build_model(report_panel)
    assert model.factor_returns.height > 520  # the default max_points must sample this model
    return model


@pytest.fixture(scope="session")
def weights(report_model: RiskModel) -> dict[str, dict[str, float]]:
    """An equal-weight portfolio and a 40-asset benchmark, both covered on the last and an earlier date."""
    earlier = forecast_dates(report_model)[-30]
    symbols = sorted(set(snapshot_at(report_model).symbols) & set(snapshot_at(report_model, earlier).symbols))
    return {
        "portfolio": {symbol: 1 / len(symbols) for symbol in symbols},
        "benchmark": {symbol: 1 / 40 for symbol in symbols[:40]},
    }
