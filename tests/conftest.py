"""Shared fixtures: the toraniko golden files and a missing-aware frame comparison."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

RESULTS_DIR = Path(__file__).resolve().parent / "results"

FrameMatcher = Callable[..., None]


def assert_frames_match(
    actual: pl.DataFrame,
    expected: pl.DataFrame,
    on: Sequence[str],
    columns: Sequence[str] | None = None,
    *,
    atol: float,
    rtol: float = 0.0,
) -> None:
    """Assert two frames agree on ``columns`` after joining on the keys ``on``.

    NaN and null are the same "missing", and a key absent from one frame counts as missing there. For each
    column the sets of keys with a non-missing value must be equal, and the values must satisfy
    ``|actual - expected| <= atol + rtol * |expected|``. Keys must be unique in both frames.
    """
    on = list(on)
    if columns is None:
        columns = [c for c in expected.columns if c not in on]
    for name, frame in (("actual", actual), ("expected", expected)):
        missing = [c for c in (*on, *columns) if c not in frame.columns]
        if missing:
            raise AssertionError(f"{name} frame lacks column(s) {missing}; it has {frame.columns}")
        n_keys = frame.select(on).n_unique()
        if n_keys != frame.height:
            raise AssertionError(f"{name} frame has {frame.height - n_keys} duplicate key rows on {on}")
    left = actual.select(*on, *(pl.col(c).cast(pl.Float64).fill_nan(None) for c in columns))
    right = expected.select(*on, *(pl.col(c).cast(pl.Float64).fill_nan(None).alias(f"{c}__expected") for c in columns))
    joined = left.join(right, on=on, how="full", coalesce=True, nulls_equal=True)
    problems: list[str] = []
    for column in columns:
        got, want = pl.col(column), pl.col(f"{column}__expected")
        presence = joined.filter(got.is_null() != want.is_null())
        if presence.height:
            examples = presence.select(*on, column, f"{column}__expected").head(5).rows()
            problems.append(
                f"{column}: missing in one frame only on {presence.height} key(s), e.g. (keys..., actual, expected) "
                f"{examples}"
            )
        both = joined.filter(got.is_not_null() & want.is_not_null())
        if both.height == 0:
            continue
        got_values = both[column].to_numpy()
        want_values = both[f"{column}__expected"].to_numpy()
        with np.errstate(invalid="ignore"):  # equal infinities differ by nan: they count as equal
            difference = np.where(got_values == want_values, 0.0, np.abs(got_values - want_values))
            excess = difference - (atol + rtol * np.where(np.isfinite(want_values), np.abs(want_values), 0.0))
        worst = int(np.argmax(excess))
        if excess[worst] > 0:
            n_bad = int((excess > 0).sum())
            key = both.select(on).row(worst)
            problems.append(
                f"{column}: {n_bad} value(s) differ beyond atol={atol}, rtol={rtol}; worst at {key}: "
                f"actual {got_values[worst]!r} vs expected {want_values[worst]!r} "
                f"(|diff| = {abs(got_values[worst] - want_values[worst]):.3e})"
            )
    if problems:
        raise AssertionError("frames differ:\n- " + "\n- ".join(problems))


@pytest.fixture(scope="session")
def frames_match() -> FrameMatcher:
    """The missing-aware comparison :func:`assert_frames_match`."""
    return assert_frames_match


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """``tests/results``: toraniko 1.1.1 golden outputs (see its README.md)."""
    return RESULTS_DIR


@pytest.fixture(scope="session")
def golden_meta(golden_dir: Path) -> dict[str, Any]:
    """Parameters, versions and planted irregularities of the golden files."""
    meta: dict[str, Any] = json.loads((golden_dir / "golden_meta.json").read_text())
    return meta


@pytest.fixture(scope="session")
def golden_panel(golden_dir: Path) -> pl.DataFrame:
    """The small unbalanced golden panel (60 symbols x 300 dates)."""
    return pl.read_parquet(golden_dir / "panel.parquet")


@pytest.fixture(scope="session")
def golden_regression_inputs(golden_dir: Path) -> dict[str, pl.DataFrame]:
    """The exact inputs toraniko's estimate_factor_returns got: returns, mkt_cap, sector (dummies), style."""
    return {
        name: pl.read_parquet(golden_dir / f"regression_{name}.parquet")
        for name in ("returns", "mkt_cap", "sector", "style")
    }
