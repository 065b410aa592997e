"""Shared by the custom-style tests: write a Python module that registers a short-term reversal style."""

from __future__ import annotations

from pathlib import Path


def write_reversal_module(folder: Path, module: str, style: str, score: str) -> Path:
    """``folder/module.py`` registering ``style`` (score column ``score``): minus the sum of the last ``window``
    returns, standardized per date. Importing it registers the style; the caller unregisters it."""
    path = folder / f"{module}.py"
    path.write_text(
        "import polars as pl\n"
        "from factor_engine import styles, xsection\n\n"
        f"@styles.register_style({style!r}, score={score!r}, inputs=('asset_returns',))\n"
        "def reversal(df, *, window=5):\n"
        "    recent = -pl.col('asset_returns').rolling_sum(window).over('symbol', order_by='date')\n"
        f"    return (df.lazy().with_columns(recent.alias({score!r}))\n"
        f"            .select('date', 'symbol', xsection.center_xsection({score!r}, standardize=True)))\n"
    )
    return path
