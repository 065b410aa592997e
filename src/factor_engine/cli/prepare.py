"""``factor-engine prepare``: a contract panel from adjusted closes, a sector map and optional caps or shares
and fundamentals (:mod:`factor_engine.prepare`)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from factor_engine.cli._common import (
    Verbose,
    _check_output_file,
    _panel_summary,
    _print_written,
    _reported_errors,
    _write_frame,
    app,
    console,
)
from factor_engine.panel import SHARES_OUTSTANDING
from factor_engine.prepare import PrepareSummary, PrepareWarning, prepare_files


def _count(count: int, word: str) -> str:
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"


def _summary_lines(summary: PrepareSummary) -> list[Text]:
    """One line per step of :func:`factor_engine.prepare.prepare_panel`: what it read and what it made."""
    sources = summary.sources
    lines: list[tuple[str, str, str]] = []  # (step, result, style)
    layout = summary.prices_layout + (f", column {summary.close_column!r}" if summary.close_column else "")
    lines.append(("prices", f"{sources['prices']} ({layout})", ""))
    lines.append(
        (
            "returns",
            f"null at {_count(summary.first_returns, 'first close')} and at {_count(summary.gap_returns, 'close')} "
            f"after a missing day ({_count(summary.missing_days, 'missing day')})",
            "",
        )
    )
    if summary.symbols_without_prices:
        lines.append(("no closes, left out", ", ".join(summary.symbols_without_prices), "yellow"))
    labels = ", ".join(summary.sector_labels)
    lines.append(
        (
            "sectors",
            f"{sources['sectors']} ({summary.sectors_layout}, {len(summary.sector_labels)} labels: {labels})",
            "",
        )
    )
    if summary.market_cap_source == "shares":
        market_cap = f"shares × close, shares from {sources['shares']}"
    elif summary.market_cap_source == "caps":
        market_cap = f"from {sources['caps']}"
    else:
        market_cap = "none (no market_cap column: a model weights assets equally)"
    if summary.rows_dropped_without_cap:
        market_cap += f"; {_count(summary.rows_dropped_without_cap, 'row')} before a first value dropped"
    lines.append(("market cap", market_cap, ""))
    if summary.value_features:
        made = ", ".join(
            f"{feature} = {how}" if how != feature else feature for feature, how in summary.value_features.items()
        )
        lines.append(("fundamentals", f"{made} (from {sources['fundamentals']})", ""))
    if summary.trading_columns:
        kept = ", ".join(summary.trading_columns)
        if SHARES_OUTSTANDING in summary.trading_columns:
            lines.append(("trading columns", f"{kept} (liquidity's turnover = volume / shares_outstanding)", ""))
        else:
            lines.append(
                ("trading columns", f"{kept} (liquidity also needs shares outstanding: give --shares)", "yellow")
            )
    for role, tickers in summary.unmatched.items():
        lines.append(
            (
                "unmatched",
                f"{sources[role]}: {_count(len(tickers), 'ticker')} without prices, left unused: {', '.join(tickers)}",
                "yellow",
            )
        )
    for role, columns in summary.ignored_columns.items():
        lines.append(("ignored columns", f"{sources[role]}: {', '.join(columns)}", ""))
    return [Text.assemble((f"{step}: ", f"bold {style}".strip()), (result, style)) for step, result, style in lines]


@app.command()
def prepare(
    prices: Annotated[
        Path,
        typer.Option(
            "--prices",
            "-p",
            help="Adjusted closes: wide (date + one column per symbol) or long (date, symbol, close, and volume "
            "to keep it for liquidity); .csv, .csv.gz, .parquet or .pq.",
        ),
    ],
    sectors: Annotated[
        Path,
        typer.Option(
            "--sectors", "-s", help="Sector map: symbol, sector (static) or date, symbol, sector (from each date on)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Panel file to write (.parquet, .pq or .csv).")],
    caps: Annotated[
        Path | None,
        typer.Option("--caps", help="Market caps (currency units), wide or long date, symbol, market_cap."),
    ] = None,
    shares: Annotated[
        Path | None,
        typer.Option("--shares", help="Shares outstanding, wide or long date, symbol, shares (cap = shares × close)."),
    ] = None,
    fundamentals: Annotated[
        Path | None,
        typer.Option(
            "--fundamentals",
            "-f",
            help="Long date, symbol and any of book_price, sales_price, cf_price and the USE4 fundamentals "
            "(earnings_price, forecast_earnings_price, dividend_yield, earnings_growth, sales_growth, "
            "forecast_growth, market_leverage, book_leverage, debt_to_assets), or book_value, sales, cash_flow, "
            "earnings, forecast_earnings, dividends (divided by the market cap).",
        ),
    ] = None,
    drop_missing_caps: Annotated[
        bool,
        typer.Option(
            "--drop-missing-caps",
            help="Drop price rows before a symbol's first cap or shares value instead of stopping with an error.",
        ),
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Make a panel following the data contract from adjusted closes, a sector map, and market caps or shares
    outstanding and fundamentals if you have them.

    Returns are close over previous close minus 1 on consecutive dates of the prices file; the first close of a
    symbol and the first close after a day it has no close get a null return. Sectors, caps, shares and
    fundamentals apply from their date until the symbol's next value (the last value known on each price
    date, never a later one). Prints what was done (symbols, dates, rows, nulled returns, unmatched tickers,
    where market caps came from) and where the panel was written.

    Example:

        factor-engine prepare --prices closes.csv.gz --sectors sectors.csv --shares shares.csv --out panel.parquet
    """
    with _reported_errors(verbose):
        _check_output_file(out)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrepareWarning)  # the summary lists unmatched tickers
            prepared = prepare_files(
                prices,
                sectors,
                caps=caps,
                shares=shares,
                fundamentals=fundamentals,
                missing_caps="drop" if drop_missing_caps else "error",
            )
        for line in _summary_lines(prepared.summary):
            console.print(line, soft_wrap=True)
        console.print(Text.assemble(("panel: ", "bold"), _panel_summary(prepared.panel)))
        _print_written([_write_frame(prepared.panel, out)])
