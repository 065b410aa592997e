"""The data contract: column names, schema and validation of the long daily equity panel.

Users bring one long frame with one row per (date, symbol). :func:`validate_panel` checks it and returns
a canonically typed copy sorted by (date, symbol); :func:`load_panel` reads it from Parquet or CSV first;
:func:`to_toraniko_frames` splits a validated panel into the per-input frames toraniko expects.

Schema
------

=================  ==========  =========  ==================================================================
column             dtype       required   meaning and units
=================  ==========  =========  ==================================================================
``date``           ``Date``    yes        trading day. Accepted as Date, Datetime (truncated to the day)
                                          or ISO strings ``'YYYY-MM-DD'``.
``symbol``         ``String``  yes        asset identifier. Categorical, Enum and integer ids are cast.
``asset_returns``  ``Float64`` yes        daily simple return as a fraction (0.01 is +1 %), finite and
                                          > -1. Null is allowed and kept (a missing observation).
``market_cap``     ``Float64`` no         market capitalisation in currency units; finite and > 0 where
                                          present. Null (or NaN, read as null) is a missing cap: a model
                                          leaves that row out. Without the column (or with every cap
                                          missing) a model weights assets equally (see
                                          :mod:`factor_engine.model`).
``sector``         ``String``  yes        sector label: any non-empty text (the user's taxonomy: GICS, ICB,
                                          the seed's names, a broker's codes). ``sectors=`` restricts it.
``book_price``     ``Float64`` no         book value to price ratio (book-to-price), unitless.
``sales_price``    ``Float64`` no         sales to price ratio, unitless.
``cf_price``       ``Float64`` no         cash flow to price ratio, unitless (also USE4's CETOP).
other numeric      ``Float64`` no         kept and cast to Float64; other non-numeric columns are kept as is.
=================  ==========  =========  ==================================================================

Trading and fundamental columns (optional, ``Float64``) of the USE4 styles (:mod:`factor_engine.styles`):

=============================  =============================================================================
column                         meaning and units
=============================  =============================================================================
``volume``                     shares traded on the date (shares, ≥ 0).
``shares_outstanding``         shares outstanding (shares, > 0).
``turnover``                   share turnover of the date, volume / shares outstanding (fraction, ≥ 0).
                               Liquidity uses it when present, else ``volume / shares_outstanding``.
``earnings_price``             trailing 12-month earnings / price (E/P, unitless, may be negative): ETOP.
``forecast_earnings_price``    analysts' 12-month forward earnings / price (unitless): EPIBS.
``dividend_yield``             trailing 12-month dividends per share / price (fraction, ≥ 0): DYLD.
``earnings_growth``            5-year earnings-per-share growth (fraction per year): EGRO.
``sales_growth``               5-year sales-per-share growth (fraction per year): SGRO.
``forecast_growth``            analysts' long-term earnings growth (fraction per year): EGRLF.
``market_leverage``            (market equity + preferred equity + long-term debt) / market equity
                               (unitless, ≥ 1): MLEV.
``book_leverage``              (book equity + preferred equity + long-term debt) / book equity (unitless):
                               BLEV.
``debt_to_assets``             total debt / total assets (fraction): DTOA.
=============================  =============================================================================

Fundamentals are point in time: each row holds the value known on its date.

``market_cap``, value features, trading and fundamental columns may be null (a missing observation; NaN is read
as null) but never infinite; a present ``market_cap`` must be positive, ``volume`` and ``turnover`` must not be
negative and ``shares_outstanding`` must be positive.
Every violation raises :class:`PanelError` naming the column, the number of offending rows and up to
five examples as ``(date, symbol)`` pairs, or as 0-based row numbers for rows lacking them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

__all__ = [
    "DATE",
    "FUNDAMENTAL_COLUMNS",
    "GICS_SECTORS",
    "MARKET_CAP",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "RETURNS",
    "SECTOR",
    "SEED_SECTORS",
    "SHARES_OUTSTANDING",
    "SYMBOL",
    "TAXONOMIES",
    "TRADING_COLUMNS",
    "TURNOVER",
    "VALUE_FEATURES",
    "VOLUME",
    "PanelError",
    "load_panel",
    "to_toraniko_frames",
    "validate_panel",
]

DATE = "date"
SYMBOL = "symbol"
RETURNS = "asset_returns"
MARKET_CAP = "market_cap"
SECTOR = "sector"
VALUE_FEATURES: tuple[str, ...] = ("book_price", "sales_price", "cf_price")
VOLUME = "volume"
SHARES_OUTSTANDING = "shares_outstanding"
TURNOVER = "turnover"
#: Trading columns (liquidity): shares traded, shares outstanding, their ratio.
TRADING_COLUMNS: tuple[str, ...] = (VOLUME, SHARES_OUTSTANDING, TURNOVER)
EARNINGS_PRICE = "earnings_price"
FORECAST_EARNINGS_PRICE = "forecast_earnings_price"
DIVIDEND_YIELD = "dividend_yield"
EARNINGS_GROWTH = "earnings_growth"
SALES_GROWTH = "sales_growth"
FORECAST_GROWTH = "forecast_growth"
MARKET_LEVERAGE = "market_leverage"
BOOK_LEVERAGE = "book_leverage"
DEBT_TO_ASSETS = "debt_to_assets"
#: Fundamental columns of the USE4 styles besides the value features (point in time, unitless or per year).
FUNDAMENTAL_COLUMNS: tuple[str, ...] = (
    EARNINGS_PRICE,
    FORECAST_EARNINGS_PRICE,
    DIVIDEND_YIELD,
    EARNINGS_GROWTH,
    SALES_GROWTH,
    FORECAST_GROWTH,
    MARKET_LEVERAGE,
    BOOK_LEVERAGE,
    DEBT_TO_ASSETS,
)
REQUIRED_COLUMNS = (DATE, SYMBOL, RETURNS, SECTOR)
#: Known columns a panel may lack: a model without them leaves out what needs them, and says so.
OPTIONAL_COLUMNS = (MARKET_CAP, *VALUE_FEATURES, *TRADING_COLUMNS, *FUNDAMENTAL_COLUMNS)
#: GICS level 1 (sectors), as named since the 2018 reclassification.
GICS_SECTORS: tuple[str, ...] = (
    "Communication Services",
    "Consumer Discretionary",
    "Consumer Staples",
    "Energy",
    "Financials",
    "Health Care",
    "Industrials",
    "Information Technology",
    "Materials",
    "Real Estate",
    "Utilities",
)
#: The 11 sector names of the seed's service description (Morningstar's sector names, as data vendors such as
#: Yahoo Finance label them).
SEED_SECTORS: tuple[str, ...] = (
    "Basic Materials",
    "Communication Services",
    "Consumer Cyclical",
    "Consumer Defensive",
    "Energy",
    "Financial Services",
    "Healthcare",
    "Industrials",
    "Real Estate",
    "Technology",
    "Utilities",
)
#: Named taxonomies a model configuration can ask for (``[sectors] taxonomy = "gics"``).
TAXONOMIES: dict[str, tuple[str, ...]] = {"gics": GICS_SECTORS, "seed": SEED_SECTORS}

PARQUET_SUFFIXES: tuple[str, ...] = (".parquet", ".pq")
CSV_SUFFIXES: tuple[str, ...] = (".csv",)
#: Suffixes read as CSV: plain or gzip-compressed (files are written as plain ``.csv``).
READABLE_CSV_SUFFIXES: tuple[str, ...] = (*CSV_SUFFIXES, ".csv.gz")

_KEY = (DATE, SYMBOL)
# optional float columns: null is a missing observation, NaN is read as null, infinity is an error
_FEATURE_COLUMNS = (*VALUE_FEATURES, *TRADING_COLUMNS, *FUNDAMENTAL_COLUMNS)
_FLOAT_COLUMNS = (RETURNS, MARKET_CAP, *_FEATURE_COLUMNS)
_NAN_AS_NULL = (MARKET_CAP, *_FEATURE_COLUMNS)
_LABEL_COLUMNS = (SYMBOL, SECTOR)
_CANONICAL_ORDER = (DATE, SYMBOL, RETURNS, MARKET_CAP, SECTOR, *_FEATURE_COLUMNS)
_MAX_EXAMPLES = 5
_ROW = "__panel_row_nr__"
_ISO_DATE = "%Y-%m-%d"


class PanelError(ValueError):
    """A panel violates the data contract; the message names the column, the count and example rows."""


# --------------------------------------------------------------------------------------------------
# message helpers


def _rows(count: int) -> str:
    return f"{count} bad row" if count == 1 else f"{count} bad rows"


def _location(row: dict[str, object]) -> str:
    """``(date, symbol)`` when both are known and the date is parsed, else ``row i`` (0-based)."""
    date, symbol = row.get(DATE), row.get(SYMBOL)
    if date is not None and symbol is not None and not isinstance(date, str):
        return f"({date}, {symbol})"
    return f"row {row[_ROW]}"


def _examples(bad: pl.DataFrame, value_column: str | None = None) -> str:
    """Format up to five offending rows; ``bad`` holds the key columns and, if given, ``value_column``."""
    parts = []
    for row in bad.head(_MAX_EXAMPLES).iter_rows(named=True):
        where = _location(row)
        parts.append(where if value_column is None else f"{where} = {row[value_column]!r}")
    return ", ".join(parts)


def _raise_if_any(problems: list[str]) -> None:
    if len(problems) == 1:
        raise PanelError(problems[0])
    if problems:
        raise PanelError(f"panel has {len(problems)} problems:\n- " + "\n- ".join(problems))


# --------------------------------------------------------------------------------------------------
# type coercion


def _is_text(dtype: pl.DataType) -> bool:
    return dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum)


def _is_number(dtype: pl.DataType) -> bool:
    return dtype.is_integer() or dtype.is_float() or dtype.is_decimal()


def _coercion(name: str, dtype: pl.DataType) -> tuple[pl.Expr | None, str | None]:
    """Return the cast expression for ``name`` (None: unsupported dtype) and what parsing text means.

    The second element is a description such as ``"numbers"`` when the column is parsed from text, so
    values that fail to parse can be reported; it is None when the cast cannot fail.
    """
    column = pl.col(name)
    if dtype == pl.Null:
        target = pl.Date if name == DATE else pl.String if name in _LABEL_COLUMNS else pl.Float64
        return column.cast(target), None
    if name == DATE:
        if dtype == pl.Date:
            return column, None
        if isinstance(dtype, pl.Datetime):
            return column.dt.date(), None
        if _is_text(dtype):
            return column.cast(pl.String).str.to_date(_ISO_DATE, strict=False), "ISO dates 'YYYY-MM-DD'"
        return None, None
    if name in _LABEL_COLUMNS:
        if _is_text(dtype) or dtype.is_integer():
            return column.cast(pl.String), None
        return None, None
    if name in _FLOAT_COLUMNS:
        if _is_number(dtype):
            return column.cast(pl.Float64), None
        if _is_text(dtype):
            return column.cast(pl.String).cast(pl.Float64, strict=False), "numbers"
        return None, None
    if _is_number(dtype):
        return column.cast(pl.Float64), None
    return column, None


_EXPECTED = {
    DATE: "Date, Datetime or ISO 'YYYY-MM-DD' strings",
    SYMBOL: "String, Categorical or integer ids",
    SECTOR: "String, Categorical or integer labels",
}


def _coerce(frame: pl.DataFrame) -> pl.DataFrame:
    """Cast every column to its canonical dtype, raising PanelError for unsupported or unparseable data."""
    expressions: list[pl.Expr] = []
    parsed: dict[str, str] = {}
    problems: list[str] = []
    for name, dtype in frame.schema.items():
        expression, parsed_as = _coercion(name, dtype)
        if expression is None:
            sample = frame.get_column(name).drop_nulls().head(3).to_list()
            expected = _EXPECTED.get(name, "a numeric dtype or numeric strings")
            problems.append(f"{name} has dtype {dtype}, expected {expected}; e.g. values {sample}")
            continue
        expressions.append(expression)
        if parsed_as is not None:
            parsed[name] = parsed_as
    _raise_if_any(problems)

    coerced = frame.with_columns(expressions)
    if not parsed:
        return coerced
    failed = {name: frame.get_column(name).is_not_null() & coerced.get_column(name).is_null() for name in parsed}
    for name, mask in failed.items():
        count = int(mask.sum())
        if count == 0:
            continue
        key_columns = [c for c in _KEY if c in coerced.columns]
        bad = (
            coerced.select(key_columns)
            .with_columns(frame.get_column(name).cast(pl.String).alias(f"raw {name}"))
            .with_row_index(_ROW)
            .filter(mask)
        )
        if DATE in bad.columns and bad.schema[DATE] != pl.Date:
            bad = bad.drop(DATE)
        examples = ", ".join(
            f"{row[f'raw {name}']!r} at {_location(row)}" for row in bad.head(_MAX_EXAMPLES).iter_rows(named=True)
        )
        dtype = frame.schema[name]
        problems.append(
            f"{name} has dtype {dtype} and {count} value{'s' if count > 1 else ''} cannot be parsed as "
            f"{parsed[name]}: e.g. {examples}"
        )
    _raise_if_any(problems)
    return coerced


# --------------------------------------------------------------------------------------------------
# checks


def _check_keys_not_null(panel: pl.DataFrame) -> None:
    counts = panel.select(pl.col(c).null_count() for c in _KEY).row(0)
    problems = []
    for name, count in zip(_KEY, counts, strict=True):
        if count:
            bad = panel.select(_KEY).with_row_index(_ROW).filter(pl.col(name).is_null())
            problems.append(f"{name} must not be null: {_rows(count)}, e.g. {_examples(bad)}")
    _raise_if_any(problems)


def _sort_by_key(panel: pl.DataFrame) -> pl.DataFrame:
    """Sort by (date, symbol) ascending; keys must be non-null.

    Already sorted panels are returned as they are. Otherwise symbols are sorted through an Enum whose
    categories are the distinct symbols in sorted order, so the sort compares integers, not strings.
    """
    date, symbol = pl.col(DATE), pl.col(SYMBOL)
    ascending = (date > date.shift(1)) | ((date == date.shift(1)) & (symbol >= symbol.shift(1)))
    if panel.select(ascending.fill_null(True).all()).item():
        return panel
    symbols = panel.get_column(SYMBOL).unique().sort()
    return panel.sort(date, symbol.cast(pl.Enum(symbols)))


def _duplicate_flags() -> tuple[pl.Expr, pl.Expr]:
    """On a frame sorted by (date, symbol): (same key as the previous row, same key as the next row)."""
    same_previous = (pl.col(DATE) == pl.col(DATE).shift(1)) & (pl.col(SYMBOL) == pl.col(SYMBOL).shift(1))
    same_next = (pl.col(DATE) == pl.col(DATE).shift(-1)) & (pl.col(SYMBOL) == pl.col(SYMBOL).shift(-1))
    return same_previous.fill_null(False), same_next.fill_null(False)


@dataclass(frozen=True)
class _RowCheck:
    """A row-level check: ``bad`` marks offending rows of ``column``; ``message`` says what is required.

    ``show_value`` prints each example's value; ``list_labels`` lists the distinct offending labels.
    """

    column: str
    bad: pl.Expr
    message: str
    show_value: bool = True
    list_labels: bool = False


def _row_checks(columns: Sequence[str], sectors: Sequence[str] | None) -> list[_RowCheck]:
    """The row-level checks that apply to the columns present."""
    checks: list[_RowCheck] = []
    if MARKET_CAP in columns:
        cap = pl.col(MARKET_CAP)
        checks.append(
            _RowCheck(
                MARKET_CAP,
                (cap.is_infinite() | (cap <= 0)).fill_null(False),
                f"{MARKET_CAP} must be positive and finite (not inf or <= 0; null is allowed: a missing cap)",
            )
        )
    if RETURNS in columns:
        returns = pl.col(RETURNS)
        checks.append(
            _RowCheck(
                RETURNS,
                (returns.is_finite().not_() | (returns <= -1.0)).fill_null(False),
                f"{RETURNS} must be finite and > -1 (a daily loss of less than 100 %; null is allowed)",
            )
        )
    if SECTOR in columns:
        checks.append(
            _RowCheck(
                SECTOR,
                pl.col(SECTOR).str.strip_chars().str.len_chars().fill_null(0) == 0,
                f"{SECTOR} must be a non-empty label (not null or blank)",
                False,
            )
        )
        if sectors is not None:
            shown = ", ".join(repr(label) for label in sectors)
            checks.append(
                _RowCheck(
                    SECTOR,
                    pl.col(SECTOR).is_in(list(sectors)).not_().fill_null(False),
                    f"{SECTOR} labels must be among the {len(sectors)} allowed sectors ({shown})",
                    list_labels=True,
                )
            )
    checks.extend(
        _RowCheck(feature, pl.col(feature).is_infinite().fill_null(False), f"{feature} must not be infinite")
        for feature in _FEATURE_COLUMNS
        if feature in columns
    )
    signs = (
        (VOLUME, pl.col(VOLUME) < 0, "must not be negative"),
        (TURNOVER, pl.col(TURNOVER) < 0, "must not be negative"),
        (SHARES_OUTSTANDING, pl.col(SHARES_OUTSTANDING) <= 0, "must be positive"),
    )
    checks.extend(
        _RowCheck(column, bad.fill_null(False), f"{column} {requirement} (null is allowed)")
        for column, bad, requirement in signs
        if column in columns
    )
    return checks


def _check_values(panel: pl.DataFrame, sectors: Sequence[str] | None) -> None:
    """Run the duplicate and row-level checks in one pass over a panel sorted by (date, symbol)."""
    same_previous, same_next = _duplicate_flags()
    checks = _row_checks(panel.columns, sectors)
    duplicate_rows, extra_rows, *bad_counts = panel.select(
        (same_previous | same_next).sum().alias("duplicate rows"),
        same_previous.sum().alias("extra rows"),
        *(check.bad.sum().alias(f"check {i}") for i, check in enumerate(checks)),
    ).row(0)

    problems: list[str] = []
    if duplicate_rows:
        duplicate_keys = duplicate_rows - extra_rows
        groups = panel.filter(same_previous | same_next).group_by(_KEY, maintain_order=True).len().head(_MAX_EXAMPLES)
        examples = ", ".join(f"({date}, {symbol}) x{n}" for date, symbol, n in groups.iter_rows())
        problems.append(
            f"(date, symbol) must be unique: {duplicate_keys} "
            f"{'pairs occur' if duplicate_keys > 1 else 'pair occurs'} more than once "
            f"({duplicate_rows} rows), e.g. {examples}"
        )
    for check, count in zip(checks, bad_counts, strict=True):
        if not count:
            continue
        bad = panel.select(*_KEY, check.column).filter(check.bad)
        detail = ""
        if check.list_labels:
            unknown = bad.get_column(check.column).unique().sort().to_list()
            shown = ", ".join(repr(label) for label in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            detail = f"; unknown labels: {shown}{more}"
        examples = _examples(bad, check.column if check.show_value else None)
        problems.append(f"{check.message}: {_rows(count)}, e.g. {examples}{detail}")
    _raise_if_any(problems)


# --------------------------------------------------------------------------------------------------
# public API


def validate_panel(
    df: pl.DataFrame | pl.LazyFrame,
    *,
    sectors: Sequence[str] | None = None,
    require: Sequence[str] = REQUIRED_COLUMNS,
) -> pl.DataFrame:
    """Check a long daily panel against the data contract and return a clean, canonically typed copy.

    Parameters
    ----------
    df:
        One row per (date, symbol). ``asset_returns`` are daily simple returns as fractions,
        ``market_cap`` is in currency units, value features are ratios to price (see the module
        docstring for the full schema). A LazyFrame is collected.
    sectors:
        Allowed sector labels, e.g. :data:`GICS_SECTORS` or :data:`SEED_SECTORS`; ``None`` (the default)
        accepts any non-empty label: the taxonomy is the user's.
    require:
        Columns that must be present. ``date`` and ``symbol`` are always required. Known columns that
        are present but not required (``market_cap``, the value features, trading and fundamental
        columns) are still validated.

    Returns
    -------
    pl.DataFrame
        ``date`` as Date, ``symbol`` and ``sector`` as String, ``asset_returns``, ``market_cap``, value
        features, trading and fundamental columns and every other numeric column as Float64 (NaN in
        ``market_cap`` and those optional known columns becomes null), known columns first in schema order,
        then the other columns in input order; sorted by (date, symbol).
        Null returns and null market caps are kept (missing observations; a model leaves a row without a cap
        out, see :func:`factor_engine.model.build_model`).

    Raises
    ------
    PanelError
        For an empty panel, missing columns, unparseable or mistyped columns, null dates or symbols,
        duplicate (date, symbol) pairs, non-positive or infinite market caps, returns <= -1 or
        non-finite, null, blank or (with ``sectors``) unlisted sectors, infinite value features, trading or
        fundamental columns, negative volume or turnover and non-positive shares outstanding.
        Problems found at the same stage are reported together in one message.
    """
    if isinstance(sectors, str):
        raise TypeError("sectors must be a sequence of labels or None, not a single string")
    if isinstance(df, pl.LazyFrame):
        df = df.collect()
    if not isinstance(df, pl.DataFrame):
        raise TypeError(f"validate_panel expects a polars DataFrame or LazyFrame, got {type(df).__name__}")

    if df.height == 0:
        raise PanelError(f"panel is empty: 0 rows (columns: {df.columns})")
    required = list(dict.fromkeys([*_KEY, *require]))
    missing = [name for name in required if name not in df.columns]
    if missing:
        raise PanelError(f"panel is missing required column(s) {missing}; columns present: {df.columns}")

    panel = _coerce(df)
    _check_keys_not_null(panel)
    panel = _sort_by_key(panel)
    _check_values(panel, sectors)

    if any(name in panel.columns for name in _NAN_AS_NULL):
        panel = panel.with_columns(pl.col(name).fill_nan(None) for name in _NAN_AS_NULL if name in panel.columns)
    known = [name for name in _CANONICAL_ORDER if name in panel.columns]
    return panel.select(*known, *(name for name in panel.columns if name not in _CANONICAL_ORDER))


def file_suffix(path: Path) -> str:
    """The suffix that decides how ``path`` is read, lowercased: ``.csv.gz`` as a whole, else the last suffix."""
    return ".csv.gz" if path.name.lower().endswith(".csv.gz") else path.suffix.lower()


def load_panel(
    path: str | Path,
    *,
    sectors: Sequence[str] | None = None,
    require: Sequence[str] = REQUIRED_COLUMNS,
) -> pl.DataFrame:
    """Read a panel from ``.parquet`` / ``.pq``, ``.csv`` or ``.csv.gz`` and validate it with :func:`validate_panel`.

    Parameters
    ----------
    path:
        File path. CSV files need a header row; their date column must hold ISO ``YYYY-MM-DD`` strings
        and empty fields are read as null. Units as in :func:`validate_panel`.
    sectors, require:
        Passed to :func:`validate_panel`.

    Raises
    ------
    PanelError
        If the file does not exist, its suffix is not supported, it cannot be read, or the panel is
        invalid.
    """
    path = Path(path)
    suffix = file_suffix(path)
    if suffix not in PARQUET_SUFFIXES + READABLE_CSV_SUFFIXES:
        supported = ", ".join(PARQUET_SUFFIXES + READABLE_CSV_SUFFIXES)
        raise PanelError(f"cannot read panel {path}: unsupported suffix {path.suffix!r} (use {supported})")
    if not path.is_file():
        raise PanelError(f"cannot read panel {path}: no such file")
    try:
        if suffix in PARQUET_SUFFIXES:
            frame = pl.read_parquet(path)
        else:
            # Known columns are read as text so validate_panel can report unparseable values row by row
            # (and symbols such as "0050" keep their leading zeros).
            header = pl.read_csv(path, n_rows=0).columns
            as_text = {name: pl.String for name in (*_CANONICAL_ORDER,) if name in header}
            frame = pl.read_csv(path, schema_overrides=as_text)
    except (pl.exceptions.PolarsError, OSError) as error:
        raise PanelError(f"cannot read panel {path}: {error}") from error
    # one chunk per column (a Parquet file is read as one chunk per row group): every later step reads whole
    # columns, which a chunked column would copy each time (numpy views, gathers, casts)
    return validate_panel(frame.rechunk(), sectors=sectors, require=require)


def to_toraniko_frames(panel: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Split a validated panel into the long frames toraniko's estimators and style scores take.

    Parameters
    ----------
    panel:
        Output of :func:`validate_panel` (not re-validated here).

    Returns
    -------
    dict[str, pl.DataFrame]
        ``returns``: date, symbol, asset_returns (daily simple returns, fractions);
        ``market_cap``: date, symbol, market_cap (currency units; null where the panel's cap is missing);
        ``sector_dummies``: date, symbol and one Float64 0/1 column per sector label present, named by the
        label, in sorted order (each row has exactly one 1.0);
        ``value``: date, symbol, book_price, sales_price, cf_price (ratios to price), only when all three
        value features are present.
    """
    missing = [name for name in REQUIRED_COLUMNS if name not in panel.columns]
    if missing:
        raise PanelError(f"panel is missing column(s) {missing}; columns present: {panel.columns}")
    labels = panel.get_column(SECTOR).drop_nulls().unique().sort().to_list()
    clashing = [label for label in labels if label in _KEY]
    if clashing:
        raise PanelError(f"sector labels {clashing} clash with the key columns {_KEY}")
    frames = {
        "returns": panel.select(DATE, SYMBOL, RETURNS),
        "market_cap": panel.select(DATE, SYMBOL, MARKET_CAP),
        "sector_dummies": panel.select(
            DATE,
            SYMBOL,
            *((pl.col(SECTOR) == label).cast(pl.Float64).alias(label) for label in labels),
        ),
    }
    if all(feature in panel.columns for feature in VALUE_FEATURES):
        frames["value"] = panel.select(DATE, SYMBOL, *VALUE_FEATURES)
    return frames
