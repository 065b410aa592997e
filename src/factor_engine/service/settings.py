"""Service settings, read from the environment once through :func:`get_settings`."""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from factor_engine.storage import DEFAULT_DATABASE_URL

__all__ = ["MIB", "Settings", "get_settings"]

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Configuration of the REST service (environment variables in brackets).

    database_url: SQLAlchemy URL of the store [FACTOR_ENGINE_DATABASE_URL]; default a SQLite file
        ``factor_engine.db`` in the working directory.
    database_schema: PostgreSQL schema holding every table [FACTOR_ENGINE_DATABASE_SCHEMA]; None = default.
    redis_url: Redis URL of the response cache [REDIS_URL]; None disables caching.
    cache_prefix: prefix of every Redis key the service writes [FACTOR_ENGINE_CACHE_PREFIX].
    cache_ttl_seconds: lifetime of a cached response, seconds [FACTOR_ENGINE_CACHE_TTL_SECONDS].
    api_key: when set, every route but the public ones (/health, the dashboard page and its static files:
        :mod:`factor_engine.service.auth`) needs ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``
        [FACTOR_ENGINE_API_KEY].
    max_body_bytes: largest request body accepted, bytes [FACTOR_ENGINE_MAX_BODY_BYTES] (default 512 MiB).
    sync_build_max_rows: model builds over fewer panel rows than this are answered directly (200); larger
        ones run as a background job (202) [FACTOR_ENGINE_SYNC_BUILD_MAX_ROWS].
    snapshot_cache_size: risk-model snapshots kept in memory for the portfolio endpoints
        [FACTOR_ENGINE_SNAPSHOT_CACHE_SIZE].
    build_limits: upper bounds of build-configuration values, overriding those of
        :data:`factor_engine.service.limits.BUILD_CONFIG_BOUNDS` ("section.key" → value)
        [FACTOR_ENGINE_BUILD_LIMITS, JSON, e.g. '{"adjustments.eigenfactor_simulations": 20000}'].
    style_modules: comma-separated Python modules imported at start-up, which register custom styles
        [FACTOR_ENGINE_STYLE_MODULES]; a build request's ``[styles] modules`` may name only these (the service
        never imports a module a request names on its own).
    max_upload_rows: most rows one panel upload (or JSON batch) may hold; more is a 413, decided from the
        file's metadata or while it is decoded in batches, never after materializing it
        [FACTOR_ENGINE_MAX_UPLOAD_ROWS]. Upload a longer history in several requests (ingestion upserts).
    max_score_cells: most (date, symbol) cells the rows posted to a factor-score endpoint (``POST /factors/...``)
        may span, distinct dates × distinct symbols; more is a 422 before anything is computed: the kernels work
        on dense (dates × symbols) arrays of about 33 bytes a cell at their peak [FACTOR_ENGINE_MAX_SCORE_CELLS]
        (default 25,000,000: 10,000 dates of 2,500 symbols, under 1 GB).
    max_upload_decoded_bytes: most bytes an upload may decode to (its uncompressed Arrow size), 413 above
        [FACTOR_ENGINE_MAX_UPLOAD_DECODED_BYTES] (default 1 GiB).
    max_concurrent_builds: model builds running at once in one worker process, direct (200) and background
        (202) alike [FACTOR_ENGINE_MAX_CONCURRENT_BUILDS].
    max_queued_builds: background builds waiting in one worker process; a build request beyond it gets 503
        with ``Retry-After`` [FACTOR_ENGINE_MAX_QUEUED_BUILDS].
    build_memory_budget_bytes: largest estimated peak memory of one build, bytes; a request estimated above
        it is refused with 422 before anything runs [FACTOR_ENGINE_BUILD_MEMORY_BUDGET_BYTES]; None (default)
        = 60% of this machine's physical memory.
    run_lease_seconds: how long a build run stays claimed by its worker without a heartbeat; the worker
        renews the lease every third of it, and any worker fails a run whose lease has expired (its worker
        died or lost the database) [FACTOR_ENGINE_RUN_LEASE_SECONDS].
    cache_retry_seconds: after a Redis error the cache is bypassed (reads answered from the database,
        /health "degraded") for this many seconds before it is tried again [FACTOR_ENGINE_CACHE_RETRY_SECONDS].
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL, validation_alias=AliasChoices("FACTOR_ENGINE_DATABASE_URL", "database_url")
    )
    database_schema: str | None = Field(
        default=None, validation_alias=AliasChoices("FACTOR_ENGINE_DATABASE_SCHEMA", "database_schema")
    )
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "redis_url"))
    cache_prefix: str = Field(
        default="factor-engine:", validation_alias=AliasChoices("FACTOR_ENGINE_CACHE_PREFIX", "cache_prefix")
    )
    cache_ttl_seconds: int = Field(
        default=3600, gt=0, validation_alias=AliasChoices("FACTOR_ENGINE_CACHE_TTL_SECONDS", "cache_ttl_seconds")
    )
    api_key: str | None = Field(default=None, validation_alias=AliasChoices("FACTOR_ENGINE_API_KEY", "api_key"))
    max_body_bytes: int = Field(
        default=512 * MIB, gt=0, validation_alias=AliasChoices("FACTOR_ENGINE_MAX_BODY_BYTES", "max_body_bytes")
    )
    sync_build_max_rows: int = Field(
        default=200_000,
        ge=0,
        validation_alias=AliasChoices("FACTOR_ENGINE_SYNC_BUILD_MAX_ROWS", "sync_build_max_rows"),
    )
    snapshot_cache_size: int = Field(
        default=32, ge=1, validation_alias=AliasChoices("FACTOR_ENGINE_SNAPSHOT_CACHE_SIZE", "snapshot_cache_size")
    )
    build_limits: dict[str, float] = Field(
        default_factory=dict, validation_alias=AliasChoices("FACTOR_ENGINE_BUILD_LIMITS", "build_limits")
    )
    style_modules: str = Field(
        default="", validation_alias=AliasChoices("FACTOR_ENGINE_STYLE_MODULES", "style_modules")
    )

    max_upload_rows: int = Field(
        default=10_000_000, gt=0, validation_alias=AliasChoices("FACTOR_ENGINE_MAX_UPLOAD_ROWS", "max_upload_rows")
    )
    max_score_cells: int = Field(
        default=25_000_000, gt=0, validation_alias=AliasChoices("FACTOR_ENGINE_MAX_SCORE_CELLS", "max_score_cells")
    )
    max_upload_decoded_bytes: int = Field(
        default=1024 * MIB,
        gt=0,
        validation_alias=AliasChoices("FACTOR_ENGINE_MAX_UPLOAD_DECODED_BYTES", "max_upload_decoded_bytes"),
    )
    max_concurrent_builds: int = Field(
        default=1,
        ge=1,
        validation_alias=AliasChoices("FACTOR_ENGINE_MAX_CONCURRENT_BUILDS", "max_concurrent_builds"),
    )
    max_queued_builds: int = Field(
        default=8, ge=0, validation_alias=AliasChoices("FACTOR_ENGINE_MAX_QUEUED_BUILDS", "max_queued_builds")
    )
    build_memory_budget_bytes: int | None = Field(
        default=None,
        gt=0,
        validation_alias=AliasChoices("FACTOR_ENGINE_BUILD_MEMORY_BUDGET_BYTES", "build_memory_budget_bytes"),
    )
    run_lease_seconds: float = Field(
        default=30.0, gt=0, validation_alias=AliasChoices("FACTOR_ENGINE_RUN_LEASE_SECONDS", "run_lease_seconds")
    )
    cache_retry_seconds: float = Field(
        default=10.0, ge=0, validation_alias=AliasChoices("FACTOR_ENGINE_CACHE_RETRY_SECONDS", "cache_retry_seconds")
    )

    @property
    def style_module_names(self) -> tuple[str, ...]:
        """The modules of ``style_modules``, in order."""
        return tuple(name.strip() for name in self.style_modules.split(",") if name.strip())

    @property
    def memory_budget(self) -> int:
        """``build_memory_budget_bytes``, or 60% of the physical memory when it is not set."""
        if self.build_memory_budget_bytes is not None:
            return self.build_memory_budget_bytes
        return int(0.6 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))

    @field_validator("database_schema", "redis_url", "api_key", "build_memory_budget_bytes", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        """An empty environment variable means "not set"."""
        return None if isinstance(value, str) and not value.strip() else value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings from the environment, read once per process."""
    return Settings()
