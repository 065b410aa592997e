"""Model folders: parts listed by model.json, appending dates without rewriting, atomic replacement, the layout
before format 2, hard-linked ``out`` folders and the update state."""

from __future__ import annotations

import datetime
import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import factor_engine.model_folder as model_folder
from factor_engine.config import ModelConfig
from factor_engine.model import ModelError, ModelExtension, RiskModel, append_model_dates, build_model, load_model
from factor_engine.model_folder import read_state
from factor_engine.synthetic import generate_market

FRAMES = ("factor_returns", "exposures", "residuals", "diagnostics", "specific_risk")
LARGE = ("exposures", "residuals", "specific_risk")
SMALL = ("factor_returns", "diagnostics", "factor_covariance")


@pytest.fixture(scope="module")
def model() -> RiskModel:
    """60 assets × 300 days, a short momentum window (nulls in early momentum scores)."""
    config = ModelConfig.from_mapping({"styles": {"momentum": {"trailing_days": 60, "half_life": 20, "lag": 5}}})
    return build_model(generate_market(60, 300, seed=3).panel, config)


@pytest.fixture(scope="module")
def dates(model: RiskModel) -> list[datetime.date]:
    return model.exposures["date"].unique().sort().to_list()


def extension(model: RiskModel, after: datetime.date, until: datetime.date | None = None) -> ModelExtension:
    """What an update from ``after`` to ``until`` writes: the large tables' rows of those dates, the small tables
    as of ``until`` (whole)."""
    return ModelExtension.after(model.between(end=until), after)


def assert_models_equal(actual: RiskModel, expected: RiskModel) -> None:
    for name in FRAMES:
        assert getattr(actual, name).equals(getattr(expected, name)), name
    assert (actual.factors, actual.sectors, actual.styles) == (expected.factors, expected.sectors, expected.styles)
    assert actual.config == expected.config and actual.notes == expected.notes
    assert actual.factor_covariance is not None and expected.factor_covariance is not None
    assert actual.factor_covariance.dates.equals(expected.factor_covariance.dates)
    assert actual.factor_covariance.factors == expected.factor_covariance.factors
    assert actual.factor_covariance.horizon == expected.factor_covariance.horizon
    np.testing.assert_array_equal(actual.factor_covariance.values, expected.factor_covariance.values)


def files(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``folder``: relative path → (inode, sha256 of its bytes)."""
    return {
        path.relative_to(folder).as_posix(): (path.stat().st_ino, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def manifest(folder: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((folder / "model.json").read_text())
    return document


def listed(folder: Path) -> set[str]:
    document = manifest(folder)
    parts = {part["path"] for parts in document["tables"].values() for part in parts}
    return parts | set(document["state"].values()) | {"model.json"}


def save_single_file_layout(model: RiskModel, folder: Path) -> Path:
    """The layout before format 2: ``<table>.parquet`` next to a model.json of the metadata only."""
    folder.mkdir(parents=True)
    for name in FRAMES:
        getattr(model, name).write_parquet(folder / f"{name}.parquet")
    assert model.factor_covariance is not None
    model.factor_covariance.to_frame().write_parquet(folder / "factor_covariance.parquet")
    (folder / "model.json").write_text(json.dumps(model.metadata(), indent=2))
    return folder


def test_round_trip_equals_the_model(model: RiskModel, tmp_path: Path) -> None:
    assert model.exposures["mom_score"].null_count() > 0  # the nulls are part of what must round-trip
    folder = model.save(tmp_path / "model")
    assert_models_equal(load_model(folder), model)
    document = manifest(folder)
    assert (document["format"], document["generation"]) == (2, 0)
    assert document["state"] == {  # the build's state, for updates
        "factor_covariance": "state/factor_covariance-000000.npz",
        "specific_risk": "state/specific_risk-000000.npz",
        "universe": "state/universe-000000.npz",
    }
    assert document["date_range"] == [str(model.factor_returns["date"].min()), str(model.factor_returns["date"].max())]
    exposures = document["tables"]["exposures"]
    assert exposures == [
        {
            "path": "exposures/part-000000.parquet",
            "rows": model.exposures.height,
            "first_date": str(model.exposures["date"].min()),
            "last_date": str(model.exposures["date"].max()),
        }
    ]
    assert set(files(folder)) == listed(folder)


def test_appended_dates_equal_the_model_saved_at_once(
    model: RiskModel, dates: list[datetime.date], tmp_path: Path
) -> None:
    first, second = dates[-4], dates[-2]
    folder = model.between(end=first).save(tmp_path / "model")
    append_model_dates(folder, extension(model, first, second))
    assert_models_equal(load_model(folder), model.between(end=second))
    append_model_dates(folder, extension(model, second))
    loaded = load_model(folder)
    assert_models_equal(loaded, model)
    assert_models_equal(loaded, load_model(model.save(tmp_path / "at once")))
    document = manifest(folder)
    assert document["generation"] == 2
    assert [part["path"] for part in document["tables"]["exposures"]] == [
        f"exposures/part-00000{generation}.parquet" for generation in range(3)
    ]
    assert [part["rows"] for part in document["tables"]["residuals"]] == [
        model.residuals.filter(pl.col("date") <= first).height,
        model.residuals.filter(pl.col("date").is_between(first, second, closed="right")).height,
        model.residuals.filter(pl.col("date") > second).height,
    ]
    assert [part["path"] for part in document["tables"]["factor_returns"]] == ["factor_returns/part-000002.parquet"]
    assert document["date_range"][1] == str(model.factor_returns["date"].max())
    assert datetime.datetime.fromisoformat(document["updated_at"]).tzinfo is not None
    # the small tables' earlier versions are gone: the folder holds exactly what the manifest lists
    assert set(files(folder)) == listed(folder)


def test_the_new_parts_only_are_written(model: RiskModel, dates: list[datetime.date], tmp_path: Path) -> None:
    folder = model.between(end=dates[-2]).save(tmp_path / "model")
    before = files(folder)
    append_model_dates(folder, extension(model, dates[-2]))
    after = files(folder)
    for name in LARGE:  # the saved part is the same file, untouched
        assert after[f"{name}/part-000000.parquet"] == before[f"{name}/part-000000.parquet"]
    assert {path for path in after if path not in before} == {
        f"{name}/part-000001.parquet" for name in (*LARGE, *SMALL)
    }


def test_append_refuses_what_does_not_fit(model: RiskModel, dates: list[datetime.date], tmp_path: Path) -> None:
    folder = model.between(end=dates[-3]).save(tmp_path / "model")
    before = files(folder)
    with pytest.raises(ModelError, match=r"new exposures rows start on .*, not after the model's last date"):
        append_model_dates(folder, extension(model, dates[-4]))
    renamed = extension(model, dates[-3])
    factors = model.factors
    with pytest.raises(ModelError, match=r"an update cannot add, drop or reorder factors"):
        append_model_dates(
            folder, ModelExtension(**{**vars(renamed), "exposures": renamed.exposures.drop(factors[-1])})
        )
    with pytest.raises(ModelError, match=r"has specific_risk, the extension lacks it"):
        append_model_dates(folder, ModelExtension(**{**vars(renamed), "specific_risk": None}))
    with pytest.raises(
        ModelError, match=r"new residuals rows have columns \(date: Date, symbol: String, residual: Float32\)"
    ):
        cast = renamed.residuals.with_columns(pl.col("residual").cast(pl.Float32))
        append_model_dates(folder, ModelExtension(**{**vars(renamed), "residuals": cast}))
    with pytest.raises(ValueError, match=r"state component name 'a/b' must be letters"):
        append_model_dates(folder, ModelExtension(**{**vars(renamed), "state": {"a/b": {"x": np.zeros(2)}}}))
    assert files(folder) == before


def step_names(model: RiskModel, dates: list[datetime.date], tmp_path: Path) -> list[str]:
    """The files an append writes, in the order it writes them (parts, state, then model.json)."""
    written: list[str] = []
    original = model_folder._write_new
    folder = model.between(end=dates[-2]).save(tmp_path / "count")

    def record(path: Path, write: Callable[[Path], None]) -> None:
        written.append(path.relative_to(folder).as_posix())
        original(path, write)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_folder, "_write_new", record)
        append_model_dates(folder, extension_with_state(model, dates[-2]))
    return written


def extension_with_state(model: RiskModel, after: datetime.date) -> ModelExtension:
    return ModelExtension(**{**vars(extension(model, after)), "state": {"covariance": {"sums": np.arange(6.0)}}})


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_failure_at_any_step_leaves_the_old_model(
    model: RiskModel, dates: list[datetime.date], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """The writer fails at each of its steps in turn, before or after writing its temporary file: the folder
    still loads as the old model with the old files unchanged, and the next append succeeds and leaves only
    the files its manifest lists."""
    steps = step_names(model, dates, tmp_path)
    assert steps[-1] == "model.json" and len(steps) == 8  # 3 large parts, 3 small tables, 1 state file
    old = model.between(end=dates[-2])
    original = model_folder._write_new
    for failing in range(len(steps)):
        folder = old.save(tmp_path / f"{when}-{failing}", state={"specific": {"sums": np.ones(3)}})
        before = files(folder)
        calls = 0
        lock = threading.Lock()

        def failing_write(
            path: Path, write: Callable[[Path], None], failing: int = failing, lock: threading.Lock = lock
        ) -> None:
            nonlocal calls
            with lock:
                step, calls = calls, calls + 1
            if step == failing:
                if when == "after":
                    write(path.with_name(f".{path.name}.tmp"))
                raise OSError(f"injected failure writing {path.name}")
            original(path, write)

        monkeypatch.setattr(model_folder, "_write_new", failing_write)
        with pytest.raises(OSError, match="injected failure"):
            append_model_dates(folder, extension_with_state(model, dates[-2]))
        monkeypatch.setattr(model_folder, "_write_new", original)
        after = files(folder)
        assert {path: after[path] for path in before} == before, failing  # nothing of the old model changed
        assert_models_equal(load_model(folder), old)
        assert set(read_state(folder)) == {"specific"}
        append_model_dates(folder, extension_with_state(model, dates[-2]))
        assert_models_equal(load_model(folder), model)
        assert set(files(folder)) == listed(folder), failing
        np.testing.assert_array_equal(read_state(folder)["covariance"]["sums"], np.arange(6.0))


def test_a_failed_save_leaves_the_previous_model(model: RiskModel, dates: list[datetime.date], tmp_path: Path) -> None:
    folder = model.between(end=dates[-2]).save(tmp_path / "model")
    before = files(folder)

    def fail(path: Path, write: Callable[[Path], None]) -> None:
        raise OSError("injected failure")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_folder, "_write_new", fail)
        with pytest.raises(OSError, match="injected failure"):
            model.save(folder)
    assert files(folder) == before
    model.save(folder)  # a save over a model replaces it and removes its files
    assert_models_equal(load_model(folder), model)
    assert set(files(folder)) == listed(folder)
    assert manifest(folder)["generation"] == 1


def test_a_reader_during_an_append_reads_the_new_model(
    model: RiskModel, dates: list[datetime.date], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append that replaces the manifest while a reader reads the old one's files (the old small tables are
    removed): the reader reads again and gets the new model, not an error or a mixture."""
    folder = model.between(end=dates[-2]).save(tmp_path / "model")
    original = model_folder.read_table
    appended = []

    def read_while_appending(source: Path, parts: list[model_folder.Part]) -> pl.DataFrame:
        if not appended:
            appended.append(append_model_dates(folder, extension(model, dates[-2])))
        return original(source, parts)

    monkeypatch.setattr("factor_engine.model.read_table", read_while_appending)
    assert_models_equal(load_model(folder), model)


def test_single_file_layout_loads_and_extends(model: RiskModel, dates: list[datetime.date], tmp_path: Path) -> None:
    old = model.between(end=dates[-2])
    folder = save_single_file_layout(old, tmp_path / "old")
    assert_models_equal(load_model(folder), old)
    # into another folder: the source keeps its layout and files
    before = files(folder)
    out = append_model_dates(folder, extension(model, dates[-2]), out=tmp_path / "out")
    assert files(folder) == before
    assert_models_equal(load_model(out), model)
    assert [part["path"] for part in manifest(out)["tables"]["exposures"]] == [
        "exposures.parquet",
        "exposures/part-000000.parquet",
    ]
    # in place: the large tables' files become the first parts, the small tables' files are replaced
    append_model_dates(folder, extension(model, dates[-2]))
    assert_models_equal(load_model(folder), model)
    kept = files(folder)
    assert {name: kept[f"{name}.parquet"] for name in LARGE} == {name: before[f"{name}.parquet"] for name in LARGE}
    assert not any((folder / f"{name}.parquet").exists() for name in SMALL)
    assert set(kept) == listed(folder)


def test_out_links_the_saved_parts_and_leaves_the_source(
    model: RiskModel, dates: list[datetime.date], tmp_path: Path
) -> None:
    old = model.between(end=dates[-2])
    folder = old.save(tmp_path / "model", state={"specific": {"sums": np.arange(4.0)}})
    before = files(folder)
    out = append_model_dates(folder, extension(model, dates[-2]), out=tmp_path / "out")
    assert files(folder) == before
    assert_models_equal(load_model(folder), old)
    assert_models_equal(load_model(out), model)
    linked = files(out)
    for path in (*(f"{name}/part-000000.parquet" for name in LARGE), "state/specific-000000.npz"):
        assert linked[path] == before[path], path  # the same inode: a hard link, not a copy
    np.testing.assert_array_equal(read_state(out)["specific"]["sums"], np.arange(4.0))
    # the same update again into the same folder: the links are kept, the new files replaced
    append_model_dates(folder, extension(model, dates[-2]), out=out)
    assert_models_equal(load_model(out), model)
    assert set(files(out)) == listed(out)
    # a different model there is not overwritten part by part
    other = model.between(end=dates[-3]).save(tmp_path / "other")
    held = files(out)
    with pytest.raises(ModelError, match=r"holds another model, whose exposures/part-000000.parquet differs"):
        append_model_dates(other, extension(model, dates[-3]), out=out)
    assert files(out) == held


def test_out_on_another_filesystem_copies(
    model: RiskModel, dates: list[datetime.date], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = model.between(end=dates[-2]).save(tmp_path / "model")

    def cross_device(source: Path, target: Path) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(model_folder.os, "link", cross_device)
    out = append_model_dates(folder, extension(model, dates[-2]), out=tmp_path / "out")
    assert_models_equal(load_model(out), model)
    source, copied = files(folder), files(out)
    part = "exposures/part-000000.parquet"
    assert copied[part][1] == source[part][1] and copied[part][0] != source[part][0]


def test_state_is_saved_replaced_and_kept(model: RiskModel, dates: list[datetime.date], tmp_path: Path) -> None:
    state = {"covariance": {"sums": np.arange(6.0).reshape(2, 3), "lags": np.array([1, 2], dtype=np.int64)}}
    folder = model.between(end=dates[-3]).save(tmp_path / "model", state={**state, "specific": {"u": np.ones(2)}})
    loaded = read_state(folder)
    assert set(loaded) == {"covariance", "specific"}
    for name, array in state["covariance"].items():
        np.testing.assert_array_equal(loaded["covariance"][name], array)
        assert loaded["covariance"][name].dtype == array.dtype
    update = extension(model, dates[-3], dates[-2])
    append_model_dates(folder, ModelExtension(**{**vars(update), "state": {"specific": {"u": np.zeros(3)}}}))
    loaded = read_state(folder)
    np.testing.assert_array_equal(loaded["specific"]["u"], np.zeros(3))
    np.testing.assert_array_equal(loaded["covariance"]["sums"], state["covariance"]["sums"])
    assert manifest(folder)["state"] == {
        "covariance": "state/covariance-000000.npz",
        "specific": "state/specific-000001.npz",
    }
    assert set(files(folder)) == listed(folder)
    built = set(read_state(model.save(tmp_path / "built")))  # the build's
    assert built == {"factor_covariance", "specific_risk", "universe"}
    assert read_state(model.between(end=dates[-2]).save(tmp_path / "plain")) == {}  # cut at its end: none
    with pytest.raises(ValueError, match=r"state array specific.u holds Python objects"):
        model.save(tmp_path / "bad", state={"specific": {"u": np.array([object()])}})


def test_manifest_errors_name_the_file(model: RiskModel, tmp_path: Path) -> None:
    folder = model.save(tmp_path / "model")
    document = manifest(folder)
    (folder / "model.json").write_text(json.dumps({**document, "format": 3}))
    with pytest.raises(ModelError, match=r"model.json has format 3; this engine reads format 2"):
        load_model(folder)
    (folder / "model.json").write_text(json.dumps({**document, "tables": {"exposures": [{"file": "x"}]}}))
    with pytest.raises(ModelError, match=r"model.json is not a valid model manifest"):
        load_model(folder)
    (folder / "model.json").write_text(json.dumps({**document, "tables": {}}))
    with pytest.raises(ModelError, match=r"lacks the factor_returns table"):
        load_model(folder)
