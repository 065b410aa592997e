"""``factor-engine ingest-ib``: a panel from Interactive Brokers (IB Gateway or TWS, through ib_async) into the
store or a file (:mod:`factor_engine.integrations.ib`)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.text import Text

from factor_engine.cli._common import (
    _LIVE_PROGRESS,
    Verbose,
    _check_output_file,
    _panel_summary,
    _print_written,
    _progress_bar,
    _reported_errors,
    _write_frame,
    app,
    console,
)
from factor_engine.cli.prepare import _summary_lines
from factor_engine.cli.service import DatabaseSchema, DatabaseUrl, _store_panel
from factor_engine.integrations.ib import (
    GatewaySettings,
    IBIngestResult,
    IngestEvent,
    ingest_ib,
    load_sector_map,
    read_symbols,
    remove_work_dir,
)
from factor_engine.panel import MARKET_CAP

DEFAULT_WORK_DIR = Path("ib_ingest_work")


def _symbols_bar(total: int) -> tuple[Progress, Callable[[IngestEvent], None]]:
    """A Rich bar over the symbols and the event handler that drives it (problems are printed above it)."""
    progress = _progress_bar()
    task = progress.add_task("connecting…", total=total)

    def on_event(event: IngestEvent) -> None:
        if event.kind == "start":
            progress.update(task, description=f"{event.symbol}: contract details")
        elif event.kind == "page":
            progress.update(task, description=f"{event.symbol}: {event.message}")
        elif event.kind in ("done", "resumed", "left out"):
            progress.advance(task)
            if event.kind == "left out":
                progress.console.print(
                    Text.assemble(("left out: ", "bold yellow"), (f"{event.symbol}: {event.message}", "yellow")),
                    soft_wrap=True,
                )
        elif event.kind == "pacing":
            progress.update(task, description=f"{event.symbol}: waiting (pacing)")
            progress.console.print(
                Text.assemble(("pacing: ", "bold yellow"), (f"{event.symbol}: {event.message}", "yellow")),
                soft_wrap=True,
            )
        elif event.kind == "caps off":
            progress.console.print(
                Text.assemble(("market caps: ", "bold yellow"), (f"{event.symbol}: {event.message}", "yellow")),
                soft_wrap=True,
            )

    return progress, on_event


def _result_lines(result: IBIngestResult) -> list[Text]:
    """What the download did: symbols, requests and pacing, sectors and market caps."""
    download = result.download
    lines = [
        Text.assemble(
            ("symbols: ", "bold"),
            f"{len(download.downloaded):,} downloaded, {len(download.resumed):,} resumed from {result.work_dir}, "
            f"{len(download.left_out):,} left out",
        ),
        Text.assemble(
            ("requests: ", "bold"),
            f"{download.requests:,} historical data requests, {download.pacing_violations:,} pacing violations "
            f"reported by IB, {download.waited_seconds:,.1f} s waited for IB's pacing limits",
        ),
    ]
    for symbol, reason in download.left_out.items():
        lines.append(Text.assemble(("left out: ", "bold yellow"), (f"{symbol}: {reason}", "yellow")))
    found = Counter(result.sector_sources.values())
    how = ", ".join(f"{count} by {source}" for source, count in sorted(found.items()))
    lines.append(Text.assemble(("sector map: ", "bold"), f"{result.sector_map} ({how})"))
    if result.unmapped:
        kept = ", ".join(f"{symbol} ({label})" for symbol, label in result.unmapped.items())
        lines.append(
            Text.assemble(
                ("unmapped: ", "bold yellow"),
                (f"IB industries the sector map does not name, kept as labels: {kept}", "yellow"),
            )
        )
    if MARKET_CAP not in result.panel.columns:  # else prepare's summary says how they were made
        lines.append(Text.assemble(("market caps: ", "bold yellow"), (result.caps, "yellow")))
    return lines


@app.command("ingest-ib")
def ingest_ib_command(
    symbols: Annotated[
        Path,
        typer.Option(
            "--symbols",
            "-s",
            help="Text file: one IB symbol per line (BRK B), optionally with its primary exchange after a comma "
            "(SHOP,NYSE); # starts a comment.",
        ),
    ],
    years: Annotated[int, typer.Option("--years", "-y", min=1, help="Years of daily bars, ending today.")],
    host: Annotated[str, typer.Option("--host", help="IB Gateway / TWS host.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="API port (IB Gateway 4001 live / 4002 paper, TWS 7496 / 7497).")
    ] = 4002,
    client_id: Annotated[int, typer.Option("--client-id", help="API client id, unused by any other connection.")] = 1,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the panel to this file (.parquet, .pq or .csv) instead of the store."),
    ] = None,
    sector_map: Annotated[
        Path | None,
        typer.Option(
            "--sector-map",
            help="TOML map of IB industry / category to sector, laid over the default "
            "(factor_engine/integrations/ib/sector_map.toml, which documents the layout).",
        ),
    ] = None,
    page_years: Annotated[
        int | None,
        typer.Option(
            "--page-years",
            min=1,
            help="Years per historical data request, paging back in time (default --years: one request a symbol).",
            show_default=False,
        ),
    ] = None,
    caps: Annotated[
        bool,
        typer.Option(
            "--caps/--no-caps",
            help="Ask for market caps (fundamental ratios, MKTCAP); without them, or when one symbol has none, "
            "the panel has prices only.",
        ),
    ] = True,
    work_dir: Annotated[
        Path,
        typer.Option("--work-dir", help="Per-symbol checkpoints; an interrupted download resumes from them."),
    ] = DEFAULT_WORK_DIR,
    keep_work_dir: Annotated[
        bool, typer.Option("--keep-work-dir", help="Keep the checkpoints after the panel is written.")
    ] = False,
    exchange: Annotated[str, typer.Option("--exchange", help="Exchange of the stock contracts.")] = "SMART",
    currency: Annotated[str, typer.Option("--currency", help="Currency of the stock contracts.")] = "USD",
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for one historical data request.")
    ] = 120.0,
    fundamentals_timeout: Annotated[
        float, typer.Option("--fundamentals-timeout", min=0.1, help="Seconds to wait for one stock's market cap.")
    ] = 10.0,
    database_url: DatabaseUrl = None,
    schema: DatabaseSchema = None,
    verbose: Verbose = False,
) -> None:
    """Download daily adjusted bars, sectors and market caps from Interactive Brokers (IB Gateway or TWS) and
    store them as a panel (or write it with --out). Needs `pip install 'factor-engine[ib]'`.

    For each symbol: contract details (its industry and category, mapped to a sector by the sector map),
    daily ADJUSTED_LAST bars for --years years, and the market cap (MKTCAP) from the fundamental ratios tick
    (generic tick 258) when the account is entitled; else the panel has prices only. Requests keep IB's pacing
    limits (60 historical requests per 10 minutes, identical requests 15 s apart, 5 per contract in 2 s) and a
    pacing violation is waited out and retried. Each symbol is checkpointed in --work-dir once complete: an
    interrupted run leaves no partial symbol, and running the same command again resumes. An unknown symbol or
    one without permission is left out with the reason. The panel is made as `prepare` makes one (returns from
    the adjusted closes, null after a missing day). --verbose also shows ib_async's own log.

    Example:

        factor-engine ingest-ib --symbols symbols.txt --years 10 --port 4002 --out panel.parquet
    """
    with _reported_errors(verbose):
        started = time.perf_counter()
        if out is not None:
            _check_output_file(out)
        specs = read_symbols(symbols)
        sectors = load_sector_map(sector_map)
        settings = GatewaySettings(
            host=host,
            port=port,
            client_id=client_id,
            exchange=exchange,
            currency=currency,
            request_timeout=timeout,
            fundamentals_timeout=fundamentals_timeout,
        )
        progress, on_event = _symbols_bar(len(specs))
        progress.start()
        _LIVE_PROGRESS.add(progress)
        try:
            result = ingest_ib(
                specs,
                years=years,
                work_dir=work_dir,
                settings=settings,
                sector_map=sectors,
                page_years=page_years,
                caps=caps,
                on_event=on_event,
                ib_logs=verbose,
            )
        finally:
            progress.stop()
            _LIVE_PROGRESS.discard(progress)
        for line in [*_result_lines(result), *_summary_lines(result.prepared.summary)]:
            console.print(line, soft_wrap=True)
        console.print(Text.assemble(("panel: ", "bold"), _panel_summary(result.panel)))
        if out is not None:
            _print_written([_write_frame(result.panel, out)])
        else:
            _store_panel(result.panel, database_url, schema, started)
        if keep_work_dir:
            console.print(Text(f"work directory kept: {work_dir}"), soft_wrap=True)
        else:
            remove_work_dir(work_dir)
