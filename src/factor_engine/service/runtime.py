"""What the running service holds: the store (connected on first use), the Redis cache, the job runner and
an in-process LRU of risk-model snapshots. Created in the app's lifespan, never at import."""

from __future__ import annotations

import datetime
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from factor_engine.portfolio import RiskModelSnapshot
from factor_engine.service.cache import ResponseCache
from factor_engine.service.errors import InputError, ResourceNotFound
from factor_engine.service.settings import Settings
from factor_engine.storage import NotFound, Store, connect

__all__ = ["CachedSnapshot", "ServiceState", "SnapshotCache", "StoreHolder"]


class StoreHolder:
    """Opens the store on first use (so the service starts, and reports 503, while the database is down) and
    runs ``on_connect`` once on the new store before anyone else gets it.

    Parameters
    ----------
    settings: the database URL and schema.
    on_connect: called with the store right after it is opened (e.g. ``expire_runs``).
    """

    def __init__(self, settings: Settings, on_connect: Callable[[Store], None] | None = None) -> None:
        self._settings = settings
        self._on_connect = on_connect
        self._store: Store | None = None
        self._lock = threading.Lock()

    @property
    def connected(self) -> Store | None:
        """The store if it is open, else None (never connects)."""
        return self._store

    def get(self) -> Store:
        """The open store; raises ``StoreUnavailable`` when the database cannot be reached."""
        store = self._store
        if store is not None:
            return store
        with self._lock:
            if self._store is None:
                opened = connect(self._settings.database_url, schema=self._settings.database_schema)
                try:
                    if self._on_connect is not None:
                        self._on_connect(opened)
                except BaseException:
                    opened.close()
                    raise
                self._store = opened
            return self._store

    def close(self) -> None:
        """Close the store if it was opened."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


@dataclass(frozen=True)
class CachedSnapshot:
    """A model date's snapshot with its date and the row of each symbol (to align weights quickly)."""

    date: datetime.date
    snapshot: RiskModelSnapshot
    index: dict[str, int]


class SnapshotCache:
    """LRU of :class:`CachedSnapshot` keyed by (model id, requested date or None for the last date).

    Parameters
    ----------
    size: snapshots kept (each is about N×K + K² floats, ~1 MB for 3,000 assets and 60 factors).
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, datetime.date | None], CachedSnapshot] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: Store, model_id: str, date: datetime.date | None) -> CachedSnapshot:
        """The snapshot of ``model_id`` at ``date`` (None = its last model date), loaded on a miss.

        Raises ResourceNotFound for an unknown model, InputError for a model without any forecast date and
        ``ModelError`` (422) for a date without a forecast.
        """
        key = (model_id, date)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        try:
            day = date
            if day is None:
                dates = store.model_dates(model_id)
                if not dates:
                    raise InputError(f"model {model_id} has no date with a covariance forecast and specific risk")
                day = dates[-1]
            snapshot = store.snapshot(model_id, day)
        except NotFound:
            raise ResourceNotFound(f"no model {model_id}") from None
        entry = CachedSnapshot(date=day, snapshot=snapshot, index={s: i for i, s in enumerate(snapshot.symbols)})
        with self._lock:
            self._items[key] = entry
            self._items[(model_id, day)] = entry
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return entry

    def holds(self, model_id: str, date: datetime.date | None) -> bool:
        """Whether the snapshot of (model_id, date) is in memory (then :meth:`get` does no I/O)."""
        with self._lock:
            return (model_id, date) in self._items

    def drop_model(self, model_id: str) -> None:
        """Forget every snapshot of ``model_id``."""
        with self._lock:
            for key in [key for key in self._items if key[0] == model_id]:
                del self._items[key]


@dataclass
class ServiceState:
    """Everything the request handlers share; one per app."""

    settings: Settings
    stores: StoreHolder
    cache: ResponseCache | None
    snapshots: SnapshotCache
    jobs: JobQueue

    def store(self) -> Store:
        """The open store (connecting on first use; ``StoreUnavailable`` → 503)."""
        return self.stores.get()


class JobQueue:
    """What the request handlers need of the job runner (see :class:`factor_engine.service.jobs.JobRunner`)."""

    worker: str
    lease_seconds: float

    def check_capacity(self, background: bool | None) -> None:  # pragma: no cover - interface
        """Refuse at once (``ServiceBusy``) a build request that could not be taken now."""
        raise NotImplementedError

    def direct_slot(self) -> AbstractContextManager[None]:  # pragma: no cover - interface
        """Hold a build slot for a direct build (``ServiceBusy`` when none is free)."""
        raise NotImplementedError

    def queue_place(self) -> AbstractContextManager[Any]:  # pragma: no cover - interface
        """Reserve a queue place; the yielded place's ``submit(run_id)`` queues the run."""
        raise NotImplementedError

    def run_direct(self, store: Store, run_id: str, request: Any) -> Any:  # pragma: no cover - interface
        """Build ``run_id`` now, in the caller's thread, under this process's lease."""
        raise NotImplementedError

    def is_active(self, run_id: str) -> bool:  # pragma: no cover - interface
        """True while ``run_id`` is queued in this process or being built."""
        raise NotImplementedError
