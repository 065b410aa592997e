"""POST /portfolio/optimize: per constraint type, its weights equal the library's ``optimize`` on the stored
snapshot and meet the constraint on the explicit Σ (numpy), with the library's risk and exposures; each infeasible
type is a 422 naming the conflict; unknown models, dates and hostile bodies get clean 4xx answers."""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_helpers import API, ClientFactory

from db_fixtures import IsolatedDatabase
from factor_engine.model import RiskModel
from factor_engine.portfolio import RiskModelSnapshot, decompose_risk, portfolio_exposures
from factor_engine.portfolio.spec import SPEC_KEYS
from factor_engine.service import Settings, create_app
from factor_engine.service.limits import MAX_OPTIMIZE_FACTORS
from factor_engine.service.schemas import OptimizeRequest
from factor_engine.storage import connect
from optimize_cases import (
    FEASIBLE,
    SAME,
    TOL,
    Case,
    Infeasible,
    Inputs,
    by_symbol,
    feasible_cases,
    infeasible_cases,
    inputs,
    library_weights,
    small_model,
)

OPTIMIZE = f"{API}/portfolio/optimize"


def save(url: str, schema: str | None, model: RiskModel) -> str:
    """Save ``model`` as a finished run of the store at ``url``; returns its id."""
    store = connect(url, schema=schema)
    try:
        run = store.create_run({"source": "test_optimize_api"})
        store.start_run(run.id)
        store.save_model(run.id, model, timings={})
        return run.id
    finally:
        store.close()


@pytest.fixture(scope="module")
def model() -> RiskModel:
    return small_model()


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, model: RiskModel) -> tuple[str, str]:
    """(SQLite URL, model id) of a store holding the small model."""
    url = f"sqlite:///{tmp_path_factory.mktemp('optimize_api') / 'store.db'}"
    return url, save(url, None, model)


@pytest.fixture(scope="module")
def client(stored: tuple[str, str]) -> Iterator[TestClient]:
    settings = Settings(database_url=stored[0], database_schema=None, redis_url=None, api_key=None)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def model_id(stored: tuple[str, str]) -> str:
    return stored[1]


@pytest.fixture(scope="module")
def snapshot(stored: tuple[str, str]) -> RiskModelSnapshot:
    """The stored model's snapshot at its last date, as the service reads it."""
    store = connect(stored[0])
    try:
        return store.snapshot(stored[1], store.model_dates(stored[1])[-1])
    finally:
        store.close()


@pytest.fixture(scope="module")
def given(snapshot: RiskModelSnapshot, model: RiskModel) -> Inputs:
    return inputs(snapshot, model.styles)


@pytest.fixture(scope="module")
def cases(snapshot: RiskModelSnapshot, given: Inputs) -> dict[str, Case]:
    return {case.name: case for case in feasible_cases(snapshot, given)}


@pytest.fixture(scope="module")
def infeasible(snapshot: RiskModelSnapshot, given: Inputs) -> dict[str, Infeasible]:
    return {case.name: case for case in infeasible_cases(snapshot, given)}


def test_the_request_has_exactly_the_spec_keys() -> None:
    """The JSON body and optimize.toml name the same keys (one OptimizeSpec translates both)."""
    assert set(OptimizeRequest.model_fields) - {"model_id", "date"} == set(SPEC_KEYS)


@pytest.mark.parametrize("name", FEASIBLE)
def test_weights_equal_the_library_and_meet_the_constraint(
    name: str, cases: dict[str, Case], client: TestClient, model_id: str, snapshot: RiskModelSnapshot
) -> None:
    case = cases[name]
    spec = dict(case.spec)
    if "benchmark" in spec:  # the list form of weights, as /portfolio/risk takes it
        spec["benchmark"] = [{"symbol": s, "weight": w} for s, w in spec["benchmark"].items()]
    response = client.post(OPTIMIZE, json={"model_id": model_id, **spec})
    assert response.status_code == 200, response.text
    body = response.json()
    assert all(row["weight"] != 0.0 for row in body["weights"])
    weights = by_symbol(snapshot, body["weights"])
    library = case.library(snapshot)
    np.testing.assert_allclose(weights, library_weights(library), rtol=0, atol=SAME)
    assert abs(weights.sum() - 1.0) <= TOL
    case.check(weights)
    assert body["status"] == library.status and body["objective"] == case.spec.get("objective", "min-variance")
    # the risk and exposures of these weights, as the library gives them
    held = dict(zip(snapshot.symbols, weights.tolist(), strict=True))
    risk = decompose_risk(snapshot, held, allow_unnormalized=True)
    assert body["daily"]["total_risk"] == pytest.approx(risk.total_risk, rel=1e-12)
    assert body["daily"]["factor_risk"] == pytest.approx(risk.factor_risk, rel=1e-12)
    assert body["annualized"]["specific_risk"] == pytest.approx(risk.specific_risk * math.sqrt(252), rel=1e-12)
    benchmark = case.spec.get("benchmark")
    if benchmark is None:
        assert body["daily"]["tracking_error"] is None
    else:
        active = weights - np.array([benchmark.get(s, 0.0) for s in snapshot.symbols])
        by_hand = float(np.sqrt(active @ _sigma(snapshot) @ active))
        assert body["daily"]["tracking_error"] == pytest.approx(by_hand, rel=1e-9)
        assert body["annualized"]["tracking_error"] == pytest.approx(by_hand * math.sqrt(252), rel=1e-9)
    exposures = portfolio_exposures(snapshot, held, benchmark, allow_unnormalized=True)
    np.testing.assert_allclose(
        [row["active"] for row in body["exposures"]], exposures.get_column("active").to_numpy(), rtol=0, atol=1e-12
    )


def _sigma(snapshot: RiskModelSnapshot) -> np.ndarray:
    b = snapshot.exposures
    return b @ snapshot.factor_covariance @ b.T + np.diag(snapshot.specific_vol**2)


@pytest.mark.parametrize("name", FEASIBLE)
def test_infeasible_sets_are_422_naming_the_conflict(
    name: str, infeasible: dict[str, Infeasible], client: TestClient, model_id: str
) -> None:
    case = infeasible[name]
    response = client.post(OPTIMIZE, json={"model_id": model_id, **case.spec})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    for words in case.words:
        assert words in detail, detail


def test_unknown_model_and_dates(client: TestClient, model_id: str, model: RiskModel) -> None:
    missing = client.post(OPTIMIZE, json={"model_id": "nope"})
    assert missing.status_code == 404 and missing.json() == {"detail": "no model nope"}
    early = client.post(OPTIMIZE, json={"model_id": model_id, "date": "1999-01-04"})
    assert early.status_code == 422, early.text
    assert early.json()["detail"].startswith("no risk forecast for 1999-01-04")
    # an earlier model date: that date's snapshot
    dates = client.get(f"{API}/models/{model_id}/dates").json()["dates"]
    day = dates[-10]
    answer = client.post(OPTIMIZE, json={"model_id": model_id, "date": day, "long_only": True})
    assert answer.status_code == 200 and answer.json()["date"] == day


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"objective": "max-risk"}, 422, "objective"),
        ({"max_weight": "NaN"}, 422, "max_weight"),
        ({"max_weight": 0}, 422, "max_weight must be > 0, not 0"),
        ({"max_turnover": -1, "current": {"S00001": 1.0}}, 422, "max_turnover must be >= 0, not -1"),
        ({"max_turnover": 0.1}, 422, "max_turnover needs current"),
        ({"neutral": ["quality"]}, 422, "neutral names unknown factor 'quality'"),
        ({"neutral": [f"f{k}" for k in range(MAX_OPTIMIZE_FACTORS + 1)]}, 422, "neutral"),
        ({"factor_bounds": {"x" * 10_000: [0, 1]}}, 422, "factor_bounds"),
        ({"factor_bounds": {"market": [1]}}, 422, "factor_bounds"),
        ({"factor_bounds": {"market": [None, None]}}, 422, "factor_bounds['market'] bounds nothing"),
        ({"benchmark": "everything"}, 422, "benchmark"),
        ({"benchmark": {"S00001": 60.0, "S00002": 40.0}}, 422, 'send "allow_unnormalized": true'),
        (
            {"benchmark": [{"symbol": "S00001", "weight": 0.5}, {"symbol": "S00001", "weight": 0.5}]},
            422,
            "more than once",
        ),
        ({"current": {"NOT_A_SYMBOL": 1.0}, "max_turnover": 1}, 422, "does not cover: 'NOT_A_SYMBOL'"),
        ({"alpha": {"S00001": 0.1}}, 422, "alpha is used only by objective max-alpha"),
        ({"long_only": "yes please"}, 422, "long_only"),
        ({"unexpected": 1}, 422, "unexpected"),
    ],
)
def test_bad_bodies_are_422_naming_the_key(
    body: dict[str, Any], status: int, fragment: str, client: TestClient, model_id: str
) -> None:
    response = client.post(OPTIMIZE, json={"model_id": model_id, **body})
    assert response.status_code == status, response.text
    assert fragment in str(response.json()["detail"])


def test_extreme_numbers_get_an_answer_not_a_500(
    client: TestClient, model_id: str, snapshot: RiskModelSnapshot, given: Inputs
) -> None:
    alpha = {s: 1e300 if k == 0 else -1e300 for k, s in enumerate(snapshot.symbols)}
    bodies = [
        {"objective": "max-alpha", "alpha": given.alpha, "risk_aversion": 1e-300},
        {"objective": "max-alpha", "alpha": alpha, "long_only": True},
        {"max_weight": 1e300, "factor_bounds": {"market": [-1e300, 1e300]}},
        {"current": given.current, "max_turnover": 1e308},
        {"benchmark": given.benchmark, "max_tracking_error": 1e308},
    ]
    for body in bodies:
        response = client.post(OPTIMIZE, json={"model_id": model_id, **body})
        assert response.status_code in (200, 422), (body, response.text)
        if response.status_code == 200:
            weights = by_symbol(snapshot, response.json()["weights"])
            assert abs(weights.sum() - 1.0) <= TOL


def test_on_postgresql(postgres_database: IsolatedDatabase, app_client: ClientFactory, model: RiskModel) -> None:
    """The same answer from a PostgreSQL store (one case: the benchmark-relative one)."""
    model_id = save(postgres_database.url, postgres_database.schema, model)
    store = connect(postgres_database.url, schema=postgres_database.schema)
    try:
        snapshot = store.snapshot(model_id, store.model_dates(model_id)[-1])
    finally:
        store.close()
    case = next(c for c in feasible_cases(snapshot, inputs(snapshot, model.styles)) if c.name == "benchmark")
    with app_client(postgres_database) as client:
        response = client.post(OPTIMIZE, json={"model_id": model_id, **case.spec})
    assert response.status_code == 200, response.text
    weights = by_symbol(snapshot, response.json()["weights"])
    np.testing.assert_allclose(weights, library_weights(case.library(snapshot)), rtol=0, atol=SAME)
    case.check(weights)


def test_dates_are_iso(client: TestClient, model_id: str) -> None:
    answer = client.post(OPTIMIZE, json={"model_id": model_id})
    assert answer.status_code == 200
    datetime.date.fromisoformat(answer.json()["date"])
    assert answer.json()["constraints"] == ["objective min-variance", "fully invested (weights sum to 1)"]
