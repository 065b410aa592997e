"""Model builds and updates in a service process: a bounded number running at once, a bounded queue, and leases.

The status of every run lives in the database (``create_run`` → ``start_run`` → ``update_progress`` →
``save_model`` or ``fail_run``), so it survives the process. Each service process (uvicorn worker) has an id
and holds a lease on the runs it has queued or is building, renewed every third of ``run_lease_seconds`` by
a keeper thread; the same thread fails, in any process's name, every run whose lease has expired: its worker
died, was stopped or lost the database. So several workers share one store safely (none fails another's
live build at start-up), and a run whose worker vanished becomes failed within one lease period and can be
retried or deleted. An update job (``POST /models/{id}/update``, :mod:`factor_engine.service.updates`) takes
the same queue, slots and lease as a build.

Admission: at most ``max_concurrent_builds`` builds run at once in a process, direct (answered 200) and
background (202) alike, and at most ``max_queued_builds`` wait; a request beyond either is refused with
:class:`ServiceBusy` (503 with ``Retry-After``) before any run is created. A queued build loads its panel
when it starts, not when it is queued. On shutdown the runner stops taking jobs, fails the runs still queued
and abandons a build under way at its next stage (never half-saved: ``save_model`` is one transaction).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import uuid
from collections.abc import Callable, Iterator

from pydantic import ValidationError

from factor_engine.service.builds import INTERRUPTED, BuildCancelled, run_build
from factor_engine.service.errors import ServiceBusy
from factor_engine.service.runtime import JobQueue, StoreHolder
from factor_engine.service.schemas import CreateModelRequest
from factor_engine.service.updates import run_update
from factor_engine.storage import Store, StoreError

__all__ = ["JobRunner", "QueuePlace", "worker_id"]

logger = logging.getLogger(__name__)
_STOP = ""
# seconds a direct build request waits for a build slot before it is refused (a build just finishing frees one)
_SLOT_WAIT_SECONDS = 0.5


def worker_id() -> str:
    """An id of this service process, unique across hosts and restarts: ``<host>:<pid>:<random>``."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class QueuePlace:
    """A reserved place in a :class:`JobRunner`'s queue (see :meth:`JobRunner.queue_place`)."""

    def __init__(self, runner: JobRunner) -> None:
        self._runner = runner
        self.used = False

    def submit(self, run_id: str) -> None:
        """Queue the build of the (queued) run ``run_id`` in this place."""
        if self.used:
            raise RuntimeError("this queue place is already used")
        self.used = True
        self._runner._enqueue(run_id)


class JobRunner(JobQueue):
    """Runs builds in this process: ``max_concurrent`` at once, up to ``max_queued`` waiting, each under a
    lease of ``lease_seconds`` renewed by a keeper thread.

    Parameters
    ----------
    stores: the service's store (each job takes it when it starts).
    max_concurrent: builds running at once (direct and background); ≥ 1.
    max_queued: background builds waiting for a slot; ≥ 0.
    lease_seconds: lifetime of a lease without renewal, seconds.
    retry_after: seconds a refused client is told to wait (``Retry-After``).
    on_model_changed: called with a model's id after an update job of it ends (e.g. to drop the snapshots of
        it this process holds in memory).
    """

    def __init__(
        self,
        stores: StoreHolder,
        *,
        max_concurrent: int = 1,
        max_queued: int = 8,
        lease_seconds: float = 30.0,
        retry_after: int = 15,
        on_model_changed: Callable[[str], None] | None = None,
    ) -> None:
        if max_concurrent < 1 or max_queued < 0 or lease_seconds <= 0:
            raise ValueError(
                f"max_concurrent ≥ 1, max_queued ≥ 0 and lease_seconds > 0 are needed, got {max_concurrent}, "
                f"{max_queued}, {lease_seconds}"
            )
        self.worker = worker_id()
        self.lease_seconds = float(lease_seconds)
        self._stores = stores
        self._max_concurrent = max_concurrent
        self._max_queued = max_queued
        self._retry_after = retry_after
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._queue: queue.Queue[str] = queue.Queue()
        self._waiting = 0  # queue places taken (reserved or queued), guarded by _lock
        self._running = 0  # build slots taken, guarded by _lock
        self._stopping = threading.Event()
        self._active: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._keeper_failing = False
        self._on_model_changed = on_model_changed

    # ---- life cycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the build threads and the lease keeper."""
        for index in range(self._max_concurrent):
            thread = threading.Thread(target=self._work, name=f"factor-engine-build-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        keeper = threading.Thread(target=self._keep_leases, name="factor-engine-leases", daemon=True)
        keeper.start()
        self._threads.append(keeper)

    def stop(self, timeout: float = 5.0) -> None:
        """Take no more jobs, fail the runs still queued, abandon a running build at its next stage and wait
        up to ``timeout`` seconds for the threads."""
        self._stopping.set()
        queued = []
        while True:
            try:
                run_id = self._queue.get_nowait()
            except queue.Empty:
                break
            if run_id != _STOP:
                queued.append(run_id)
        for _ in range(self._max_concurrent):
            self._queue.put(_STOP)
        store = self._stores.connected
        for run_id in queued:
            with contextlib.suppress(Exception):  # else its lease expires and another worker fails it
                if store is not None:
                    store.fail_run(run_id, INTERRUPTED)
            self._forget(run_id)
        for thread in self._threads:
            thread.join(timeout)

    # ---- admission ------------------------------------------------------------------------------------------
    def check_capacity(self, background: bool | None) -> None:
        """Refuse at once (:class:`ServiceBusy`) a build request that could not be taken now, before its data
        is checked: a background one (``True``) when the queue is full, a direct one (``False``) when every slot
        is busy, either kind (``None``) when both are. :meth:`direct_slot` and :meth:`queue_place` decide
        for good."""
        self._check_running()
        with self._lock:
            queue_full = self._waiting >= self._max_queued
            slots_busy = self._running >= self._max_concurrent
        if queue_full and (background is True or (background is None and slots_busy)):
            raise self._queue_full()
        if background is False and slots_busy:
            with self._slot(_SLOT_WAIT_SECONDS) as taken:  # unless a build just finishing frees its slot
                if not taken:
                    raise self._slots_busy()

    def _queue_full(self) -> ServiceBusy:
        return ServiceBusy(
            f"the build queue is full: {self._waiting} build(s) wait in this worker "
            f"(FACTOR_ENGINE_MAX_QUEUED_BUILDS = {self._max_queued}); try again later",
            self._retry_after,
        )

    def _slots_busy(self) -> ServiceBusy:
        return ServiceBusy(
            f"{self._max_concurrent} build(s) are already running in this worker "
            "(FACTOR_ENGINE_MAX_CONCURRENT_BUILDS); try again later or send background: true",
            self._retry_after,
        )

    @contextlib.contextmanager
    def _slot(self, timeout: float | None) -> Iterator[bool]:
        """Hold a build slot (counted as running) if one frees up within ``timeout`` seconds (None: wait)."""
        taken = self._slots.acquire(timeout=timeout) if timeout is not None else self._slots.acquire()
        if not taken:
            yield False
            return
        with self._lock:
            self._running += 1
        try:
            yield True
        finally:
            with self._lock:
                self._running -= 1
            self._slots.release()

    @contextlib.contextmanager
    def direct_slot(self) -> Iterator[None]:
        """Hold a build slot for a direct (synchronous) build; :class:`ServiceBusy` when none frees up within
        ``_SLOT_WAIT_SECONDS`` (a build just finishing releases its slot)."""
        self._check_running()
        with self._slot(_SLOT_WAIT_SECONDS) as taken:
            if not taken:
                raise self._slots_busy()
            yield

    @contextlib.contextmanager
    def queue_place(self) -> Iterator[QueuePlace]:
        """Reserve a place in the build queue for a run about to be created and submitted inside the block
        (``place.submit(run_id)``); :class:`ServiceBusy` when the queue is full. The place is given back if
        nothing is submitted. The job loads the panel from the store when it starts."""
        self._check_running()
        with self._lock:
            if self._waiting >= self._max_queued:
                raise self._queue_full()
            self._waiting += 1
        place = QueuePlace(self)
        try:
            yield place
        finally:
            if not place.used:
                with self._lock:
                    self._waiting -= 1

    def _enqueue(self, run_id: str) -> None:
        self.track(run_id)
        self._queue.put(run_id)

    def track(self, run_id: str) -> None:
        """Hold the lease of ``run_id`` (queued or running in this process) until it ends."""
        with self._lock:
            self._active.add(run_id)

    def _forget(self, run_id: str) -> None:
        with self._lock:
            self._active.discard(run_id)

    def is_active(self, run_id: str) -> bool:
        """True while ``run_id`` waits in the queue or is being built by this process."""
        with self._lock:
            return run_id in self._active

    def held(self) -> list[str]:
        """The runs this process holds the lease of."""
        with self._lock:
            return sorted(self._active)

    def _check_running(self) -> None:
        if self._stopping.is_set():
            raise ServiceBusy("the service is stopping and takes no new builds", self._retry_after)

    # ---- building -------------------------------------------------------------------------------------------
    def run_direct(self, store: Store, run_id: str, request: CreateModelRequest) -> object:
        """Build run ``run_id`` (created running) now in the caller's thread (inside :meth:`direct_slot`), under
        this process's lease; returns what :func:`factor_engine.service.builds.run_build` returns."""
        self.track(run_id)
        try:
            return run_build(store, run_id, request, cancelled=self._stopping, started=True)
        finally:
            self._forget(run_id)

    def _work(self) -> None:
        while True:
            run_id = self._queue.get()
            if run_id == _STOP or self._stopping.is_set():
                return
            with self._slot(None):  # a direct build may hold it: the run keeps its queue place until it starts
                with self._lock:
                    self._waiting -= 1
                try:
                    self._build(run_id)
                except BuildCancelled:
                    return
                finally:
                    self._forget(run_id)

    def _build(self, run_id: str) -> None:
        try:
            store = self._stores.get()
            run = store.get_run(run_id)
            if run.kind == "update":
                try:
                    run_update(store, run_id, cancelled=self._stopping)
                finally:
                    if run.model_id is not None and self._on_model_changed is not None:
                        self._on_model_changed(run.model_id)
                return
            try:
                request = CreateModelRequest.model_validate(run.request)
            except ValidationError as error:
                store.fail_run(run_id, f"the job's request is not a valid model build request: {error}")
                return
            run_build(store, run_id, request, cancelled=self._stopping)
        except BuildCancelled:
            raise
        except Exception:  # the failure is recorded on the run by run_build (or, if the database is gone, by
            logger.exception("job %s failed", run_id)  # the lease expiring)

    # ---- leases ---------------------------------------------------------------------------------------------
    def _keep_leases(self) -> None:
        """Every third of a lease: renew this process's leases, then fail the runs whose lease expired."""
        period = self.lease_seconds / 3
        while not self._stopping.wait(period):
            self.renew_and_expire()

    def renew_and_expire(self) -> list[str]:
        """One round of the lease keeper; returns the ids of the runs it failed (errors are logged once per
        outage, never raised: a worker that cannot reach the database simply stops renewing)."""
        try:
            store = self._stores.get()
            store.renew_leases(self.worker, self.held(), self.lease_seconds)
            expired = store.expire_runs()
        except (StoreError, OSError) as error:
            if not self._keeper_failing:
                logger.warning("cannot renew build leases: %s", error)
            self._keeper_failing = True
            return []
        if self._keeper_failing:
            logger.warning("build leases renewed again")
        self._keeper_failing = False
        for run_id in expired:
            logger.warning("build %s failed: its lease expired", run_id)
        return expired
