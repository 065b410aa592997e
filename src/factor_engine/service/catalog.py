"""The factors a model built on the store can contain: registered styles, the sector labels of the stored
panel and the market."""

from __future__ import annotations

from factor_engine.service.schemas import FactorInfo, FactorsListResponse, SectorFactorInfo, StyleInfo
from factor_engine.storage import SectorSummary, Store
from factor_engine.styles import available_styles

__all__ = ["factor_list", "sector_description"]


def sector_description(sector: str) -> str:
    """What the sector factor of the label ``sector`` is."""
    return (
        f"Sector dummy of the stored label {sector!r}: exposure 1 for an asset labelled {sector!r} on a date, "
        "0 otherwise. The labels are the panel's own (any taxonomy); the sector returns of a date are "
        "constrained to a weighted sum of 0 (barra method), so the market factor carries the common return."
    )


def _sector_info(summary: SectorSummary) -> SectorFactorInfo:
    return SectorFactorInfo(
        name=summary.sector,
        description=sector_description(summary.sector),
        symbols=summary.symbols,
        rows=summary.rows,
        first_date=summary.first_date,
        last_date=summary.last_date,
    )


def factor_list(store: Store) -> FactorsListResponse:
    """Every registered style (name, score column, description, default parameters, the columns it needs:
    inputs, any_of alternatives and the requirement in words, the styles that cover it, whether it is a default
    one), one sector factor per sector label of the stored panel (with its symbols, rows and first and last
    date) and the market."""
    return FactorsListResponse(
        market=FactorInfo(
            name="market",
            description="Every asset has exposure 1: the (cap-weighted when market caps are given) market return "
            "common to all assets.",
        ),
        sectors=[_sector_info(summary) for summary in store.panel_sectors()],
        styles=[
            StyleInfo(
                name=style.name,
                score=style.score,
                description=style.description,
                defaults=dict(style.defaults),
                inputs=list(style.inputs),
                any_of=[list(group) for group in style.any_of],
                unless=list(style.unless),
                requirement=style.requirement,
                caps_as_weights=style.caps_as_weights,
                default=style.default,
            )
            for style in available_styles()
        ],
    )
