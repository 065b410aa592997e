"""``factor-engine`` command line: a contract panel from prices (prepare), style scores, factor returns and risk
models from a panel file, their validation and report, a portfolio's risk decomposition on a built model, the
service and its store, and a synthetic demo.

Every command calls the library (:mod:`factor_engine.panel`, :mod:`factor_engine.styles`,
:func:`factor_engine.estimate_factor_returns`, :mod:`factor_engine.model`, :mod:`factor_engine.portfolio`,
:mod:`factor_engine.synthetic`) and only formats its results; ``serve`` runs the REST service
(:mod:`factor_engine.service`) and ``ingest`` loads a panel file into the store (:mod:`factor_engine.storage`).
A library error (an invalid panel, a bad parameter, an unwritable path) is printed as one red line
``error: <message>`` and the command exits with code 1; ``--verbose`` prints the traceback as well.

The commands live in one module per group: :mod:`.explore` (demo, styles, factor-returns, synthetic),
:mod:`.models` (build, update, risk, validate, report), :mod:`.optimize` (optimize: a factor-constrained portfolio),
:mod:`.prepare` (prepare: a panel from prices and a sector map)
and :mod:`.service` (serve, ingest, delete-panel), :mod:`.ib` (ingest-ib: a panel from Interactive Brokers),
:mod:`.backtest` (backtest: a factor-constrained strategy in NautilusTrader's BacktestEngine), all on
the one Typer ``app`` of :mod:`._common`.
"""

from __future__ import annotations

import logging
import os
import sys

from factor_engine._allocator import is_one_shot, reuse_freed_memory

# A one-shot build or update keeps freed memory for reuse (factor_engine._allocator); set before numpy and
# polars load (the imports below), which the allocator's settings then cover from their first allocation.
if is_one_shot(sys.argv):
    reuse_freed_memory()

from factor_engine.cli import backtest, explore, ib, models, optimize, prepare, service
from factor_engine.cli._common import TRUE_EXPOSURES_COLUMN, app

__all__ = [
    "TRUE_EXPOSURES_COLUMN",
    "app",
    "backtest",
    "explore",
    "ib",
    "main",
    "models",
    "optimize",
    "prepare",
    "service",
]


def main() -> None:
    """Entry point of the ``factor-engine`` console script.

    A build or update ends the process as soon as its output is flushed (:func:`os._exit`): its files are
    written and synced by then, and the interpreter's teardown (numba's compiler, every module and the objects
    of a multi-gigabyte run: about 1 s on the 2-core machine) would only keep the caller waiting."""
    if not is_one_shot(sys.argv):
        app()
        return
    try:
        app()
        code = 0
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            code = done.code or 0
        else:
            print(done.code, file=sys.stderr)
            code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
