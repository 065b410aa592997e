"""Service settings, read from the environment once through :func:`get_settings`."""

from __future__ import annotations

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

    @property
    def style_module_names(self) -> tuple[str, ...]:
        """The modules of ``style_modules``, in order."""
        return tuple(name.strip() for name in self.style_modules.split(",") if name.strip())

    @field_validator("database_schema", "redis_url", "api_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        """An empty environment variable means "not set"."""
        return None if isinstance(value, str) and not value.strip() else value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings from the environment, read once per process."""
    return Settings()
