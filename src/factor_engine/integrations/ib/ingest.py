"""A contract panel from Interactive Brokers: download each symbol's daily adjusted bars, sector labels and market
cap into a work directory, one checkpoint per complete symbol, then make the panel with
:func:`factor_engine.prepare.prepare_panel`.

Resumable: a symbol's checkpoint (``<work_dir>/symbols/<symbol>.parquet``) is written atomically once all of its
data is in, so an interrupted download leaves complete symbols only, and a rerun with the same work directory
skips them. A symbol that fails (unknown, no permission, no data) is left out with the reason and asked for
again on the next run.

Market caps: IB's fundamental ratios give today's market cap (``MKTCAP``, millions), not its history. The panel's
``market_cap`` is today's shares (MKTCAP / the last adjusted close) times each day's adjusted close, and the
same shares are its ``shares_outstanding`` (with IB's volume, liquidity's turnover): a look-ahead on share
counts that IB's data cannot avoid. A cap is all or nothing: when any symbol lacks one (no permission for
fundamental ratios, none within the timeout) the panel has no ``market_cap`` at all (a prices-only panel; the
model then weights assets equally), and the ratios are not asked for again in that download.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import polars as pl

from factor_engine.integrations.ib.gateway import (
    BAR_SIZE,
    WHAT_TO_SHOW,
    Gateway,
    GatewayConnectionError,
    GatewaySettings,
    SymbolProblem,
)
from factor_engine.integrations.ib.pacing import Pacer
from factor_engine.integrations.ib.sectors import SectorChoice, SectorMap, load_sector_map
from factor_engine.panel import DATE, SECTOR, SYMBOL, VOLUME
from factor_engine.prepare import PreparedPanel, prepare_panel

__all__ = [
    "IBIngestResult",
    "IngestEvent",
    "SymbolSpec",
    "assemble_panel",
    "download",
    "ingest_ib",
    "read_symbols",
    "remove_work_dir",
]

_CHECKPOINT_SCHEMA = {
    DATE: pl.Date,
    "close": pl.Float64,
    VOLUME: pl.Float64,
    SYMBOL: pl.String,
    "con_id": pl.Int64,
    "primary_exchange": pl.String,
    "industry": pl.String,
    "category": pl.String,
    "market_cap_millions": pl.Float64,
    "cap_note": pl.String,
}
_SYMBOL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 .\-/]*$")

EventKind = Literal["start", "page", "done", "resumed", "left out", "pacing", "caps off"]


@dataclass(frozen=True)
class IngestEvent:
    """Progress of a download, for a progress bar: ``kind`` happened to ``symbol``; ``message`` says what."""

    kind: EventKind
    symbol: str
    message: str = ""


@dataclass(frozen=True)
class SymbolSpec:
    """One line of the symbols file: a symbol and, optionally, its primary exchange (for an ambiguous one)."""

    symbol: str
    primary_exchange: str = ""


@dataclass(frozen=True)
class DownloadResult:
    """What :func:`download` did: symbols downloaded now, found complete in the work directory, left out (with
    the reason), the pacing figures and why market caps were given up (None when they were not)."""

    downloaded: tuple[str, ...]
    resumed: tuple[str, ...]
    left_out: dict[str, str]
    requests: int
    pacing_violations: int
    waited_seconds: float
    caps_off: str | None


@dataclass(frozen=True)
class IBIngestResult:
    """A panel made from IB data and how: ``prepared`` (the panel and prepare's summary), the download, where the
    sectors came from (``sector_map``; ``sector_sources`` symbol → "category", "industry", "unmapped" or
    "missing"; ``unmapped`` symbol → IB industry kept as the label) and ``caps`` (how market caps were made, or
    why the panel has none)."""

    prepared: PreparedPanel
    download: DownloadResult
    sector_map: str
    sector_sources: dict[str, str]
    unmapped: dict[str, str]
    caps: str
    work_dir: Path

    @property
    def panel(self) -> pl.DataFrame:
        return self.prepared.panel


# --------------------------------------------------------------------------------------------------
# inputs


def read_symbols(path: str | Path) -> list[SymbolSpec]:
    """The symbols of a text file: one per line as ``SYMBOL`` or ``SYMBOL,PRIMARY_EXCHANGE`` (IB's symbol, which
    may hold a space: ``BRK B``), blank lines and ``#`` comments ignored, an optional ``symbol`` header line.

    Raises
    ------
    FileNotFoundError, ValueError
        A missing file, no symbols, a malformed line or a symbol listed twice; the message names the file and
        the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"symbols file {path} does not exist") from None
    specs: list[SymbolSpec] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line or (not specs and not seen and line.lower() in ("symbol", "symbol,primary_exchange")):
            continue
        parts = [" ".join(part.split()) for part in line.split(",")]
        if len(parts) > 2 or not _SYMBOL_PATTERN.match(parts[0]) or (len(parts) == 2 and not parts[1].isalnum()):
            raise ValueError(f"{path}, line {number}: expected 'SYMBOL' or 'SYMBOL,PRIMARY_EXCHANGE', got {raw!r}")
        symbol = parts[0].upper()
        if symbol in seen:
            raise ValueError(f"{path}, line {number}: {symbol} is listed twice (first on line {seen[symbol]})")
        seen[symbol] = number
        specs.append(SymbolSpec(symbol, parts[1].upper() if len(parts) == 2 else ""))
    if not specs:
        raise ValueError(f"symbols file {path} lists no symbols")
    return specs


# --------------------------------------------------------------------------------------------------
# work directory


def _manifest(years: int, settings: GatewaySettings) -> dict[str, object]:
    """What makes two downloads' checkpoints compatible."""
    return {
        "years": years,
        "what_to_show": WHAT_TO_SHOW,
        "bar_size": BAR_SIZE,
        "exchange": settings.exchange,
        "currency": settings.currency,
    }


def _open_work_dir(work_dir: Path, manifest: dict[str, object]) -> Path:
    """Create the work directory, or check that the one there holds a download with the same settings."""
    path = work_dir / "manifest.json"
    if path.exists():
        found = json.loads(path.read_text(encoding="utf-8"))
        if found != manifest:
            differ = ", ".join(
                f"{key} {found.get(key)!r} (now {value!r})"
                for key, value in manifest.items()
                if found.get(key) != value
            )
            raise ValueError(
                f"work directory {work_dir} holds a download with other settings: {differ}; use another "
                "--work-dir, or delete it to start over"
            )
    else:
        (work_dir / "symbols").mkdir(parents=True, exist_ok=True)
        _write_atomically(path, lambda target: target.write_text(json.dumps(manifest, indent=2), encoding="utf-8"))
    (work_dir / "symbols").mkdir(parents=True, exist_ok=True)
    return work_dir


def _checkpoint_path(work_dir: Path, symbol: str) -> Path:
    return work_dir / "symbols" / f"{quote(symbol, safe='')}.parquet"


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file in the same directory, then rename it over ``path`` (all or nothing)."""
    temporary = path.with_name(f".{path.name}.partial")
    write(temporary)
    os.replace(temporary, path)


def _read_checkpoint(work_dir: Path, symbol: str) -> pl.DataFrame | None:
    path = _checkpoint_path(work_dir, symbol)
    return pl.read_parquet(path) if path.exists() else None


# --------------------------------------------------------------------------------------------------
# download


@contextmanager
def _ib_async_logs(enabled: bool) -> Iterator[None]:
    """ib_async logs every API error; the download reports them itself, so they stay quiet unless ``enabled``."""
    logger = logging.getLogger("ib_async")
    level = logger.level
    if not enabled:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


async def _download_symbol(
    gateway: Gateway,
    spec: SymbolSpec,
    years: int,
    page_years: int,
    caps_off: str | None,
    emit: Callable[[IngestEvent], None],
) -> pl.DataFrame:
    """One symbol's checkpoint frame: its daily bars and contract details, and its market cap unless caps are
    off (then the reason they are is its note)."""
    symbol = spec.symbol

    def on_page(page: int, pages: int) -> None:
        emit(IngestEvent("page", symbol, f"daily bars, page {page} of {pages}"))

    info = await gateway.contract(symbol, spec.primary_exchange)
    bars = await gateway.daily_bars(info, years, page_years, on_page=on_page)
    cap, cap_note = (None, caps_off) if caps_off is not None else await gateway.market_cap_millions(info)
    return bars.with_columns(
        pl.lit(symbol).alias(SYMBOL),
        pl.lit(info.con_id, pl.Int64).alias("con_id"),
        pl.lit(info.primary_exchange).alias("primary_exchange"),
        pl.lit(info.industry).alias("industry"),
        pl.lit(info.category).alias("category"),
        pl.lit(cap, pl.Float64).alias("market_cap_millions"),
        pl.lit(cap_note).alias("cap_note"),
    ).select(list(_CHECKPOINT_SCHEMA))


async def download(
    symbols: Sequence[SymbolSpec],
    *,
    years: int,
    work_dir: Path,
    settings: GatewaySettings | None = None,
    page_years: int | None = None,
    caps: bool = True,
    pacer: Pacer | None = None,
    on_event: Callable[[IngestEvent], None] | None = None,
) -> DownloadResult:
    """Download every symbol not yet complete in ``work_dir`` into its checkpoint.

    Parameters
    ----------
    symbols:
        The stocks, in order.
    years:
        Years of daily bars to ask for (whole years).
    work_dir:
        Checkpoints and the manifest; created if needed.
    settings:
        The gateway to use (:class:`GatewaySettings`).
    page_years:
        Years per page of historical data (see :meth:`Gateway.daily_bars`); default ``years``, one request a
        symbol (the fewest under IB's 60 requests per 10 minutes).
    caps:
        Ask for the fundamental ratios (market cap); False gives a prices-only panel without asking.
    pacer:
        Keeps IB's pacing limits (default :class:`Pacer` with IB's limits on the real clock).
    on_event:
        Called with each :class:`IngestEvent`.

    Raises
    ------
    GatewayConnectionError
        The gateway cannot be reached or the connection was lost; the message says which symbols are complete
        and that a rerun resumes.
    """
    if years < 1:
        raise ValueError(f"years must be at least 1, got {years}")
    if page_years is not None and page_years < 1:
        raise ValueError(f"page_years must be at least 1, got {page_years}")
    settings = settings or GatewaySettings()
    pacer = pacer or Pacer()
    emit = on_event or (lambda event: None)
    _open_work_dir(work_dir, _manifest(years, settings))

    resumed: list[str] = []
    pending: list[SymbolSpec] = []
    caps_off: str | None = None if caps else "not asked for (--no-caps)"
    for spec in symbols:
        checkpoint = _read_checkpoint(work_dir, spec.symbol)
        if checkpoint is None:
            pending.append(spec)
            continue
        resumed.append(spec.symbol)
        emit(IngestEvent("resumed", spec.symbol, "complete in the work directory"))
        if caps_off is None and checkpoint.item(0, "market_cap_millions") is None:
            caps_off = f"{spec.symbol}: {checkpoint.item(0, 'cap_note')}"

    downloaded: list[str] = []
    left_out: dict[str, str] = {}
    gateway: Gateway | None = None
    if pending:
        gateway = Gateway(
            settings, pacer, on_pacing=lambda symbol, message: emit(IngestEvent("pacing", symbol, message))
        )
        async with gateway:
            for spec in pending:
                symbol = spec.symbol
                emit(IngestEvent("start", symbol))
                try:
                    checkpoint = await _download_symbol(gateway, spec, years, page_years or years, caps_off, emit)
                except SymbolProblem as problem:
                    left_out[symbol] = str(problem)
                    emit(IngestEvent("left out", symbol, str(problem)))
                    continue
                except GatewayConnectionError as error:
                    complete = len(resumed) + len(downloaded)
                    raise GatewayConnectionError(
                        f"{error}: {complete} of {len(symbols)} symbols are complete in {work_dir} and "
                        f"{symbol} was not written; run the same command again to resume"
                    ) from None
                cap_note = checkpoint.item(0, "cap_note")
                if caps_off is None and checkpoint.item(0, "market_cap_millions") is None:
                    caps_off = f"{symbol}: {cap_note}"
                    emit(IngestEvent("caps off", symbol, f"{cap_note}; the panel will have no market_cap"))
                _write_atomically(_checkpoint_path(work_dir, symbol), checkpoint.write_parquet)
                downloaded.append(symbol)
                emit(
                    IngestEvent(
                        "done",
                        symbol,
                        f"{checkpoint.height:,} daily bars, {checkpoint.item(0, DATE)} → {checkpoint.item(-1, DATE)}",
                    )
                )
    return DownloadResult(
        downloaded=tuple(downloaded),
        resumed=tuple(resumed),
        left_out=left_out,
        requests=pacer.requests,
        pacing_violations=gateway.pacing_violations if gateway is not None else 0,
        waited_seconds=pacer.waited_seconds,
        caps_off=caps_off,
    )


# --------------------------------------------------------------------------------------------------
# panel


def assemble_panel(
    work_dir: Path, symbols: Sequence[str], sector_map: SectorMap | None = None, *, caps: bool = True
) -> tuple[PreparedPanel, dict[str, SectorChoice], str]:
    """The panel of the checkpoints of ``symbols`` (those without one are skipped), made by
    :func:`factor_engine.prepare.prepare_panel` from their adjusted closes (and volume), the sectors of the map
    and, when every symbol has a market cap and ``caps``, shares = MKTCAP × 10⁶ / last close.

    Returns the prepared panel, each symbol's sector and how it was found, and how the caps were made (or why
    not).
    """
    sector_map = sector_map or load_sector_map()
    frames = [frame for symbol in symbols if (frame := _read_checkpoint(work_dir, symbol)) is not None]
    if not frames:
        raise ValueError(f"no symbol is complete in {work_dir}: nothing to make a panel of")
    bars = pl.concat(frames)
    meta = bars.group_by(SYMBOL, maintain_order=True).agg(
        pl.col("industry").first(),
        pl.col("category").first(),
        pl.col("market_cap_millions").first(),
        pl.col("cap_note").first(),
        pl.col(DATE).min().alias("first_date"),
        pl.col("close").sort_by(DATE).last().alias("last_close"),
    )
    choices = {
        row[SYMBOL]: sector_map.sector_of(row["industry"], row["category"]) for row in meta.iter_rows(named=True)
    }
    sectors = pl.DataFrame(
        {SYMBOL: list(choices), SECTOR: [choice.sector for choice in choices.values()]},
        schema={SYMBOL: pl.String, SECTOR: pl.String},
    )
    prices = bars.select(DATE, SYMBOL, pl.col("close").alias("adj_close"), VOLUME)
    if prices.get_column(VOLUME).null_count() == prices.height:
        prices = prices.drop(VOLUME)
    without_cap = meta.filter(pl.col("market_cap_millions").is_null())
    shares = None
    if not caps:
        how = "none: not asked for (--no-caps); a prices-only panel"
    elif without_cap.height:
        first = without_cap.row(0, named=True)
        how = (
            f"none: {without_cap.height} of {meta.height} symbols have no market cap (first {first[SYMBOL]}: "
            f"{first['cap_note']}); a prices-only panel"
        )
    else:
        shares = meta.select(
            pl.col("first_date").alias(DATE),
            SYMBOL,
            (pl.col("market_cap_millions") * 1e6 / pl.col("last_close")).alias("shares"),
        )
        how = "today's shares (IB fundamental ratios MKTCAP / last adjusted close) × each day's adjusted close"
    prepared = prepare_panel(
        prices,
        sectors,
        shares=shares,
        names={
            "prices": f"{work_dir} (IB daily bars)",
            "sectors": sector_map.source,
            "shares": "IB fundamental ratios (today's MKTCAP / last adjusted close)",
        },
    )
    return prepared, choices, how


def ingest_ib(
    symbols: Sequence[SymbolSpec],
    *,
    years: int,
    work_dir: str | Path,
    settings: GatewaySettings | None = None,
    sector_map: SectorMap | None = None,
    page_years: int | None = None,
    caps: bool = True,
    pacer: Pacer | None = None,
    on_event: Callable[[IngestEvent], None] | None = None,
    ib_logs: bool = False,
) -> IBIngestResult:
    """Download from IB Gateway/TWS (:func:`download`) and make the panel (:func:`assemble_panel`).

    Parameters are those of the two; ``ib_logs`` lets ib_async log its messages (quiet by default: the result
    reports every problem). Raises what they raise, and ValueError when no symbol could be downloaded.
    """
    work_dir = Path(work_dir)
    sector_map = sector_map or load_sector_map()
    with _ib_async_logs(ib_logs):
        result = asyncio.run(
            download(
                symbols,
                years=years,
                work_dir=work_dir,
                settings=settings,
                page_years=page_years,
                caps=caps,
                pacer=pacer,
                on_event=on_event,
            )
        )
    complete = [spec.symbol for spec in symbols if spec.symbol not in result.left_out]
    if not complete:
        reasons = "; ".join(f"{symbol}: {why}" for symbol, why in result.left_out.items())
        raise ValueError(f"no symbol could be downloaded: {reasons}")
    prepared, choices, how = assemble_panel(work_dir, complete, sector_map, caps=caps)
    return IBIngestResult(
        prepared=prepared,
        download=result,
        sector_map=sector_map.source,
        sector_sources={symbol: choice.how for symbol, choice in choices.items()},
        unmapped={symbol: choice.sector for symbol, choice in choices.items() if choice.how == "unmapped"},
        caps=how,
        work_dir=work_dir,
    )


def remove_work_dir(work_dir: Path) -> None:
    """Remove a work directory after its panel was written (its checkpoints would otherwise be resumed)."""
    shutil.rmtree(work_dir, ignore_errors=True)
