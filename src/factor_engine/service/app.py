"""The FastAPI application factory. Resources (store, Redis client, job worker) are created in the lifespan,
never at import; every API route lives under ``/api/v1/factor-engine`` (OpenAPI at /docs and /openapi.json);
the browser dashboard is at /dashboard (/ redirects there)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from factor_engine import __version__
from factor_engine.config import import_style_modules
from factor_engine.service.auth import ApiKeyGate
from factor_engine.service.cache import ResponseCache
from factor_engine.service.dashboard import router as dashboard_router
from factor_engine.service.deps import require_api_key
from factor_engine.service.errors import install_error_handlers
from factor_engine.service.jobs import JobRunner
from factor_engine.service.limits import BodySizeLimit
from factor_engine.service.paths import API_PREFIX
from factor_engine.service.routers import data, factors, health, jobs, live, models, portfolio
from factor_engine.service.runtime import ServiceState, SnapshotCache, StoreHolder
from factor_engine.service.settings import Settings, get_settings
from factor_engine.storage import Store, StoreError

__all__ = ["create_app"]


def _expire_runs(store: Store) -> None:
    """Runs whose worker is gone (lease expired, or none held) can never finish: mark them failed. The live
    builds of other workers on the same store keep their leases and are left alone."""
    store.expire_runs()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service on ``settings`` (default: :func:`get_settings`, i.e. the environment)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import_style_modules(settings.style_module_names)  # custom styles; a bad module stops the start-up
        stores = StoreHolder(settings, on_connect=_expire_runs)
        snapshots = SnapshotCache(settings.snapshot_cache_size)
        runner = JobRunner(
            stores,
            max_concurrent=settings.max_concurrent_builds,
            max_queued=settings.max_queued_builds,
            lease_seconds=settings.run_lease_seconds,
            on_model_changed=snapshots.drop_model,  # an updated model's last date moved
        )
        cache = (
            ResponseCache(
                settings.redis_url,
                prefix=settings.cache_prefix,
                ttl_seconds=settings.cache_ttl_seconds,
                retry_seconds=settings.cache_retry_seconds,
            )
            if settings.redis_url
            else None
        )
        app.state.service = ServiceState(
            settings=settings,
            stores=stores,
            cache=cache,
            snapshots=snapshots,
            jobs=runner,
        )
        # open the store and fail orphaned runs now; if the database is down, on first use (503 until then)
        with contextlib.suppress(StoreError):
            stores.get()
        runner.start()
        # the start-up's objects (modules, the app and its routes: about 150,000) leave the collector's
        # generations: the full collections that a large JSON body's objects trigger (20,000 rows make 60,000)
        # no longer scan them, which took validating such a body from about 105 ms to 20 ms of the event loop
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()  # collectable again once the app is gone (several apps in one process, e.g. tests)
            runner.stop()
            stores.close()
            if cache is not None:
                cache.close()

    app = FastAPI(
        title="Factor Engine",
        version=__version__,
        description="Barra-style equity factor risk model: style scores, panel storage, risk models, portfolio "
        "exposures and risk. Units: daily fractions unless a field says otherwise.",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyGate, api_key=settings.api_key)  # added last: runs first, before any body is read
    install_error_handlers(app)
    secured = [Depends(require_api_key)]
    app.include_router(health.router, prefix=API_PREFIX)
    for router in (factors.router, data.router, models.router, jobs.router, portfolio.router, live.router):
        app.include_router(router, prefix=API_PREFIX, dependencies=secured)
    app.include_router(live.stream_router, prefix=API_PREFIX)  # checks the key itself (a WebSocket has no Request)
    app.include_router(dashboard_router)  # the page and its files: no key (its JS sends the one the user types)
    return app
