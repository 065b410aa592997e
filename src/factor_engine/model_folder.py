"""A model folder on disk: tables stored as Parquet parts, listed by a manifest (``model.json``) replaced last.

Layout (format 2)::

    model.json                             the manifest: the model's metadata, ``format``, ``generation``,
                                           each table's parts in date order, the state files
    exposures/part-000000.parquet          large tables: one part per write that added dates
    residuals/part-000000.parquet
    specific_risk/part-000000.parquet
    factor_returns/part-000003.parquet     small tables: one part, rewritten whole by each write
    diagnostics/part-000003.parquet
    factor_covariance/part-000003.parquet
    state/<component>-000003.npz           arrays carried from one update to the next, per component

Each write is one *generation* ``g`` (0 for the first): the files it writes are named with ``g``. They are
written under temporary names, synced and renamed; parts the new model keeps from another folder are
hard-linked (copied across filesystems); then ``model.json`` is replaced by an atomic rename, and only then
are the files it no longer lists removed. A reader therefore sees the old model or the new one, never a
mixture; an interrupted write leaves the old model as it was (plus unlisted files the next write replaces or
removes). One writer at a time per folder.

A folder written before format 2 (``model.json`` without ``format``) holds one ``<table>.parquet`` per table
next to ``model.json``; it is read as one part per table, and appending to it keeps those files as the large
tables' first parts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl

from factor_engine._dense import run_parallel
from factor_engine.panel import DATE

__all__ = [
    "FORMAT",
    "MANIFEST",
    "Manifest",
    "ModelError",
    "Part",
    "append_folder",
    "read_folder",
    "read_state",
    "read_table",
    "write_folder",
]

FORMAT = 2
MANIFEST = "model.json"
STATE = "state"
# zstd at level 1: faster to write than polars' default level and, on model frames, no larger
_PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 1}
_MANIFEST_KEYS = ("format", "generation", "tables", "state")
_NAME = re.compile(r"[A-Za-z0-9_]+")
_TEMPORARY = ".tmp"
_READ_ATTEMPTS = 3

_Result = TypeVar("_Result")
State = Mapping[str, Mapping[str, np.ndarray]]


class ModelError(ValueError):
    """A model folder that cannot be read, or a build that cannot run; the message says which file or step."""


@dataclass(frozen=True)
class Part:
    """One Parquet file of a table: ``path`` relative to the folder (``/``-separated), its row count and the
    first and last ``date`` it holds (ISO strings; None when empty or not yet read, in a folder before format 2)."""

    path: str
    rows: int | None = None
    first_date: str | None = None
    last_date: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, "first_date": self.first_date, "last_date": self.last_date}


@dataclass(frozen=True)
class Manifest:
    """What ``model.json`` says.

    Attributes
    ----------
    meta: the model's metadata (everything but the keys below).
    generation: the number of the write that produced the folder; -1 for a folder before format 2.
    tables: table name → its parts, in date order.
    state: component name → its ``.npz`` file (relative path).
    text: the manifest file's text as read (to tell whether it changed since); "" for one not yet written.
    """

    meta: dict[str, Any]
    generation: int
    tables: dict[str, tuple[Part, ...]]
    state: dict[str, str]
    text: str = ""

    @property
    def files(self) -> set[str]:
        """Every file the manifest lists (relative paths)."""
        return {part.path for parts in self.tables.values() for part in parts} | set(self.state.values())

    def to_json(self) -> str:
        document = {
            **self.meta,
            "format": FORMAT,
            "generation": self.generation,
            "tables": {name: [part.to_json() for part in parts] for name, parts in self.tables.items()},
            "state": self.state,
        }
        return json.dumps(document, indent=2)


def read_manifest(folder: Path, legacy_tables: Sequence[str]) -> Manifest:
    """The manifest of ``folder``; for a folder before format 2, its ``<table>.parquet`` files among
    ``legacy_tables`` that exist, as one part each."""
    path = folder / MANIFEST
    if not path.is_file():
        raise ModelError(f"{folder} is not a model folder: {MANIFEST} is missing")
    text = path.read_text()
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ModelError(f"{path} is not a model manifest: it holds a JSON {type(document).__name__}, not an object")
    if "format" not in document:  # the single-file layout before format 2
        legacy: dict[str, tuple[Part, ...]] = {
            name: (Part(f"{name}.parquet"),) for name in legacy_tables if (folder / f"{name}.parquet").is_file()
        }
        return Manifest(document, -1, legacy, {}, text)
    if document["format"] != FORMAT:
        raise ModelError(
            f"{path} has format {document['format']!r}; this engine reads format {FORMAT} (and the layout before "
            "it): upgrade factor-engine to read it"
        )
    try:
        tables = {name: tuple(Part(**part) for part in parts) for name, parts in document["tables"].items()}
        state = {str(name): str(file) for name, file in document["state"].items()}
        generation = int(document["generation"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"{path} is not a valid model manifest: {exc!r}") from exc
    meta = {key: value for key, value in document.items() if key not in _MANIFEST_KEYS}
    return Manifest(meta, generation, tables, state, text)


def read_table(folder: Path, parts: Sequence[Part]) -> pl.DataFrame:
    """The table stored as ``parts`` (concatenated in their order)."""
    paths = [folder / part.path for part in parts]
    for path in paths:
        if not path.is_file():
            raise ModelError(f"model folder {folder} lacks {path.relative_to(folder).as_posix()}")
    return pl.read_parquet(paths if len(paths) > 1 else paths[0], glob=False)


def read_folder(folder: str | Path, read: Callable[[Path, Manifest], _Result], legacy_tables: Sequence[str]) -> _Result:
    """``read(folder, manifest)`` on a consistent model: when a listed file disappears because a write replaced
    the manifest meanwhile, read again from the new manifest."""
    source = Path(folder)
    for _attempt in range(_READ_ATTEMPTS):
        manifest = read_manifest(source, legacy_tables)
        try:
            return read(source, manifest)
        except (ModelError, OSError, pl.exceptions.PolarsError):
            if _manifest_text(source) == manifest.text:
                raise
    return read(source, read_manifest(source, legacy_tables))


def read_state(folder: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The state saved with the model in ``folder``: component name → array name → array ({} if none)."""

    def read(source: Path, manifest: Manifest) -> dict[str, dict[str, np.ndarray]]:
        state = {}
        for component, file in manifest.state.items():
            with np.load(source / file, allow_pickle=False) as arrays:
                state[component] = {name: arrays[name] for name in arrays.files}
        return state

    return read_folder(folder, read, ())


def write_folder(
    folder: str | Path,
    meta: Mapping[str, Any],
    tables: Mapping[str, pl.DataFrame],
    state: State | None = None,
    *,
    legacy_tables: Sequence[str],
) -> Path:
    """Write a whole model to ``folder`` (created if needed): one part per table, the ``state`` components,
    then the manifest with ``meta``; the files of a model the folder held before are removed afterwards
    (``legacy_tables``: the table names of a model folder before format 2)."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    previous = _previous_manifest(target, legacy_tables)
    generation = previous.generation + 1 if previous is not None else 0
    arrays = _checked_state(state)
    manifest = Manifest(
        dict(meta),
        generation,
        {name: (_part(_part_path(name, generation), frame),) for name, frame in tables.items()},
        {component: _state_path(component, generation) for component in arrays},
    )
    largest_first = sorted(tables.items(), key=lambda item: -item[1].estimated_size())
    writers = {_part_path(name, generation): _parquet_writer(frame) for name, frame in largest_first}
    writers.update({manifest.state[name]: partial(_write_npz, values) for name, values in arrays.items()})
    _commit(target, manifest, writers, {}, previous)
    return target


def append_folder(
    folder: str | Path,
    meta: Mapping[str, Any],
    *,
    appended: Mapping[str, pl.DataFrame],
    replaced: Mapping[str, pl.DataFrame],
    state: State | None = None,
    legacy_tables: Sequence[str],
    out: str | Path | None = None,
) -> Path:
    """Extend the model in ``folder``: a new part for each ``appended`` table (rows after its last date, same
    columns and dtypes), a new single part for each ``replaced`` table, the ``state`` components replaced
    (others kept), the manifest's metadata replaced by ``meta``; every other table and state file is kept.

    Parameters
    ----------
    out: write the extended model there instead (None or the same folder: in place); the kept files are
        hard-linked into it (copied when ``out`` is on another filesystem), ``folder`` is left as it was.

    Raises ModelError naming the table, when an appended table is not in the model, differs in its columns or
    dtypes, or starts on or before the model's last date of that table.
    """
    source = Path(folder)
    current = read_manifest(source, legacy_tables)
    target = source if out is None else Path(out)
    in_place = target.resolve() == source.resolve()
    if not in_place:
        target.mkdir(parents=True, exist_ok=True)
    previous = current if in_place else _previous_manifest(target, legacy_tables)
    generation = max(current.generation, -1 if previous is None else previous.generation) + 1
    tables = {name: _with_dates(source, parts) for name, parts in current.tables.items()}
    writers: dict[str, Callable[[Path], None]] = {}
    for name, frame in appended.items():
        if name not in tables:
            raise ModelError(f"the model in {source} has no {name} table to append dates to; rebuild it")
        _check_appendable(source, name, tables[name], frame)
        if frame.height:
            path = _part_path(name, generation)
            tables[name] = (*tables[name], _part(path, frame))
            writers[path] = _parquet_writer(frame)
    for name, frame in replaced.items():
        path = _part_path(name, generation)
        tables[name] = (_part(path, frame),)
        writers[path] = _parquet_writer(frame)
    states = dict(current.state)
    for component, arrays in _checked_state(state).items():
        states[component] = _state_path(component, generation)
        writers[states[component]] = partial(_write_npz, arrays)
    manifest = Manifest(dict(meta), generation, tables, states)
    linked = {} if in_place else {path: source / path for path in manifest.files - set(writers)}
    _commit(target, manifest, writers, linked, previous)
    return target


# ---- writing ------------------------------------------------------------------------------------------------
def _commit(
    target: Path,
    manifest: Manifest,
    writers: Mapping[str, Callable[[Path], None]],
    linked: Mapping[str, Path],
    previous: Manifest | None,
) -> None:
    """Write the new files, link the kept ones, switch the manifest, then remove what it no longer lists."""
    listed_before = set() if previous is None else previous.files
    for relative in sorted(linked):
        _check_link(linked[relative], target, relative, listed=relative in listed_before)
    for relative in (*writers, *linked):
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
    # polars writes without the GIL: the files are written side by side
    run_parallel(lambda item: _write_new(target / item[0], item[1]), list(writers.items()))
    for relative, source in linked.items():
        _link(source, target / relative)
    _write_new(target / MANIFEST, partial(_write_text, manifest.to_json()))
    _sync_directory(target)
    _remove_unlisted(target, manifest, previous)


def _write_new(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` under a temporary name, sync it to disk, rename it into place."""
    temporary = path.with_name(f".{path.name}{_TEMPORARY}")
    write(temporary)
    descriptor = os.open(temporary, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    temporary.replace(path)


def _parquet_writer(frame: pl.DataFrame) -> Callable[[Path], None]:
    return partial(frame.write_parquet, **_PARQUET_OPTIONS)


def _write_text(text: str, path: Path) -> None:
    path.write_text(text)


def _write_npz(arrays: Mapping[str, np.ndarray], path: Path) -> None:
    with path.open("wb") as file:  # a file object: numpy would add ".npz" to a path's name
        np.savez(file, **arrays)  # type: ignore[arg-type]


def _check_link(source: Path, target: Path, relative: str, *, listed: bool) -> None:
    """ModelError if linking ``source`` to ``target/relative`` would replace a different file that ``target``'s
    current model lists (``listed``): its readers would see a mixture."""
    path = target / relative
    if listed and path.exists() and not path.samefile(source):
        raise ModelError(
            f"{target} holds another model, whose {relative} differs from {source}: write the extended model to "
            "an empty folder, or remove that model first"
        )


def _link(source: Path, path: Path) -> None:
    """Hard-link ``source`` to ``path`` (copy across filesystems); an existing ``path`` that is the same file is
    kept, another one replaced."""
    if path.exists() and path.samefile(source):
        return
    temporary = path.with_name(f".{path.name}{_TEMPORARY}")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:  # another filesystem (EXDEV) or no hard links there
        shutil.copyfile(source, temporary)
    temporary.replace(path)


def _sync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_unlisted(target: Path, manifest: Manifest, previous: Manifest | None) -> None:
    """Remove the files the previous manifest listed and the new one does not, and leftovers (unlisted files,
    temporary files) in the folders of the new model's tables and state."""
    keep = manifest.files
    stale = set() if previous is None else previous.files - keep
    folders = {Path(path).parent for path in keep | stale} - {Path(".")}
    for folder in folders:
        for path in (target / folder).iterdir():
            if path.is_file() and (folder / path.name).as_posix() not in keep:
                stale.add((folder / path.name).as_posix())
    for path in target.glob(f".*{_TEMPORARY}"):
        path.unlink(missing_ok=True)
    for relative in stale:
        (target / relative).unlink(missing_ok=True)
    for folder in folders:
        if not any((target / folder).iterdir()):
            (target / folder).rmdir()


# ---- manifests and parts --------------------------------------------------------------------------------------
def _previous_manifest(target: Path, legacy_tables: Sequence[str]) -> Manifest | None:
    """The manifest of the model ``target`` holds now, if it holds a readable one."""
    try:
        return read_manifest(target, legacy_tables)
    except ModelError:
        return None


def _manifest_text(folder: Path) -> str:
    try:
        return (folder / MANIFEST).read_text()
    except OSError:
        return ""


def _part_path(table: str, generation: int) -> str:
    return f"{table}/part-{generation:06d}.parquet"


def _state_path(component: str, generation: int) -> str:
    return f"{STATE}/{component}-{generation:06d}.npz"


def _part(path: str, frame: pl.DataFrame) -> Part:
    if DATE not in frame.columns or frame.height == 0:
        return Part(path, frame.height)
    first, last = frame.select(pl.col(DATE).min().alias("first"), pl.col(DATE).max().alias("last")).row(0)
    return Part(path, frame.height, str(first), str(last))


def _with_dates(folder: Path, parts: Sequence[Part]) -> tuple[Part, ...]:
    """The parts with their row counts and dates (read from the file for a part listed without them)."""
    completed = []
    for part in parts:
        if part.rows is None:
            path = folder / part.path
            columns = pl.read_parquet_schema(path)
            dates = [pl.col(DATE).min().alias("first"), pl.col(DATE).max().alias("last")] if DATE in columns else []
            summary = pl.scan_parquet(path, glob=False).select(pl.len().alias("rows"), *dates).collect().row(0)
            first, last = (summary[1], summary[2]) if dates else (None, None)
            part = Part(
                part.path, summary[0], None if first is None else str(first), None if last is None else str(last)
            )
        completed.append(part)
    return tuple(completed)


def _check_appendable(folder: Path, name: str, parts: Sequence[Part], frame: pl.DataFrame) -> None:
    schema = pl.read_parquet_schema(folder / parts[-1].path)
    if dict(frame.schema) != dict(schema):
        stored = ", ".join(f"{column}: {dtype}" for column, dtype in schema.items())
        given = ", ".join(f"{column}: {dtype}" for column, dtype in frame.schema.items())
        raise ModelError(f"the new {name} rows have columns ({given}), the model's have ({stored})")
    last = max((part.last_date for part in parts if part.last_date is not None), default=None)
    if frame.height == 0 or last is None:
        return
    first_new = str(frame.get_column(DATE).min())
    if first_new <= last:
        raise ModelError(
            f"the new {name} rows start on {first_new}, not after the model's last date {last}: only dates after "
            "it can be appended"
        )


def _checked_state(state: State | None) -> dict[str, dict[str, np.ndarray]]:
    checked: dict[str, dict[str, np.ndarray]] = {}
    for component, arrays in (state or {}).items():
        if not _NAME.fullmatch(component):
            raise ValueError(f"state component name {component!r} must be letters, digits and underscores")
        checked[component] = {}
        for name, array in arrays.items():
            value = np.asarray(array)
            if value.dtype.hasobject:
                raise ValueError(f"state array {component}.{name} holds Python objects; give numeric arrays")
            checked[component][name] = value
    return checked
