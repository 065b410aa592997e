"""Binary layouts of the model blobs (all little-endian) and their conversion from and to polars frames.

- dates: int32 days since 1970-01-01, one per date;
- symbol positions: int32, one per row, indexes into the model's sorted symbol dictionary;
- values: float64, row-major N×K (a null is written as NaN and read back as null);
- covariance: float64, row-major K×K in the model's factor order;
- update state: one component's named arrays as an uncompressed ``.npz`` file (``numpy.savez``), read without
  pickle.
"""

from __future__ import annotations

import datetime
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from factor_engine.panel import DATE, SYMBOL

__all__ = [
    "DateBlock",
    "decode_blocks",
    "decode_dates",
    "decode_matrix",
    "decode_state",
    "encode_blocks",
    "encode_dates",
    "encode_matrix",
    "encode_state",
]

_INT32 = np.dtype("<i4")
_FLOAT64 = np.dtype("<f8")


@dataclass(frozen=True)
class DateBlock:
    """The rows of one date: ``positions`` (int32 blob, N symbol positions) and ``data`` (float64 blob, N×K)."""

    date: datetime.date
    positions: bytes
    data: bytes


def encode_dates(dates: pl.Series) -> bytes:
    """Dates as int32 days since 1970-01-01 (little-endian)."""
    return dates.cast(pl.Date).cast(pl.Int32).to_numpy().astype(_INT32).tobytes()


def decode_dates(blob: bytes | None) -> pl.Series:
    """Inverse of :func:`encode_dates`: a Date series named ``date`` (empty for None)."""
    days = np.frombuffer(blob or b"", dtype=_INT32)
    return pl.Series(DATE, days.astype(np.int32), dtype=pl.Int32).cast(pl.Date)


def encode_matrix(matrix: np.ndarray) -> bytes:
    """A float64 matrix as a row-major little-endian blob."""
    return np.ascontiguousarray(matrix, dtype=_FLOAT64).tobytes()


def decode_matrix(blob: bytes, k: int) -> np.ndarray:
    """Inverse of :func:`encode_matrix` for a K×K matrix (a writable copy)."""
    values = np.frombuffer(blob, dtype=_FLOAT64)
    if values.size != k * k:
        raise ValueError(f"covariance blob holds {values.size} values, expected {k}×{k}")
    return values.reshape(k, k).astype(np.float64)


def encode_blocks(frame: pl.DataFrame, columns: Sequence[str], symbols: pl.Series) -> list[DateBlock]:
    """Split a ``date, symbol, *columns`` frame into one :class:`DateBlock` per date (rows in frame order).

    Parameters
    ----------
    frame: rows sorted by date (a frame that is not is sorted stably by date first).
    columns: the value columns, cast to float64; null becomes NaN.
    symbols: the model's sorted symbol dictionary; every symbol of ``frame`` must be in it.
    """
    if frame.height == 0:
        return []
    if not frame.get_column(DATE).is_sorted():
        frame = frame.sort(DATE, maintain_order=True)
    positions = frame.get_column(SYMBOL).cast(pl.Enum(symbols)).to_physical().to_numpy().astype(_INT32)
    values = frame.select(pl.col(name).cast(pl.Float64) for name in columns).to_numpy(order="c")
    values = np.ascontiguousarray(values, dtype=_FLOAT64)
    days = frame.get_column(DATE).cast(pl.Int32).to_numpy()
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    ends = np.r_[starts[1:], days.size]
    dates = frame.get_column(DATE).gather(starts).to_list()
    return [
        DateBlock(date, positions[start:end].tobytes(), values[start:end].tobytes())
        for date, start, end in zip(dates, starts, ends, strict=True)
    ]


def decode_blocks(
    blocks: Sequence[tuple[datetime.date, bytes, bytes]], columns: Sequence[str], symbols: pl.Series
) -> pl.DataFrame:
    """Inverse of :func:`encode_blocks`: ``date, symbol, *columns`` (Date, String, Float64; NaN → null).

    Parameters
    ----------
    blocks: ``(date, positions, data)`` per date, in the order the rows should come out.
    columns: the K value column names.
    symbols: the model's symbol dictionary (String).
    """
    k = len(columns)
    positions = np.concatenate([np.frombuffer(p, dtype=_INT32) for _, p, _ in blocks] or [np.zeros(0, _INT32)])
    values = np.concatenate([np.frombuffer(d, dtype=_FLOAT64) for _, _, d in blocks] or [np.zeros(0, _FLOAT64)])
    counts = [len(p) // _INT32.itemsize for _, p, _ in blocks]
    if values.size != positions.size * k:
        raise ValueError(f"blobs hold {values.size} values for {positions.size} rows × {k} columns")
    values = values.reshape(positions.size, k)
    days = pl.Series(DATE, [d for d, _, _ in blocks], dtype=pl.Date).cast(pl.Int32).to_numpy()
    data: dict[str, pl.Series] = {
        DATE: pl.Series(DATE, np.repeat(days, counts).astype(np.int32), dtype=pl.Int32).cast(pl.Date),
        SYMBOL: symbols.gather(positions.astype(np.int64)).alias(SYMBOL).cast(pl.String),
    }
    for index, name in enumerate(columns):
        data[name] = pl.Series(name, values[:, index], dtype=pl.Float64, nan_to_null=True)
    return pl.DataFrame(data)


def encode_state(arrays: Mapping[str, np.ndarray]) -> bytes:
    """One state component's named arrays as an ``.npz`` file; ValueError for an array of Python objects (it
    would need pickle to be read back)."""
    checked = {}
    for name, array in arrays.items():
        value = np.asarray(array)
        if value.dtype.hasobject:
            raise ValueError(f"state array {name!r} holds Python objects; give numeric or string arrays")
        checked[str(name)] = value
    buffer = io.BytesIO()
    np.savez(buffer, **checked)  # type: ignore[arg-type]
    return buffer.getvalue()


def decode_state(blob: bytes) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_state` (no pickle)."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}
