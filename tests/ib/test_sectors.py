"""The sector map: the packaged default (category before industry, IB's label kept when unmapped), a user file laid
over it or replacing it, and the messages of a bad file; and the symbols file."""

from __future__ import annotations

from pathlib import Path

import pytest

from factor_engine.integrations.ib import SymbolSpec, load_sector_map, read_symbols
from factor_engine.integrations.ib.sectors import UNCLASSIFIED, SectorChoice
from factor_engine.panel import GICS_SECTORS


def test_default_map_uses_category_before_industry_and_gics_names() -> None:
    sector_map = load_sector_map()
    assert sector_map.sector_of("Technology", "Semiconductors") == SectorChoice("Information Technology", "industry")
    assert sector_map.sector_of("Consumer, Non-cyclical", "Pharmaceuticals") == SectorChoice("Health Care", "category")
    assert sector_map.sector_of("Consumer, Non-cyclical", "Beverages") == SectorChoice("Consumer Staples", "industry")
    assert sector_map.sector_of("Financial", "REITS") == SectorChoice("Real Estate", "category")
    assert sector_map.sector_of("Funds", "Equity Fund") == SectorChoice("Funds", "unmapped")
    assert sector_map.sector_of("", "") == SectorChoice(UNCLASSIFIED, "missing")
    assert set(sector_map.industry.values()) | set(sector_map.category.values()) <= set(GICS_SECTORS)


def test_user_map_is_laid_over_the_default(tmp_path: Path) -> None:
    path = tmp_path / "map.toml"
    path.write_text('[industry]\n"Technology" = "Tech"\n"Funds" = "ETFs"\n')
    sector_map = load_sector_map(path)
    assert sector_map.sector_of("Technology", "Software") == SectorChoice("Tech", "industry")
    assert sector_map.sector_of("Funds", "") == SectorChoice("ETFs", "industry")
    assert sector_map.sector_of("Energy", "Oil&Gas") == SectorChoice("Energy", "industry")  # default kept
    assert sector_map.sector_of("Consumer, Non-cyclical", "Biotechnology").sector == "Health Care"
    assert str(path) in sector_map.source


def test_replace_uses_only_the_user_map(tmp_path: Path) -> None:
    path = tmp_path / "map.toml"
    path.write_text('replace = true\n[category]\n"Banks" = "Banks"\n')
    sector_map = load_sector_map(path)
    assert sector_map.sector_of("Financial", "Banks") == SectorChoice("Banks", "category")
    assert sector_map.sector_of("Energy", "Oil&Gas") == SectorChoice("Energy", "unmapped")
    assert sector_map.industry == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[industry\n", "is not valid TOML"),
        ('[sectors]\n"A" = "B"\n', r"unknown key\(s\) \['sectors'\]"),
        ('[industry]\n"Technology" = ""\n', "'Technology' must map to a non-empty sector name"),
        ('[category]\n"Banks" = 3\n', "'Banks' must map to a non-empty sector name"),
        ('replace = "yes"\n', "replace must be true or false"),
    ],
)
def test_bad_map_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_sector_map(path)


def test_missing_map_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"sector map .*nope\.toml does not exist"):
        load_sector_map(tmp_path / "nope.toml")


def test_symbols_file_lines(tmp_path: Path) -> None:
    path = tmp_path / "symbols.txt"
    path.write_text("symbol\n# large caps\naapl\n\nBRK  B  # class B\nSHOP, NYSE\n")
    assert read_symbols(path) == [SymbolSpec("AAPL"), SymbolSpec("BRK B"), SymbolSpec("SHOP", "NYSE")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("AAPL\nMSFT\naapl\n", r"line 3: AAPL is listed twice \(first on line 1\)"),
        ("# nothing\n\n", "lists no symbols"),
        ("AAPL,NASDAQ,extra\n", "line 1: expected 'SYMBOL' or 'SYMBOL,PRIMARY_EXCHANGE'"),
        ("$$$\n", "line 1: expected"),
    ],
)
def test_bad_symbols_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "symbols.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_symbols(path)
