"""Redis cache of JSON responses: an optimisation, never a source of failure or staleness.

Keys carry what the body depends on: factor scores the engine version, the endpoint and a hash of the
canonical request; model reads the engine version, the model id, the model's version (when its build
finished) and a hash of the path and query, so a rebuilt model or an upgraded engine never gets an old body.

A Redis error never reaches a request: it is logged (once per outage), and for ``retry_seconds`` afterwards
Redis is skipped altogether (a circuit breaker, so an outage costs no socket timeout per request) while the
responses are computed from the database (header ``X-Cache: bypass``). After that period one request tries
Redis again; success closes the breaker.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from starlette.responses import Response

from factor_engine import __version__

__all__ = ["CacheOutcome", "ResponseCache", "cached_json"]

logger = logging.getLogger(__name__)

# seconds to wait for Redis to accept a connection and to answer (it is on the same network)
_CONNECT_TIMEOUT_SECONDS = 0.25
_READ_TIMEOUT_SECONDS = 0.5

CacheOutcome = Literal["hit", "miss", "bypass"]


class ResponseCache:
    """JSON responses in Redis, each with a time to live, behind a circuit breaker.

    Parameters
    ----------
    url: Redis URL, e.g. ``redis://127.0.0.1:6379/0``.
    prefix: prefix of every key written (lets several services or tests share one Redis).
    ttl_seconds: lifetime of an entry, seconds.
    retry_seconds: after a Redis error, Redis is skipped for this many seconds, then tried again.
    """

    def __init__(self, url: str, *, prefix: str, ttl_seconds: int, retry_seconds: float = 10.0) -> None:
        if retry_seconds < 0:
            raise ValueError(f"retry_seconds must be >= 0 seconds, got {retry_seconds!r}")
        self.url = url
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self.retry_seconds = retry_seconds
        # one immediate retry on a connection error: a pooled connection left dead by a Redis restart is
        # replaced at once instead of opening the breaker (a refused connection is refused again in microseconds)
        self._client = redis.Redis.from_url(
            url,
            socket_connect_timeout=_CONNECT_TIMEOUT_SECONDS,
            socket_timeout=_READ_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            health_check_interval=30,
        )
        self._lock = threading.Lock()
        self._failed_at: float | None = None  # time.monotonic() of the last error while the breaker is open
        self._outage_started: float | None = None  # time.time() of the first error of the current outage
        self._last_error = ""

    # ----------------------------------------------------------------------------------------------
    # keys

    def factor_key(self, endpoint: str, canonical_body: str) -> str:
        """The key of a factor-score response:
        ``<prefix>v<engine version>:factors:<endpoint>:<sha256 of the body>``."""
        digest = hashlib.sha256(canonical_body.encode()).hexdigest()
        return f"{self.prefix}v{__version__}:factors:{endpoint}:{digest}"

    def model_key(self, model_id: str, model_version: str, path_and_query: str) -> str:
        """The key of a model read:
        ``<prefix>v<engine version>:model:<id>:<model version>:<sha256 of the path and query>``.

        ``model_version`` identifies one build of the model (e.g. the ISO time its build finished)."""
        digest = hashlib.sha256(path_and_query.encode()).hexdigest()
        return f"{self.prefix}v{__version__}:model:{model_id}:{model_version}:{digest}"

    # ----------------------------------------------------------------------------------------------
    # reads and writes (never raise)

    def lookup(self, key: str) -> tuple[CacheOutcome, bytes | None]:
        """``("hit", body)``, ``("miss", None)``, or ``("bypass", None)`` while Redis is failing."""
        if not self._may_try():
            return "bypass", None
        try:
            value = self._client.get(key)
        except redis.RedisError as error:
            self._failed("read", error)
            return "bypass", None
        self._succeeded()
        return ("hit", value) if isinstance(value, bytes) else ("miss", None)

    def put(self, key: str, body: bytes) -> bool:
        """Store ``body`` under ``key`` for ``ttl_seconds``; False when Redis failed or is being skipped."""
        if not self._may_try():
            return False
        try:
            self._client.set(key, body, ex=self.ttl_seconds)
        except redis.RedisError as error:
            self._failed("write", error)
            return False
        self._succeeded()
        return True

    def drop_model(self, model_id: str) -> int | None:
        """Delete every cached read of ``model_id`` (of any engine version and model version): how many keys
        went, or None when Redis failed (best effort: its keys can no longer be read once the model is gone,
        since every read checks the model in the database first, and they expire after ``ttl_seconds``)."""
        pattern = f"{_glob_escape(self.prefix)}v*:model:{_glob_escape(model_id)}:*"
        try:
            keys = list(self._client.scan_iter(match=pattern, count=500))
            dropped = int(self._client.delete(*keys)) if keys else 0
        except redis.RedisError as error:
            self._failed(f"drop of model {model_id}'s keys", error)
            return None
        self._succeeded()
        return dropped

    # ----------------------------------------------------------------------------------------------
    # state

    def ping(self) -> bool:
        """Whether Redis answers now (tried even while the breaker is open; an answer closes it)."""
        try:
            self._client.ping()
        except redis.RedisError as error:
            self._failed("ping", error)
            return False
        self._succeeded()
        return True

    def status(self) -> str:
        """``"ok"``, or ``"degraded (...)"`` with the error and since when (for the server log and /info;
        it names the Redis address, so it is not for public answers)."""
        with self._lock:
            if self._failed_at is None:
                return "ok"
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._outage_started or time.time()))
            return f"degraded ({self._where()} failing since {since}: {self._last_error})"

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()

    def _may_try(self) -> bool:
        """Whether a request may use Redis: the breaker is closed, or it has been open ``retry_seconds`` (then
        this request probes Redis, and the others keep skipping it until the probe has answered)."""
        with self._lock:
            if self._failed_at is None:
                return True
            now = time.monotonic()
            if now - self._failed_at < self.retry_seconds:
                return False
            self._failed_at = now  # this request probes; the next one waits another period
            return True

    def _failed(self, action: str, error: redis.RedisError) -> None:
        """Open (or keep open) the breaker; log the first error of an outage as a warning."""
        with self._lock:
            first = self._failed_at is None
            self._failed_at = time.monotonic()
            self._last_error = f"{type(error).__name__}: {error}"
            if first:
                self._outage_started = time.time()
        if first:
            logger.warning(
                "cache: %s failed at %s (%s); answering from the database, Redis is tried again in %.3g s",
                action,
                self._where(),
                self._last_error,
                self.retry_seconds,
            )
            # drop the pooled connections: after a restart of Redis they would all be dead
            self._client.connection_pool.disconnect()
        else:
            logger.debug("cache: %s failed again at %s: %s", action, self._where(), error)

    def _succeeded(self) -> None:
        """Close the breaker (logging the end of an outage)."""
        if self._failed_at is None:  # the usual case, without the lock
            return
        with self._lock:
            if self._failed_at is None:
                return
            started, self._failed_at, self._outage_started = self._outage_started, None, None
        lasted = time.time() - started if started is not None else 0.0
        logger.warning("cache: %s answers again after %.1f s; caching resumed", self._where(), lasted)

    def _where(self) -> str:
        return f"Redis at {_mask(self.url)}"


def _glob_escape(text: str) -> str:
    """``text`` with Redis glob characters escaped, so a prefix or id matches only itself in SCAN."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


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
    (``X-Cache: miss``); while Redis is failing ``compute()`` with ``X-Cache: bypass``; without a cache
    simply ``compute()``."""
    if cache is None or key is None:
        return Response(compute(), media_type="application/json")
    outcome, body = cache.lookup(key)
    if outcome == "hit" and body is not None:
        return Response(body, media_type="application/json", headers={"X-Cache": "hit"})
    body = compute()
    if outcome == "miss" and not cache.put(key, body):
        outcome = "bypass"
    return Response(body, media_type="application/json", headers={"X-Cache": outcome})
