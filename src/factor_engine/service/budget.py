"""The estimated peak memory of a model build, checked against the service's budget before a run is created.

Measured on synthetic markets with the default configuration (2026-12-01, this 2-core machine; peak RSS
increase of ``build_model`` over the loaded panel): with 15 factors (market, 11 sectors, 3 styles) 300 assets
× 500 dates 0.29 GiB, 1,000 × 1,000 0.80 GiB, 2,000 × 1,500 1.54 GiB, 3,000 × 2,520 2.84 GiB; with 44 factors
(40 sectors) 1,000 × 1,000 1.78 GiB. The estimate is
``1.25 × (450 MiB + rows × (96 + 12 C) + cells × 8 × (2K + 8) + eigenfactor)``: the interpreter and libraries
with the build's fixed costs; the loaded panel, about 96 bytes a row with the six value columns of those
markets (returns, cap, sector, three value features; polars holds 64 bytes a row) and 12 more for each of the
C further columns loaded (8 bytes a value in polars: a panel with every USE4 column holds 152 bytes a row);
the dense (dates × assets) arrays of K factors, with ``cells`` the dates × assets in the universe; the
eigenfactor adjustment's Wishart draws (M × K × K) plus, in each of two threads, a batch of 8 dates of
simulated covariances (8 × M × K × K, about three arrays deep). It lies above each measurement and above the
whole-process peak of ``bench/bench_build.py`` (which prints both).
"""

from __future__ import annotations

from factor_engine.config import ModelConfig
from factor_engine.storage import PanelExtent

__all__ = ["GIB", "estimate_build_bytes"]

GIB = 1024**3
_MIB = 1024**2
_BASE_BYTES = 450 * _MIB
_SAFETY = 1.25
_ROW_BYTES = 96
# value columns of the calibration panels, and the bytes a row each further loaded column adds (8 × 1.5)
_CALIBRATED_COLUMNS = 6
_COLUMN_BYTES = 12
_EIGEN_BATCH_DATES = 8
_EIGEN_THREADS = 2


def estimate_build_bytes(extent: PanelExtent, config: ModelConfig, n_styles: int) -> int:
    """The estimated peak memory of building a model on the panel rows ``extent`` describes, bytes.

    Parameters
    ----------
    extent: the rows the build loads (dates, most assets on a date, sectors, the value columns loaded).
    config: the build configuration (universe size and include list, eigenfactor simulations).
    n_styles: styles the model will have.
    """
    assets = extent.most_assets
    if config.universe.size:
        assets = min(assets, config.universe.size + len(config.universe.include))
    factors = 1 + extent.sectors + n_styles
    cells = extent.dates * assets
    row_bytes = _ROW_BYTES + _COLUMN_BYTES * max(0, len(extent.columns) - _CALIBRATED_COLUMNS)
    panel_bytes = extent.rows * row_bytes + cells * 8 * (2 * factors + 8)
    simulations = config.adjustments.eigenfactor_simulations if config.adjustments.eigenfactor else 0
    eigen_bytes = (3 + _EIGEN_THREADS * 3 * _EIGEN_BATCH_DATES) * simulations * factors * factors * 8
    return int(_SAFETY * (_BASE_BYTES + panel_bytes + eigen_bytes))
