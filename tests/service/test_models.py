"""Risk model builds over HTTP on SQLite and PostgreSQL: numbers equal to ``build_model`` on the stored
panel, model reads, portfolio analytics equal to the library, background jobs, failures, interrupted runs and
retries, deletion, and every error answer."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from service_helpers import (
    API,
    ARBITRARY_SECTORS,
    TEST_CONFIG,
    ClientFactory,
    model_config,
    relabel_sectors,
    wait_for_job,
)

from db_fixtures import IsolatedDatabase
from factor_engine.config import ModelConfig
from factor_engine.model import RiskModel, build_model
from factor_engine.panel import GICS_SECTORS, SEED_SECTORS, validate_panel
from factor_engine.portfolio import decompose_risk, portfolio_exposures
from factor_engine.portfolio.snapshot import forecast_dates, snapshot_at
from factor_engine.service import builds, model_reads
from factor_engine.storage import Store, connect
from factor_engine.synthetic import generate_market
from style_modules import write_reversal_module

START, END = "2023-01-01", "2024-01-01"
REQUEST: dict[str, Any] = {"start_date": START, "end_date": END, "universe_size": 40, "config": TEST_CONFIG}


@pytest.fixture
def stored(database: IsolatedDatabase, market_panel: pl.DataFrame) -> Iterator[Store]:
    """The isolated store holding the synthetic panel."""
    store = connect(database.url, schema=database.schema)
    store.ingest_panel(validate_panel(market_panel))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="module")
def expected_model(market_panel: pl.DataFrame) -> RiskModel:
    """build_model called directly on the panel rows of REQUEST with the same configuration."""
    start, end = datetime.date.fromisoformat(START), datetime.date.fromisoformat(END)
    panel = validate_panel(market_panel.filter(pl.col("date").is_between(start, end)))
    return build_model(panel, model_config(40))


def _matrix(values: list[list[float | None]]) -> np.ndarray:
    return np.array([[np.nan if x is None else x for x in row] for row in values], dtype=float)


def _check_model_reads(client: TestClient, model_id: str, expected: RiskModel, store: Store) -> None:
    """Every read of the model equals the directly built model."""
    # the stored model itself
    loaded = store.load_model(model_id)
    assert loaded.factor_returns.equals(expected.factor_returns)
    assert loaded.exposures.equals(expected.exposures)
    assert loaded.specific_risk is not None and expected.specific_risk is not None
    assert loaded.specific_risk.equals(expected.specific_risk)
    # summary
    summary = client.get(f"{API}/models/{model_id}").json()
    assert summary["factors"] == list(expected.factors)
    assert summary["n_dates"] == expected.factor_returns.height
    assert summary["config"] == expected.config
    # factor returns
    body = client.get(f"{API}/models/{model_id}/factor-returns").json()
    factors = list(expected.factors)
    assert body["factors"] == factors
    assert body["dates"] == [str(d) for d in expected.factor_returns["date"]]
    want = expected.factor_returns.select(pl.col(factors).cast(pl.Float64)).to_numpy()
    np.testing.assert_array_equal(_matrix(body["returns"]), want)
    window = client.get(f"{API}/models/{model_id}/factor-returns", params={"start": "2023-12-01", "end": "2023-12-31"})
    assert all("2023-12-01" <= d <= "2023-12-31" for d in window.json()["dates"]) and window.json()["dates"]
    # dates with every forecast
    dates = client.get(f"{API}/models/{model_id}/dates").json()["dates"]
    assert dates == [str(d) for d in forecast_dates(expected)]
    day = dates[len(dates) // 2]
    date = datetime.date.fromisoformat(day)
    # covariance: default = last model date
    assert expected.factor_covariance is not None
    covariance = client.get(f"{API}/models/{model_id}/covariance").json()
    assert covariance["date"] == dates[-1]
    covariance = client.get(f"{API}/models/{model_id}/covariance", params={"date": day}).json()
    np.testing.assert_array_equal(_matrix(covariance["covariance"]), expected.factor_covariance.at(date))
    assert covariance["horizon"] == expected.factor_covariance.horizon
    # specific risk
    specific = client.get(f"{API}/models/{model_id}/specific-risk", params={"date": day}).json()
    want_specific = expected.specific_risk.filter(pl.col("date") == date).sort("symbol")
    assert specific["symbols"] == want_specific["symbol"].to_list()
    np.testing.assert_array_equal(
        np.array([np.nan if x is None else x for x in specific["specific_vol"]]),
        want_specific["specific_vol"].fill_null(np.nan).to_numpy(),
    )
    # exposures of two symbols
    rows = expected.exposures.filter(pl.col("date") == date).sort("symbol").head(2)
    symbols = rows["symbol"].to_list()
    exposures = client.get(
        f"{API}/models/{model_id}/exposures", params={"date": day, "symbols": ",".join(symbols)}
    ).json()
    assert exposures["symbols"] == symbols and exposures["factors"] == factors
    np.testing.assert_array_equal(_matrix(exposures["exposures"]), rows.select(factors).fill_null(np.nan).to_numpy())
    # portfolio analytics on that date, equal to the library on the directly built model
    snapshot = snapshot_at(expected, date)
    weights = {symbol: 1.0 / 10 for symbol in snapshot.symbols[:10]}
    benchmark = [{"symbol": symbol, "weight": 1.0 / 20} for symbol in snapshot.symbols[5:25]]
    request = {"model_id": model_id, "date": day, "weights": weights, "benchmark": benchmark}
    answer = client.post(f"{API}/portfolio/exposures", json=request)
    assert answer.status_code == 200, answer.text
    bench_map = {b["symbol"]: b["weight"] for b in benchmark}
    want_exposures = portfolio_exposures(snapshot, weights, bench_map)
    got = pl.DataFrame(answer.json()["exposures"])
    assert got.equals(want_exposures)
    risk = client.post(f"{API}/portfolio/risk", json={**request, "top": 3})
    assert risk.status_code == 200, risk.text
    decomposition = decompose_risk(snapshot, weights, bench_map)
    body = risk.json()
    assert body["daily"]["total_risk"] == decomposition.total_risk
    assert body["daily"]["tracking_error"] == decomposition.tracking_error
    assert body["daily"]["factor_risk"] == decomposition.factor_risk
    annualized = decomposition.annualized(252)
    assert body["annualized"]["total_risk"] == annualized.total_risk
    contributions = {row["factor"]: row["contribution"] for row in body["factor_contributions"]}
    for factor, contribution in decomposition.factor_contributions.select("factor", "contribution").iter_rows():
        assert contributions[factor] == contribution
    top = decomposition.asset_contributions.sort(pl.col("contribution").abs(), descending=True).head(3)
    assert [a["symbol"] for a in body["top_assets"]] == top["symbol"].to_list()
    # default date of the portfolio endpoints: the last model date
    latest = client.post(f"{API}/portfolio/exposures", json={"model_id": model_id, "weights": weights}).json()
    assert latest["date"] == dates[-1]


SEED_SYMBOLS = {"S00001": "AAPL", "S00002": "MSFT", "S00003": "GOOGL"}


@pytest.fixture(scope="module")
def seed_panel() -> pl.DataFrame:
    """Realistic history for the seed's request: 120 assets from 2021-01-04 to the end of 2023 (three of them
    named AAPL, MSFT and GOOGL), so momentum has its 13 months of look-back before 2023-01-01."""
    panel = generate_market(120, 780, seed=11, start=datetime.date(2021, 1, 4)).panel
    return panel.with_columns(pl.col("symbol").replace(SEED_SYMBOLS))


def test_seed_risk_model_example_as_written_equals_the_library(
    app_client: ClientFactory, database: IsolatedDatabase, seed_panel: pl.DataFrame
) -> None:
    """The seed's request: a model over the largest assets (universe_size) that covers its three symbols,
    with the stored history before start_date as warm-up; equal to build_model(...).between(start, end)."""
    seed = {
        "universe_symbols": ["AAPL", "MSFT", "GOOGL"],
        "start_date": "2023-01-01",
        "end_date": "2024-01-01",
        "universe_size": 3000,
    }
    store = connect(database.url, schema=database.schema)
    try:
        store.ingest_panel(validate_panel(seed_panel))
        start, end = datetime.date(2023, 1, 1), datetime.date(2024, 1, 1)
        history = store.load_panel(start=start - datetime.timedelta(days=730), end=end)
        config = ModelConfig.from_mapping({"universe": {"size": 3000, "include": ["AAPL", "MSFT", "GOOGL"]}})
        expected = build_model(validate_panel(history), config).between(start, end)
        with app_client(database) as client:
            response = client.post(f"{API}/risk-model/create", json=seed)
            assert response.status_code == 200, response.text
            summary = response.json()
            assert summary["first_date"] >= "2023-01-02" and summary["last_date"] <= "2024-01-01"
            assert summary["n_dates"] == expected.factor_returns.height > 240
            loaded = store.load_model(summary["id"])
            assert loaded.factor_returns.equals(expected.factor_returns)
            assert loaded.exposures.equals(expected.exposures)
            assert loaded.factor_covariance is not None and expected.factor_covariance is not None
            np.testing.assert_array_equal(loaded.factor_covariance.values, expected.factor_covariance.values)
            covered = client.get(f"{API}/models/{summary['id']}/exposures", params={"symbols": "AAPL,MSFT,GOOGL"})
            assert covered.status_code == 200, covered.text
            assert "AAPL" in covered.text and "GOOGL" in covered.text
    finally:
        store.close()


def test_a_universe_restricted_to_three_symbols_explains_why_it_cannot_be_built(
    app_client: ClientFactory, database: IsolatedDatabase, stored: Store
) -> None:
    """Only 3 assets: fewer than factors on every date, so 422 saying so (no empty model)."""
    request = {
        "universe_symbols": ["S00001", "S00002", "S00003"],
        "restrict_to_symbols": True,
        "start_date": START,
        "end_date": END,
        "universe_size": 3000,
    }
    with app_client(database) as client:
        response = client.post(f"{API}/risk-model/create", json=request)
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert detail.startswith("cannot build a risk model: at most 3 assets on any date for")
        assert "needs at least as many assets as factors on a date" in detail
        assert client.get(f"{API}/jobs").json() == []
        assert client.get(f"{API}/models").json() == []


def test_direct_build_equals_build_model(
    app_client: ClientFactory, database: IsolatedDatabase, stored: Store, expected_model: RiskModel
) -> None:
    # the reference: build_model on the panel as the store gives it back, with the same configuration
    start, end = datetime.date.fromisoformat(START), datetime.date.fromisoformat(END)
    from_store = build_model(validate_panel(stored.load_panel(start=start, end=end)), model_config(40))
    assert from_store.factor_returns.equals(expected_model.factor_returns)
    assert from_store.factor_covariance is not None and expected_model.factor_covariance is not None
    np.testing.assert_array_equal(from_store.factor_covariance.values, expected_model.factor_covariance.values)
    with app_client(database) as client:
        response = client.post(f"{API}/risk-model/create", json=REQUEST)
        assert response.status_code == 200, response.text
        model_id = response.json()["id"]
        assert response.json()["model_url"] == f"{API}/models/{model_id}"
        assert [m["id"] for m in client.get(f"{API}/models").json()] == [model_id]
        job = client.get(f"{API}/jobs/{model_id}").json()
        assert job["status"] == "succeeded" and job["progress"] == 1.0
        assert set(builds.BUILD_STAGES[:-1]) <= set(job["timings"])
        _check_model_reads(client, model_id, expected_model, stored)


def test_background_build_equals_build_model(
    app_client: ClientFactory, database: IsolatedDatabase, stored: Store, expected_model: RiskModel
) -> None:
    with app_client(database) as client:
        response = client.post(f"{API}/risk-model/create", json={**REQUEST, "background": True})
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["status"] == "queued"
        assert accepted["status_url"] == f"{API}/jobs/{accepted['job_id']}"
        job = wait_for_job(client, accepted["job_id"])
        assert job["status"] == "succeeded", job
        assert job["model_url"] == f"{API}/models/{accepted['job_id']}"
        assert job["error"] is None and job["progress"] == 1.0
        _check_model_reads(client, accepted["job_id"], expected_model, stored)


def test_large_build_becomes_a_job(app_client: ClientFactory, stored: Store, database: IsolatedDatabase) -> None:
    with app_client(database, sync_build_max_rows=1000) as client:
        response = client.post(f"{API}/risk-model/create", json=REQUEST)
        assert response.status_code == 202
        assert wait_for_job(client, response.json()["job_id"])["status"] == "succeeded"
        forced = client.post(f"{API}/risk-model/create", json={**REQUEST, "background": False})
        assert forced.status_code == 200


def test_job_failure_then_retry(
    app_client: ClientFactory, stored: Store, database: IsolatedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> RiskModel:
        raise ValueError("boom: the build broke")

    with app_client(database) as client:
        monkeypatch.setattr(builds, "build_model", broken)
        job_id = client.post(f"{API}/risk-model/create", json={**REQUEST, "background": True}).json()["job_id"]
        job = wait_for_job(client, job_id)
        assert job["status"] == "failed"
        assert job["error"] == "boom: the build broke"
        assert job["model_url"] is None
        assert client.get(f"{API}/models/{job_id}").json() == {"detail": f"no model {job_id}"}
        direct = client.post(f"{API}/risk-model/create", json=REQUEST)
        assert direct.status_code == 422
        assert direct.json()["detail"].startswith("cannot build the model: boom: the build broke (job ")
        monkeypatch.undo()
        retry = client.post(f"{API}/jobs/{job_id}/retry")
        assert retry.status_code == 202
        new_id = retry.json()["job_id"]
        assert new_id != job_id
        assert wait_for_job(client, new_id)["status"] == "succeeded"
        again = client.post(f"{API}/jobs/{new_id}/retry")
        assert again.status_code == 409
        assert again.json()["detail"] == f"job {new_id} is succeeded; only a failed job can be retried"
        failed = client.get(f"{API}/jobs", params={"status": "failed"}).json()
        assert job_id in [j["id"] for j in failed]


def test_interrupted_run_is_failed_at_startup_and_retried(
    app_client: ClientFactory, stored: Store, database: IsolatedDatabase
) -> None:
    run = stored.create_run(REQUEST)
    stored.start_run(run.id)
    stored.update_progress(run.id, "styles", 0.25, {"load panel": 0.1})
    with app_client(database) as client:
        job = client.get(f"{API}/jobs/{run.id}").json()
        assert job["status"] == "failed"
        assert job["error"].startswith(builds.INTERRUPTED)
        assert "no service worker holds the build" in job["error"]
        assert client.get(f"{API}/models").json() == []
        retry = client.post(f"{API}/jobs/{run.id}/retry")
        assert retry.status_code == 202
        assert wait_for_job(client, retry.json()["job_id"])["status"] == "succeeded"
        assert len(client.get(f"{API}/models").json()) == 1


def test_delete_model(app_client: ClientFactory, stored: Store, database: IsolatedDatabase) -> None:
    with app_client(database) as client:
        model_id = client.post(f"{API}/risk-model/create", json=REQUEST).json()["id"]
        weights = {client.get(f"{API}/models/{model_id}/specific-risk").json()["symbols"][0]: 1.0}
        assert (
            client.post(f"{API}/portfolio/exposures", json={"model_id": model_id, "weights": weights}).status_code
            == 200
        )
        running = stored.create_run(REQUEST)
        stored.start_run(running.id)
        busy = client.delete(f"{API}/models/{running.id}")
        assert busy.status_code == 409
        assert (
            busy.json()["detail"]
            == f"model {running.id} is being built (job running); delete it when the job has ended"
        )
        assert client.delete(f"{API}/models/{model_id}").status_code == 204
        assert client.get(f"{API}/models/{model_id}").json() == {"detail": f"no model {model_id}"}
        assert client.delete(f"{API}/models/{model_id}").status_code == 404
        # the in-process snapshot is gone with it
        gone = client.post(f"{API}/portfolio/exposures", json={"model_id": model_id, "weights": weights})
        assert gone.status_code == 404 and gone.json() == {"detail": f"no model {model_id}"}


def test_a_model_deleted_during_a_read_is_404_not_500(
    app_client: ClientFactory, stored: Store, database: IsolatedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by schemathesis: a DELETE between a read's existence check and its query gave a 500."""
    with app_client(database) as client:
        model_id = client.post(f"{API}/risk-model/create", json=REQUEST).json()["id"]
        summary = stored.get_model(model_id)
        stored.delete_model(model_id)  # gone, but the existence check below still says it is there
        monkeypatch.setattr(model_reads, "_model", lambda _store, _model_id: summary)
        response = client.get(f"{API}/models/{model_id}/factor-returns")
        assert response.status_code == 404 and response.json() == {"detail": f"no model {model_id}"}


def test_request_errors(app_client: ClientFactory, tmp_path: Any, market_panel: pl.DataFrame) -> None:
    sqlite = IsolatedDatabase("sqlite", f"sqlite:///{tmp_path / 'errors.db'}", None)
    store = connect(sqlite.url)
    store.ingest_panel(validate_panel(market_panel))
    store.close()
    create = f"{API}/risk-model/create"
    with app_client(sqlite) as client:
        no_data = "the date range 2030-01-01 → 2030-12-31 has no data for any symbol; the store holds 2023-01-02 →"
        cases: list[tuple[dict[str, Any], str]] = [
            ({"universe_symbols": []}, "universe is empty: universe_symbols is an empty list"),
            ({"universe_symbols": ["NOPE", "ZZZ"]}, "universe is empty: none of the 2 universe_symbols"),
            ({"universe_symbols": ["S00001", "ZZZ"]}, "1 of the universe_symbols are not in the store: 'ZZZ'"),
            ({"start_date": "2030-01-01", "end_date": "2030-12-31"}, no_data),
            ({"start_date": "2024-01-01", "end_date": "2023-01-01"}, "start_date 2024-01-01 is after end_date"),
            ({"config": {"covarianc": {}}}, "unknown section(s) ['covarianc']"),
            ({"config": {"styles": {"momentum": {"window": 3}}}}, "[styles.momentum] unknown parameter(s) ['window']"),
            ({"config": {"regression": {"method": "ols"}}}, "[regression] method must be 'barra' or 'toraniko'"),
        ]
        for change, message in cases:
            body = {**REQUEST, **change}
            response = client.post(create, json=body)
            assert response.status_code == 422, (body, response.text)
            assert message in response.json()["detail"], response.json()
        response = client.post(create, json={**REQUEST, "universe_size": -1})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "universe_size"]
        response = client.post(create, json={**REQUEST, "universe": ["A"]})
        assert response.status_code == 422 and response.json()["detail"][0]["msg"] == "Extra inputs are not permitted"
        assert client.get(f"{API}/jobs").json() == []  # no run was created for a rejected request

        for path in ("", "/dates", "/factor-returns", "/covariance", "/specific-risk", "/exposures"):
            response = client.get(f"{API}/models/abc{path}")
            assert response.status_code == 404 and response.json() == {"detail": "no model abc"}, path
        assert client.delete(f"{API}/models/abc").json() == {"detail": "no model abc"}
        assert client.get(f"{API}/jobs/abc").json() == {"detail": "no job abc"}
        assert client.post(f"{API}/jobs/abc/retry").json() == {"detail": "no job abc"}
        assert client.post(f"{API}/portfolio/risk", json={"model_id": "abc", "weights": {"A": 1}}).status_code == 404

        model_id = client.post(create, json=REQUEST).json()["id"]
        portfolio = f"{API}/portfolio/exposures"
        held = client.get(f"{API}/models/{model_id}/specific-risk").json()["symbols"][0]
        weights = {held: 0.5, "NOPE1": 0.2, "NOPE2": 0.3}
        response = client.post(portfolio, json={"model_id": model_id, "weights": weights})
        assert response.status_code == 422
        assert "weights name 2 symbol(s) the model does not cover on" in response.json()["detail"]
        assert "'NOPE1', 'NOPE2'" in response.json()["detail"]
        dropped = client.post(portfolio, json={"model_id": model_id, "weights": weights, "unknown": "drop"})
        assert dropped.status_code == 200 and dropped.json()["dropped_symbols"] == ["NOPE1", "NOPE2"]
        response = client.post(portfolio, json={"model_id": model_id, "weights": {}})
        assert (
            response.status_code == 422 and response.json()["detail"] == "weights are empty: give at least one symbol"
        )
        duplicated = [{"symbol": held, "weight": 0.5}, {"symbol": held, "weight": 0.5}]
        response = client.post(portfolio, json={"model_id": model_id, "weights": duplicated})
        assert response.status_code == 422 and "more than once" in response.json()["detail"]
        response = client.post(portfolio, json={"model_id": model_id, "weights": {held: 1}, "date": "2023-01-03"})
        assert response.status_code == 422
        assert response.json()["detail"].startswith("no risk forecast for 2023-01-03")
        response = client.get(f"{API}/models/{model_id}/covariance", params={"date": "2023-01-03"})
        assert response.status_code == 422
        assert response.json()["detail"].startswith(f"model {model_id} has no factor covariance forecast on 2023-01-03")
        response = client.get(f"{API}/models/{model_id}/exposures", params={"symbols": f"{held},NOPE"})
        assert response.status_code == 422 and "for 1 symbol(s): NOPE" in response.json()["detail"]
        response = client.get(f"{API}/models/{model_id}/covariance", params={"date": "yesterday"})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "date"]


def test_stored_panel_that_cannot_feed_the_model(
    app_client: ClientFactory, tmp_path: Any, market_panel: pl.DataFrame
) -> None:
    sqlite = IsolatedDatabase("sqlite", f"sqlite:///{tmp_path / 'partial.db'}", None)
    store = connect(sqlite.url)
    store.ingest_panel(validate_panel(market_panel.drop("book_price", "sales_price", "cf_price")))
    store.close()
    with app_client(sqlite) as client:
        named = {**TEST_CONFIG, "styles": {**TEST_CONFIG["styles"], "names": ["momentum", "value", "size"]}}
        response = client.post(f"{API}/risk-model/create", json={**REQUEST, "config": named})
        assert response.status_code == 422
        assert "style 'value' needs column(s) ['book_price', 'sales_price', 'cf_price']" in response.json()["detail"]
        # without names the model takes the styles the data supports
        response = client.post(f"{API}/risk-model/create", json=REQUEST)
        assert response.status_code == 200, response.text
        assert response.json()["styles"] == ["beta_score", "mom_score", "nlsize_score", "resvol_score", "sze_score"]
        without_value = {**TEST_CONFIG, "styles": {**TEST_CONFIG["styles"], "names": ["momentum", "size"]}}
        # a returns-only row of a new symbol: its market cap and sector are missing; a missing cap is allowed
        # (the model leaves the row out), a missing sector is not
        rows = [{"date": "2023-06-01", "symbol": "NEW1", "asset_returns": 0.01}]
        assert client.post(f"{API}/data/panel", json={"rows": rows}).status_code == 200
        response = client.post(f"{API}/risk-model/create", json={**REQUEST, "config": without_value})
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert "sector must be a non-empty label (not null or blank): 1 bad row, e.g. (2023-06-01, NEW1)" in detail
        assert "market_cap" not in detail and "problems" not in detail  # the only problem
        response = client.post(
            f"{API}/risk-model/create", json={**REQUEST, "config": without_value, "end_date": "2023-05-31"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["styles"] == ["mom_score", "sze_score"]


@pytest.mark.parametrize("taxonomy", ["seed", "gics", "arbitrary"])
def test_model_on_any_sector_names_and_its_portfolio_exposures(
    app_client: ClientFactory, database: IsolatedDatabase, market_panel: pl.DataFrame, taxonomy: str
) -> None:
    """A panel labelled with the seed's sector names, GICS names or arbitrary labels, built with the seed's
    POST /risk-model/create body: the model's summary lists them as its sectors, and POST /portfolio/exposures
    gives each sector the summed weight of the portfolio's assets labelled so on that date (the closed form of
    a 0/1 dummy), equal to the library on the directly built model."""
    labels = {"seed": SEED_SECTORS, "gics": GICS_SECTORS, "arbitrary": ARBITRARY_SECTORS}[taxonomy]
    panel = relabel_sectors(market_panel, labels)
    store = connect(database.url, schema=database.schema)
    try:
        store.ingest_panel(validate_panel(panel))
    finally:
        store.close()
    start, end = datetime.date.fromisoformat(START), datetime.date.fromisoformat(END)
    expected = build_model(validate_panel(panel.filter(pl.col("date").is_between(start, end))), model_config(40))
    with app_client(database) as client:
        response = client.post(f"{API}/risk-model/create", json=REQUEST)
        assert response.status_code == 200, response.text
        model_id = response.json()["id"]
        summary = client.get(f"{API}/models/{model_id}").json()
        assert summary["sectors"] == list(expected.sectors)
        assert set(summary["sectors"]) == set(labels)
        day = client.get(f"{API}/models/{model_id}/dates").json()["dates"][-1]
        snapshot = snapshot_at(expected, day)
        held = snapshot.symbols[:12]
        weights = {symbol: (k + 1) / 78 for k, symbol in enumerate(held)}  # 1/78 … 12/78: sums to 1
        answer = client.post(f"{API}/portfolio/exposures", json={"model_id": model_id, "weights": weights})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["date"] == day and body["dropped_symbols"] == []
    got = {row["factor"]: row["portfolio"] for row in body["exposures"]}
    sector_of = dict(panel.filter(pl.col("date") == datetime.date.fromisoformat(day)).select("symbol", "sector").rows())
    for sector in set(labels):
        by_hand = sum(weight for symbol, weight in weights.items() if sector_of[symbol] == sector)
        assert got[sector] == pytest.approx(by_hand, abs=1e-15)
    assert got["market"] == pytest.approx(1.0, abs=1e-15)
    library = portfolio_exposures(snapshot, weights)
    assert pl.DataFrame(body["exposures"]).equals(library)


def test_equal_caps_model_drops_size_and_prices_portfolio_risk(
    app_client: ClientFactory, database: IsolatedDatabase, market_panel: pl.DataFrame
) -> None:
    """Every market cap equal: the build leaves size out (no exposure on any date) and says so in the stored
    model's notes, and POST /portfolio/risk answers the library's decomposition of the directly built model."""
    panel = market_panel.with_columns(pl.lit(5e9).alias("market_cap"))
    store = connect(database.url, schema=database.schema)
    try:
        store.ingest_panel(validate_panel(panel))
        start, end = datetime.date.fromisoformat(START), datetime.date.fromisoformat(END)
    finally:
        store.close()
    with app_client(database) as client:
        response = client.post(f"{API}/risk-model/create", json=REQUEST)
        assert response.status_code == 200, response.text
        model_id = response.json()["id"]
        assert "sze_score" not in response.json()["factors"]
        # the response says what was left out and why (the build's notes and warnings)
        assert response.json()["build"]["factors_dropped"]["sze_score"].startswith("no exposure on any date")
        assert any(w.startswith("factor 'sze_score' left out of the model") for w in response.json()["warnings"])
        assert client.get(f"{API}/models/{model_id}").json()["build"] == response.json()["build"]
        day = client.get(f"{API}/models/{model_id}/dates").json()["dates"][-1]
        store = connect(database.url, schema=database.schema)
        try:
            stored = store.load_model(model_id)
            loaded_panel = store.load_panel(start=builds.history_start(builds_request()), end=end)
        finally:
            store.close()
        assert stored.notes["factors_dropped"]["sze_score"].startswith("no exposure on any date")
        expected = build_model(validate_panel(loaded_panel), model_config(40)).between(start, end)
        snapshot = snapshot_at(expected, day)
        weights = {symbol: 1.0 / 15 for symbol in snapshot.symbols[:15]}
        risk = client.post(f"{API}/portfolio/risk", json={"model_id": model_id, "date": day, "weights": weights})
    assert risk.status_code == 200, risk.text
    decomposition = decompose_risk(snapshot, weights)
    assert risk.json()["daily"]["total_risk"] == pytest.approx(decomposition.total_risk, rel=1e-12)
    assert 0.0 < decomposition.total_risk < 0.05


def builds_request() -> Any:
    from factor_engine.service.schemas import CreateModelRequest

    return CreateModelRequest.model_validate(REQUEST)


def test_portfolio_weights_that_look_wrong(
    app_client: ClientFactory, database: IsolatedDatabase, stored: Store
) -> None:
    """Percentage-like weights are a 422 naming why and the opt-in; weights not summing to 1 are used as given
    with a warning in the answer; allow_unnormalized keeps long-short books possible."""
    with app_client(database) as client:
        response = client.post(f"{API}/risk-model/create", json=REQUEST)
        assert response.status_code == 200, response.text
        model_id = response.json()["id"]
        day = client.get(f"{API}/models/{model_id}/dates").json()["dates"][-1]
        snapshot = stored.snapshot(model_id, datetime.date.fromisoformat(day))
        a, b, c = snapshot.symbols[:3]

        def post(path: str, **fields: Any) -> Any:
            return client.post(f"{API}/portfolio/{path}", json={"model_id": model_id, **fields})

        percent = post("exposures", weights={a: 60.0, b: 40.0})
        assert percent.status_code == 422
        assert percent.json()["detail"] == (
            f"weights look like percentages, not fractions of capital: they sum to 100 and {a!r} has 60 (more "
            "than 150% of capital). Weights are fractions (0.05 is 5 %): divide percentages by 100, or send "
            '"allow_unnormalized": true for a leveraged or long-short book'
        )
        bench = post("risk", weights={a: 1.0}, benchmark=[{"symbol": b, "weight": 100.0}])
        assert bench.status_code == 422
        assert bench.json()["detail"].startswith(
            f"benchmark weights look like percentages, not fractions of capital: they sum to 100 and {b!r} has 100"
        )
        warned = {path: post(path, weights={a: 0.5, b: 0.4}) for path in ("exposures", "risk")}
        clean = post("risk", weights={a: 0.5, b: 0.5})
        long_short = post("risk", weights={a: 2.0, b: -1.0, c: -1.0}, allow_unnormalized=True)
    message = (
        "weights sum to 0.9, not 1 (tolerance 0.01): the figures are of these weights as given, not rescaled; scale "
        'them to sum to 1, or send "allow_unnormalized": true for a long-short, active or partly invested book'
    )
    for answer in warned.values():
        assert answer.status_code == 200, answer.text
        assert answer.json()["warnings"] == [message]
    # used as given: the library's numbers of the same 0.9 book (and h·Σ·h by hand)
    library = decompose_risk(snapshot, {a: 0.5, b: 0.4}, allow_unnormalized=True)
    assert warned["risk"].json()["daily"]["total_risk"] == library.total_risk
    h = np.zeros(snapshot.n_assets)
    h[:2] = [0.5, 0.4]
    assert library.total_risk == pytest.approx(float(np.sqrt(h @ snapshot.asset_covariance() @ h)), rel=1e-12)
    assert clean.status_code == 200 and clean.json()["warnings"] == []
    assert long_short.status_code == 200, long_short.text
    assert long_short.json()["warnings"] == []
    expected = decompose_risk(snapshot, {a: 2.0, b: -1.0, c: -1.0}, allow_unnormalized=True)
    assert long_short.json()["daily"]["total_risk"] == expected.total_risk


def test_custom_style_modules_named_by_the_settings(
    app_client: ClientFactory, database: IsolatedDatabase, stored: Store, tmp_path: Any, monkeypatch: Any
) -> None:
    """A custom style reaches the service through FACTOR_ENGINE_STYLE_MODULES (imported at start-up); a build
    request may name only those modules: the service never imports a module a request names on its own."""
    from factor_engine import styles

    write_reversal_module(tmp_path, "fe_service_styles", "svc_reversal", "svc_rev_score")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = {**TEST_CONFIG, "styles": {**TEST_CONFIG["styles"], "names": ["momentum", "size", "svc_reversal"]}}
    try:
        with app_client(database, style_modules="fe_service_styles") as client:
            response = client.post(
                f"{API}/risk-model/create",
                json={
                    **REQUEST,
                    "config": {**config, "styles": {**config["styles"], "modules": ["fe_service_styles"]}},
                },
            )
            assert response.status_code == 200, response.text
            assert response.json()["styles"] == ["mom_score", "svc_rev_score", "sze_score"]
            refused = client.post(
                f"{API}/risk-model/create",
                json={**REQUEST, "config": {**config, "styles": {**config["styles"], "modules": ["antigravity"]}}},
            )
        assert refused.status_code == 422
        assert (
            "[styles] modules ['antigravity'] are not among the service's style modules (fe_service_styles)"
            in (refused.json()["detail"])
        )
    finally:
        styles.unregister_style("svc_reversal")
        sys.modules.pop("fe_service_styles", None)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("adjustments", "eigenfactor_simulations", 10**9, "[adjustments] eigenfactor_simulations = 1000000000 is above"
         " the service's limit 10000"),
        ("specific_risk", "n_size_groups", 10**9, "[specific_risk] n_size_groups = 1000000000 is above the service's"
         " limit 100"),
        ("covariance", "vol_nw_lags", 500, "[covariance] vol_nw_lags = 500 is above the service's limit 21"),
        ("adjustments", "eigenfactor_every", 1, "[adjustments] eigenfactor_every = 1 is below the service's limit 5"),
    ],
)  # fmt: skip
def test_build_config_out_of_bounds_is_422_before_any_build(
    app_client: ClientFactory, database: IsolatedDatabase, stored: Store, section: str, key: str, value: int,
    message: str,
) -> None:  # fmt: skip
    config = {**TEST_CONFIG, section: {**TEST_CONFIG.get(section, {}), key: value}}
    with app_client(database) as client:
        response = client.post(f"{API}/risk-model/create", json={**REQUEST, "config": config})
        assert response.status_code == 422
        assert f"config: {message}" in response.json()["detail"]
        assert client.get(f"{API}/jobs").json() == []  # no run was created, no build started
    # the settings raise a limit (FACTOR_ENGINE_BUILD_LIMITS), never lower the configuration's own checks
    if key == "eigenfactor_simulations":
        raised = {"adjustments.eigenfactor_simulations": 2e9}
        small = {**config, "adjustments": {**config["adjustments"], "eigenfactor_simulations": 20}}
        with app_client(database, build_limits=raised) as client:
            assert client.post(f"{API}/risk-model/create", json={**REQUEST, "config": small}).status_code == 200


def test_request_lists_are_bounded(app_client: ClientFactory, database: IsolatedDatabase, stored: Store) -> None:
    with app_client(database) as client:
        too_many = client.post(f"{API}/risk-model/create", json={**REQUEST, "universe_symbols": ["A"] * 20_001})
        assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"][-1] == "universe_symbols"
        too_big = client.post(f"{API}/risk-model/create", json={**REQUEST, "universe_size": 10**9})
        assert too_big.status_code == 422 and too_big.json()["detail"][0]["loc"][-1] == "universe_size"
