"""POST /factors/{style}: every registered style (USE4's, custom ones) through the service gives the library's
scores exactly, with the style's parameters bounded as for a build; and every factor-score endpoint refuses rows
spanning more (date, symbol) cells than FACTOR_ENGINE_MAX_SCORE_CELLS before computing anything (the kernels'
dense grids cost memory by the cell: a diagonal of rows is tiny JSON and a huge grid)."""

from __future__ import annotations

import datetime
import gc
import json
import sys
import time
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient
from service_helpers import API, ClientFactory, json_rows

from factor_engine import styles
from factor_engine.panel import DATE, SYMBOL
from factor_engine.service.limits import BUILD_CONFIG_BOUNDS
from stored_panels import use4_panel
from style_modules import write_reversal_module

# the style, the panel columns posted for it
USE4_INPUTS = {
    "beta": ["asset_returns", "market_cap"],
    "resvol": ["asset_returns", "market_cap"],
    "nlsize": ["market_cap"],
    "liquidity": ["market_cap", "volume", "shares_outstanding"],
    "earnings_yield": ["market_cap", "earnings_price", "forecast_earnings_price"],
    "growth": ["market_cap", "earnings_growth", "sales_growth", "forecast_growth"],
    "leverage": ["market_cap", "market_leverage", "book_leverage", "debt_to_assets"],
    "dividend_yield": ["market_cap", "dividend_yield"],
    "btop": ["market_cap", "book_price"],
}
# short windows: 200 dates give every time-series style real scores
PARAMS: dict[str, dict[str, Any]] = {
    "beta": {"window": 60, "half_life": 20, "min_observations": 30},
    "resvol": {"window": 60, "min_observations": 30},
    "liquidity": {"month_days": 5},
}


@pytest.fixture
def client(app_client: ClientFactory) -> Any:
    with app_client() as opened:
        yield opened


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    return use4_panel(40, 200, seed=3)


def _scores(body: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(body["scores"], schema={"symbol": pl.String, "date": pl.String, "score": pl.Float64}).select(
        pl.col("date").str.to_date(), "symbol", "score"
    )


def _library(panel: pl.DataFrame, style: str, params: dict[str, Any]) -> pl.DataFrame:
    """The library's scores of ``style`` on the posted columns, as the endpoint answers them."""
    posted = panel.select(DATE, SYMBOL, *USE4_INPUTS.get(style, ["asset_returns"]))
    frame = styles.compute_styles(posted, [style], params={style: params} if params else None)
    score = styles.get_style(style).score
    return frame.sort(DATE, SYMBOL).select(DATE, SYMBOL, pl.col(score).fill_nan(None).alias("score"))


@pytest.mark.parametrize("style", sorted(USE4_INPUTS))
def test_use4_style_equals_library(client: TestClient, panel: pl.DataFrame, style: str) -> None:
    params = PARAMS.get(style, {})
    response = client.post(
        f"{API}/factors/{style}", json={"data": json_rows(panel, USE4_INPUTS[style]), "params": params}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["factor"] == styles.get_style(style).score
    assert body["rows"] == panel.height
    got, expected = _scores(body), _library(panel, style, params)
    assert got.get_column("score").drop_nulls().len() > panel.height // 3  # real scores, not all null
    assert got.equals(expected)  # exactly: same rows, order, floats and nulls


def test_parameters_reach_the_style(client: TestClient, panel: pl.DataFrame) -> None:
    """The beta of a 60-day window differs from the 252-day default, and each equals the library's."""
    data = json_rows(panel, USE4_INPUTS["beta"])
    short = client.post(f"{API}/factors/beta", json={"data": data, "params": PARAMS["beta"]})
    default = client.post(f"{API}/factors/beta", json={"data": data})
    assert short.status_code == default.status_code == 200
    assert _scores(default.json()).equals(_library(panel, "beta", {}))
    short_scores, default_scores = _scores(short.json()), _scores(default.json())
    # the default window needs 63 returns: its first scores come later than the short window's
    assert short_scores.get_column("score").drop_nulls().len() > default_scores.get_column("score").drop_nulls().len()


def test_without_caps_the_style_is_equal_weighted(client: TestClient, panel: pl.DataFrame) -> None:
    """beta uses caps only as weights: without market_cap it is computed on the equal-weighted market."""
    response = client.post(
        f"{API}/factors/beta", json={"data": json_rows(panel, ["asset_returns"]), "params": PARAMS["beta"]}
    )
    assert response.status_code == 200, response.text
    expected = styles.compute_styles(
        panel.select(DATE, SYMBOL, "asset_returns"), ["beta"], params={"beta": PARAMS["beta"]}
    )
    assert _scores(response.json()).equals(
        expected.sort(DATE, SYMBOL).select(DATE, SYMBOL, pl.col("beta_score").fill_nan(None).alias("score"))
    )


@pytest.mark.parametrize(
    ("style", "body", "status", "message"),
    [
        ("no_such_style", {}, 404, "no style 'no_such_style'; the registered styles are"),
        ("beta", {"params": {"windw": 60}}, 422, "unknown parameter(s) ['windw']"),
        ("beta", {"params": {"at": "2024-01-02"}}, 422, "unknown parameter(s) ['at']"),
        ("beta", {"params": {"window": 10**6}}, 422, "window = 1000000 is above the service's limit 5040"),
        ("beta", {"params": {"half_life": -1}}, 422, "half_life must be positive"),
        ("beta", {"columns": ["market_cap"]}, 422, "style 'beta' needs column(s) ['asset_returns'], which the panel"),
        (
            "liquidity",
            {"columns": ["asset_returns"]},
            422,
            "needs one of the columns turnover, volume + shares_outstanding",
        ),
        ("beta", {"params": {"window": [1, 2]}}, 422, "params"),
    ],
)
def test_refusals_name_the_problem(
    client: TestClient, panel: pl.DataFrame, style: str, body: dict[str, Any], status: int, message: str
) -> None:
    columns = body.pop("columns", ["asset_returns", "market_cap"])
    response = client.post(f"{API}/factors/{style}", json={"data": json_rows(panel.head(50), columns), **body})
    assert response.status_code == status, response.text
    assert message in response.text


def test_a_bad_row_is_located_in_the_body(client: TestClient, panel: pl.DataFrame) -> None:
    """Rows are validated in batches of 1,000 off the event loop; an error is still located at body → data → row
    → field, with the row's index in the whole list (here in the third batch)."""
    data = json_rows(panel.head(2_500), ["asset_returns", "market_cap"])
    data[2_345]["asset_returns"] = "abc"
    data[10]["colour"] = "blue"
    response = client.post(f"{API}/factors/beta", json={"data": data})
    assert response.status_code == 422, response.text
    details = response.json()["detail"]
    assert [(d["loc"], d["type"]) for d in details] == [
        (["body", "data", 10, "colour"], "extra_forbidden"),
        (["body", "data", 2_345, "asset_returns"], "float_parsing"),
    ]


def test_a_bad_momentum_row_is_located_in_the_body(client: TestClient, market_panel: pl.DataFrame) -> None:
    """The seed's endpoints validate their rows the same way: the index is the row's in the whole list."""
    data = json_rows(market_panel.head(1_500), ["asset_returns"])
    data[1_234]["asset_returns"] = float("nan")
    del data[7]["date"]
    body = json.dumps({"data": data})  # NaN as the literal JSON cannot carry, which the row model refuses
    response = client.post(f"{API}/factors/momentum", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert [(d["loc"], d["type"]) for d in response.json()["detail"]] == [
        (["body", "data", 7, "date"], "missing"),
        (["body", "data", 1_234, "asset_returns"], "finite_number"),
    ]


def test_the_bound_of_a_window_follows_the_build_limits(app_client: ClientFactory, panel: pl.DataFrame) -> None:
    """FACTOR_ENGINE_BUILD_LIMITS lowers the highest beta window for these requests as for a build."""
    assert BUILD_CONFIG_BOUNDS["styles.params.beta.window"] == (None, 5_040)
    with app_client(build_limits={"styles.params.beta.window": 50}) as client:
        data = json_rows(panel, USE4_INPUTS["beta"])
        refused = client.post(f"{API}/factors/beta", json={"data": data, "params": PARAMS["beta"]})
        allowed = client.post(f"{API}/factors/beta", json={"data": data, "params": {**PARAMS["beta"], "window": 50}})
    assert refused.status_code == 422 and "window = 60 is above the service's limit 50" in refused.text
    assert allowed.status_code == 200, allowed.text


def test_a_custom_style_of_the_settings_modules(
    app_client: ClientFactory, panel: pl.DataFrame, tmp_path: Any, monkeypatch: Any
) -> None:
    write_reversal_module(tmp_path, "fe_score_styles", "score_reversal", "score_rev")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with app_client(style_modules="fe_score_styles") as client:
            response = client.post(
                f"{API}/factors/score_reversal",
                json={"data": json_rows(panel, ["asset_returns"]), "params": {"window": 3}},
            )
        assert response.status_code == 200, response.text
        assert response.json()["factor"] == "score_rev"
        assert _scores(response.json()).equals(_library(panel, "score_reversal", {"window": 3}))
    finally:
        styles.unregister_style("score_reversal")
        sys.modules.pop("fe_score_styles", None)


# --------------------------------------------------------------------------------------------------------------
# the cells a request spans


def _diagonal(n: int) -> list[dict[str, Any]]:
    """``n`` rows, each on a date and a symbol of its own: ``n`` × ``n`` cells."""
    start = datetime.date(2000, 1, 3)
    return [
        {"symbol": f"S{i:05d}", "date": str(start + datetime.timedelta(days=i)), "asset_returns": 0.01}
        for i in range(n)
    ]


@pytest.mark.parametrize("path", ["/factors/momentum", "/factors/beta"])
def test_rows_spanning_too_many_cells_are_refused_at_once(app_client: ClientFactory, path: str) -> None:
    """6,000 rows (a few hundred KB) on 6,000 dates × 6,000 symbols: 36 million cells, over the default limit of
    25 million: refused before any kernel runs (momentum on 20,000 such rows took 40 s and 13 GB)."""
    with app_client() as client:
        started = time.perf_counter()
        response = client.post(f"{API}{path}", json={"data": _diagonal(6_000)})
        seconds = time.perf_counter() - started
    assert response.status_code == 422, response.text
    assert (
        "the 6,000 rows span 6,000 dates × 6,000 symbols = 36,000,000 (date, symbol) cells; the limit is 25,000,000 "
        "(FACTOR_ENGINE_MAX_SCORE_CELLS)" in response.json()["detail"]
    )
    assert seconds < 2.0


@pytest.mark.parametrize(("limit", "status"), [(60 * 300, 200), (60 * 300 - 1, 422)])
def test_the_cell_limit_is_the_settings(
    app_client: ClientFactory, market_panel: pl.DataFrame, limit: int, status: int
) -> None:
    """The seed's 60 symbols × 300 dates (18,000 cells) pass at a limit of 18,000 and are refused at 17,999."""
    assert market_panel.select(pl.col(DATE).n_unique() * pl.col(SYMBOL).n_unique()).item() == 60 * 300
    with app_client(max_score_cells=limit) as client:
        response = client.post(f"{API}/factors/size", json={"data": json_rows(market_panel, ["market_cap"])})
    assert response.status_code == status, response.text


def test_the_start_up_objects_are_frozen_while_the_app_runs(app_client: ClientFactory) -> None:
    """The lifespan moves the start-up's objects out of the collector's generations (a large body's objects no
    longer make full collections scan them) and gives them back when the app stops."""
    assert gc.get_freeze_count() == 0
    with app_client() as client:
        assert gc.get_freeze_count() > 10_000
        assert client.get(f"{API}/health").status_code == 200
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/factors/{style}", {"symbol", "date", "asset_returns", "market_cap", "volume", "debt_to_assets"}),
        ("/factors/momentum", {"symbol", "date", "asset_returns"}),
        ("/factors/value", {"symbol", "date", "book_price", "sales_price", "cf_price"}),
        ("/factors/size", {"symbol", "date", "market_cap"}),
    ],
)
def test_the_openapi_schema_documents_the_rows(client: TestClient, path: str, fields: set[str]) -> None:
    """The rows are validated by the endpoint (in batches off the event loop), and documented as their model."""
    spec = client.get("/openapi.json").json()
    body = spec["paths"][f"{API}{path}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    request = spec["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    rows = request["properties"]["data"]
    assert rows["type"] == "array" and rows["minItems"] == 1
    assert set(rows["items"]["properties"]) >= fields
    assert {"symbol", "date"} <= set(rows["items"]["required"])
