"""``factor-engine serve``, ``ingest`` and ``delete-panel``: the REST service and its store."""

from __future__ import annotations

import datetime
import os
import socket
import time
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.text import Text

from factor_engine.cli._common import (
    Verbose,
    _reported_errors,
    app,
    console,
    err_console,
)
from factor_engine.panel import (
    DATE,
    SYMBOL,
    load_panel,
)

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_WORKER_HEALTHCHECK_SECONDS = 30

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="FACTOR_ENGINE_DATABASE_URL",
        help="Store URL (sqlite:///file.db or postgresql://...); default sqlite:///factor_engine.db.",
        show_default=False,
    ),
]
DatabaseSchema = Annotated[
    str | None,
    typer.Option("--schema", envvar="FACTOR_ENGINE_DATABASE_SCHEMA", help="PostgreSQL schema of the store tables."),
]


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request (costs latency under load).")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Worker processes sharing the port and the store; each runs its own builds (build leases keep "
            "them from failing each other's), and a worker that dies is restarted.",
        ),
    ] = 1,
    database_url: DatabaseUrl = None,
    schema: DatabaseSchema = None,
    verbose: Verbose = False,
) -> None:
    """Run the REST service (uvicorn) on the configured store, under /api/v1/factor-engine (docs at /docs).

    Reads its settings from the environment (README, "Service settings"): FACTOR_ENGINE_DATABASE_URL,
    FACTOR_ENGINE_DATABASE_SCHEMA, REDIS_URL (response cache), FACTOR_ENGINE_API_KEY, the request limits
    (FACTOR_ENGINE_MAX_BODY_BYTES, FACTOR_ENGINE_MAX_UPLOAD_ROWS, ...) and the build limits
    (FACTOR_ENGINE_MAX_CONCURRENT_BUILDS, FACTOR_ENGINE_MAX_QUEUED_BUILDS, FACTOR_ENGINE_BUILD_MEMORY_BUDGET_BYTES,
    FACTOR_ENGINE_RUN_LEASE_SECONDS, ...).

    Example:

        factor-engine serve --host 0.0.0.0 --port 8000 --workers 2
    """
    with _reported_errors(verbose):
        import uvicorn

        from factor_engine.service import Settings, create_app

        overrides = {"database_url": database_url, "database_schema": schema}
        settings = Settings().model_copy(update={key: value for key, value in overrides.items() if value is not None})
        if not settings.api_key and host not in _LOOPBACK:
            err_console.print(
                Text(
                    f"warning: serving on {host} without an API key: anyone who can reach port {port} can read and "
                    "write the store and start builds; set FACTOR_ENGINE_API_KEY",
                    style="bold yellow",
                ),
                soft_wrap=True,
            )
        if workers == 1:
            uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=access_log)
            return
        from factor_engine.storage import connect

        # the workers read their settings from the environment; the store is migrated once, here, before they
        # start (SQLite cannot serialize concurrent migrations)
        for name, value in (("FACTOR_ENGINE_DATABASE_URL", database_url), ("FACTOR_ENGINE_DATABASE_SCHEMA", schema)):
            if value is not None:
                os.environ[name] = value
        connect(settings.database_url, schema=settings.database_schema).close()
        from uvicorn.supervisors import Multiprocess

        config = uvicorn.Config(
            "factor_engine.service.app:create_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="info",
            access_log=access_log,
            # the supervisor kills a worker that does not answer its ping within this many seconds; the answer
            # comes from a Python thread, which a loaded machine can keep from the GIL for more than uvicorn's
            # default 5 s during a large upload or build (a worker was killed so in bench_workers)
            timeout_worker_healthcheck=_WORKER_HEALTHCHECK_SECONDS,
        )
        listening = config.bind_socket()
        # asyncio turns Nagle's algorithm off only on sockets whose protocol is IPPROTO_TCP, and the socket uvicorn
        # binds for its workers has protocol 0: each response (headers and body are two writes) then waited for
        # the client's delayed ACK, 44 ms a request (measured). Accepted sockets inherit TCP_NODELAY from it.
        listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        Multiprocess(config, sockets=[listening]).run()


@app.command()
def ingest(
    panel_path: Annotated[
        Path,
        typer.Argument(
            metavar="PANEL", help="Panel file (.parquet, .pq or .csv): date, symbol and any of the contract columns."
        ),
    ],
    database_url: DatabaseUrl = None,
    schema: DatabaseSchema = None,
    verbose: Verbose = False,
) -> None:
    """Load a panel file into the store (upsert by date and symbol).

    The file needs date and symbol; the other contract columns it has (asset_returns, market_cap, sector,
    the value features book_price, sales_price, cf_price, the trading columns volume, shares_outstanding,
    turnover and the USE4 fundamentals earnings_price, forecast_earnings_price, dividend_yield,
    earnings_growth, sales_growth, forecast_growth, market_leverage, book_leverage, debt_to_assets) are
    validated and stored, and stored columns it lacks are left as they are. Prints the rows inserted and
    updated, symbols, date range, seconds and the columns stored.

    Example:

        factor-engine ingest --database-url sqlite:///factors.db panel.parquet
    """
    with _reported_errors(verbose):
        started = time.perf_counter()
        _store_panel(load_panel(panel_path, require=(DATE, SYMBOL)), database_url, schema, started)


def _store_panel(panel: pl.DataFrame, database_url: str | None, schema: str | None, started: float) -> None:
    """Upsert a validated panel into the store and print the rows, symbols, dates, seconds since ``started``
    (a :func:`time.perf_counter` value), the columns stored and the store (``ingest``, ``ingest-ib``)."""
    from factor_engine.storage import connect

    store = connect(database_url, schema=schema)
    try:
        result = store.ingest_panel(panel)
        where = store.describe()
    finally:
        store.close()
    console.print(
        Text.assemble(
            ("ingested: ", "bold"),
            f"{result.rows:,} rows ({result.inserted:,} inserted, {result.updated:,} updated), "
            f"{result.symbols:,} symbols, {result.first_date} → {result.last_date}, "
            f"{time.perf_counter() - started:.2f} seconds",
        ),
        soft_wrap=True,
    )
    stored = ", ".join(c for c in panel.columns if c not in (DATE, SYMBOL)) or "none besides date and symbol"
    console.print(Text.assemble(("columns: ", "bold"), stored), soft_wrap=True)
    console.print(Text(f"store: {where}"), soft_wrap=True)


@app.command("delete-panel")
def delete_panel(
    symbols: Annotated[
        list[str] | None,
        typer.Option("--symbol", "-s", help="Symbol whose rows to delete; repeat the option for several."),
    ] = None,
    start: Annotated[
        str | None, typer.Option("--start", help="YYYY-MM-DD: first date deleted (inclusive).", show_default=False)
    ] = None,
    end: Annotated[
        str | None, typer.Option("--end", help="YYYY-MM-DD: last date deleted (inclusive).", show_default=False)
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Delete every panel row (alone, without --symbol, --start or --end).")
    ] = False,
    database_url: DatabaseUrl = None,
    schema: DatabaseSchema = None,
    verbose: Verbose = False,
) -> None:
    """Delete panel rows from the store, in one transaction, and print how many went.

    The rows deleted are those of the --symbol(s) between --start and --end (inclusive; give any of the
    three), or every row with --all. Stored models are not touched.

    Example:

        factor-engine delete-panel --symbol AAPL --symbol MSFT --start 2024-01-01 --end 2024-03-31
    """
    with _reported_errors(verbose):
        from factor_engine.storage import connect

        first, last = _cli_date(start, "--start"), _cli_date(end, "--end")
        if everything and (symbols or first or last):
            raise ValueError("--all deletes every row: do not combine it with --symbol, --start or --end")
        if not everything and not (symbols or first or last):
            raise ValueError("say which rows to delete: --symbol (repeatable), --start and/or --end, or --all")
        store = connect(database_url, schema=schema)
        try:
            deleted = store.delete_panel(symbols=symbols or None, start=first, end=last, all=everything)
            where = store.describe()
        finally:
            store.close()
        console.print(Text.assemble(("deleted: ", "bold"), f"{deleted:,} panel rows"), soft_wrap=True)
        console.print(Text(f"store: {where}"), soft_wrap=True)


def _cli_date(text: str | None, option: str) -> datetime.date | None:
    """A YYYY-MM-DD option value as a date (None stays None); ValueError naming the option otherwise."""
    if text is None:
        return None
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option} must be a date YYYY-MM-DD, got {text!r}") from None
