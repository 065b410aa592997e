"""Background model builds: one worker thread consuming a queue of run ids.

The status of every run lives in the database (``create_run`` → ``start_run`` → ``update_progress`` →
``save_model`` or ``fail_run``), so it survives the process; at start-up the service marks runs left queued
or running by a previous process as failed (``fail_interrupted_runs``) and queues nothing itself. On
shutdown the runner stops taking jobs; a build under way is abandoned at its next stage and its run failed
as interrupted (never half-saved: ``save_model`` is one transaction).
"""

from __future__ import annotations

import logging
import queue
import threading

import polars as pl
from pydantic import ValidationError

from factor_engine.service.builds import BuildCancelled, run_build
from factor_engine.service.runtime import JobQueue, StoreHolder
from factor_engine.service.schemas import CreateModelRequest

__all__ = ["JobRunner"]

logger = logging.getLogger(__name__)
_STOP = ""


class JobRunner(JobQueue):
    """Runs queued builds one at a time on a daemon worker thread.

    Parameters
    ----------
    stores: the service's store (each job takes it when it starts).
    """

    def __init__(self, stores: StoreHolder) -> None:
        self._stores = stores
        self._queue: queue.Queue[str] = queue.Queue()
        self._stopping = threading.Event()
        self._active: set[str] = set()
        self._panels: dict[str, pl.DataFrame] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._work, name="factor-engine-jobs", daemon=True)
        self._thread.start()

    def submit(self, run_id: str, panel: pl.DataFrame | None = None) -> None:
        """Queue the build of the (queued) run ``run_id``; ``panel``: its checked panel if already loaded (else
        the job loads it from the store when it starts)."""
        if self._stopping.is_set():
            raise RuntimeError("the service is stopping and takes no new jobs")
        with self._lock:
            self._active.add(run_id)
            if panel is not None:
                self._panels[run_id] = panel
        self._queue.put(run_id)

    def is_active(self, run_id: str) -> bool:
        """True while ``run_id`` waits in the queue or is being built by this process."""
        with self._lock:
            return run_id in self._active

    def stop(self, timeout: float = 5.0) -> None:
        """Take no more jobs, abandon a running build at its next stage and wait up to ``timeout`` seconds."""
        self._stopping.set()
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            run_id = self._queue.get()
            if run_id == _STOP or self._stopping.is_set():
                return
            try:
                store = self._stores.get()
                try:
                    request = CreateModelRequest.model_validate(store.get_run(run_id).request)
                except ValidationError as error:
                    store.fail_run(run_id, f"the job's request is not a valid model build request: {error}")
                    continue
                with self._lock:
                    panel = self._panels.pop(run_id, None)
                run_build(store, run_id, request, panel=panel, cancelled=self._stopping)
            except BuildCancelled:
                return
            except Exception:  # the failure is recorded on the run by run_build
                logger.exception("build %s failed", run_id)
            finally:
                with self._lock:
                    self._active.discard(run_id)
                    self._panels.pop(run_id, None)
