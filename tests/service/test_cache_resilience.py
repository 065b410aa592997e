"""The Redis cache is an optimisation, never a source of failure or staleness: with Redis stopped mid-run the
reads answer the same bodies from the database (X-Cache: bypass) quickly and /health says "degraded"; after
Redis is back the reads are cached again; a model deleted (or rebuilt) while its reads are cached is never
served from the cache."""

from __future__ import annotations

import datetime
import json
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from service_helpers import API, TEST_CONFIG, ClientFactory, json_rows

from db_fixtures import IsolatedDatabase
from factor_engine.panel import validate_panel
from factor_engine.service.cache import ResponseCache
from factor_engine.storage import connect
from factor_engine.storage.tables import model_runs

CACHE_LOGGER = "factor_engine.service.cache"
DEGRADED = {"status": "degraded", "database": "ok", "cache": "unavailable (details in the server log)"}
HEALTHY = {"status": "ok", "database": "ok", "cache": "ok"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ThrowawayRedis:
    """A ``redis-server`` subprocess on a free port of 127.0.0.1, without persistence, that a test can stop
    and start again on the same port."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is required for the cache resilience tests but is not on PATH")
        self.binary = binary
        self.folder = folder
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait (at most 10 s) until it answers PING."""
        self._process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10.0
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"redis-server on port {self.port} did not start") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 5 s) and wait until it has exited."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _store_panel(database: IsolatedDatabase, panel: pl.DataFrame) -> None:
    store = connect(database.url, schema=database.schema)
    try:
        store.ingest_panel(validate_panel(panel))
    finally:
        store.close()


def _create_model(client: TestClient) -> str:
    response = client.post(f"{API}/risk-model/create", json={"universe_size": 40, "config": TEST_CONFIG})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


Read = tuple[str, str, dict[str, Any] | None]


def _reads(model_id: str, market_panel: pl.DataFrame) -> list[Read]:
    """(method, path, body) of the model reads and factor scores compared across the outage."""
    rows = market_panel.head(300)
    return [
        ("GET", f"/models/{model_id}", None),
        ("GET", f"/models/{model_id}/covariance", None),
        ("GET", f"/models/{model_id}/exposures", None),
        ("GET", f"/models/{model_id}/factor-returns?start=2023-06-01", None),
        ("POST", "/factors/momentum", {"data": json_rows(rows, ["asset_returns"]), "trailing_days": 5, "lag": 1}),
        ("POST", "/factors/value", {"data": json_rows(rows, ["book_price", "sales_price", "cf_price"])}),
        ("POST", "/factors/size", {"data": json_rows(rows, ["market_cap"])}),
    ]


def _read_twice(client: TestClient, read: Read) -> bytes:
    """The body of ``read``, asserting it is computed (X-Cache miss) and then served from Redis (hit)."""
    method, path, body = read
    first = client.request(method, f"{API}{path}", json=body)
    assert first.status_code == 200 and first.headers["X-Cache"] == "miss", (path, first.text)
    second = client.request(method, f"{API}{path}", json=body)
    assert second.headers["X-Cache"] == "hit" and second.content == first.content, path
    return first.content


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == CACHE_LOGGER and r.levelno >= logging.WARNING]


def test_reads_answer_from_the_database_while_redis_is_down_and_are_cached_again_after(
    app_client: ClientFactory,
    database: IsolatedDatabase,
    market_panel: pl.DataFrame,
    throwaway_redis: ThrowawayRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=CACHE_LOGGER)
    _store_panel(database, market_panel)
    settings = {"redis_url": throwaway_redis.url, "cache_prefix": "fe-resilience:", "cache_retry_seconds": 0.2}
    with app_client(database, **settings) as client:
        model_id = _create_model(client)
        reads = _reads(model_id, market_panel)
        before = {path: _read_twice(client, (method, path, body)) for method, path, body in reads}
        covariance = json.loads(before[f"/models/{model_id}/covariance"])
        variances = [row[k] for k, row in enumerate(covariance["covariance"]) if row[k] is not None]
        assert len(variances) >= 10 and all(0 < v < 1 for v in variances)  # daily fractions², real numbers
        exposures = json.loads(before[f"/models/{model_id}/exposures"])
        assert len(exposures["symbols"]) == 40
        some = ",".join(exposures["symbols"][:3])
        reads.append(("GET", f"/models/{model_id}/exposures?symbols={some}", None))
        before[reads[-1][1]] = _read_twice(client, reads[-1])
        assert json.loads(before[reads[-1][1]])["exposures"] == exposures["exposures"][:3]
        assert client.get(f"{API}/health").json() == HEALTHY
        assert _warnings(caplog) == []

        throwaway_redis.stop()
        for _ in range(2):  # the first failure opens the breaker, the later reads skip Redis
            for method, path, body in reads:
                started = time.perf_counter()
                response = client.request(method, f"{API}{path}", json=body)
                elapsed = time.perf_counter() - started
                assert response.status_code == 200, (path, response.text)
                assert response.headers["X-Cache"] == "bypass", path
                assert response.content == before[path], path  # the same numbers, now from the database
                assert elapsed < 1.0, (path, elapsed)
        health = client.get(f"{API}/health")
        assert health.status_code == 200 and health.json() == DEGRADED
        warnings = _warnings(caplog)
        assert len(warnings) == 1, warnings  # once per outage, not per request
        assert f"127.0.0.1:{throwaway_redis.port}" in warnings[0] and "answering from the database" in warnings[0]

        throwaway_redis.start()  # an empty Redis on the same port
        time.sleep(0.25)  # > cache_retry_seconds: the next request tries Redis again
        for method, path, body in reads:
            again = client.request(method, f"{API}{path}", json=body)
            assert again.headers["X-Cache"] == "miss" and again.content == before[path], path
            cached = client.request(method, f"{API}{path}", json=body)
            assert cached.headers["X-Cache"] == "hit" and cached.content == before[path], path
        assert client.get(f"{API}/health").json() == HEALTHY
        assert any("answers again" in message for message in _warnings(caplog))

        # deleting while Redis is down: 204 (the cached reads cannot be dropped), then 404 from the database
        throwaway_redis.stop()
        assert client.delete(f"{API}/models/{model_id}").status_code == 204
        model_reads = [path for _, path, _ in reads if path.startswith("/models/")]
        assert len(model_reads) == 5
        for path in model_reads:
            gone = client.get(f"{API}{path}")
            assert gone.status_code == 404 and gone.json() == {"detail": f"no model {model_id}"}, path
        assert client.get(f"{API}/health").json() == DEGRADED


def test_a_model_deleted_or_rebuilt_while_cached_is_never_served_from_the_cache(
    app_client: ClientFactory,
    database: IsolatedDatabase,
    market_panel: pl.DataFrame,
    throwaway_redis: ThrowawayRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _store_panel(database, market_panel)
    raw = throwaway_redis.client()
    with app_client(database, redis_url=throwaway_redis.url, cache_prefix="fe-stale:") as client:
        model_id = _create_model(client)
        path = f"{API}/models/{model_id}/covariance"
        original = client.get(path)
        assert original.headers["X-Cache"] == "miss"
        assert client.get(path).headers["X-Cache"] == "hit"
        [key] = raw.scan_iter(match=f"fe-stale:v*:model:{model_id}:*")

        # a rebuild gives the model a new version: its old body is not served, even if Redis holds a wrong one
        raw.set(key, b'{"stale": true}')
        store = connect(database.url, schema=database.schema)
        try:
            rebuilt_at = datetime.datetime(2031, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
            with store.engine.begin() as connection:
                connection.execute(
                    sa.update(model_runs).where(model_runs.c.id == model_id).values(finished_at=rebuilt_at)
                )
        finally:
            store.close()
        rebuilt = client.get(path)
        assert rebuilt.status_code == 200 and rebuilt.headers["X-Cache"] == "miss"
        assert rebuilt.content == original.content
        assert client.get(path).headers["X-Cache"] == "hit"
        assert len(list(raw.scan_iter(match=f"fe-stale:v*:model:{model_id}:*"))) == 2  # old version + new

        # the drop of its cached reads fails (keys left in Redis): the next read is still 404
        monkeypatch.setattr(ResponseCache, "drop_model", lambda self, model_id: None)
        assert client.delete(f"{API}/models/{model_id}").status_code == 204
        assert len(list(raw.scan_iter(match=f"fe-stale:v*:model:{model_id}:*"))) == 2  # still cached
        for read in (path, f"{API}/models/{model_id}", f"{API}/models/{model_id}/dates"):
            gone = client.get(read)
            assert gone.status_code == 404 and gone.json() == {"detail": f"no model {model_id}"}, read
        assert client.get(f"{API}/health").json() == HEALTHY
    raw.close()


def test_drop_model_deletes_only_that_models_keys_and_survives_a_redis_error(
    throwaway_redis: ThrowawayRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=CACHE_LOGGER)
    cache = ResponseCache(throwaway_redis.url, prefix="fe[drop]*:", ttl_seconds=60, retry_seconds=30.0)
    raw = throwaway_redis.client()
    try:
        keys = [cache.model_key("abc", "2024-01-01T00:00:00+00:00", f"/models/abc{n}") for n in range(3)]
        other = cache.model_key("abcd", "2024-01-01T00:00:00+00:00", "/models/abcd")
        unrelated = "fedzz:v0:model:abc:1:2"  # another prefix, matched by "fe[drop]*:..." read as a glob
        assert all(cache.put(key, b"{}") for key in (*keys, other)) and raw.set(unrelated, b"{}")
        assert cache.drop_model("abc") == 3
        assert sorted(raw.keys("*")) == sorted([other.encode(), unrelated.encode()])
        assert cache.status() == "ok"

        throwaway_redis.stop()
        assert cache.drop_model("abcd") is None  # logged, not raised
        assert cache.status().startswith(f"degraded (Redis at {throwaway_redis.url} failing since ")
        assert cache.lookup(other) == ("bypass", None) and cache.put(other, b"{}") is False
        assert len(_warnings(caplog)) == 1
    finally:
        raw.close()
        cache.close()


def test_breaker_skips_a_redis_that_never_answers(app_client: ClientFactory, caplog: pytest.LogCaptureFixture) -> None:
    """A Redis that accepts connections but never answers: the first request waits out the short socket
    timeout (< 1 s), the next ones skip Redis (no timeout each) until ``cache_retry_seconds`` have passed."""
    caplog.set_level(logging.WARNING, logger=CACHE_LOGGER)
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # connections complete in the backlog; nothing is ever read or written
    url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    body = {"data": [{"symbol": s, "date": "2024-01-01", "market_cap": c} for s, c in (("A", 1e9), ("B", 4e9))]}
    try:
        with app_client(redis_url=url, cache_retry_seconds=0.6) as client:
            timings = []
            for _ in range(6):
                started = time.perf_counter()
                response = client.post(f"{API}/factors/size", json=body)
                timings.append(time.perf_counter() - started)
                assert response.status_code == 200 and response.headers["X-Cache"] == "bypass"
            # still computed: two standardized scores are ±1/√2, the same body as a service without Redis
            scores = sorted(row["score"] for row in response.json()["scores"])
            assert scores == pytest.approx([-(0.5**0.5), 0.5**0.5], abs=1e-12)
            with app_client() as uncached:
                assert response.content == uncached.post(f"{API}/factors/size", json=body).content
            assert 0.2 < timings[0] < 1.0, timings  # waited for the read timeout once
            assert max(timings[1:]) < 0.15, timings  # then skipped Redis
            time.sleep(0.6)
            started = time.perf_counter()
            assert client.post(f"{API}/factors/size", json=body).headers["X-Cache"] == "bypass"
            assert 0.2 < time.perf_counter() - started < 1.0  # the probe after the retry period waited again
            started = time.perf_counter()
            health = client.get(f"{API}/health")
            assert health.status_code == 200 and health.json()["status"] == "degraded"
            assert time.perf_counter() - started < 1.0  # the health ping is bounded by the timeout
        assert len(_warnings(caplog)) == 1
    finally:
        silent.close()
