"""Factor endpoints: the seed's examples as written give the library's numbers exactly; bad rows give 422
naming the field and the row; /factors/list and /info (the sector labels of the stored panel)."""

from __future__ import annotations

import io
import json
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient
from service_helpers import API, ARBITRARY_SECTORS, ClientFactory, json_rows, relabel_sectors, sectors_by_hand

from db_fixtures import IsolatedDatabase
from factor_engine import __version__, styles
from factor_engine.panel import GICS_SECTORS, SEED_SECTORS


@pytest.fixture
def client(app_client: ClientFactory) -> Any:
    with app_client() as opened:
        yield opened


def _scores_frame(body: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(body["scores"], schema={"symbol": pl.String, "date": pl.String, "score": pl.Float64}).select(
        pl.col("date").str.to_date(), "symbol", "score"
    )


def _expected(frame: pl.DataFrame, score: str) -> pl.DataFrame:
    return frame.sort("date", "symbol").select("date", "symbol", pl.col(score).fill_nan(None).alias("score"))


def test_momentum_seed_example_equals_library(client: TestClient, market_panel: pl.DataFrame) -> None:
    data = json_rows(market_panel, ["asset_returns"])
    response = client.post(f"{API}/factors/momentum", json={"data": data, "trailing_days": 252, "winsor_factor": 0.01})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = _expected(
        styles.momentum(market_panel.select("date", "symbol", "asset_returns"), trailing_days=252, winsor_factor=0.01),
        "mom_score",
    )
    assert body["factor"] == "mom_score"
    assert body["rows"] == market_panel.height
    got = _scores_frame(body)
    assert got.get_column("score").drop_nulls().len() > 1000  # 300 days cover 272 observations: real scores
    assert got.equals(expected)  # exactly: same rows, same order, same floats, same nulls


def test_value_seed_example_equals_library(client: TestClient, market_panel: pl.DataFrame) -> None:
    data = json_rows(market_panel, ["book_price", "sales_price", "cf_price"])
    response = client.post(f"{API}/factors/value", json={"data": data})
    assert response.status_code == 200, response.text
    expected = _expected(
        styles.value(market_panel.select("date", "symbol", "book_price", "sales_price", "cf_price")), "val_score"
    )
    got = _scores_frame(response.json())
    assert response.json()["factor"] == "val_score"
    assert got.get_column("score").drop_nulls().len() > 1000
    assert got.equals(expected)


def test_size_with_parameters_equals_library(client: TestClient, market_panel: pl.DataFrame) -> None:
    data = json_rows(market_panel, ["market_cap"])
    response = client.post(f"{API}/factors/size", json={"data": data, "lower_decile": 0.1, "upper_decile": 0.7})
    assert response.status_code == 200, response.text
    expected = _expected(
        styles.size(market_panel.select("date", "symbol", "market_cap"), lower_decile=0.1, upper_decile=0.7),
        "sze_score",
    )
    assert _scores_frame(response.json()).equals(expected)


def test_short_momentum_window_and_unsorted_rows(client: TestClient, market_panel: pl.DataFrame) -> None:
    subset = market_panel.filter(pl.col("symbol").is_in(["S00001", "S00002", "S00003", "S00004"])).head(200)
    data = list(reversed(json_rows(subset, ["asset_returns"])))
    params = {"trailing_days": 10, "half_life": 5, "lag": 2, "winsor_factor": None}
    response = client.post(f"{API}/factors/momentum", json={"data": data, **params})
    assert response.status_code == 200, response.text
    expected = _expected(styles.momentum(subset.select("date", "symbol", "asset_returns"), **params), "mom_score")
    assert _scores_frame(response.json()).equals(expected)


ROWS = [
    {"symbol": "AAPL", "date": "2024-01-01", "asset_returns": 0.02},
    {"symbol": "AAPL", "date": "2024-01-02", "asset_returns": -0.01},
    {"symbol": "MSFT", "date": "2024-01-01", "asset_returns": 0.01},
]


def _post_raw(client: TestClient, path: str, text: str) -> Any:
    return client.post(f"{API}{path}", content=text, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("row", "loc", "message"),
    [
        ({"symbol": "AAPL", "date": "2024-01-03"}, ["body", "data", 2, "asset_returns"], "Field required"),
        (
            {"symbol": "AAPL", "date": "2024-01-03", "asset_returns": "abc"},
            ["body", "data", 2, "asset_returns"],
            "valid number",
        ),
        ({"symbol": 17, "date": "2024-01-03", "asset_returns": 0.1}, ["body", "data", 2, "symbol"], "valid string"),
        ({"symbol": "AAPL", "date": "2024-13-03", "asset_returns": 0.1}, ["body", "data", 2, "date"], "valid date"),
    ],
)
def test_bad_row_names_field_and_row(client: TestClient, row: dict[str, Any], loc: list[Any], message: str) -> None:
    data = [ROWS[0], ROWS[1], row]
    response = client.post(f"{API}/factors/momentum", json={"data": data})
    assert response.status_code == 422
    details = response.json()["detail"]
    assert [d["loc"] for d in details] == [loc]
    assert message in details[0]["msg"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_literals_are_rejected_naming_the_row(client: TestClient, literal: str) -> None:
    text = json.dumps({"data": ROWS}).replace('"asset_returns": 0.01', f'"asset_returns": {literal}')
    response = _post_raw(client, "/factors/momentum", text)
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": ["body", "data", 2, "asset_returns"], "msg": "Input should be a finite number", "type": "finite_number"}
    ]


def test_non_finite_value_ratio_is_rejected(client: TestClient) -> None:
    text = '{"data": [{"symbol": "A", "date": "2024-01-01", "book_price": Infinity, "sales_price": 1, "cf_price": 1}]}'
    response = _post_raw(client, "/factors/value", text)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "data", 0, "book_price"]


def test_duplicate_rows_are_named(client: TestClient) -> None:
    response = client.post(f"{API}/factors/momentum", json={"data": [*ROWS, ROWS[1]]})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "(date, symbol) must be unique" in detail
    assert "(2024-01-02, AAPL) x2" in detail


def test_empty_data_and_missing_data(client: TestClient) -> None:
    response = client.post(f"{API}/factors/momentum", json={"data": []})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "data"]
    assert "at least 1 item" in response.json()["detail"][0]["msg"]
    response = client.post(f"{API}/factors/value", json={"rows": []})
    assert response.status_code == 422
    assert {tuple(d["loc"]) for d in response.json()["detail"]} == {("body", "data"), ("body", "rows")}


def test_non_positive_market_cap_names_the_row(client: TestClient) -> None:
    data = [
        {"symbol": "A", "date": "2024-01-01", "market_cap": 10.0},
        {"symbol": "B", "date": "2024-01-01", "market_cap": -1},
    ]
    response = client.post(f"{API}/factors/size", json={"data": data})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "data", 1, "market_cap"]
    assert "greater than 0" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/factors/size", {"lower_decile": 0.9, "upper_decile": 0.1}, "need 0 <= lower_decile <= upper_decile"),
        ("/factors/momentum", {"trailing_days": 0}, "greater than 0"),
        ("/factors/momentum", {"winsor_factor": 2}, "less than or equal to 0.5"),
        ("/factors/momentum", {"trailing_days": 96_211_663}, "less than or equal to 100000"),
    ],
)
def test_bad_parameters_are_422(client: TestClient, path: str, params: dict[str, Any], message: str) -> None:
    key = "market_cap" if "size" in path else "asset_returns"
    data = [{"symbol": "A", "date": "2024-01-01", key: 1.0}]
    response = client.post(f"{API}{path}", json={"data": data, **params})
    assert response.status_code == 422
    assert message in json.dumps(response.json()["detail"])


def test_factor_list_matches_registry(client: TestClient) -> None:
    response = client.get(f"{API}/factors/list")
    assert response.status_code == 200
    body = response.json()
    assert body["sectors"] == []  # an empty store has no sector labels
    assert body["market"]["name"] == "market"
    registered = {s.name: s for s in styles.available_styles()}
    assert {s["name"] for s in body["styles"]} == set(registered)
    for style in body["styles"]:
        factor = registered[style["name"]]
        assert style["score"] == factor.score
        assert style["defaults"] == dict(factor.defaults)
        assert style["inputs"] == list(factor.inputs)
        assert style["description"] == factor.description
        assert style["any_of"] == [list(group) for group in factor.any_of]
        assert style["unless"] == list(factor.unless)
        assert style["requirement"] == factor.requirement
        assert style["default"] == factor.default
        assert style["caps_as_weights"] == factor.caps_as_weights
    by_name = {style["name"]: style for style in body["styles"]}
    # what USE4's styles need, as a user reads it
    assert by_name["liquidity"]["any_of"] == [["turnover"], ["volume", "shares_outstanding"]]
    assert by_name["liquidity"]["requirement"] == (
        "one of turnover, volume + shares_outstanding (market_cap optional: equal weights without it)"
    )
    assert by_name["nlsize"]["requirement"] == "market_cap" and not by_name["nlsize"]["caps_as_weights"]
    assert by_name["beta"]["caps_as_weights"] and by_name["growth"]["caps_as_weights"]
    assert by_name["btop"]["unless"] == ["value"]
    assert by_name["momentum"]["requirement"] == "asset_returns"
    assert by_name["momentum"]["any_of"] == [] and by_name["momentum"]["unless"] == []


@pytest.mark.parametrize("taxonomy", ["seed", "gics", "mixed"])
def test_factor_list_and_info_describe_the_stored_sectors(
    app_client: ClientFactory, database: IsolatedDatabase, market_panel: pl.DataFrame, taxonomy: str
) -> None:
    """The sectors are the labels of the stored panel (the seed's names, GICS names, or seed names mixed with
    arbitrary labels), each with its symbols, rows and date range as a plain loop over the rows counts them."""
    labels = {"seed": SEED_SECTORS, "gics": GICS_SECTORS, "mixed": (*SEED_SECTORS[:8], *ARBITRARY_SECTORS)}[taxonomy]
    panel = relabel_sectors(market_panel, labels)
    late = panel.filter(pl.col("symbol") == "S00001").tail(5)  # a new symbol in a new sector, its last 5 days
    panel = panel.vstack(late.with_columns(pl.lit("NEW1").alias("symbol"), pl.lit("Late Sector").alias("sector")))
    with app_client(database) as client:
        info = client.get(f"{API}/info").json()
        assert (info["sectors"], info["n_sectors"]) == ([], 0)
        response = client.post(
            f"{API}/data/panel/upload", content=_parquet(panel), headers={"Content-Type": "application/octet-stream"}
        )
        assert response.status_code == 200, response.text
        body = client.get(f"{API}/factors/list").json()
        info = client.get(f"{API}/info").json()
    expected = sectors_by_hand(panel)
    assert [s["name"] for s in expected] == sorted([*labels, "Late Sector"])
    assert [{key: s[key] for key in expected[0]} for s in body["sectors"]] == expected
    late_sector = next(s for s in body["sectors"] if s["name"] == "Late Sector")
    assert (late_sector["symbols"], late_sector["rows"]) == (1, 5)
    assert late_sector["first_date"] == str(late["date"].min())
    for sector in body["sectors"]:
        assert f"stored label {sector['name']!r}" in sector["description"]
        assert "GICS" not in sector["description"]
    assert info["sectors"] == [s["name"] for s in expected]
    assert info["n_sectors"] == len(labels) + 1


def _parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def test_info_masks_the_password_and_reports_limits(app_client: ClientFactory) -> None:
    from db_fixtures import IsolatedDatabase

    closed = IsolatedDatabase("postgresql", "postgresql://postgres:s3cret@127.0.0.1:1/test", None)
    with app_client(
        closed,
        max_body_bytes=1234,
        sync_build_max_rows=99,
        max_queued_builds=3,
        build_memory_budget_bytes=5678,
        max_score_cells=4321,
    ) as client:
        body = client.get(f"{API}/info").json()
    assert body["version"] == __version__
    assert body["store"]["dialect"] == "postgresql"
    assert "s3cret" not in json.dumps(body)
    assert body["store"]["url"] == "postgresql+psycopg://postgres:***@127.0.0.1:1/test"
    assert body["limits"] == {
        "max_body_bytes": 1234,
        "max_upload_rows": 10_000_000,
        "max_upload_decoded_bytes": 1024**3,
        "sync_build_max_rows": 99,
        "cache_ttl_seconds": 3600,
        "max_concurrent_builds": 1,
        "max_queued_builds": 3,
        "build_memory_budget_bytes": 5678,
        "run_lease_seconds": 30.0,
        "max_score_cells": 4321,
    }
    assert body["cache_configured"] is False
    assert body["capabilities"]["methods"] == ["barra", "toraniko"]
    assert "portfolio" in body["capabilities"]["endpoint_groups"]
    assert (body["sectors"], body["n_sectors"]) == (None, None)  # the database is down: unknown, not empty


def test_openapi_documents_every_endpoint(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = {p.removeprefix(API) for p in spec["paths"]}
    expected = {"/health", "/info", "/factors/momentum", "/data/panel/upload", "/risk-model/create"}
    expected |= {"/jobs/{job_id}/retry", "/models/{model_id}/covariance", "/portfolio/risk"}
    assert expected <= paths
    schema = spec["paths"][f"{API}/factors/momentum"]["post"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]
    assert schema["$ref"].endswith("/ScoresResponse")
    assert client.get("/docs").status_code == 200


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from factor_engine.service import Settings, get_settings
    from factor_engine.storage import DEFAULT_DATABASE_URL

    for name in ("FACTOR_ENGINE_DATABASE_URL", "FACTOR_ENGINE_DATABASE_SCHEMA", "REDIS_URL", "FACTOR_ENGINE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    defaults = Settings()
    assert defaults.database_url == DEFAULT_DATABASE_URL
    assert (defaults.database_schema, defaults.redis_url, defaults.api_key) == (None, None, None)
    assert defaults.max_body_bytes == 512 * 1024 * 1024
    assert defaults.sync_build_max_rows == 200_000 and defaults.cache_ttl_seconds == 3600
    environment = {
        "FACTOR_ENGINE_DATABASE_URL": "postgresql://u@h/db",
        "FACTOR_ENGINE_DATABASE_SCHEMA": "s1",
        "REDIS_URL": "redis://r:6379/2",
        "FACTOR_ENGINE_API_KEY": "",
        "FACTOR_ENGINE_MAX_BODY_BYTES": "1000",
        "FACTOR_ENGINE_SYNC_BUILD_MAX_ROWS": "5",
        "FACTOR_ENGINE_CACHE_TTL_SECONDS": "7",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        settings = get_settings()
        assert get_settings() is settings  # read once
    finally:
        get_settings.cache_clear()
    assert settings.database_url == "postgresql://u@h/db" and settings.database_schema == "s1"
    assert settings.redis_url == "redis://r:6379/2"
    assert settings.api_key is None  # empty means not set
    assert (settings.max_body_bytes, settings.sync_build_max_rows, settings.cache_ttl_seconds) == (1000, 5, 7)
    monkeypatch.setenv("FACTOR_ENGINE_MAX_BODY_BYTES", "lots")
    with pytest.raises(ValueError, match="FACTOR_ENGINE_MAX_BODY_BYTES"):
        Settings()
