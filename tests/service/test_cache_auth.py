"""Redis caching of score and model-read responses, answers from the database (/health "degraded") when the
configured Redis is down, and the API key."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import polars as pl
import pytest
import redis
from service_helpers import API, TEST_CONFIG, ClientFactory, json_rows

from factor_engine import __version__
from factor_engine.panel import validate_panel
from factor_engine.service.cache import ResponseCache
from factor_engine.service.schemas import MomentumRequest
from factor_engine.storage import connect

REDIS_URL = "redis://127.0.0.1:6379/0"
ROWS = [
    {"symbol": "A", "date": "2024-01-01", "asset_returns": 0.01},
    {"symbol": "B", "date": "2024-01-01", "asset_returns": 0.02},
]


@pytest.fixture
def prefix() -> Iterator[str]:
    """A unique key prefix per test; its keys are deleted afterwards. Redis is required (no skip)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as error:
        pytest.fail(f"Redis is required for the cache tests but is unreachable at {REDIS_URL}: {error}")
    unique = f"fe-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield unique
    finally:
        keys = list(client.scan_iter(match=f"{unique}*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_scores_and_model_reads_are_served_from_redis(
    app_client: ClientFactory, tmp_path: object, market_panel: pl.DataFrame, prefix: str
) -> None:
    raw = redis.Redis.from_url(REDIS_URL)
    with app_client(redis_url=REDIS_URL, cache_prefix=prefix, cache_ttl_seconds=120) as client:
        body = {"data": json_rows(market_panel.head(300), ["asset_returns"]), "trailing_days": 5, "lag": 1}
        first = client.post(f"{API}/factors/momentum", json=body)
        assert first.status_code == 200 and first.headers["X-Cache"] == "miss"
        cache = ResponseCache(REDIS_URL, prefix=prefix, ttl_seconds=120)
        key = cache.factor_key("momentum", MomentumRequest.model_validate(body).model_dump_json())
        assert raw.get(key) == first.content
        assert 0 < raw.ttl(key) <= 120
        second = client.post(f"{API}/factors/momentum", json=body)
        assert second.headers["X-Cache"] == "hit" and second.content == first.content
        # the cached answer really comes from Redis: change it there and it is what the service returns
        raw.set(key, b'{"factor": "mom_score", "rows": 0, "scores": []}')
        assert client.post(f"{API}/factors/momentum", json=body).json()["rows"] == 0
        other = client.post(f"{API}/factors/momentum", json={**body, "lag": 2})
        assert other.headers["X-Cache"] == "miss"

        # model reads: cached per model and model version; deleting the model drops its keys
        store_url = client.get(f"{API}/info").json()["store"]["url"]
        assert store_url.startswith("sqlite")
        store = connect(f"sqlite:///{tmp_path}/service.db")
        store.ingest_panel(validate_panel(market_panel))
        store.close()
        model_id = client.post(f"{API}/risk-model/create", json={"universe_size": 40, "config": TEST_CONFIG}).json()[
            "id"
        ]
        for path in ("", "/dates", "/factor-returns", "/covariance"):
            assert client.get(f"{API}/models/{model_id}{path}").headers["X-Cache"] == "miss"
            assert client.get(f"{API}/models/{model_id}{path}").headers["X-Cache"] == "hit"
        store = connect(f"sqlite:///{tmp_path}/service.db")
        finished_at = store.get_run(model_id).finished_at
        store.close()
        assert finished_at is not None
        version = f"{prefix}v{__version__}:model:{model_id}:{finished_at.isoformat()}:"
        model_keys = [k.decode() for k in raw.scan_iter(match=f"{prefix}*model*")]
        assert len(model_keys) == 4 and all(k.startswith(version) for k in model_keys), model_keys
        assert client.delete(f"{API}/models/{model_id}").status_code == 204
        assert list(raw.scan_iter(match=f"{prefix}*model*")) == []
        assert raw.get(key) is not None  # the factor scores stay
        assert client.get(f"{API}/models/{model_id}").status_code == 404
    raw.close()


def test_unreachable_redis_is_bypassed_and_health_is_degraded(app_client: ClientFactory) -> None:
    with app_client() as uncached:
        expected = uncached.post(f"{API}/factors/momentum", json={"data": ROWS})
    assert expected.status_code == 200 and "X-Cache" not in expected.headers
    with app_client(redis_url="redis://127.0.0.1:1/0") as client:
        response = client.post(f"{API}/factors/momentum", json={"data": ROWS})
        assert response.status_code == 200 and response.headers["X-Cache"] == "bypass"
        assert response.content == expected.content
        health = client.get(f"{API}/health")
        assert health.status_code == 200
        # no address in public: the details are in the server log
        assert health.json() == {
            "status": "degraded",
            "database": "ok",
            "cache": "unavailable (details in the server log)",
        }
        response = client.get(f"{API}/models/abc")
        assert response.status_code == 404 and response.json() == {"detail": "no model abc"}


def test_health_reports_redis_ok(app_client: ClientFactory, prefix: str) -> None:
    with app_client(redis_url=REDIS_URL, cache_prefix=prefix) as client:
        response = client.get(f"{API}/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "cache": "ok"}


def test_api_key(app_client: ClientFactory) -> None:
    with app_client(api_key="k3y") as client:
        assert client.get(f"{API}/health").status_code == 200  # never needs the key
        for method, path, body in (
            ("GET", "/info", None),
            ("GET", "/factors/list", None),
            ("POST", "/factors/momentum", {"data": ROWS}),
            ("GET", "/data/summary", None),
            ("GET", "/models", None),
            ("GET", "/jobs", None),
            ("POST", "/portfolio/risk", {}),
        ):
            missing = client.request(method, f"{API}{path}", json=body)
            assert missing.status_code == 401, path
            assert missing.json()["detail"].startswith("missing API key: send the header X-API-Key")
            wrong = client.request(method, f"{API}{path}", json=body, headers={"X-API-Key": "nope"})
            assert wrong.status_code == 401 and wrong.json() == {"detail": "invalid API key"}
            bearer = client.request(method, f"{API}{path}", json=body, headers={"Authorization": "Bearer nope"})
            assert bearer.status_code == 401
        ok = client.post(f"{API}/factors/momentum", json={"data": ROWS}, headers={"X-API-Key": "k3y"})
        assert ok.status_code == 200
        ok = client.get(f"{API}/data/summary", headers={"Authorization": "Bearer k3y"})
        assert ok.status_code == 200 and ok.json()["rows"] == 0
        assert client.get(f"{API}/info", headers={"X-API-Key": "k3y"}).json()["auth_required"] is True


def test_the_key_is_checked_before_any_body_is_read(app_client: ClientFactory) -> None:
    """A request without the key is answered 401 from its headers: the ASGI app never asks for the body (a
    receive that fails when called proves it), whatever the body's declared size."""
    import asyncio

    from factor_engine.service import Settings, create_app

    app = create_app(Settings(database_url="sqlite://", api_key="k3y"))

    async def never_receive() -> dict[str, object]:
        raise AssertionError("the body was read before the key was checked")

    async def call(headers: list[tuple[bytes, bytes]]) -> list[dict[str, object]]:
        sent: list[dict[str, object]] = []

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "http_version": "1.1", "method": "POST", "scheme": "http", "root_path": "",
            "path": f"{API}/factors/momentum", "raw_path": f"{API}/factors/momentum".encode(), "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"200000000"), *headers],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        }  # fmt: skip
        await app(scope, never_receive, send)
        return sent

    for headers, detail in (([], b"missing API key"), ([(b"x-api-key", b"nope")], b"invalid API key")):
        sent = asyncio.run(call(headers))
        assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 401
        assert detail in sent[1]["body"]  # type: ignore[operator]


def test_only_health_and_the_dashboard_page_are_public(app_client: ClientFactory) -> None:
    with app_client(api_key="k3y") as client:
        for path in ("/docs", "/redoc", "/openapi.json", f"{API}/info"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"X-API-Key": "k3y"}).status_code == 200, path
        for path in (f"{API}/health", "/dashboard", "/dashboard/static/dashboard.js"):
            assert client.get(path).status_code == 200, path  # no data: the page asks for the key
        assert client.get("/", follow_redirects=False).status_code == 307
        # the dashboard's data needs the key like every other route
        assert client.get(f"{API}/models").status_code == 401
