"""The README's Optimize section as written: its commands run in order in an empty folder with its optimize.toml,
each succeeds, and the weights they write meet the constraints they name."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cli_runner import invoke
from factor_engine.model import load_model
from factor_engine.portfolio.snapshot import snapshot_at

README = Path(__file__).resolve().parents[2] / "README.md"


def optimize_section() -> tuple[list[list[str]], str]:
    """(the factor-engine commands of the section's bash block, its TOML block)."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Optimize\n") :]
    section = section[: section.index("\n## ", 1)]
    bash = section[section.index("```bash\n") + len("```bash\n") :]
    bash = bash[: bash.index("```")].replace("\\\n", " ")
    commands = [shlex.split(line, comments=True) for line in bash.splitlines() if line.startswith("factor-engine ")]
    toml = section[section.index("```toml\n") + len("```toml\n") :]
    return commands, toml[: toml.index("```")]


def test_the_readme_optimize_commands_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands, toml = optimize_section()
    assert [words[1] for words in commands] == ["synthetic", "build", "optimize", "optimize", "optimize"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "optimize.toml").write_text(toml, encoding="utf-8")
    for words in commands:
        code, stdout, stderr = invoke(*words[1:])
        assert code == 0, (words, stdout, stderr)
    snapshot = snapshot_at(load_model(tmp_path / "model_dir"))
    size = snapshot.factors.index("sze_score")
    value = snapshot.factors.index("val_score")

    def weights(name: str) -> np.ndarray:
        mapping = dict(pl.read_csv(tmp_path / name).iter_rows())
        return np.array([mapping.get(symbol, 0.0) for symbol in snapshot.symbols])

    first, rebalanced = weights("weights.csv"), weights("rebalanced.csv")
    for book in (first, rebalanced):
        assert abs(book.sum() - 1) <= 1e-6 and book.min() >= -1e-6 and book.max() <= 0.02 + 1e-6
        assert abs(snapshot.exposures[:, size] @ book) <= 1e-6
    assert 0.1 - 1e-6 <= snapshot.exposures[:, value] @ rebalanced <= 0.5 + 1e-6
    assert np.abs(rebalanced - first).sum() <= 0.3 + 1e-6
    assert "Optimized portfolio" in (tmp_path / "optimized.html").read_text(encoding="utf-8")
    active = weights("active.csv") - first
    sigma = snapshot.exposures @ snapshot.factor_covariance @ snapshot.exposures.T + np.diag(snapshot.specific_vol**2)
    assert np.sqrt(active @ sigma @ active) <= 0.02 / np.sqrt(252) + 1e-6
    assert snapshot.exposures[:, snapshot.factors.index("mom_score")] @ weights("active.csv") >= 0.05 - 1e-6
