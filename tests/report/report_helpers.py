"""Helpers of the report tests: read what a written report page embeds."""

from __future__ import annotations

import json
import re


def embedded_data(page: str) -> dict[str, object]:
    """The JSON of the page's ``fe-data`` script."""
    match = re.search(r'<script type="application/json" id="fe-data">(.*?)</script>', page, flags=re.S)
    assert match is not None, "no fe-data script"
    return json.loads(match.group(1).replace("<\\/", "</"))  # type: ignore[no-any-return]


def chart_divs(page: str) -> list[str]:
    """The ``data-chart`` names of the page's chart divs, in page order."""
    return re.findall(r'<div class="fe-chart[^"]*" data-chart="([^"]+)"></div>', page)
