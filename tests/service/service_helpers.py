"""Helpers of the service tests (a module with a unique name, importable from any test file)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import httpx
import polars as pl
from fastapi.testclient import TestClient

from factor_engine.config import ModelConfig

API = "/api/v1/factor-engine"
# A small model that still has covariance and specific risk forecasts on a short synthetic history.
TEST_CONFIG: dict[str, Any] = {
    "styles": {"momentum": {"trailing_days": 20, "half_life": 10, "lag": 5}},
    "covariance": {"min_periods": 20},
    "adjustments": {"eigenfactor_simulations": 20},
    "specific_risk": {"min_periods": 10},
}
ClientFactory = Callable[..., AbstractContextManager[TestClient]]
# Sector labels that are no taxonomy at all: a made-up name, a GICS industry-group code, text with non-ASCII
# letters and punctuation.
ARBITRARY_SECTORS: tuple[str, ...] = ("4510", "Bäckerei & Co.", "Widgets")


def model_config(universe_size: int = 3000) -> ModelConfig:
    """TEST_CONFIG with ``universe.size``, as the service builds it."""
    return ModelConfig.from_mapping({**TEST_CONFIG, "universe": {"size": universe_size}})


def relabel_sectors(panel: pl.DataFrame, labels: Sequence[str]) -> pl.DataFrame:
    """``panel`` with its k-th sector label (in sorted order) replaced by ``labels[k % len(labels)]``."""
    current = panel.get_column("sector").unique().sort().to_list()
    mapping = {old: labels[k % len(labels)] for k, old in enumerate(current)}
    return panel.with_columns(pl.col("sector").replace_strict(mapping, return_dtype=pl.String))


def sectors_by_hand(panel: pl.DataFrame) -> list[dict[str, Any]]:
    """The reference of /factors/list's sectors: a plain loop over the rows (name, symbols, rows, dates)."""
    seen: dict[str, dict[str, Any]] = {}
    for day, symbol, sector in panel.select("date", "symbol", "sector").iter_rows():
        entry = seen.setdefault(sector, {"name": sector, "symbols": set(), "rows": 0, "first": day, "last": day})
        entry["symbols"].add(symbol)
        entry["rows"] += 1
        entry["first"], entry["last"] = min(entry["first"], day), max(entry["last"], day)
    return [
        {
            "name": name,
            "symbols": len(entry["symbols"]),
            "rows": entry["rows"],
            "first_date": str(entry["first"]),
            "last_date": str(entry["last"]),
        }
        for name, entry in sorted(seen.items())
    ]


def json_rows(panel: pl.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    """Rows as the seed posts them: ``symbol``, ISO ``date`` and ``columns``."""
    return panel.select("symbol", pl.col("date").cast(pl.String), *columns).to_dicts()


def wait_for_job(client: TestClient | httpx.Client, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll GET /jobs/{id} until it succeeded or failed; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"{API}/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
        time.sleep(0.05)
