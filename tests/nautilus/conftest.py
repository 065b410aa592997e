"""Fixtures of the NautilusTrader tests: a small synthetic market and the model built on it (module-scoped work
is shared across the session: the build is the expensive part)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from factor_engine.model import RiskModel, build_model
from factor_engine.synthetic import generate_market


@pytest.fixture(scope="session")
def small_panel() -> pl.DataFrame:
    """40 assets × 260 business days (with listings and delistings), seed 11."""
    return generate_market(40, 260, seed=11).panel


@pytest.fixture(scope="session")
def small_model(small_panel: pl.DataFrame) -> RiskModel:
    return build_model(small_panel)


@pytest.fixture(scope="session")
def small_files(tmp_path_factory: pytest.TempPathFactory, small_panel: pl.DataFrame, small_model: RiskModel) -> Path:
    """A folder with ``panel.parquet`` and the model folder ``model``."""
    folder = tmp_path_factory.mktemp("nautilus-small")
    small_panel.write_parquet(folder / "panel.parquet")
    small_model.save(folder / "model")
    return folder
