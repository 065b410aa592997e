"""Health and description of the running service."""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from factor_engine import __version__
from factor_engine.service.paths import API_PREFIX
from factor_engine.service.runtime import ServiceState
from factor_engine.service.schemas import Capabilities, HealthResponse, InfoResponse, Limits, StoreInfo
from factor_engine.storage import StoreError, resolve_database_url
from factor_engine.styles import available_styles

__all__ = ["ENDPOINT_GROUPS", "health", "info"]

logger = logging.getLogger(__name__)

ENDPOINT_GROUPS = ("health", "info", "factors", "data", "risk-model", "models", "portfolio", "jobs")
ADJUSTMENTS = ("eigenfactor", "volatility_regime", "specific_volatility_regime", "bayesian_shrinkage", "structural")


def health(state: ServiceState) -> tuple[HealthResponse, bool]:
    """The health report and whether the service answers: "ok"; "degraded" when the configured Redis does not
    answer (requests are then answered from the database, uncached); "unavailable" (False) when the database
    does not answer."""
    database = "ok"
    try:
        store = state.store()
        with store.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except (StoreError, SQLAlchemyError) as error:
        # no addresses or credentials in a public answer: the kind of failure here, the details in the log
        logger.warning("health: the database does not answer: %s", error)
        database = f"unavailable ({type(error).__name__}; details in the server log)"
    cache = "not configured"
    cache_down = state.cache is not None and not state.cache.ping()  # bounded by the cache's short timeouts
    if state.cache is not None:
        # no address in a public answer: the cache logs the error once per outage
        cache = "unavailable (details in the server log)" if cache_down else "ok"
    if database != "ok":
        return HealthResponse(status="unavailable", database=database, cache=cache), False
    return HealthResponse(status="degraded" if cache_down else "ok", database=database, cache=cache), True


def _stored_sectors(state: ServiceState) -> list[str] | None:
    """The sector labels of the stored panel, or None when the database cannot be reached."""
    try:
        return [summary.sector for summary in state.store().panel_sectors()]
    except StoreError:
        return None


def info(state: ServiceState) -> InfoResponse:
    """Version, capabilities, store (dialect and URL with the password masked), the stored sector labels (None
    while the database is down), cache and limits."""
    settings = state.settings
    sectors = _stored_sectors(state)
    url = make_url(resolve_database_url(settings.database_url))
    shown = url.render_as_string(hide_password=True)
    if settings.database_schema:
        shown += f" (schema {settings.database_schema})"
    return InfoResponse(
        engine="factor_engine",
        version=__version__,
        api_prefix=API_PREFIX,
        capabilities=Capabilities(
            endpoint_groups=list(ENDPOINT_GROUPS),
            methods=["barra", "toraniko"],
            adjustments=list(ADJUSTMENTS),
            styles=[style.name for style in available_styles()],
            upload_media_types=[
                "application/vnd.apache.parquet",
                "application/octet-stream",
                "application/vnd.apache.arrow.file",
                "application/vnd.apache.arrow.stream",
            ],
        ),
        store=StoreInfo(dialect=url.get_backend_name(), url=shown),
        sectors=sectors,
        n_sectors=None if sectors is None else len(sectors),
        cache_configured=state.cache is not None,
        auth_required=bool(settings.api_key),
        limits=Limits(
            max_body_bytes=settings.max_body_bytes,
            max_upload_rows=settings.max_upload_rows,
            max_upload_decoded_bytes=settings.max_upload_decoded_bytes,
            sync_build_max_rows=settings.sync_build_max_rows,
            cache_ttl_seconds=settings.cache_ttl_seconds,
            max_concurrent_builds=settings.max_concurrent_builds,
            max_queued_builds=settings.max_queued_builds,
            build_memory_budget_bytes=settings.memory_budget,
            run_lease_seconds=settings.run_lease_seconds,
            max_score_cells=settings.max_score_cells,
        ),
    )
