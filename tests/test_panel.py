"""Tests for the panel data contract: validation messages, type coercion, loaders and toraniko layouts."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from factor_engine.panel import (
    DATE,
    GICS_SECTORS,
    MARKET_CAP,
    REQUIRED_COLUMNS,
    RETURNS,
    SECTOR,
    SEED_SECTORS,
    SYMBOL,
    VALUE_FEATURES,
    PanelError,
    load_panel,
    to_toraniko_frames,
    validate_panel,
)

START = dt.date(2024, 1, 2)


def make_panel(
    seed: int = 0, n_dates: int = 4, n_symbols: int = 5, *, value: bool = True, shuffle: bool = True
) -> pl.DataFrame:
    """A valid long panel with ``n_dates * n_symbols`` rows, rows shuffled unless ``shuffle`` is False."""
    rng = np.random.default_rng(seed)
    dates = [START + dt.timedelta(days=i) for i in range(n_dates)]
    symbols = [f"S{i:03d}" for i in range(n_symbols)]
    sector_of = {s: GICS_SECTORS[int(rng.integers(len(GICS_SECTORS)))] for s in symbols}
    n_rows = n_dates * n_symbols
    columns: dict[str, object] = {
        DATE: [d for d in dates for _ in symbols],
        SYMBOL: symbols * n_dates,
        RETURNS: rng.normal(0.0, 0.02, n_rows),
        MARKET_CAP: rng.lognormal(21.0, 1.0, n_rows),
        SECTOR: [sector_of[s] for s in symbols] * n_dates,
    }
    if value:
        for feature in VALUE_FEATURES:
            columns[feature] = rng.normal(0.5, 0.2, n_rows)
    panel = pl.DataFrame(columns)
    if shuffle:
        panel = panel.sample(fraction=1.0, shuffle=True, seed=seed)
    return panel


def set_value(panel: pl.DataFrame, column: str, date: dt.date, symbol: str, value: object) -> pl.DataFrame:
    """Return ``panel`` with ``column`` replaced by ``value`` at (date, symbol)."""
    at = (pl.col(DATE) == date) & (pl.col(SYMBOL) == symbol)
    return panel.with_columns(
        pl.when(at).then(pl.lit(value, dtype=panel.schema[column])).otherwise(pl.col(column)).alias(column)
    )


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    return make_panel()


# ----------------------------------------------------------------------------------------------- happy path


def test_valid_panel_is_typed_sorted_and_complete(panel: pl.DataFrame) -> None:
    clean = validate_panel(panel)

    assert clean.schema == pl.Schema(
        {
            DATE: pl.Date,
            SYMBOL: pl.String,
            RETURNS: pl.Float64,
            MARKET_CAP: pl.Float64,
            SECTOR: pl.String,
            **dict.fromkeys(VALUE_FEATURES, pl.Float64),
        }
    )
    expected = panel.sort(DATE, SYMBOL).select(clean.columns)
    assert_frame_equal(clean, expected)
    assert clean.select(DATE, SYMBOL).rows() == sorted(panel.select(DATE, SYMBOL).rows())


def test_lazy_frame_input(panel: pl.DataFrame) -> None:
    assert_frame_equal(validate_panel(panel.lazy()), validate_panel(panel))


def test_null_returns_are_kept(panel: pl.DataFrame) -> None:
    with_gap = set_value(panel, RETURNS, START, "S001", None)
    clean = validate_panel(with_gap)
    assert clean.height == panel.height
    gap = clean.filter((pl.col(DATE) == START) & (pl.col(SYMBOL) == "S001"))
    assert gap.get_column(RETURNS).to_list() == [None]
    assert clean.get_column(RETURNS).null_count() == 1


def test_string_and_datetime_dates_are_coerced(panel: pl.DataFrame) -> None:
    expected = validate_panel(panel)
    as_text = panel.with_columns(pl.col(DATE).dt.strftime("%Y-%m-%d"))
    assert as_text.schema[DATE] == pl.String
    assert_frame_equal(validate_panel(as_text), expected)

    # intraday timestamps are truncated to their day
    as_datetime = panel.with_columns(pl.col(DATE).cast(pl.Datetime("us")) + pl.duration(hours=15, minutes=59))
    assert_frame_equal(validate_panel(as_datetime), expected)


def test_other_dtypes_are_coerced(panel: pl.DataFrame) -> None:
    expected = validate_panel(panel)
    loose = panel.with_columns(
        pl.col(SYMBOL).cast(pl.Categorical),
        pl.col(SECTOR).cast(pl.Enum(GICS_SECTORS)),
        pl.col(RETURNS).cast(pl.Float32).cast(pl.String),
        pl.col(MARKET_CAP).round(0).cast(pl.Int64),
        pl.col("book_price").cast(pl.Float32),
    )
    clean = validate_panel(loose)
    assert clean.schema == expected.schema
    assert_frame_equal(clean.select(DATE, SYMBOL, SECTOR), expected.select(DATE, SYMBOL, SECTOR))
    np.testing.assert_allclose(clean[MARKET_CAP].to_numpy(), expected[MARKET_CAP].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(clean[RETURNS].to_numpy(), expected[RETURNS].to_numpy(), rtol=1e-6)


def test_extra_columns_kept_and_numeric_ones_cast(panel: pl.DataFrame) -> None:
    extra = panel.with_columns(pl.int_range(pl.len(), dtype=pl.Int32).alias("volume"), pl.lit("x").alias("exchange"))
    clean = validate_panel(extra)
    assert clean.columns[-2:] == ["volume", "exchange"]
    assert clean.schema["volume"] == pl.Float64
    assert clean.schema["exchange"] == pl.String


def test_value_features_optional_and_nan_becomes_null(panel: pl.DataFrame) -> None:
    without = validate_panel(panel.drop(VALUE_FEATURES))
    assert not set(VALUE_FEATURES) & set(without.columns)

    gappy = set_value(panel, "book_price", START, "S000", None)
    gappy = set_value(gappy, "cf_price", START, "S002", float("nan"))
    clean = validate_panel(gappy)
    assert clean.get_column("book_price").null_count() == 1
    assert clean.get_column("cf_price").null_count() == 1
    assert not clean.get_column("cf_price").is_nan().any()


def test_require_can_relax_columns_but_not_the_key(panel: pl.DataFrame) -> None:
    clean = validate_panel(panel.drop(SECTOR, MARKET_CAP), require=(DATE, SYMBOL, RETURNS))
    assert SECTOR not in clean.columns
    with pytest.raises(PanelError, match=r"missing required column\(s\) \['symbol'\]"):
        validate_panel(panel.drop(SYMBOL), require=(RETURNS,))


def test_sectors_none_accepts_any_label(panel: pl.DataFrame) -> None:
    relabelled = panel.with_columns(pl.col(SECTOR).str.to_uppercase() + " (custom)")
    clean = validate_panel(relabelled, sectors=None)
    assert clean.get_column(SECTOR).str.ends_with(" (custom)").all()
    assert validate_panel(relabelled, sectors=relabelled[SECTOR].unique().to_list()).height == panel.height


# ----------------------------------------------------------------------------------------------- errors


def test_empty_panel(panel: pl.DataFrame) -> None:
    with pytest.raises(PanelError, match="panel is empty: 0 rows"):
        validate_panel(panel.clear())


def test_missing_column_named_with_columns_present(panel: pl.DataFrame) -> None:
    with pytest.raises(PanelError, match=r"missing required column\(s\) \['market_cap'\]; columns present: "):
        validate_panel(panel.drop(MARKET_CAP), require=(*REQUIRED_COLUMNS, MARKET_CAP))
    without_caps = validate_panel(panel.drop(MARKET_CAP))  # market_cap is optional by default
    assert MARKET_CAP not in without_caps.columns and without_caps.height == panel.height
    with pytest.raises(PanelError, match=r"\['asset_returns', 'sector'\].*'symbol'"):
        validate_panel(panel.drop(RETURNS, SECTOR))


def test_unparseable_market_cap_names_dtype_and_values(panel: pl.DataFrame) -> None:
    as_text = panel.with_columns(pl.col(MARKET_CAP).cast(pl.String))
    as_text = set_value(as_text, MARKET_CAP, START, "S003", "1.2bn")
    with pytest.raises(
        PanelError,
        match=r"market_cap has dtype String and 1 value cannot be parsed as numbers: "
        r"e\.g\. '1\.2bn' at \(2024-01-02, S003\)",
    ):
        validate_panel(as_text)


def test_unsupported_dtype_names_column_dtype_and_values(panel: pl.DataFrame) -> None:
    with pytest.raises(PanelError, match=r"market_cap has dtype Boolean, expected .*e\.g\. values \[True"):
        validate_panel(panel.with_columns((pl.col(MARKET_CAP) > 0).alias(MARKET_CAP)))
    with pytest.raises(PanelError, match=r"date has dtype Int64, expected Date, Datetime or ISO"):
        validate_panel(panel.with_columns(pl.int_range(pl.len()).alias(DATE)))


def test_unparseable_date_names_value_and_row(panel: pl.DataFrame) -> None:
    as_text = panel.sort(DATE, SYMBOL).with_columns(pl.col(DATE).dt.strftime("%Y-%m-%d"))
    as_text = as_text.with_columns(
        pl.when(pl.int_range(pl.len()).is_in([2, 7])).then(pl.lit("02/01/2024")).otherwise(pl.col(DATE)).alias(DATE)
    )
    with pytest.raises(
        PanelError,
        match=r"date has dtype String and 2 values cannot be parsed as ISO dates 'YYYY-MM-DD': "
        r"e\.g\. '02/01/2024' at row 2, '02/01/2024' at row 7",
    ):
        validate_panel(as_text)


def test_null_date_and_symbol_reported_by_row_number(panel: pl.DataFrame) -> None:
    broken = panel.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col(DATE)).alias(DATE),
        pl.when(pl.int_range(pl.len()).is_in([0, 5])).then(None).otherwise(pl.col(SYMBOL)).alias(SYMBOL),
    )
    with pytest.raises(PanelError, match=r"date must not be null: 1 bad row, e\.g\. row 3") as error:
        validate_panel(broken)
    assert "symbol must not be null: 2 bad rows, e.g. row 0, row 5" in str(error.value)


def test_duplicate_keys_counted_with_examples(panel: pl.DataFrame) -> None:
    doubled = pl.concat([panel, panel.filter(pl.col(SYMBOL).is_in(["S001", "S004"]) & (pl.col(DATE) == START))])
    with pytest.raises(
        PanelError,
        match=r"\(date, symbol\) must be unique: 2 pairs occur more than once \(4 rows\), "
        r"e\.g\. \(2024-01-02, S001\) x2, \(2024-01-02, S004\) x2",
    ):
        validate_panel(doubled)


@pytest.mark.parametrize("bad_cap", [0.0, -5.0, float("inf"), float("-inf")])
def test_bad_market_cap(panel: pl.DataFrame, bad_cap: float) -> None:
    broken = set_value(panel, MARKET_CAP, START + dt.timedelta(days=1), "S002", bad_cap)
    with pytest.raises(
        PanelError,
        match=r"market_cap must be positive and finite \(not inf or <= 0; null is allowed: a missing cap\): 1 bad "
        rf"row, e\.g\. \(2024-01-03, S002\) = {re.escape(repr(bad_cap))}$",
    ):
        validate_panel(broken)


@pytest.mark.parametrize("missing_cap", [float("nan"), None])
def test_missing_market_cap_is_kept_as_null(panel: pl.DataFrame, missing_cap: float | None) -> None:
    day = START + dt.timedelta(days=1)
    valid = validate_panel(set_value(panel, MARKET_CAP, day, "S002", missing_cap))
    caps = valid.get_column(MARKET_CAP)
    assert caps.null_count() == 1 and caps.is_nan().sum() == 0
    assert valid.filter(pl.col(MARKET_CAP).is_null()).select(DATE, SYMBOL).row(0) == (day, "S002")
    assert_frame_equal(valid.drop(MARKET_CAP), validate_panel(panel).drop(MARKET_CAP))


@pytest.mark.parametrize("bad_return", [-1.0, -1.5, float("nan"), float("inf"), float("-inf")])
def test_bad_returns(panel: pl.DataFrame, bad_return: float) -> None:
    broken = set_value(panel, RETURNS, START, "S004", bad_return)
    with pytest.raises(
        PanelError, match=r"asset_returns must be finite and > -1 .*: 1 bad row, e\.g\. \(2024-01-02, S004\)"
    ):
        validate_panel(broken)


def test_at_most_five_examples(panel: pl.DataFrame) -> None:
    broken = panel.with_columns(pl.when(pl.col(SYMBOL) <= "S001").then(-1.0).otherwise(MARKET_CAP).alias(MARKET_CAP))
    with pytest.raises(PanelError, match=r"market_cap .*: 8 bad rows") as error:
        validate_panel(broken)
    examples = re.findall(r"\(\d{4}-\d\d-\d\d, S\d+\)", str(error.value))
    assert examples == [
        "(2024-01-02, S000)",
        "(2024-01-02, S001)",
        "(2024-01-03, S000)",
        "(2024-01-03, S001)",
        "(2024-01-04, S000)",
    ]


def test_null_sector(panel: pl.DataFrame) -> None:
    broken = set_value(panel, SECTOR, START, "S000", None)
    message = r"sector must be a non-empty label \(not null or blank\): 1 bad row, e\.g\. \(2024-01-02, S000\)"
    with pytest.raises(PanelError, match=message):
        validate_panel(broken)
    with pytest.raises(PanelError, match=message):
        validate_panel(broken, sectors=GICS_SECTORS)
    with pytest.raises(PanelError, match=message):
        validate_panel(set_value(panel, SECTOR, START, "S000", "  "))


@pytest.mark.parametrize("taxonomy", [GICS_SECTORS, SEED_SECTORS, ("Widgets", "4510", "Crypto & Co", "Ölwerte")])
def test_any_sector_taxonomy_is_accepted_by_default(panel: pl.DataFrame, taxonomy: tuple[str, ...]) -> None:
    relabelled = panel.with_columns(
        pl.col(SECTOR)
        .cast(pl.Enum(GICS_SECTORS))
        .to_physical()
        .mod(len(taxonomy))
        .replace_strict(list(range(len(taxonomy))), list(taxonomy), return_dtype=pl.String)
    )
    clean = validate_panel(relabelled)
    assert set(clean[SECTOR].unique()) <= set(taxonomy)
    assert clean[SECTOR].to_list() == relabelled.sort(DATE, SYMBOL)[SECTOR].to_list()


def test_unknown_sector_lists_labels(panel: pl.DataFrame) -> None:
    broken = set_value(panel, SECTOR, START, "S000", "Tech")
    broken = set_value(broken, SECTOR, START, "S001", "information technology")
    with pytest.raises(
        PanelError,
        match=r"sector labels must be among the 11 allowed sectors \('Communication Services', .*'Utilities'\): "
        r"2 bad rows, e\.g\. \(2024-01-02, S000\) = 'Tech'.*unknown labels: 'Tech', 'information technology'",
    ):
        validate_panel(broken, sectors=GICS_SECTORS)
    assert validate_panel(broken).height == panel.height  # any label by default


def test_infinite_value_feature(panel: pl.DataFrame) -> None:
    broken = set_value(panel, "sales_price", START, "S003", float("-inf"))
    with pytest.raises(PanelError, match=r"sales_price must not be infinite: 1 bad row, e\.g\. \(2024-01-02, S003\)"):
        validate_panel(broken)


def test_problems_at_one_stage_reported_together(panel: pl.DataFrame) -> None:
    broken = set_value(panel, MARKET_CAP, START, "S000", -1.0)
    broken = set_value(broken, RETURNS, START, "S001", -2.0)
    with pytest.raises(PanelError, match=r"panel has 2 problems:\n- market_cap .*\n- asset_returns "):
        validate_panel(broken)


def test_single_string_sectors_rejected(panel: pl.DataFrame) -> None:
    with pytest.raises(TypeError, match="single string"):
        validate_panel(panel, sectors="Energy")


# ----------------------------------------------------------------------------------------------- loading


def test_csv_round_trip(panel: pl.DataFrame, tmp_path: Path) -> None:
    zero_padded = panel.with_columns(pl.col(SYMBOL).str.replace("S", "0"))
    zero_padded = set_value(zero_padded, RETURNS, START, "0002", None)
    path = tmp_path / "panel.csv"
    zero_padded.write_csv(path)

    loaded = load_panel(path)
    assert_frame_equal(loaded, validate_panel(zero_padded))
    assert loaded.get_column(SYMBOL).str.starts_with("0").all()
    assert loaded.get_column(RETURNS).null_count() == 1


@pytest.mark.parametrize("suffix", [".parquet", ".pq", ".PARQUET"])
def test_parquet_round_trip(panel: pl.DataFrame, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"panel{suffix}"
    panel.write_parquet(path)
    assert_frame_equal(load_panel(str(path)), validate_panel(panel))


def test_load_validates_and_passes_sectors(panel: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "custom.parquet"
    set_value(panel, SECTOR, START, "S000", "Crypto").write_parquet(path)
    with pytest.raises(PanelError, match="unknown labels: 'Crypto'"):
        load_panel(path, sectors=GICS_SECTORS)
    assert load_panel(path).height == panel.height


def test_csv_with_bad_number_reports_row(panel: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    set_value(panel.with_columns(pl.col(MARKET_CAP).cast(pl.String)), MARKET_CAP, START, "S001", "n/a").write_csv(path)
    with pytest.raises(PanelError, match=r"market_cap has dtype String .* 'n/a' at \(2024-01-02, S001\)"):
        load_panel(path)


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "panel.xlsx"
    path.write_text("not a panel")
    with pytest.raises(PanelError, match=r"panel\.xlsx: unsupported suffix '\.xlsx'"):
        load_panel(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.parquet"
    with pytest.raises(PanelError, match=r"nowhere\.parquet: no such file"):
        load_panel(path)


def test_unreadable_file_named(tmp_path: Path) -> None:
    path = tmp_path / "garbage.parquet"
    path.write_bytes(b"definitely not parquet")
    with pytest.raises(PanelError, match=r"cannot read panel .*garbage\.parquet"):
        load_panel(path)


# ----------------------------------------------------------------------------------------------- toraniko


def test_to_toraniko_frames_layout(panel: pl.DataFrame) -> None:
    clean = validate_panel(panel)
    frames = to_toraniko_frames(clean)

    assert set(frames) == {"returns", "market_cap", "sector_dummies", "value"}
    assert frames["returns"].columns == [DATE, SYMBOL, RETURNS]
    assert frames["market_cap"].columns == [DATE, SYMBOL, MARKET_CAP]
    assert frames["value"].columns == [DATE, SYMBOL, *VALUE_FEATURES]
    for frame in frames.values():
        assert frame.height == clean.height
        assert_frame_equal(frame.select(DATE, SYMBOL), clean.select(DATE, SYMBOL))

    dummies = frames["sector_dummies"]
    labels = sorted(clean.get_column(SECTOR).unique())
    assert dummies.columns == [DATE, SYMBOL, *labels]
    assert all(dummies.schema[label] == pl.Float64 for label in labels)
    values = dummies.select(labels).to_numpy()
    assert set(np.unique(values)) <= {0.0, 1.0}
    np.testing.assert_array_equal(values.sum(axis=1), np.ones(clean.height))
    # the single 1.0 sits in the row's own sector column
    chosen = np.array(labels)[values.argmax(axis=1)]
    np.testing.assert_array_equal(chosen, clean.get_column(SECTOR).to_numpy())


def test_to_toraniko_frames_without_value_features(panel: pl.DataFrame) -> None:
    frames = to_toraniko_frames(validate_panel(panel.drop(VALUE_FEATURES)))
    assert set(frames) == {"returns", "market_cap", "sector_dummies"}


def test_to_toraniko_frames_needs_required_columns(panel: pl.DataFrame) -> None:
    with pytest.raises(PanelError, match=r"missing column\(s\) \['sector'\]"):
        to_toraniko_frames(validate_panel(panel.drop(SECTOR), require=(DATE, SYMBOL, RETURNS, MARKET_CAP)))


# ----------------------------------------------------------------------------------------------- invariants


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_dates=st.integers(1, 6),
    n_symbols=st.integers(1, 8),
    shuffle_seed=st.integers(0, 2**32 - 1),
    null_returns=st.integers(0, 3),
)
def test_row_order_does_not_change_result(
    seed: int, n_dates: int, n_symbols: int, shuffle_seed: int, null_returns: int
) -> None:
    base = make_panel(seed, n_dates, n_symbols, shuffle=False)
    base = base.with_columns(
        pl.when(pl.int_range(pl.len()) < null_returns).then(None).otherwise(pl.col(RETURNS)).alias(RETURNS)
    )
    permutation = np.random.default_rng(shuffle_seed).permutation(base.height)
    assert_frame_equal(validate_panel(base[permutation]), validate_panel(base))
