"""Panel ingestion from JSON rows or a Parquet / Arrow IPC request body, validated with the data contract, and
deletion of stored rows.

An upload is decoded in batches under two limits (:class:`UploadLimits`, from the settings' ``max_upload_rows``
and ``max_upload_decoded_bytes``): a body whose metadata declares more rows or uncompressed bytes (the
Parquet footer; the Arrow IPC messages' headers and compressed buffers' length prefixes) is refused before
anything is decompressed, and every body stops decoding as soon as the rows or bytes decoded so far pass a
limit, since metadata may lie (:class:`UploadTooLarge`, answered 413 by the router): a small compressed file
cannot make the server materialize gigabytes. Labels (``symbol``, ``sector``) longer than
:data:`~factor_engine.service.limits.MAX_LABEL_CHARS` or holding a NUL character are refused (422) before the
database sees them.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any, cast

import polars as pl
import pyarrow as pa
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq

from factor_engine.panel import DATE, SYMBOL, validate_panel
from factor_engine.service.errors import InputError
from factor_engine.service.limits import MAX_LABEL_CHARS
from factor_engine.service.schemas import PanelRow
from factor_engine.storage import IngestResult, Store
from factor_engine.storage.panel_store import PANEL_SCHEMA

__all__ = [
    "UPLOAD_FORMATS",
    "UploadLimits",
    "UploadTooLarge",
    "check_labels",
    "delete_rows",
    "ingest_rows",
    "ingest_upload",
    "read_upload",
    "rows_frame",
    "upload_format",
]

# media type -> body format
UPLOAD_FORMATS: dict[str, str] = {
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/octet-stream": "parquet",
    "application/vnd.apache.arrow.file": "arrow file",
    "application/vnd.apache.arrow.stream": "arrow stream",
}
# the columns the store keeps besides the keys (every column of the data contract), with their dtypes
_COLUMN_TYPES: dict[str, pl.DataType] = {
    name: dtype for name, dtype in PANEL_SCHEMA.items() if name not in (DATE, SYMBOL)
}
_ALLOWED_COLUMNS = (DATE, SYMBOL, *_COLUMN_TYPES)
_LABEL_COLUMNS = (SYMBOL, "sector")
# rows decoded at a time from a Parquet body (each batch is counted before the next is decoded)
_PARQUET_BATCH_ROWS = 65_536
_SPLIT_ADVICE = "upload the panel in several requests (ingestion upserts)"


class UploadTooLarge(InputError):
    """An upload (or JSON batch) above ``max_upload_rows`` or ``max_upload_decoded_bytes``; the router answers
    413 with the message (an InputError, so 422 where no router maps it)."""


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may decode to.

    Attributes
    ----------
    rows: most rows [FACTOR_ENGINE_MAX_UPLOAD_ROWS].
    decoded_bytes: most bytes of decoded (uncompressed Arrow) data [FACTOR_ENGINE_MAX_UPLOAD_DECODED_BYTES].
    """

    rows: int
    decoded_bytes: int


def _too_many_rows(rows: int, limit: int, *, at_least: bool = False) -> UploadTooLarge:
    amount = f"more than {limit:,} rows ({rows:,} decoded before stopping)" if at_least else f"{rows:,} rows"
    return UploadTooLarge(
        f"the upload decodes to {amount}; the limit is {limit:,} rows (FACTOR_ENGINE_MAX_UPLOAD_ROWS): {_SPLIT_ADVICE}"
    )


def _too_many_bytes(nbytes: int, limit: int, *, at_least: bool = False) -> UploadTooLarge:
    amount = f"more than {limit:,} bytes ({nbytes:,} decoded before stopping)" if at_least else f"{nbytes:,} bytes"
    return UploadTooLarge(
        f"the upload decodes to {amount}; the limit is {limit:,} bytes (FACTOR_ENGINE_MAX_UPLOAD_DECODED_BYTES): "
        f"{_SPLIT_ADVICE}"
    )


def upload_format(content_type: str | None) -> str:
    """The body format of a ``Content-Type`` header; InputError-like 415 is decided by the caller."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return UPLOAD_FORMATS.get(media_type, "")


def ingest_rows(store: Store, rows: list[PanelRow], max_rows: int) -> IngestResult:
    """Validate JSON rows and upsert them. A column that no row sets is left out (the stored values of that
    column are kept); a column some rows set is stored for every row (null where a row lacks it).
    :class:`UploadTooLarge` above ``max_rows`` rows (the settings' ``max_upload_rows``)."""
    if len(rows) > max_rows:
        raise UploadTooLarge(
            f"the request holds {len(rows):,} rows; the limit is {max_rows:,} rows (FACTOR_ENGINE_MAX_UPLOAD_ROWS): "
            "send the panel in several requests (ingestion upserts)"
        )
    return _ingest(store, rows_frame(rows))


def rows_frame(rows: Sequence[Any]) -> pl.DataFrame:
    """``date, symbol`` and every column some of the JSON ``rows`` set (null where a row lacks it), typed as the
    data contract types them. ``rows``: :class:`PanelRow` models, or those of a score endpoint (whose fields are
    contract columns, every one required)."""
    present = set().union(*(row.model_fields_set for row in rows))
    columns = [name for name in _COLUMN_TYPES if name in present]
    data: dict[str, list[Any]] = {DATE: [row.date for row in rows], SYMBOL: [row.symbol for row in rows]}
    for column in columns:
        data[column] = [getattr(row, column) for row in rows]
    return pl.DataFrame(data, schema={DATE: pl.Date, SYMBOL: pl.String, **{c: _COLUMN_TYPES[c] for c in columns}})


def _shown(label: str, width: int = 20) -> str:
    """``label`` cut to ``width`` characters, quoted with its NUL characters visible."""
    return repr(label[:width]) + ("..." if len(label) > width else "")


def check_labels(panel: pl.DataFrame) -> None:
    """InputError (422) when a ``symbol`` or ``sector`` label of a validated panel is longer than
    :data:`~factor_engine.service.limits.MAX_LABEL_CHARS` characters or holds a NUL character, naming the
    column, the number of rows, the longest length and the first offending row (date and symbol prefix).

    PostgreSQL cannot index a key of ~10 KB and cannot store NUL in text; both are refused on every database
    so that a panel is accepted or refused the same way whichever store the service runs on."""
    for column in _LABEL_COLUMNS:
        if column not in panel.columns:
            continue
        labels = panel.get_column(column)
        lengths = labels.str.len_chars()
        too_long = lengths > MAX_LABEL_CHARS
        if too_long.any():
            first = panel.filter(too_long).row(0, named=True)
            longest = cast(int, lengths.max())
            raise InputError(
                f"{column} labels may have at most {MAX_LABEL_CHARS} characters: {too_long.sum():,} row(s) are "
                f"longer, the longest has {longest:,} characters, e.g. ({first[DATE]}, {_shown(first[SYMBOL])})"
            )
        with_nul = labels.str.contains("\x00", literal=True)
        if with_nul.any():
            first = panel.filter(with_nul).row(0, named=True)
            raise InputError(
                f"the database cannot take a value: {column} labels may not contain NUL (0x00) characters "
                f"(PostgreSQL text cannot hold them): {with_nul.sum():,} row(s) do, e.g. "
                f"({first[DATE]}, {_shown(first[SYMBOL])})"
            )


def _ingest(store: Store, frame: pl.DataFrame) -> IngestResult:
    """Validate a frame with the data contract, check its labels and upsert it."""
    panel = validate_panel(frame, require=(DATE, SYMBOL))
    check_labels(panel)
    return store.ingest_panel(panel)


def _check_columns(names: Iterable[str]) -> None:
    """InputError naming the columns of an upload the store does not keep (decided from the schema alone)."""
    unknown = [name for name in names if name not in _ALLOWED_COLUMNS]
    if unknown:
        raise InputError(
            f"the panel has column(s) {unknown} the store does not keep; allowed: {list(_ALLOWED_COLUMNS)}"
        )


class _BatchCounter:
    """Keeps decoded record batches while counting their rows and bytes; :class:`UploadTooLarge` as soon as
    the totals pass a limit."""

    def __init__(self, limits: UploadLimits) -> None:
        self.limits = limits
        self.rows = 0
        self.nbytes = 0
        self.batches: list[pa.RecordBatch] = []

    def add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        self.nbytes += batch.nbytes
        if self.rows > self.limits.rows:
            raise _too_many_rows(self.rows, self.limits.rows, at_least=True)
        if self.nbytes > self.limits.decoded_bytes:
            raise _too_many_bytes(self.nbytes, self.limits.decoded_bytes, at_least=True)
        self.batches.append(batch)

    def table(self, schema: pa.Schema) -> pa.Table:
        return pa.Table.from_batches(self.batches, schema=schema)


def _read_parquet(body: IO[bytes], limits: UploadLimits) -> pa.Table:
    """A Parquet body: refused from its metadata (rows, uncompressed column bytes) before decoding, then
    decoded batch by batch under the limits."""
    parquet = pq.ParquetFile(body)
    metadata = parquet.metadata
    _check_columns(parquet.schema_arrow.names)
    if metadata.num_rows > limits.rows:  # before summing the column chunks of a file with many row groups
        raise _too_many_rows(metadata.num_rows, limits.rows)
    declared_bytes = sum(
        metadata.row_group(group).column(column).total_uncompressed_size
        for group in range(metadata.num_row_groups)
        for column in range(metadata.num_columns)
    )
    _check_declared(metadata.num_rows, declared_bytes, limits)
    counter = _BatchCounter(limits)
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        counter.add(batch)
    return counter.table(parquet.schema_arrow)


def _flatbuffer_field(metadata: memoryview, table: int, index: int) -> int | None:
    """Where field ``index`` of the flatbuffer table at byte ``table`` of ``metadata`` lies, None if absent."""
    vtable = table - struct.unpack_from("<i", metadata, table)[0]
    entry = 4 + 2 * index
    if entry >= struct.unpack_from("<H", metadata, vtable)[0]:
        return None
    offset: int = struct.unpack_from("<H", metadata, vtable + entry)[0]
    return table + offset if offset else None


def _flatbuffer_child(metadata: memoryview, position: int) -> int:
    """The table an offset field at ``position`` points to."""
    child: int = position + struct.unpack_from("<I", metadata, position)[0]
    return child


def _ipc_message_size(message: pa_ipc.Message) -> tuple[int, int]:
    """(rows, decoded bytes) of a record-batch or dictionary-batch message, read from its flatbuffer metadata
    (Arrow ``Message.fbs``: ``Message.header`` → ``RecordBatch{length, nodes, buffers, compression}``;
    ``DictionaryBatch.data`` is a RecordBatch) without decoding the body. A compressed buffer starts with its
    uncompressed length (int64, -1 when stored uncompressed); dictionary rows are not counted as rows."""
    metadata = memoryview(message.metadata)
    header = _flatbuffer_field(metadata, struct.unpack_from("<I", metadata, 0)[0], 2)
    if header is None:
        raise ValueError(f"an Arrow {message.type} message without a header")
    batch = _flatbuffer_child(metadata, header)
    if message.type == "dictionary":
        data = _flatbuffer_field(metadata, batch, 1)
        if data is None:
            raise ValueError("an Arrow dictionary message without data")
        batch = _flatbuffer_child(metadata, data)
    length_at = _flatbuffer_field(metadata, batch, 0)
    rows = 0 if length_at is None or message.type == "dictionary" else struct.unpack_from("<q", metadata, length_at)[0]
    buffers_at = _flatbuffer_field(metadata, batch, 2)
    compressed = _flatbuffer_field(metadata, batch, 3) is not None
    decoded = 0
    if buffers_at is not None:
        vector = _flatbuffer_child(metadata, buffers_at)
        for index in range(struct.unpack_from("<I", metadata, vector)[0]):
            offset, length = struct.unpack_from("<qq", metadata, vector + 4 + 16 * index)
            if compressed and length >= 8:
                size = struct.unpack_from("<q", message.body, offset)[0]
                decoded += length - 8 if size == -1 else size
            else:
                decoded += length
    return rows, decoded


def _check_declared(rows: int, nbytes: int, limits: UploadLimits) -> None:
    """UploadTooLarge when the rows or decoded bytes a body's metadata declares pass ``limits``."""
    if rows > limits.rows:
        raise _too_many_rows(rows, limits.rows)
    if nbytes > limits.decoded_bytes:
        raise _too_many_bytes(nbytes, limits.decoded_bytes)


def _check_ipc_stream_metadata(body: IO[bytes], limits: UploadLimits) -> None:
    """Refuse an Arrow IPC stream from its messages' metadata alone: the rows and decoded bytes each batch
    declares, summed message by message (one compressed message body in memory at a time) before any batch
    is decompressed. Leaves ``body`` at its start."""
    rows = nbytes = 0
    for message in pa_ipc.MessageReader.open_stream(body):
        if message.type in ("record batch", "dictionary"):
            message_rows, message_bytes = _ipc_message_size(message)
            rows, nbytes = rows + message_rows, nbytes + message_bytes
    body.seek(0)
    _check_declared(rows, nbytes, limits)


def _check_ipc_file_metadata(body: IO[bytes], limits: UploadLimits) -> None:
    """Refuse an Arrow IPC file from its metadata alone: the footer (``Footer.fbs``: ``dictionaries`` and
    ``recordBatches``, vectors of ``Block{offset: long, metaDataLength: int, bodyLength: long}``) locates every
    message, whose declared rows and decoded bytes are summed as for a stream. Leaves ``body`` at its start."""
    end = body.seek(0, 2)
    body.seek(end - 10)
    tail = body.read(10)
    footer_size = struct.unpack_from("<i", tail, 0)[0]
    if tail[4:] != b"ARROW1" or not 0 < footer_size <= end - 18:
        raise ValueError("not an Arrow IPC file (no ARROW1 footer)")
    body.seek(end - 10 - footer_size)
    footer = memoryview(body.read(footer_size))
    root = struct.unpack_from("<I", footer, 0)[0]
    rows = nbytes = 0
    for field in (2, 3):  # dictionaries, recordBatches
        blocks_at = _flatbuffer_field(footer, root, field)
        if blocks_at is None:
            continue
        blocks = _flatbuffer_child(footer, blocks_at)
        for index in range(struct.unpack_from("<I", footer, blocks)[0]):
            offset = struct.unpack_from("<q", footer, blocks + 4 + 24 * index)[0]
            body.seek(offset)
            message = pa_ipc.MessageReader.open_stream(body).read_next_message()
            message_rows, message_bytes = _ipc_message_size(message)
            rows, nbytes = rows + message_rows, nbytes + message_bytes
    body.seek(0)
    _check_declared(rows, nbytes, limits)


def _read_arrow_file(body: IO[bytes], limits: UploadLimits) -> pa.Table:
    """An Arrow IPC file body: refused from its messages' metadata, then decoded record batch by record batch
    under the limits."""
    reader = pa_ipc.open_file(body)
    _check_columns(reader.schema.names)
    _check_ipc_file_metadata(body, limits)
    counter = _BatchCounter(limits)
    for index in range(reader.num_record_batches):
        counter.add(reader.get_batch(index))
    return counter.table(reader.schema)


def _read_arrow_stream(body: IO[bytes], limits: UploadLimits) -> pa.Table:
    """An Arrow IPC stream body: refused from its messages' metadata, then decoded batch by batch under the
    limits."""
    _check_columns(pa_ipc.open_stream(body).schema.names)
    body.seek(0)
    _check_ipc_stream_metadata(body, limits)
    reader = pa_ipc.open_stream(body)
    counter = _BatchCounter(limits)
    for batch in reader:
        counter.add(batch)
    return counter.table(reader.schema)


def read_upload(body: IO[bytes], body_format: str, limits: UploadLimits) -> pl.DataFrame:
    """A frame from a Parquet or Arrow IPC (file or stream) body, decoded in batches; InputError when it
    cannot be read or has columns the store does not keep, :class:`UploadTooLarge` when it passes
    ``limits``."""
    readers = {"parquet": _read_parquet, "arrow file": _read_arrow_file, "arrow stream": _read_arrow_stream}
    try:
        table = readers[body_format](body, limits)
        frame = pl.from_arrow(table)
    except InputError:
        raise
    except Exception as error:  # pyarrow/polars raise several types for a corrupt body
        raise InputError(f"cannot read the request body as {body_format}: {error}") from error
    if not isinstance(frame, pl.DataFrame):  # pragma: no cover - a Table always converts to a DataFrame
        raise InputError(f"cannot read the request body as {body_format}: it holds no table")
    return frame


def ingest_upload(store: Store, body: IO[bytes], body_format: str, limits: UploadLimits) -> IngestResult:
    """Read (under ``limits``), validate and upsert an uploaded panel; only the contract's columns are
    accepted."""
    return _ingest(store, read_upload(body, body_format, limits))


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
