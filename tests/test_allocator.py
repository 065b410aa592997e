"""factor_engine._allocator: with :func:`reuse_freed_memory`, a freed large array's pages serve the next one.

Measured in fresh processes by the page faults of touching a 256 MB array allocated after another was freed:
glibc's default maps each such array afresh (one fault per 4 KiB page); after ``reuse_freed_memory`` it comes
from the pages the first one left in the heap (no new faults). numpy's transparent huge pages are turned off in
the child so a fault is one 4 KiB page either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from factor_engine.model import load_model
from factor_engine.synthetic import generate_market

_CHILD = """
import resource, sys
import numpy as np
np._core.multiarray._set_madvise_hugepage(False)
from factor_engine._allocator import reuse_freed_memory
took = reuse_freed_memory() if sys.argv[1] == "reuse" else None
size = 256 * 2**20 // 8
first = np.ones(size)
del first
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
second = np.ones(size)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(took, faults, size * 8 // 4096)
"""


def _faults(mode: str) -> tuple[str, int, int]:
    done = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True)
    took, faults, pages = done.stdout.split()
    return took, int(faults), int(pages)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_freed_memory_is_reused() -> None:
    took, faults_default, pages = _faults("default")
    assert took == "None"
    assert faults_default >= 0.9 * pages, (faults_default, pages)  # a fresh mapping: every page faulted
    took, faults_reused, pages = _faults("reuse")
    assert took == "True"
    assert faults_reused <= 0.02 * pages, (faults_reused, pages)  # the freed array's pages, already mapped


_CLI_CHILD = """
import resource, sys
sys.argv = ["factor-engine", *sys.argv[1:]]
import factor_engine
assert not {"numpy", "polars", "numba"} & set(sys.modules)  # import factor_engine alone loads none of them
import factor_engine.cli  # the command line sets the allocator up for a build or update, then loads the rest
import numpy as np
huge_pages = np._core.multiarray._get_madvise_hugepage()
np._core.multiarray._set_madvise_hugepage(False)
size = 256 * 2**20 // 8
first = np.ones(size)
del first
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
second = np.ones(size)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, size * 8 // 4096, int(huge_pages))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
@pytest.mark.parametrize(("argv", "reused"), [(["build", "--data", "p"], True), (["update"], True), (["risk"], False)])
def test_the_command_line_reuses_memory_for_builds_and_updates_only(argv: list[str], reused: bool) -> None:
    """A build or update reuses freed memory and turns numpy's transparent huge pages off; other commands keep
    numpy's default (on, for Linux 4.6 and later) and glibc's."""
    environment = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    done = subprocess.run(
        [sys.executable, "-c", _CLI_CHILD, *argv], capture_output=True, text=True, check=True, env=environment
    )
    faults, pages, huge_pages = (int(x) for x in done.stdout.split())
    assert (faults <= 0.02 * pages) if reused else (faults >= 0.9 * pages), (argv, faults, pages)
    assert huge_pages == (not reused), argv


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_a_huge_page_setting_in_the_environment_is_kept() -> None:
    environment = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _CLI_CHILD, "build"], capture_output=True, text=True, check=True, env=environment
    )
    assert done.stdout.split()[2] == "1"


def test_a_build_process_exits_with_its_output_and_code(tmp_path: Path) -> None:
    """``factor-engine build`` ends its process with os._exit once done: the model folder is complete, the
    output flushed, the exit code kept (0, and 1 with the error line for a bad input)."""
    panel = generate_market(40, 320, seed=3).panel
    panel.write_parquet(tmp_path / "panel.parquet")
    command = [sys.executable, "-m", "factor_engine.cli", "build", "--data", str(tmp_path / "panel.parquet")]
    done = subprocess.run([*command, "--out", str(tmp_path / "model")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.replace("\n", "").endswith(f"wrote model folder {tmp_path / 'model'}")  # the last line
    model = load_model(tmp_path / "model")
    assert model.factor_returns.height > 0 and model.specific_risk is not None
    failed = subprocess.run(
        [sys.executable, "-m", "factor_engine.cli", "build", "--data", str(tmp_path / "none.parquet"), "--out", "m"],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 1
    assert "error: cannot read panel" in failed.stderr
