"""Ensure a separate virtual environment holding toraniko from PyPI, for parity checks and benchmarks.

toraniko pins numpy 1.26 and polars 1.x, which cannot live beside this project's numpy 2 / polars 2, so it
gets its own venv under ``bench/.venvs/toraniko`` (gitignored). Nothing from toraniko is copied into the
project: scripts run ``bench/toraniko_runner.py`` with the venv's python and exchange parquet/JSON files.

Usage::

    python bench/toraniko_env.py            # create or reuse the venv, print its python
    python bench/toraniko_env.py --force    # rebuild it from scratch
    python bench/toraniko_env.py --versions # also print toraniko/numpy/polars/python versions as JSON
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

TORANIKO_VERSION = "1.1.1"
"""The toraniko release our ``method="toraniko"`` reproduces."""

DEFAULT_VENV_DIR = Path(__file__).resolve().parent / ".venvs" / "toraniko"

_PROBE = (
    "import importlib.metadata as m, json, platform\n"
    "import toraniko.model, toraniko.styles\n"
    "print(json.dumps({'toraniko': m.version('toraniko'), 'numpy': m.version('numpy'),"
    " 'polars': m.version('polars'), 'python': platform.python_version()}))\n"
)


def venv_python(venv_dir: Path = DEFAULT_VENV_DIR) -> Path:
    """Path of the python executable inside ``venv_dir`` (POSIX layout, or Scripts/ on Windows)."""
    posix = venv_dir / "bin" / "python"
    return posix if posix.exists() or sys.platform != "win32" else venv_dir / "Scripts" / "python.exe"


def toraniko_versions(python: Path) -> dict[str, str] | None:
    """Versions of toraniko, numpy, polars and python seen by ``python``; None if toraniko won't import."""
    if not python.exists():
        return None
    probe = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return None
    versions: dict[str, str] = json.loads(probe.stdout.strip().splitlines()[-1])
    return versions


def ensure_toraniko_venv(
    venv_dir: Path = DEFAULT_VENV_DIR, *, version: str = TORANIKO_VERSION, force: bool = False
) -> Path:
    """Create (or reuse) a venv at ``venv_dir`` with ``toraniko==version`` from PyPI; return its python.

    Idempotent: an existing venv whose toraniko imports and has the requested version is reused as is.
    ``force`` deletes and rebuilds it. Raises RuntimeError with pip's output if the install fails.
    """
    python = venv_python(venv_dir)
    if not force:
        found = toraniko_versions(python)
        if found is not None and found["toraniko"] == version:
            return python
    if venv_dir.exists():
        shutil.rmtree(venv_dir)
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    python = venv_python(venv_dir)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"toraniko=={version}"],
        capture_output=True,
        text=True,
        check=False,
    )
    found = toraniko_versions(python)
    if install.returncode != 0 or found is None or found["toraniko"] != version:
        raise RuntimeError(
            f"could not install toraniko=={version} into {venv_dir} (pip exit {install.returncode}):\n"
            f"{install.stdout}\n{install.stderr}"
        )
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV_DIR, help="venv directory (default: %(default)s)")
    parser.add_argument("--version", default=TORANIKO_VERSION, help="toraniko version (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="delete and rebuild the venv")
    parser.add_argument("--versions", action="store_true", help="also print the venv's package versions as JSON")
    args = parser.parse_args(argv)
    python = ensure_toraniko_venv(args.venv, version=args.version, force=args.force)
    print(python)
    if args.versions:
        print(json.dumps(toraniko_versions(python)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
