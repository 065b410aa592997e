"""A panel with the USE4 trading and fundamental columns through the service on SQLite and PostgreSQL: JSON
rows, Parquet and Arrow uploads stored exactly, the summary naming the stored columns, build admission resolving
the styles the loaded panel supports, and a model built from the store with the USE4 styles."""

from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from polars.testing import assert_frame_equal
from service_helpers import API, TEST_CONFIG, ClientFactory, json_rows

from db_fixtures import IsolatedDatabase
from factor_engine.config import ModelConfig
from factor_engine.model import build_model
from factor_engine.panel import FUNDAMENTAL_COLUMNS, OPTIONAL_COLUMNS, TRADING_COLUMNS, validate_panel
from factor_engine.service import builds
from factor_engine.service.schemas import CreateModelRequest
from factor_engine.storage import Store, connect
from stored_panels import use4_panel as make_use4_panel

# every default style a panel with the USE4 columns supports (btop is covered by value)
EXPECTED_STYLES = (
    "momentum",
    "value",
    "size",
    "beta",
    "resvol",
    "nlsize",
    "liquidity",
    "earnings_yield",
    "growth",
    "leverage",
    "dividend_yield",
)
REQUEST = {"config": TEST_CONFIG, "universe_size": 3000}


@pytest.fixture(scope="module")
def use4_panel() -> pl.DataFrame:
    """200 assets × 300 days with every USE4 input; liquidity reads volume and shares (no turnover column)."""
    return make_use4_panel(200, 300, seed=1)


def _upload(client: TestClient, panel: pl.DataFrame, body_format: str) -> dict[str, object]:
    buffer = io.BytesIO()
    if body_format == "parquet":
        panel.write_parquet(buffer)
        media = "application/vnd.apache.parquet"
    else:
        panel.write_ipc_stream(buffer)
        media = "application/vnd.apache.arrow.stream"
    response = client.post(f"{API}/data/panel/upload", content=buffer.getvalue(), headers={"Content-Type": media})
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def _open(database: IsolatedDatabase) -> Store:
    return connect(database.url, schema=database.schema)


def test_use4_columns_over_json_parquet_and_arrow(
    app_client: ClientFactory, database: IsolatedDatabase, use4_panel: pl.DataFrame
) -> None:
    """The first dates as JSON rows (turnover on them too), the middle as Parquet, the rest as an Arrow stream:
    the store gives back the panel exactly, turnover null where it was not sent."""
    dates = use4_panel["date"].unique().sort()
    first = validate_panel(  # the contract's column order: turnover after shares_outstanding
        use4_panel.filter(pl.col("date") <= dates[2]).with_columns(
            (pl.col("volume") / pl.col("shares_outstanding")).alias("turnover")
        )
    )
    middle = use4_panel.filter(pl.col("date").is_between(dates[3], dates[150]))
    rest = use4_panel.filter(pl.col("date") > dates[150])
    with app_client(database) as client:
        columns = [c for c in first.columns if c not in ("date", "symbol")]
        response = client.post(f"{API}/data/panel", json={"rows": json_rows(first, columns)})
        assert response.status_code == 200, response.text
        assert response.json()["inserted"] == first.height
        assert _upload(client, middle, "parquet")["inserted"] == middle.height
        assert _upload(client, rest, "arrow stream")["inserted"] == rest.height
        summary = client.get(f"{API}/data/summary").json()
    expected = pl.concat([first, middle, rest], how="diagonal").select(first.columns)
    assert summary["columns"] == expected.columns[2:]
    assert {*TRADING_COLUMNS, *FUNDAMENTAL_COLUMNS} <= set(summary["columns"])
    store = _open(database)
    try:
        assert_frame_equal(store.load_panel(), expected, check_exact=True)
        # a range without turnover loads without it (the model would otherwise take an empty column for data)
        assert_frame_equal(store.load_panel(start=dates[3]), use4_panel.filter(pl.col("date") >= dates[3]))
    finally:
        store.close()


def test_a_model_built_from_a_stored_use4_panel_has_the_use4_styles(
    app_client: ClientFactory, database: IsolatedDatabase, use4_panel: pl.DataFrame
) -> None:
    store = _open(database)
    try:
        with app_client(database) as client:
            _upload(client, use4_panel, "parquet")
            # admission (aggregates, nothing loaded) resolves the styles the loaded panel supports
            request = CreateModelRequest.model_validate(REQUEST)
            config = builds.model_config(request)
            extent, admitted = builds.check_build_extent(store, request, config)
            loaded = builds.load_build_panel(store, request, config)
            assert_frame_equal(loaded, use4_panel, check_exact=True)
            assert extent == builds.frame_extent(loaded)
            assert admitted == config.styles.resolve(loaded.columns)[0] == EXPECTED_STYLES

            response = client.post(f"{API}/risk-model/create", json=REQUEST)
            assert response.status_code == 200, response.text
            summary = response.json()
        expected = build_model(use4_panel, ModelConfig.from_mapping({**TEST_CONFIG, "universe": {"size": 3000}}))
        assert tuple(summary["styles"]) == expected.styles
        assert summary["build"]["styles"]["used"] == list(EXPECTED_STYLES)
        assert len(expected.styles) == len(EXPECTED_STYLES)
        assert {"liq_score", "ey_score", "growth_score", "lev_score", "divyld_score"} <= set(summary["factors"])
        model = store.load_model(summary["id"])
        assert model.factor_returns.equals(expected.factor_returns)
        assert model.exposures.equals(expected.exposures)
        assert model.factor_covariance is not None and expected.factor_covariance is not None
        np.testing.assert_array_equal(model.factor_covariance.values, expected.factor_covariance.values)
    finally:
        store.close()


def test_a_stored_panel_without_the_use4_columns_gets_no_use4_styles(
    app_client: ClientFactory, database: IsolatedDatabase, use4_panel: pl.DataFrame
) -> None:
    """The USE4 columns stored for the first dates only: a build on the later dates neither admits nor gets
    the styles that need them (the columns are left out of its panel), and says why in its build notes."""
    dates = use4_panel["date"].unique().sort()
    base = use4_panel.drop(*(c for c in OPTIONAL_COLUMNS if c in use4_panel.columns and c != "market_cap"))
    store = _open(database)
    try:
        store.ingest_panel(base)
        store.ingest_panel(use4_panel.filter(pl.col("date") <= dates[20]))
        request = {**REQUEST, "start_date": str(dates[100]), "history_days": 100}
        parsed = CreateModelRequest.model_validate(request)
        config = builds.model_config(parsed)
        _, admitted = builds.check_build_extent(store, parsed, config)
        assert admitted == ("momentum", "size", "beta", "resvol", "nlsize")
        with app_client(database) as client:
            response = client.post(f"{API}/risk-model/create", json=request)
            assert response.status_code == 200, response.text
            summary = response.json()
        assert set(summary["styles"]) == {"mom_score", "sze_score", "beta_score", "resvol_score", "nlsize_score"}
        styles = summary["build"]["styles"]
        assert styles["used"] == list(admitted)
        assert styles["skipped"]["liquidity"] == "the panel has none of turnover, volume + shares_outstanding"
        assert styles["skipped"]["earnings_yield"] == "the panel has no earnings_price column"
    finally:
        store.close()
