"""Redis cache of JSON responses: factor scores keyed by a hash of the endpoint and the canonical request,
model reads keyed by model id (so deleting a model drops its keys)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import redis
from starlette.responses import Response

from factor_engine.service.errors import CacheUnavailable

__all__ = ["ResponseCache", "cached_json"]

# seconds to wait for Redis before answering 503
_TIMEOUT_SECONDS = 2.0


class ResponseCache:
    """JSON responses in Redis, each with a time to live.

    Parameters
    ----------
    url: Redis URL, e.g. ``redis://127.0.0.1:6379/0``.
    prefix: prefix of every key written (lets several services or tests share one Redis).
    ttl_seconds: lifetime of an entry, seconds.
    """

    def __init__(self, url: str, *, prefix: str, ttl_seconds: int) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=_TIMEOUT_SECONDS, socket_timeout=_TIMEOUT_SECONDS, health_check_interval=30
        )

    def factor_key(self, endpoint: str, canonical_body: str) -> str:
        """The key of a factor-score response: ``<prefix>factors:<endpoint>:<sha256 of the body>``."""
        digest = hashlib.sha256(canonical_body.encode()).hexdigest()
        return f"{self.prefix}factors:{endpoint}:{digest}"

    def model_key(self, model_id: str, path_and_query: str) -> str:
        """The key of a model read: ``<prefix>model:<id>:<sha256 of the path and query>``."""
        digest = hashlib.sha256(path_and_query.encode()).hexdigest()
        return f"{self.prefix}model:{model_id}:{digest}"

    def get(self, key: str) -> bytes | None:
        """The cached body, or None."""
        try:
            value = self._client.get(key)
        except redis.RedisError as error:
            raise CacheUnavailable(f"{self._where()}: {error}") from error
        return value if isinstance(value, bytes) else None

    def put(self, key: str, body: bytes) -> None:
        """Store ``body`` under ``key`` for ``ttl_seconds``."""
        try:
            self._client.set(key, body, ex=self.ttl_seconds)
        except redis.RedisError as error:
            raise CacheUnavailable(f"{self._where()}: {error}") from error

    def drop_model(self, model_id: str) -> int:
        """Delete every cached read of ``model_id``; returns how many keys went."""
        try:
            keys = list(self._client.scan_iter(match=f"{self.prefix}model:{model_id}:*", count=500))
            return int(self._client.delete(*keys)) if keys else 0
        except redis.RedisError as error:
            raise CacheUnavailable(f"{self._where()}: {error}") from error

    def ping(self) -> None:
        """Raise :class:`CacheUnavailable` unless Redis answers."""
        try:
            self._client.ping()
        except redis.RedisError as error:
            raise CacheUnavailable(f"{self._where()}: {error}") from error

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()

    def _where(self) -> str:
        return f"Redis at {_mask(self.url)}"


def _mask(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    scheme, _, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def cached_json(cache: ResponseCache | None, key: str | None, compute: Callable[[], bytes]) -> Response:
    """The JSON response cached under ``key`` (header ``X-Cache: hit``), else ``compute()`` stored there
    (``X-Cache: miss``); without a cache simply ``compute()``."""
    if cache is None or key is None:
        return Response(compute(), media_type="application/json")
    body = cache.get(key)
    if body is not None:
        return Response(body, media_type="application/json", headers={"X-Cache": "hit"})
    body = compute()
    cache.put(key, body)
    return Response(body, media_type="application/json", headers={"X-Cache": "miss"})
