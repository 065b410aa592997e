"""From what users hold to a contract panel: adjusted closes, a sector map, market caps or shares outstanding and
fundamentals become one long daily panel that passes :func:`factor_engine.panel.validate_panel`.

:func:`prepare_panel` takes frames, :func:`prepare_files` takes file paths (read by :func:`read_table`); both
return a :class:`PreparedPanel`: the panel and a :class:`PrepareSummary` of what was done.

Inputs
------
Column names are matched ignoring case and surrounding blanks, with spaces and hyphens read as underscores
(``Adj Close`` is ``adj_close``).
Dates are Date, Datetime or ISO ``YYYY-MM-DD`` text; numbers are numeric or numeric text. Empty cells and NaN
are missing values.

``prices`` (required)
    Adjusted closes in currency units. Wide: a ``date`` column and one column per symbol. Long: ``date``,
    ``symbol`` (or ``ticker``) and a close column, the first present of ``adj_close``, ``adjusted_close``,
    ``close``, ``price``, and optionally ``volume`` (shares traded that day, ≥ 0 and finite; kept in the panel
    for the liquidity style); other columns are ignored and listed in the summary. A file is long when it has
    a symbol column, wide otherwise. Closes must be positive and finite.
``sectors`` (required)
    ``symbol, sector`` (static: one row per symbol) or ``date, symbol, sector`` (dated: each row applies from
    its date until the symbol's next row). Labels are any non-empty text.
``caps`` or ``shares`` (optional, not both)
    Market capitalisations in currency units or shares outstanding, wide or long (``date, symbol,
    market_cap`` / ``date, symbol, shares``); positive and finite. ``market_cap = shares × close``. With
    shares and a ``volume`` column in the prices, the panel keeps ``shares_outstanding`` too, so the liquidity
    style gets its turnover (volume / shares outstanding) from prices, volume and shares.
``fundamentals`` (optional)
    Long ``date, symbol`` plus any of these columns (see :mod:`factor_engine.panel` for their meaning):

    * ratios to price, or raw values in currency units that are divided by the row's market cap (so they need
      ``caps`` or ``shares``), each given once, as ratio or as raw value: ``book_price`` or ``book_value``,
      ``sales_price`` or ``sales``, ``cf_price`` or ``cash_flow``, ``earnings_price`` or ``earnings`` (trailing
      12-month earnings), ``forecast_earnings_price`` or ``forecast_earnings`` (analysts' 12-month forward
      earnings), ``dividend_yield`` or ``dividends`` (trailing 12-month dividends);
    * taken as given: ``earnings_growth``, ``sales_growth``, ``forecast_growth`` (fractions per year),
      ``market_leverage``, ``book_leverage``, ``debt_to_assets``.

Missing days
------------
The calendar is the set of dates on which the prices hold any close. A symbol's day is missing when it has no
close there (no row, an empty cell, NaN) between its first and last close; a missing day gives no row. Each
return is ``close_t / close_{t-1} - 1`` over consecutive calendar dates: the first close of a symbol and the
first close after a missing day get a null return (kept as a row; the contract allows it). A return spanning
the gap would put several days of moves into one daily observation and inflate the risk estimated from it;
treating it as missing, as USE4-style models do, keeps every return a one-day return.

Point in time
-------------
Dated sectors, caps, shares and fundamentals are joined as of each price date: the last value dated on or
before it is used for the symbol (forward fill, no staleness limit), never a later one. Date values by when
they became known (a filing date, not a period end). A price row before the symbol's first sector row is an
error; before its first cap or shares value it is an error unless ``missing_caps="drop"`` drops such rows (the
count is in the summary); before its first fundamentals value its fundamentals are null. Each fundamentals
column is filled on its own: a null does not erase an earlier value.

Errors and warnings
-------------------
Every error raises :class:`PrepareError` (a ``ValueError``) whose message starts with the input's name (its file
when read by :func:`prepare_files`) and names the column and the rows as ``(date, symbol)`` or as 0-based
``row`` numbers (data rows, header excluded, as in :func:`~factor_engine.panel.validate_panel`). Tickers in
the sectors, caps, shares or fundamentals that match no price symbol are no error: they are listed in the
summary and issued as a :class:`PrepareWarning` naming the input.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

import polars as pl

from factor_engine._prepare_inputs import (
    _MAX_EXAMPLES,
    _ROW,
    PrepareError,
    _bad_values,
    _check_positive,
    _check_unique,
    _fail,
    _find,
    _is_text,
    _listed,
    _plural,
    _require,
    _stripped,
    _to_long,
    _where,
    _with_dates,
    _with_numbers,
    _with_symbols,
    read_table,
)
from factor_engine.panel import (
    DATE,
    DIVIDEND_YIELD,
    EARNINGS_PRICE,
    FORECAST_EARNINGS_PRICE,
    FUNDAMENTAL_COLUMNS,
    MARKET_CAP,
    RETURNS,
    SECTOR,
    SHARES_OUTSTANDING,
    SYMBOL,
    VALUE_FEATURES,
    VOLUME,
    validate_panel,
)

__all__ = [
    "CLOSE_COLUMNS",
    "FUNDAMENTALS",
    "RAW_FUNDAMENTALS",
    "SHARES_COLUMNS",
    "PrepareError",
    "PrepareSummary",
    "PrepareWarning",
    "PreparedPanel",
    "prepare_files",
    "prepare_panel",
    "read_table",
]

#: Names of the close column of long prices, in order of preference (adjusted closes first).
CLOSE_COLUMNS: tuple[str, ...] = ("adj_close", "adjusted_close", "close", "price")
SHARES_COLUMNS: tuple[str, ...] = ("shares", "shares_outstanding")
#: Raw fundamentals (currency units) and the ratio to price each gives when divided by the market cap.
RAW_FUNDAMENTALS: dict[str, str] = {
    "book_price": "book_value",
    "sales_price": "sales",
    "cf_price": "cash_flow",
    EARNINGS_PRICE: "earnings",
    FORECAST_EARNINGS_PRICE: "forecast_earnings",
    DIVIDEND_YIELD: "dividends",
}
#: Every fundamentals column of the panel: the value features and the USE4 fundamentals.
FUNDAMENTALS: tuple[str, ...] = (*VALUE_FEATURES, *FUNDAMENTAL_COLUMNS)
INPUTS = ("prices", "sectors", "caps", "shares", "fundamentals")

MissingCaps = Literal["error", "drop"]

_CLOSE = "__close__"
_VALUE = "__value__"
_DAY = "__day__"
_PREVIOUS_DAY = "__previous_day__"
_PREVIOUS_CLOSE = "__previous_close__"


class PrepareWarning(UserWarning):
    """Something in an input was left unused (tickers that match no price symbol)."""


@dataclass(frozen=True)
class PrepareSummary:
    """What :func:`prepare_panel` did.

    Attributes
    ----------
    sources:
        Input role (``prices``, ``sectors``, ``caps``, ``shares``, ``fundamentals``) to its name in messages
        (the file path for :func:`prepare_files`), for each input given.
    prices_layout, close_column:
        ``"wide"`` or ``"long"``; the close column used (None for wide prices).
    symbols, dates, rows, first_date, last_date:
        Size and span of the panel.
    first_returns, gap_returns:
        Null returns at a symbol's first close, and at the first close after a missing day.
    missing_days:
        (symbol, date) pairs without a close between a symbol's first and last close.
    symbols_without_prices:
        Price columns (wide) or symbols (long) without any close, left out.
    sectors_layout, sector_labels:
        ``"static"`` or ``"dated"``; the labels used, sorted.
    market_cap_source:
        ``"caps"``, ``"shares"`` (shares × close) or None (no ``market_cap`` column).
    rows_dropped_without_cap:
        Price rows dropped before a symbol's first cap or shares value (``missing_caps="drop"``).
    value_features:
        Each fundamentals column of the panel (value features and USE4 fundamentals) to how it was made:
        ``"book_price"`` (given) or ``"book_value / market_cap"``.
    unmatched:
        Input role to the tickers in it that match no price symbol, sorted (inputs without any are absent).
    ignored_columns:
        Input role to its columns that were not used (inputs without any are absent).
    trading_columns:
        ``volume`` (from long prices) and ``shares_outstanding`` (from shares, with volume), when kept.
    """

    sources: Mapping[str, str]
    prices_layout: Literal["wide", "long"]
    close_column: str | None
    symbols: int
    dates: int
    rows: int
    first_date: date
    last_date: date
    first_returns: int
    gap_returns: int
    missing_days: int
    symbols_without_prices: tuple[str, ...]
    sectors_layout: Literal["static", "dated"]
    sector_labels: tuple[str, ...]
    market_cap_source: Literal["caps", "shares"] | None
    rows_dropped_without_cap: int
    value_features: Mapping[str, str] = field(default_factory=dict)
    unmatched: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ignored_columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    trading_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreparedPanel:
    """A validated contract panel (see :mod:`factor_engine.panel`) and the summary of how it was made."""

    panel: pl.DataFrame
    summary: PrepareSummary


# --------------------------------------------------------------------------------------------------
# steps


def _returns(closes: pl.DataFrame) -> pl.DataFrame:
    """Daily simple returns over consecutive calendar dates; null at a first close and after a missing day.

    ``closes``: date, symbol, close (positive). The calendar is every date with any close.
    """
    calendar = closes.select(DATE).unique().sort(DATE).with_row_index(_DAY).with_columns(pl.col(_DAY).cast(pl.Int64))
    day = pl.col(_DAY)
    return (
        closes.join(calendar, on=DATE)
        .sort(SYMBOL, DATE)
        .with_columns(
            day.shift(1).over(SYMBOL).alias(_PREVIOUS_DAY),
            pl.col(_CLOSE).shift(1).over(SYMBOL).alias(_PREVIOUS_CLOSE),
        )
        .with_columns(
            pl.when(pl.col(_PREVIOUS_DAY) == day - 1)
            .then(pl.col(_CLOSE) / pl.col(_PREVIOUS_CLOSE) - 1.0)
            .alias(RETURNS)
        )
        .drop(_PREVIOUS_CLOSE)
    )


def _uncovered(rows: pl.DataFrame, column: str, values: pl.DataFrame, what: str) -> str:
    """Describe the symbols whose price rows have no ``column`` value, with their first value's date."""
    first_date = pl.col(DATE).min() if DATE in values.columns else pl.lit(None, pl.Date)
    first_known = values.group_by(SYMBOL).agg(first_date.alias("first value"))
    missing = (
        rows.filter(pl.col(column).is_null())
        .group_by(SYMBOL)
        .agg(pl.len().alias("n"), pl.col(DATE).min().alias("from"), pl.col(DATE).max().alias("to"))
        .join(first_known, on=SYMBOL, how="left")
        .sort(SYMBOL)
    )
    parts = []
    for row in missing.head(_MAX_EXAMPLES).iter_rows(named=True):
        known = f"first {what} dated {row['first value']}" if row["first value"] else f"no {what} at all"
        parts.append(f"{row[SYMBOL]} on {_plural(row['n'], 'price date')} {row['from']} → {row['to']} ({known})")
    more = f"; and {missing.height - _MAX_EXAMPLES} more symbols" if missing.height > _MAX_EXAMPLES else ""
    return f"{_plural(missing.height, 'symbol')}: " + "; ".join(parts) + more


def _as_of(rows: pl.DataFrame, values: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """Attach to each row the symbol's last ``columns`` values dated on or before the row's date."""
    return rows.sort(DATE).join_asof(
        values.select(DATE, SYMBOL, *columns).sort(DATE),
        on=DATE,
        by=SYMBOL,
        strategy="backward",
        check_sortedness=False,
    )


def _sectors(
    rows: pl.DataFrame, sectors: pl.DataFrame, name: str
) -> tuple[pl.DataFrame, Literal["static", "dated"], tuple[str, ...], set[str]]:
    """Attach each row's sector; returns the rows, the layout, the ignored columns and the map's symbols."""
    dated = _find(sectors, (DATE,), name) is not None
    sectors = _with_dates(sectors, name) if dated else sectors.with_row_index(_ROW)
    sectors = _with_symbols(sectors, name)
    column = _require(sectors, (SECTOR,), name, "sector")
    dtype = sectors.schema[column]
    if not (_is_text(dtype) or dtype.is_integer() or dtype == pl.Null):
        _fail(name, f"column {column!r} has dtype {dtype}, expected text labels")
    blank = _stripped(column).is_null()
    count = sectors.select(blank.sum()).item()
    if count:
        examples = ", ".join(_where(row) for row in sectors.filter(blank).head(_MAX_EXAMPLES).iter_rows(named=True))
        _fail(name, f"column {column!r} has {_plural(count, 'empty label')}, e.g. {examples}")
    ignored = tuple(c for c in sectors.columns if c not in (DATE, SYMBOL, _ROW, column))
    sectors = sectors.with_columns(_stripped(column).alias(SECTOR))
    if dated:
        _check_unique(sectors, (DATE, SYMBOL), name, "(date, symbol)")
        rows = _as_of(rows, sectors, [SECTOR])
    else:
        _check_unique(sectors, (SYMBOL,), name, "symbol (one row per symbol in a static sector map)")
        rows = rows.join(sectors.select(SYMBOL, SECTOR), on=SYMBOL, how="left")
    if rows.select(pl.col(SECTOR).null_count()).item():
        where = "on or before the price dates of " if dated else "for "
        _fail(name, f"no sector {where}" + _uncovered(rows, SECTOR, sectors, "sector row"))
    symbols = set(sectors.get_column(SYMBOL).unique().to_list())
    return rows, ("dated" if dated else "static"), ignored, symbols


def _market_caps(
    rows: pl.DataFrame,
    values: pl.DataFrame,
    source: Literal["caps", "shares"],
    name: str,
    missing_caps: MissingCaps,
    keep_shares: bool = False,
) -> tuple[pl.DataFrame, int, tuple[str, ...], set[str]]:
    """Attach ``market_cap`` from caps or shares (× close) as of each row's date, and ``shares_outstanding``
    when ``keep_shares`` (shares only).

    Returns the rows, the number dropped before a first value, the ignored columns and the input's symbols.
    """
    names, what = ((MARKET_CAP,), MARKET_CAP) if source == "caps" else (SHARES_COLUMNS, "shares")
    long, _, _, ignored = _to_long(values, _VALUE, names, name, what)
    long = long.drop_nulls(_VALUE)
    rows = _as_of(rows, long, [_VALUE])
    cap = pl.col(_VALUE) if source == "caps" else pl.col(_VALUE) * pl.col(_CLOSE)
    rows = rows.with_columns(cap.alias(MARKET_CAP))
    rows = rows.rename({_VALUE: SHARES_OUTSTANDING}) if keep_shares and source == "shares" else rows.drop(_VALUE)
    uncovered = rows.select(pl.col(MARKET_CAP).null_count()).item()
    if uncovered and missing_caps == "error":
        label = "market cap" if source == "caps" else "shares value"
        _fail(
            name,
            f"no {label} on or before the price dates of " + _uncovered(rows, MARKET_CAP, long, label) + "; "
            "give values from each symbol's first price date, or drop those rows (missing_caps='drop', "
            "--drop-missing-caps)",
        )
    return rows.drop_nulls(MARKET_CAP), uncovered, ignored, set(long.get_column(SYMBOL).unique().to_list())


def _fundamentals(
    rows: pl.DataFrame, fundamentals: pl.DataFrame, name: str
) -> tuple[pl.DataFrame, dict[str, str], tuple[str, ...], set[str]]:
    """Attach the fundamentals (:data:`FUNDAMENTALS`) as of each row's date; raw values are divided by the
    row's market cap."""
    fundamentals = _with_symbols(_with_dates(fundamentals, name), name)
    made: dict[str, str] = {}
    sources: dict[str, str] = {}
    for feature in FUNDAMENTALS:
        ratio = _find(fundamentals, (feature,), name)
        raw = _find(fundamentals, (RAW_FUNDAMENTALS[feature],), name) if feature in RAW_FUNDAMENTALS else None
        if ratio is not None and raw is not None:
            _fail(name, f"columns {ratio!r} and {raw!r} both give {feature}; keep one")
        if ratio is not None:
            sources[feature], made[feature] = ratio, feature
        elif raw is not None:
            sources[feature], made[feature] = raw, f"{RAW_FUNDAMENTALS[feature]} / {MARKET_CAP}"
    if not sources:
        accepted = ", ".join([*FUNDAMENTALS, *RAW_FUNDAMENTALS.values()])
        _fail(name, f"no fundamentals column (named {accepted}, any case); columns present: {fundamentals.columns}")
    raw_columns = [sources[f] for f in sources if made[f] != f]
    if raw_columns and MARKET_CAP not in rows.columns:
        _fail(name, f"raw values {raw_columns} are divided by the market cap: give caps or shares too")
    fundamentals = _with_numbers(fundamentals, list(sources.values()), name, wide=False)
    _check_unique(fundamentals, (DATE, SYMBOL), name, "(date, symbol)")
    for feature, column in sources.items():
        finite = pl.col(column).is_finite().fill_null(True)
        count = fundamentals.select(finite.not_().sum()).item()
        if count:
            examples = _bad_values(fundamentals, finite.not_(), column, wide=False)
            _fail(name, f"column {column!r} has {_plural(count, 'infinite value')}, e.g. {examples}")
        known = fundamentals.select(DATE, SYMBOL, pl.col(column).alias(feature)).drop_nulls(feature)
        rows = _as_of(rows, known, [feature])
        if made[feature] != feature:
            rows = rows.with_columns(pl.col(feature) / pl.col(MARKET_CAP))
    ignored = tuple(c for c in fundamentals.columns if c not in (DATE, SYMBOL, _ROW, *sources.values()))
    return rows, made, ignored, set(fundamentals.get_column(SYMBOL).unique().to_list())


# --------------------------------------------------------------------------------------------------
# public API


def prepare_panel(
    prices: pl.DataFrame,
    sectors: pl.DataFrame,
    *,
    caps: pl.DataFrame | None = None,
    shares: pl.DataFrame | None = None,
    fundamentals: pl.DataFrame | None = None,
    missing_caps: MissingCaps = "error",
    names: Mapping[str, str] | None = None,
) -> PreparedPanel:
    """Turn adjusted closes, a sector map and optional caps or shares and fundamentals into a contract panel.

    See the module docstring for the accepted layouts, the missing-day rule and the point-in-time rules.

    Parameters
    ----------
    prices:
        Adjusted closes in currency units, wide (date + one column per symbol) or long (date, symbol, close and
        optionally volume in shares, kept in the panel).
    sectors:
        ``symbol, sector`` (static) or ``date, symbol, sector`` (each row applies from its date on).
    caps:
        Market capitalisations in currency units, wide or long (date, symbol, market_cap).
    shares:
        Shares outstanding (count), wide or long (date, symbol, shares); market_cap = shares × close; kept as
        ``shares_outstanding`` when the prices have volume. Not together with ``caps``.
    fundamentals:
        Long date, symbol and ratios to price (book_price, sales_price, cf_price, earnings_price,
        forecast_earnings_price, dividend_yield; unitless) or raw values in currency units (book_value, sales,
        cash_flow, earnings, forecast_earnings, dividends), which need ``caps`` or ``shares``, and growth and
        leverage columns taken as given (earnings_growth, sales_growth, forecast_growth, market_leverage,
        book_leverage, debt_to_assets).
    missing_caps:
        A price row before the symbol's first cap or shares value: ``"error"`` (default) or ``"drop"`` the row.
    names:
        Input role (``prices``, ``sectors``, ``caps``, ``shares``, ``fundamentals``) to the name that messages
        use, such as its file path; default the role.

    Returns
    -------
    PreparedPanel
        ``panel``: date, symbol, asset_returns (daily simple returns, fractions), market_cap (with caps or
        shares; currency units), sector, the fundamentals given, volume and shares_outstanding (when kept),
        validated and sorted by (date, symbol);
        ``summary``: what was done.

    Raises
    ------
    PrepareError
        For inputs that cannot become a panel (see the module docstring); the message names the input, the
        column and the rows.
    """
    given = {"prices": prices, "sectors": sectors, "caps": caps, "shares": shares, "fundamentals": fundamentals}
    label = {role: (names or {}).get(role, role) for role in INPUTS}
    if caps is not None and shares is not None:
        raise PrepareError(f"give market caps or shares outstanding, not both ({label['caps']}, {label['shares']})")
    if missing_caps not in ("error", "drop"):
        raise ValueError(f"missing_caps must be 'error' or 'drop', got {missing_caps!r}")
    for role, frame in given.items():
        if frame is not None and not isinstance(frame, pl.DataFrame):
            raise TypeError(f"{role} must be a polars DataFrame, got {type(frame).__name__}")

    closes, layout, close_column, prices_ignored = _to_long(
        prices, _CLOSE, CLOSE_COLUMNS, label["prices"], "close", keep=(VOLUME,)
    )
    has_volume = VOLUME in closes.columns
    if has_volume:
        _check_positive(closes, VOLUME, label["prices"], VOLUME, zero=True)
    price_symbols = set(closes.get_column(SYMBOL).unique().to_list())
    closes = closes.drop_nulls(_CLOSE)
    if closes.height == 0:
        _fail(label["prices"], "no closes: every price is empty")
    without_prices = tuple(sorted(price_symbols - set(closes.get_column(SYMBOL).unique().to_list())))
    rows = _returns(closes)
    ignored: dict[str, tuple[str, ...]] = {"prices": prices_ignored}
    matched: dict[str, set[str]] = {}
    rows, sectors_layout, ignored["sectors"], matched["sectors"] = _sectors(rows, sectors, label["sectors"])
    cap_source: Literal["caps", "shares"] | None = (
        "caps" if caps is not None else "shares" if shares is not None else None
    )
    cap_frame = caps if caps is not None else shares
    dropped = 0
    if cap_source is not None and cap_frame is not None:
        rows, dropped, ignored[cap_source], matched[cap_source] = _market_caps(
            rows, cap_frame, cap_source, label[cap_source], missing_caps, keep_shares=has_volume
        )
        if rows.height == 0:
            _fail(label[cap_source], "every price row is before its symbol's first value; nothing is left")
    value_features: dict[str, str] = {}
    if fundamentals is not None:
        rows, value_features, ignored["fundamentals"], matched["fundamentals"] = _fundamentals(
            rows, fundamentals, label["fundamentals"]
        )

    # counted on the rows kept (missing_caps='drop' may drop some)
    steps = rows.select(
        pl.col(_PREVIOUS_DAY).is_null().sum().alias("first"),
        (pl.col(_PREVIOUS_DAY).is_not_null() & pl.col(RETURNS).is_null()).sum().alias("gaps"),
        (pl.col(_DAY) - pl.col(_PREVIOUS_DAY) - 1).sum().alias("missing days"),
    ).row(0, named=True)

    unmatched = {role: tuple(sorted(symbols - price_symbols)) for role, symbols in matched.items()}
    unmatched = {role: tickers for role, tickers in unmatched.items() if tickers}
    for role, tickers in unmatched.items():
        warnings.warn(
            f"{label[role]}: {_plural(len(tickers), 'ticker')} without prices, left unused: {_listed(list(tickers))}",
            PrepareWarning,
            stacklevel=2,
        )
    trading = tuple(c for c in (VOLUME, SHARES_OUTSTANDING) if c in rows.columns)
    columns = [DATE, SYMBOL, RETURNS, *([MARKET_CAP] if cap_source else []), SECTOR, *value_features, *trading]
    panel = validate_panel(rows.select(columns))
    first_date, last_date, n_dates, n_symbols = panel.select(
        pl.col(DATE).min().alias("first"),
        pl.col(DATE).max().alias("last"),
        pl.col(DATE).n_unique().alias("dates"),
        pl.col(SYMBOL).n_unique().alias("symbols"),
    ).row(0)
    summary = PrepareSummary(
        sources={role: label[role] for role, frame in given.items() if frame is not None},
        prices_layout=layout,
        close_column=close_column,
        symbols=n_symbols,
        dates=n_dates,
        rows=panel.height,
        first_date=first_date,
        last_date=last_date,
        first_returns=steps["first"],
        gap_returns=steps["gaps"],
        missing_days=steps["missing days"] or 0,
        symbols_without_prices=without_prices,
        sectors_layout=sectors_layout,
        sector_labels=tuple(panel.get_column(SECTOR).unique().sort().to_list()),
        market_cap_source=cap_source,
        rows_dropped_without_cap=dropped,
        value_features=value_features,
        unmatched=unmatched,
        ignored_columns={role: columns for role, columns in ignored.items() if columns},
        trading_columns=trading,
    )
    return PreparedPanel(panel, summary)


def prepare_files(
    prices: str | Path,
    sectors: str | Path,
    *,
    caps: str | Path | None = None,
    shares: str | Path | None = None,
    fundamentals: str | Path | None = None,
    missing_caps: MissingCaps = "error",
) -> PreparedPanel:
    """Read the input files with :func:`read_table` and run :func:`prepare_panel` on them.

    Parameters
    ----------
    prices, sectors, caps, shares, fundamentals:
        Paths of ``.csv``, ``.csv.gz``, ``.parquet`` or ``.pq`` files holding what :func:`prepare_panel` takes
        (same units). ``caps`` and ``shares`` are mutually exclusive.
    missing_caps:
        As in :func:`prepare_panel`.

    Raises
    ------
    PrepareError
        Both ``caps`` and ``shares``, a file that cannot be read, or inputs that cannot become a panel; messages
        start with the file's path.
    """
    paths = {"prices": prices, "sectors": sectors, "caps": caps, "shares": shares, "fundamentals": fundamentals}
    given = {role: Path(path) for role, path in paths.items() if path is not None}
    if "caps" in given and "shares" in given:
        raise PrepareError(f"give market caps or shares outstanding, not both ({given['caps']}, {given['shares']})")
    frames = {role: read_table(path) for role, path in given.items()}
    return prepare_panel(
        frames["prices"],
        frames["sectors"],
        caps=frames.get("caps"),
        shares=frames.get("shares"),
        fundamentals=frames.get("fundamentals"),
        missing_caps=missing_caps,
        names={role: str(path) for role, path in given.items()},
    )
