"""The page itself: its HTML shell at `/` under a strict CSP, and its files under `/assets/`."""

from __future__ import annotations

import string
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from flashsight.server.settings import ServerSettings

ASSETS_DIR = Path(__file__).parent / "assets"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def page_html(settings: ServerSettings) -> str:
    """The shell with the limits the page needs, as data attributes (no inline script)."""
    template = string.Template((ASSETS_DIR / "index.html").read_text(encoding="utf-8"))
    return template.substitute(
        image_long_side=settings.web_image_long_side,
        max_image_bytes=settings.web_max_stored_image_bytes,
        max_images=settings.max_images_per_request,
    )


def page_router(settings: ServerSettings) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    html = page_html(settings)
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"}

    @router.get("/")
    def page() -> HTMLResponse:
        return HTMLResponse(html, headers=headers)

    @router.get("/favicon.ico")
    def favicon() -> FileResponse:
        return FileResponse(ASSETS_DIR / "icon.svg", media_type="image/svg+xml")

    return router


def mount_assets(app: FastAPI) -> None:
    app.mount("/assets", StaticFiles(directory=ASSETS_DIR), name="assets")
