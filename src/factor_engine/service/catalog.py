"""The factors a model can contain: registered styles, the GICS sectors and the market."""

from __future__ import annotations

from factor_engine.panel import GICS_SECTORS
from factor_engine.service.schemas import FactorInfo, FactorsListResponse, StyleInfo
from factor_engine.styles import available_styles

__all__ = ["factor_list"]


def factor_list() -> FactorsListResponse:
    """Every registered style (name, score column, description, default parameters, inputs), the 11 GICS
    sector factors and the market factor."""
    return FactorsListResponse(
        market=FactorInfo(
            name="market",
            description="Every asset has exposure 1: the cap-weighted market return common to all assets.",
        ),
        sectors=[
            FactorInfo(
                name=sector,
                description=f"GICS sector dummy: exposure 1 for assets in {sector}, 0 otherwise; sector returns "
                "are constrained to a cap-weighted sum of 0 (barra method).",
            )
            for sector in GICS_SECTORS
        ],
        styles=[
            StyleInfo(
                name=style.name,
                score=style.score,
                description=style.description,
                defaults=dict(style.defaults),
                inputs=list(style.inputs),
            )
            for style in available_styles()
        ],
    )
