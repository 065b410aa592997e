"""The sector of an Interactive Brokers stock: its contract details' ``industry`` and ``category`` mapped to the
model's taxonomy by an editable TOML map (the default is ``sector_map.toml`` next to this module; its comments
say how it is read)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["DEFAULT_SECTOR_MAP", "UNCLASSIFIED", "SectorChoice", "SectorMap", "load_sector_map"]

#: The packaged default map (GICS level 1 names).
DEFAULT_SECTOR_MAP = Path(__file__).with_name("sector_map.toml")
#: The sector of a contract without any industry (an ETF, a unit).
UNCLASSIFIED = "Unclassified"
_TABLES = ("industry", "category")


@dataclass(frozen=True)
class SectorChoice:
    """A stock's sector and how it was found: ``"category"`` or ``"industry"`` (from that table of the map),
    ``"unmapped"`` (IB's industry, which the map does not name) or ``"missing"`` (no industry: Unclassified)."""

    sector: str
    how: Literal["category", "industry", "unmapped", "missing"]


@dataclass(frozen=True)
class SectorMap:
    """IB industry and category labels to sector labels; ``source`` names the file(s) it came from."""

    industry: Mapping[str, str]
    category: Mapping[str, str]
    source: str

    def sector_of(self, industry: str, category: str) -> SectorChoice:
        """The sector of a contract with these contract-details labels (category first, then industry)."""
        industry, category = industry.strip(), category.strip()
        if category and category in self.category:
            return SectorChoice(self.category[category], "category")
        if industry and industry in self.industry:
            return SectorChoice(self.industry[industry], "industry")
        if industry:
            return SectorChoice(industry, "unmapped")
        return SectorChoice(UNCLASSIFIED, "missing")


def _tables(path: Path) -> tuple[dict[str, dict[str, str]], bool]:
    """The ``[industry]`` and ``[category]`` tables of a map file and its ``replace`` flag, checked."""
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"sector map {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"sector map {path} is not valid TOML: {error}") from None
    unknown = sorted(set(data) - {*_TABLES, "replace"})
    if unknown:
        raise ValueError(f"sector map {path}: unknown key(s) {unknown}; expected [industry], [category], replace")
    replace = data.get("replace", False)
    if not isinstance(replace, bool):
        raise ValueError(f"sector map {path}: replace must be true or false, got {replace!r}")
    tables: dict[str, dict[str, str]] = {}
    for table in _TABLES:
        entries = data.get(table, {})
        if not isinstance(entries, dict):
            raise ValueError(f'sector map {path}: [{table}] must be a table of "IB label" = "sector" entries')
        for label, sector in entries.items():
            if not isinstance(sector, str) or not sector.strip():
                raise ValueError(f"sector map {path}: [{table}] {label!r} must map to a non-empty sector name")
        tables[table] = {label.strip(): sector.strip() for label, sector in entries.items()}
    return tables, replace


def load_sector_map(path: str | Path | None = None) -> SectorMap:
    """The default map, with the entries of ``path`` laid over it (or alone, when the file says ``replace =
    true``).

    Raises
    ------
    FileNotFoundError, ValueError
        A missing file, invalid TOML, an unknown key or a label mapped to something other than a non-empty
        string; the message names the file.
    """
    defaults, _ = _tables(DEFAULT_SECTOR_MAP)
    if path is None:
        return SectorMap(defaults["industry"], defaults["category"], str(DEFAULT_SECTOR_MAP))
    path = Path(path)
    overrides, replace = _tables(path)
    if replace:
        return SectorMap(overrides["industry"], overrides["category"], str(path))
    merged = {table: {**defaults[table], **overrides[table]} for table in _TABLES}
    return SectorMap(merged["industry"], merged["category"], f"{path} over {DEFAULT_SECTOR_MAP.name}")
