"""The estimated peak memory of a model build, checked against the service's budget before a run is created.

Measured on synthetic markets with 15 factors (market, 11 sectors, 3 styles) and the default configuration
(``bench`` figures, 2026-12-01, peak RSS increase of ``build_model`` over the loaded panel): 300 assets × 500
dates 0.29 GiB, 1,000 × 1,000 0.80 GiB, 2,000 × 1,500 1.54 GiB, 3,000 × 2,520 2.84 GiB. The estimate
``1.25 × (300 MiB + cells × 8 × (2K + 8) + eigenfactor)`` lies 10–50% above each of them; ``cells`` is dates ×
assets in the universe and K the factors. The eigenfactor adjustment holds its Wishart draws (M × K × K) and,
in each of two threads, a batch of 8 dates of simulated covariances (8 × M × K × K, about three arrays deep).
"""

from __future__ import annotations

from factor_engine.config import ModelConfig
from factor_engine.storage import PanelExtent

__all__ = ["GIB", "estimate_build_bytes"]

GIB = 1024**3
_MIB = 1024**2
_BASE_BYTES = 300 * _MIB
_SAFETY = 1.25
_EIGEN_BATCH_DATES = 8
_EIGEN_THREADS = 2


def estimate_build_bytes(extent: PanelExtent, config: ModelConfig, n_styles: int) -> int:
    """The estimated peak memory of building a model on the panel rows ``extent`` describes, bytes.

    Parameters
    ----------
    extent: the rows the build loads (dates, most assets on a date, sectors).
    config: the build configuration (universe size and include list, eigenfactor simulations).
    n_styles: styles the model will have.
    """
    assets = extent.most_assets
    if config.universe.size:
        assets = min(assets, config.universe.size + len(config.universe.include))
    factors = 1 + extent.sectors + n_styles
    cells = extent.dates * assets
    panel_bytes = cells * 8 * (2 * factors + 8)
    simulations = config.adjustments.eigenfactor_simulations if config.adjustments.eigenfactor else 0
    eigen_bytes = (3 + _EIGEN_THREADS * 3 * _EIGEN_BATCH_DATES) * simulations * factors * factors * 8
    return int(_SAFETY * (_BASE_BYTES + panel_bytes + eigen_bytes))
