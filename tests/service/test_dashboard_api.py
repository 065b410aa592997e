"""What the dashboard needs from the service: GET /models/{id}/diagnostics equal to the built model's
regression diagnostics, the page at /dashboard (and / redirecting to it) outside the API key, its static files
and plotly.js from the python plotly package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from service_helpers import API, ClientFactory, model_config

from db_fixtures import IsolatedDatabase
from factor_engine.model import RiskModel, build_model
from factor_engine.panel import validate_panel
from factor_engine.storage import connect


@pytest.fixture(scope="module")
def built_model(market_panel: pl.DataFrame) -> RiskModel:
    """build_model called directly on the synthetic panel (the reference)."""
    return build_model(validate_panel(market_panel), model_config())


def _save(isolated: IsolatedDatabase, model: RiskModel) -> str:
    """Save ``model`` as a finished run of the isolated store; returns its id."""
    store = connect(isolated.url, schema=isolated.schema)
    try:
        run = store.create_run({"source": "test_dashboard_api"})
        store.start_run(run.id)
        store.save_model(run.id, model, timings={})
        return run.id
    finally:
        store.close()


def test_diagnostics_equal_the_built_model(
    database: IsolatedDatabase, app_client: ClientFactory, built_model: RiskModel
) -> None:
    model_id = _save(database, built_model)
    with app_client(database) as client:
        response = client.get(f"{API}/models/{model_id}/diagnostics")
        missing = client.get(f"{API}/models/nope/diagnostics")
    assert response.status_code == 200, response.text
    body = response.json()
    expected = built_model.diagnostics.sort("date")
    assert body["model_id"] == model_id
    assert body["dates"] == [day.isoformat() for day in expected.get_column("date")]
    assert body["n_assets"] == expected.get_column("n_assets").to_list()
    assert body["n_excluded"] == expected.get_column("n_excluded").to_list()
    r2 = np.array([np.nan if value is None else value for value in body["r2"]], dtype=float)
    np.testing.assert_array_equal(r2, expected.get_column("r2").cast(pl.Float64).fill_null(np.nan).to_numpy())
    # fitted dates' R² lie in [0, 1] (momentum warms up while the other factors are fitted: no date is skipped)
    assert np.isfinite(r2).sum() > 0.9 * r2.size and np.nanmin(r2) >= 0.0 and np.nanmax(r2) <= 1.0
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no model nope"}


def test_page_and_files_need_no_key_but_the_api_does(app_client: ClientFactory) -> None:
    with app_client(api_key="s3cret") as client:
        root = client.get("/", follow_redirects=False)
        page = client.get("/dashboard")
        script = client.get("/dashboard/static/dashboard.js")
        css = client.get("/dashboard/static/dashboard.css")
        bundle = client.get("/dashboard/static/plotly.min.js")
        unknown = client.get("/dashboard/static/secrets.py")
        without_key = client.get(f"{API}/models")
        with_key = client.get(f"{API}/models", headers={"X-API-Key": "s3cret"})
    assert root.status_code == 307 and root.headers["location"] == "/dashboard"
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for chart in ("cumulative-returns-market", "correlation-heatmap", "diagnostics-r2", "portfolio-risk"):
        assert f'data-chart="{chart}"' in page.text
    assert 'src="/dashboard/static/plotly.min.js"' in page.text and "cdn" not in page.text.lower()
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "X-API-Key" in script.text and "sessionStorage" in script.text
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    spec = importlib.util.find_spec("plotly")
    assert spec is not None and spec.submodule_search_locations
    shipped = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    assert bundle.status_code == 200 and bundle.content == shipped.read_bytes()
    assert bundle.headers["cache-control"] == "public, max-age=86400"
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "no dashboard file 'secrets.py'; files: dashboard.js, live.js, dashboard.css"}
    assert without_key.status_code == 401 and "missing API key" in without_key.json()["detail"]
    assert with_key.status_code == 200 and with_key.json() == []


def test_dashboard_is_not_in_the_openapi_schema(app_client: ClientFactory) -> None:
    with app_client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert f"{API}/models/{{model_id}}/diagnostics" in paths
    assert not [path for path in paths if path.startswith("/dashboard") or path == "/"]
