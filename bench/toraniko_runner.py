"""Run toraniko's stages on files and write their outputs and timings (run BY the toraniko venv's python).

This script imports toraniko, numpy and polars only, never factor_engine: it is the reference side of the
parity checks. The project side (``bench/bench_core.py``, ``bench/make_golden.py``) prepares the inputs,
runs this script in ``bench/.venvs/toraniko`` (see ``bench/toraniko_env.py``) and compares the files.

Modes::

    python toraniko_runner.py styles --panel PANEL.parquet --params PARAMS.json --out DIR
        factor_mom / factor_val / factor_sze on the long panel (date, symbol, asset_returns, market_cap,
        book_price, sales_price, cf_price); writes DIR/{mom,val,sze}_scores.parquet, DIR/styles_timings.json
    python toraniko_runner.py regression --inputs DIR_IN --params PARAMS.json --out DIR
        estimate_factor_returns on DIR_IN/{returns,mkt_cap,sector,style}.parquet; writes
        DIR/factor_returns.parquet (sorted by date), DIR/residuals.parquet (long date, symbol, residual,
        nulls dropped, sorted) and DIR/regression_timings.json
    python toraniko_runner.py fixture --out FIXTURE.npz
        toraniko.model._factor_returns on its unit-test fixture (np.random.seed(42) ...), residualize_styles
        True and False; writes the inputs and both outputs

PARAMS.json (every key optional; defaults are toraniko's own, except momentum where the caller decides)::

    {"momentum": {"trailing_days": 252, "half_life": 126, "lag": 20, "winsor_factor": 0.01},
     "value": {"winsorize_features": null},
     "size": {"lower_decile": 0.2, "upper_decile": 0.8},
     "regression": {"winsor_factor": 0.05, "residualize_styles": true},
     "complete_residual_columns": true}

``complete_residual_columns``: toraniko builds its wide residual frame with ``pl.DataFrame(list_of_dicts)``,
whose schema polars infers from the first 100 dicts (dates in ``unique()`` order, i.e. arbitrary), so a
symbol absent from those 100 dates silently loses ALL its residuals. When true (the default), the runner
makes that one constructor call infer the schema from every row; the numbers are toraniko's unchanged. When
false, toraniko runs untouched and ``regression_timings.json`` reports how many symbols were dropped.

Timings are ``time.perf_counter`` seconds around each toraniko call including ``.collect()`` of its
LazyFrame; reading inputs and writing outputs are outside the timed regions.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import toraniko.model
from toraniko.model import _factor_returns, estimate_factor_returns
from toraniko.styles import factor_mom, factor_sze, factor_val

DEFAULT_PARAMS: dict[str, Any] = {
    "momentum": {"trailing_days": 504, "half_life": 126, "lag": 20, "winsor_factor": 0.01},
    "value": {"winsorize_features": None},
    "size": {"lower_decile": 0.2, "upper_decile": 0.8},
    "regression": {"winsor_factor": 0.05, "residualize_styles": True},
    "complete_residual_columns": True,
}


def versions() -> dict[str, str]:
    """Versions of the reference stack this process runs."""
    found = {name: importlib.metadata.version(name) for name in ("toraniko", "numpy", "polars")}
    found["python"] = platform.python_version()
    return found


def load_params(path: Path | None) -> dict[str, Any]:
    """DEFAULT_PARAMS overlaid with the JSON file at ``path`` (one level deep per section)."""
    params = {key: dict(value) if isinstance(value, dict) else value for key, value in DEFAULT_PARAMS.items()}
    if path is not None:
        given = json.loads(path.read_text())
        unknown = set(given) - set(DEFAULT_PARAMS)
        if unknown:
            raise ValueError(f"unknown params section(s) {sorted(unknown)} in {path}")
        for key, value in given.items():
            if isinstance(params[key], dict):
                params[key].update(value)
            else:
                params[key] = value
    return params


def run_styles(panel_path: Path, params: dict[str, Any], out_dir: Path) -> dict[str, float]:
    """Time factor_mom, factor_val and factor_sze on the panel; write their scores; return seconds."""
    panel = pl.read_parquet(panel_path)
    returns_df = panel.select("date", "symbol", "asset_returns")
    value_df = panel.select("date", "symbol", "book_price", "sales_price", "cf_price")
    mkt_cap_df = panel.select("date", "symbol", "market_cap")
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    mom = factor_mom(returns_df, **params["momentum"]).collect()
    seconds["mom"] = time.perf_counter() - start

    start = time.perf_counter()
    val = factor_val(value_df, **params["value"]).collect()
    seconds["val"] = time.perf_counter() - start

    start = time.perf_counter()
    sze = factor_sze(mkt_cap_df, **params["size"]).collect()
    seconds["sze"] = time.perf_counter() - start

    for name, scores in (("mom", mom), ("val", val), ("sze", sze)):
        scores.sort("date", "symbol").write_parquet(out_dir / f"{name}_scores.parquet")
    (out_dir / "styles_timings.json").write_text(
        json.dumps({"seconds": seconds, "versions": versions(), "params": params}, indent=2)
    )
    return seconds


def _complete_schema_polars() -> types.SimpleNamespace:
    """A stand-in for the ``pl`` module seen by toraniko.model whose DataFrame(list of dicts) reads all rows."""
    shim = types.SimpleNamespace(**{name: getattr(pl, name) for name in dir(pl) if not name.startswith("__")})

    def data_frame(data: Any = None, *args: Any, **kwargs: Any) -> pl.DataFrame:
        if isinstance(data, list) and data and isinstance(data[0], dict):
            kwargs.setdefault("infer_schema_length", None)
        return pl.DataFrame(data, *args, **kwargs)

    shim.DataFrame = data_frame
    return shim


def run_regression(inputs_dir: Path, params: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Time estimate_factor_returns on prepared inputs; write factor returns and long residuals."""
    frames = {
        name: pl.read_parquet(inputs_dir / f"{name}.parquet") for name in ("returns", "mkt_cap", "sector", "style")
    }
    if params["complete_residual_columns"]:
        toraniko.model.pl = _complete_schema_polars()  # type: ignore[assignment]
    try:
        start = time.perf_counter()
        factor_returns, wide_residuals = estimate_factor_returns(
            frames["returns"], frames["mkt_cap"], frames["sector"], frames["style"], **params["regression"]
        )
        seconds = time.perf_counter() - start
    finally:
        toraniko.model.pl = pl  # type: ignore[assignment]

    out_dir.mkdir(parents=True, exist_ok=True)
    factor_returns.sort("date").write_parquet(out_dir / "factor_returns.parquet")
    residuals = (
        wide_residuals.unpivot(index="date", variable_name="symbol", value_name="residual")
        .drop_nulls("residual")
        .sort("date", "symbol")
    )
    residuals.write_parquet(out_dir / "residuals.parquet")
    n_input_symbols = frames["returns"]["symbol"].n_unique()
    n_residual_symbols = wide_residuals.width - 1
    report = {
        "seconds": {"regression": seconds},
        "n_dates": factor_returns.height,
        "n_input_symbols": n_input_symbols,
        "n_residual_symbols": n_residual_symbols,
        "dropped_residual_symbols": n_input_symbols - n_residual_symbols,
        "versions": versions(),
        "params": params,
    }
    (out_dir / "regression_timings.json").write_text(json.dumps(report, indent=2))
    return report


def fixture_inputs() -> dict[str, np.ndarray]:
    """toraniko's unit-test fixture for _factor_returns, drawn exactly as its tests draw it."""
    # legacy global-state RNG on purpose: these are toraniko's exact fixture draws
    np.random.seed(42)  # noqa: NPY002
    returns = np.random.randn(100, 1)  # noqa: NPY002
    mkt_caps = np.abs(np.random.randn(100, 1))  # noqa: NPY002
    sector_scores = np.random.randint(0, 2, size=(100, 10))  # noqa: NPY002
    style_scores = np.random.randn(100, 5)  # noqa: NPY002
    return {"returns": returns, "mkt_caps": mkt_caps, "sector_scores": sector_scores, "style_scores": style_scores}


def run_fixture(out_path: Path) -> None:
    """Write the fixture inputs and _factor_returns outputs for residualize_styles True and False."""
    arrays = fixture_inputs()
    for residualize, suffix in ((True, "residualized"), (False, "raw")):
        fac_ret, epsilon = _factor_returns(
            arrays["returns"], arrays["mkt_caps"], arrays["sector_scores"], arrays["style_scores"], residualize
        )
        arrays[f"factor_returns_{suffix}"] = fac_ret
        arrays[f"residuals_{suffix}"] = epsilon
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out_path, **arrays)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    styles = modes.add_parser("styles", help="factor_mom, factor_val, factor_sze on a long panel")
    styles.add_argument("--panel", type=Path, required=True)
    styles.add_argument("--params", type=Path)
    styles.add_argument("--out", type=Path, required=True)
    regression = modes.add_parser("regression", help="estimate_factor_returns on prepared inputs")
    regression.add_argument("--inputs", type=Path, required=True)
    regression.add_argument("--params", type=Path)
    regression.add_argument("--out", type=Path, required=True)
    fixture = modes.add_parser("fixture", help="_factor_returns on toraniko's unit-test fixture")
    fixture.add_argument("--out", type=Path, required=True)
    fixture.add_argument("--params", type=Path, help="accepted for uniformity; the fixture takes no params")
    args = parser.parse_args(argv)

    if args.mode == "styles":
        print(json.dumps(run_styles(args.panel, load_params(args.params), args.out)))
    elif args.mode == "regression":
        print(json.dumps(run_regression(args.inputs, load_params(args.params), args.out)["seconds"]))
    else:
        run_fixture(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
