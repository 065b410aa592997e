"""Reading and parsing the inputs of :mod:`factor_engine.prepare`: files, column names matched loosely, dates,
symbols and numbers, wide and long layouts; every error a :class:`PrepareError` naming the input, the column
and the rows."""

from __future__ import annotations

import csv
import gzip
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Literal, NoReturn

import polars as pl

from factor_engine.panel import DATE, PARQUET_SUFFIXES, READABLE_CSV_SUFFIXES, SYMBOL, file_suffix

SYMBOL_COLUMNS: tuple[str, ...] = (SYMBOL, "ticker")
_ROW = "__row__"
_ISO_DATE = "%Y-%m-%d"
_MAX_EXAMPLES = 5


class PrepareError(ValueError):
    """An input cannot become a panel; the message names the input, the column and the rows."""


# --------------------------------------------------------------------------------------------------
# messages


def _fail(name: str, message: str) -> NoReturn:
    raise PrepareError(f"{name}: {message}")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _listed(items: Sequence[str], limit: int = 10) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _row_numbers(rows: Sequence[int]) -> str:
    return f"row {rows[0]}" if len(rows) == 1 else "rows " + ", ".join(str(row) for row in rows)


def _where(row: Mapping[str, object], column: str | None = None) -> str:
    """``(date, symbol)`` of a long row, ``(date, column)`` of a wide one, else ``row i``."""
    symbol = row.get(SYMBOL, column)
    if isinstance(row.get(DATE), date) and symbol is not None:
        return f"({row[DATE]}, {symbol})"
    return f"row {row[_ROW]}"


# --------------------------------------------------------------------------------------------------
# reading


def read_table(path: str | Path) -> pl.DataFrame:
    """Read one input file: ``.csv``, ``.csv.gz`` (gzip), ``.parquet`` or ``.pq``.

    CSV columns are read as text (symbols such as ``0050`` keep their zeros; :func:`prepare_panel` parses dates
    and numbers and reports what fails by row); empty fields are null. A CSV header naming a column twice is
    an error.

    Parameters
    ----------
    path:
        The file. CSV needs a header row.

    Raises
    ------
    PrepareError
        Unsupported suffix, no such file, a repeated header name, or a file that cannot be read.
    """
    path = Path(path)
    suffix = file_suffix(path)
    supported = PARQUET_SUFFIXES + READABLE_CSV_SUFFIXES
    if suffix not in supported:
        _fail(str(path), f"unsupported suffix {suffix!r} (use {', '.join(supported)})")
    if not path.is_file():
        _fail(str(path), "no such file")
    try:
        if suffix in PARQUET_SUFFIXES:
            return pl.read_parquet(path)
        _check_header(path, suffix)
        return pl.read_csv(path, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError, csv.Error) as error:
        _fail(str(path), f"cannot read: {error}")


def _check_header(path: Path, suffix: str) -> None:
    """Raise if the CSV header names a column twice (polars would rename the second silently)."""
    opener = gzip.open if suffix == ".csv.gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as lines:
        header = next(csv.reader(lines), [])
    repeated = sorted(name for name, count in Counter(header).items() if count > 1)
    if repeated:
        _fail(str(path), f"the header names column(s) {repeated} more than once")


# --------------------------------------------------------------------------------------------------
# columns, dates, symbols and numbers


def _normalized(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _find(frame: pl.DataFrame, names: Sequence[str], name: str) -> str | None:
    """The frame's column matching the first of ``names`` present (by :func:`_normalized` name), or None."""
    by_name: dict[str, list[str]] = {}
    for column in frame.columns:
        by_name.setdefault(_normalized(column), []).append(column)
    for wanted in names:
        found = by_name.get(wanted, [])
        if len(found) > 1:
            _fail(name, f"columns {found} are all read as {wanted!r}; keep one")
        if found:
            return found[0]
    return None


def _require(frame: pl.DataFrame, names: Sequence[str], name: str, what: str) -> str:
    column = _find(frame, names, name)
    if column is None:
        accepted = " or ".join(repr(n) for n in names)
        _fail(name, f"missing the {what} column (named {accepted}, any case); columns present: {frame.columns}")
    return column


def _is_text(dtype: pl.DataType) -> bool:
    return dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum)


def _stripped(column: str) -> pl.Expr:
    """Text with surrounding blanks removed and blank text as null."""
    text = pl.col(column).cast(pl.String).str.strip_chars()
    return pl.when(text.str.len_chars() > 0).then(text)


def _bad_values(frame: pl.DataFrame, bad: pl.Expr, column: str, *, wide: bool) -> str:
    rows = frame.filter(bad).head(_MAX_EXAMPLES)
    return ", ".join(
        f"{row[column]!r} at {_where(row, column if wide else None)}" for row in rows.iter_rows(named=True)
    )


def _with_dates(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    """Add a row number and replace the date column (``date``, any case) by a parsed ``date`` column."""
    column = _require(frame, (DATE,), name, "date")
    frame = frame.with_row_index(_ROW)
    dtype = frame.schema[column]
    if dtype == pl.Date:
        parsed = pl.col(column)
    elif isinstance(dtype, pl.Datetime):
        parsed = pl.col(column).dt.date()
    elif _is_text(dtype) or dtype == pl.Null:
        parsed = _stripped(column).str.to_date(_ISO_DATE, strict=False)
    else:
        _fail(name, f"column {column!r} has dtype {dtype}, expected dates (Date, Datetime or 'YYYY-MM-DD' text)")
    bad = parsed.is_null()
    count = frame.select(bad.sum()).item()
    if count:
        examples = _bad_values(frame, bad, column, wide=False)
        _fail(
            name,
            f"column {column!r}: {_plural(count, 'value')} cannot be parsed as ISO dates 'YYYY-MM-DD' (empty "
            f"dates included), e.g. {examples}",
        )
    return frame.with_columns(parsed.alias(DATE)).drop(column) if column != DATE else frame.with_columns(parsed)


def _with_symbols(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    """Replace the symbol column (``symbol`` or ``ticker``, any case) by a ``symbol`` text column."""
    column = _require(frame, SYMBOL_COLUMNS, name, "symbol")
    dtype = frame.schema[column]
    if not (_is_text(dtype) or dtype.is_integer() or dtype == pl.Null):
        _fail(name, f"column {column!r} has dtype {dtype}, expected text or integer symbols")
    symbols = _stripped(column)
    count = frame.select(symbols.is_null().sum()).item()
    if count:
        rows = frame.filter(symbols.is_null()).get_column(_ROW).head(_MAX_EXAMPLES).to_list()
        _fail(name, f"column {column!r} has {_plural(count, 'empty symbol')}, e.g. on {_row_numbers(rows)}")
    frame = frame.with_columns(symbols.alias(SYMBOL))
    return frame.drop(column) if column != SYMBOL else frame


def _with_numbers(frame: pl.DataFrame, columns: Sequence[str], name: str, *, wide: bool) -> pl.DataFrame:
    """Cast ``columns`` to Float64 (NaN as null), raising for text that is not a number.

    Offending values are located as ``(date, symbol)``: the row's symbol, or the column's name when ``wide``.
    """
    casts: list[pl.Expr] = []
    checks: dict[str, pl.Expr] = {}
    for column in columns:
        dtype = frame.schema[column]
        if _is_text(dtype):
            number = _stripped(column).cast(pl.Float64, strict=False)
            checks[column] = number.is_null() & _stripped(column).is_not_null()
        elif dtype.is_numeric() or dtype == pl.Null:
            number = pl.col(column).cast(pl.Float64)
        else:
            _fail(name, f"column {column!r} has dtype {dtype}, expected numbers")
        casts.append(number.fill_nan(None))
    if checks:
        counts = frame.select(check.sum().alias(column) for column, check in checks.items()).row(0, named=True)
        for column, count in counts.items():
            if count:
                examples = _bad_values(frame, checks[column], column, wide=wide)
                _fail(
                    name, f"column {column!r}: {_plural(count, 'value')} cannot be parsed as numbers, e.g. {examples}"
                )
    return frame.with_columns(casts)


def _key(values: Sequence[object]) -> str:
    return str(values[0]) if len(values) == 1 else "(" + ", ".join(str(value) for value in values) + ")"


def _check_unique(frame: pl.DataFrame, keys: Sequence[str], name: str, what: str) -> None:
    """Raise naming the repeated keys and their row numbers."""
    repeated = (
        frame.group_by(keys, maintain_order=True)
        .agg(pl.col(_ROW))
        .filter(pl.col(_ROW).list.len() > 1)
        .sort(pl.col(_ROW).list.first())
    )
    if repeated.height:
        examples = ", ".join(
            f"{_key(row[:-1])} on {_row_numbers(row[-1])}" for row in repeated.head(_MAX_EXAMPLES).iter_rows()
        )
        _fail(name, f"{what} must be unique: {_plural(repeated.height, 'key')} repeated, e.g. {examples}")


def _check_positive(frame: pl.DataFrame, column: str, name: str, what: str, *, zero: bool = False) -> None:
    """Raise for values of ``column`` that are not positive (or, with ``zero``, non-negative) and finite (nulls
    are missing values, allowed)."""
    sign = pl.col(column) >= 0 if zero else pl.col(column) > 0
    bad = (pl.col(column).is_finite() & sign).not_().fill_null(False)
    count = frame.select(bad.sum()).item()
    if count:
        rows = frame.filter(bad).head(_MAX_EXAMPLES)
        examples = ", ".join(f"{_where(row)} = {row[column]!r}" for row in rows.iter_rows(named=True))
        requirement = "finite and ≥ 0" if zero else "positive and finite"
        _fail(name, f"{what} must be {requirement}: {_plural(count, 'bad row')}, e.g. {examples}")


def _to_long(
    frame: pl.DataFrame, value: str, value_names: Sequence[str], name: str, what: str, keep: Sequence[str] = ()
) -> tuple[pl.DataFrame, Literal["wide", "long"], str | None, tuple[str, ...]]:
    """Turn a wide or long input into ``date, symbol, <value>`` (value null where missing).

    ``value_names`` are the accepted names of a long input's value column, ``what`` names the values in
    messages; ``keep``: other columns of a long input kept as numbers (named as given, matched loosely).
    Returns the frame, its layout, the value column used (long) and the columns ignored (long).
    Raises for bad dates, symbols or numbers, repeated keys and values that are not positive and finite.
    """
    frame = _with_dates(frame, name)
    if _find(frame, SYMBOL_COLUMNS, name) is None:
        symbols = [column for column in frame.columns if column not in (DATE, _ROW)]
        if not symbols:
            _fail(name, f"no symbol columns: a wide file has a date column and one {what} column per symbol")
        frame = _with_numbers(frame, symbols, name, wide=True)
        _check_unique(frame, (DATE,), name, "date (one row per date in a wide file)")
        long = frame.unpivot(on=symbols, index=[DATE, _ROW], variable_name=SYMBOL, value_name=value)
        long = long.with_columns(pl.col(SYMBOL).str.strip_chars())
        _check_unique(long, (DATE, SYMBOL), name, "(date, symbol)")
        layout: Literal["wide", "long"] = "wide"
        column: str | None = None
        ignored: tuple[str, ...] = ()
    else:
        frame = _with_symbols(frame, name)
        column = _require(frame, value_names, name, what)
        kept = {wanted: found for wanted in keep if (found := _find(frame, (wanted,), name)) is not None}
        frame = _with_numbers(frame, [column, *kept.values()], name, wide=False)
        _check_unique(frame, (DATE, SYMBOL), name, "(date, symbol)")
        ignored = tuple(c for c in frame.columns if c not in (DATE, SYMBOL, _ROW, column, *kept.values()))
        long = frame.select(
            DATE, SYMBOL, _ROW, pl.col(column).alias(value), *(pl.col(c).alias(w) for w, c in kept.items())
        )
        layout = "long"
    _check_positive(long, value, name, what)
    return long, layout, column, ignored
