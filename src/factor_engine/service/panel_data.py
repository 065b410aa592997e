"""Panel ingestion from JSON rows or a Parquet / Arrow IPC request body, validated with the data contract, and
deletion of stored rows."""

from __future__ import annotations

import datetime
from typing import IO, Any

import polars as pl

from factor_engine.panel import DATE, SYMBOL, validate_panel
from factor_engine.service.errors import InputError
from factor_engine.service.schemas import PanelRow
from factor_engine.storage import IngestResult, Store

__all__ = ["UPLOAD_FORMATS", "delete_rows", "ingest_rows", "ingest_upload", "upload_format"]

# media type -> body format
UPLOAD_FORMATS: dict[str, str] = {
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/octet-stream": "parquet",
    "application/vnd.apache.arrow.file": "arrow file",
    "application/vnd.apache.arrow.stream": "arrow stream",
}
_COLUMN_TYPES: dict[str, Any] = {
    "asset_returns": pl.Float64,
    "market_cap": pl.Float64,
    "sector": pl.String,
    "book_price": pl.Float64,
    "sales_price": pl.Float64,
    "cf_price": pl.Float64,
}


def upload_format(content_type: str | None) -> str:
    """The body format of a ``Content-Type`` header; InputError-like 415 is decided by the caller."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return UPLOAD_FORMATS.get(media_type, "")


def ingest_rows(store: Store, rows: list[PanelRow]) -> IngestResult:
    """Validate JSON rows and upsert them. A column that no row sets is left out (the stored values of that
    column are kept); a column some rows set is stored for every row (null where a row lacks it)."""
    present = set().union(*(row.model_fields_set for row in rows))
    columns = [name for name in _COLUMN_TYPES if name in present]
    data: dict[str, list[Any]] = {DATE: [row.date for row in rows], SYMBOL: [row.symbol for row in rows]}
    for column in columns:
        data[column] = [getattr(row, column) for row in rows]
    frame = pl.DataFrame(data, schema={DATE: pl.Date, SYMBOL: pl.String, **{c: _COLUMN_TYPES[c] for c in columns}})
    return store.ingest_panel(validate_panel(frame, require=(DATE, SYMBOL)))


def read_upload(body: IO[bytes], body_format: str) -> pl.DataFrame:
    """A frame from a Parquet or Arrow IPC (file or stream) body; InputError when it cannot be read."""
    try:
        if body_format == "parquet":
            return pl.read_parquet(body)
        if body_format == "arrow file":
            return pl.read_ipc(body)
        return pl.read_ipc_stream(body)
    except Exception as error:  # polars/pyarrow raise several types for a corrupt body
        raise InputError(f"cannot read the request body as {body_format}: {error}") from error


def ingest_upload(store: Store, body: IO[bytes], body_format: str) -> IngestResult:
    """Read, validate and upsert an uploaded panel; only the contract's columns are accepted."""
    frame = read_upload(body, body_format)
    unknown = [name for name in frame.columns if name not in (DATE, SYMBOL, *_COLUMN_TYPES)]
    if unknown:
        raise InputError(
            f"the panel has column(s) {unknown} the store does not keep; allowed: {[DATE, SYMBOL, *_COLUMN_TYPES]}"
        )
    return store.ingest_panel(validate_panel(frame, require=(DATE, SYMBOL)))


def delete_rows(
    store: Store,
    symbols: list[str] | None,
    start: datetime.date | None,
    end: datetime.date | None,
    everything: bool,
) -> int:
    """Delete the stored rows of ``symbols`` within [start, end] (any of the three), or every row with
    ``everything``; InputError (422) naming the query parameters for a request that selects nothing or mixes
    ``all`` with a selector. No cache holds panel rows (models are stored, and cached, on their own), so there
    is nothing to invalidate."""
    chosen = None if symbols is None else [symbol for symbol in symbols if symbol.strip()]
    if symbols is not None and not chosen:
        raise InputError("symbol is empty: give a symbol (?symbol=AAPL, repeatable)")
    given = [name for name, value in (("symbol", chosen), ("start", start), ("end", end)) if value is not None]
    if everything and given:
        raise InputError(f"all=true deletes every row: do not combine it with {', '.join(given)}")
    if not everything and not given:
        raise InputError(
            "say which panel rows to delete: symbol (repeatable), start and/or end (YYYY-MM-DD, inclusive), "
            "or all=true to delete every row"
        )
    if start is not None and end is not None and start > end:
        raise InputError(f"start {start} is after end {end}")
    return store.delete_panel(symbols=chosen, start=start, end=end, all=everything)
