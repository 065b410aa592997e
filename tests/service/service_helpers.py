"""Helpers of the service tests (a module with a unique name, importable from any test file)."""

from __future__ import annotations

import time
from collections.abc import Callable
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


def model_config(universe_size: int = 3000) -> ModelConfig:
    """TEST_CONFIG with ``universe.size``, as the service builds it."""
    return ModelConfig.from_mapping({**TEST_CONFIG, "universe": {"size": universe_size}})


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
