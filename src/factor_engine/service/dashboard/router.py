"""Routes of the dashboard page and its static files (no API key: the page asks for one and sends it)."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse, RedirectResponse

__all__ = ["STATIC_DIR", "plotly_bundle", "router"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
DASHBOARD_PATH = "/dashboard"
_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
_PAGE_FILES = ("dashboard.js", "live.js", "dashboard.css")
# plotly.min.js never changes for an installed plotly: let the browser keep it for a day
_BUNDLE_CACHE = "public, max-age=86400"

router = APIRouter(include_in_schema=False)


@lru_cache(maxsize=1)
def plotly_bundle() -> Path:
    """Path of ``plotly.min.js`` shipped in the python plotly package's ``package_data`` (found without
    importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the python package plotly is not installed: the dashboard needs its plotly.min.js")
    bundle = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    if not bundle.is_file():
        raise FileNotFoundError(f"plotly.min.js is missing from the plotly package: {bundle} does not exist")
    return bundle


@router.get("/")
def root() -> RedirectResponse:
    """Redirect to the dashboard."""
    return RedirectResponse(DASHBOARD_PATH, status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.get(DASHBOARD_PATH)
def dashboard() -> FileResponse:
    """The dashboard page."""
    return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html; charset=utf-8")


@router.get(f"{DASHBOARD_PATH}/static/{{name}}")
def static_file(name: str) -> FileResponse:
    """``dashboard.js``, ``live.js``, ``dashboard.css`` or ``plotly.min.js`` (404 for any other name)."""
    if name == "plotly.min.js":
        try:
            bundle = plotly_bundle()
        except FileNotFoundError as error:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
        return FileResponse(bundle, media_type=_MEDIA_TYPES[".js"], headers={"Cache-Control": _BUNDLE_CACHE})
    if name not in _PAGE_FILES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dashboard file {name!r}; files: {', '.join(_PAGE_FILES)}")
    path = STATIC_DIR / name
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})
