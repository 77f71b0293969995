"""Swagger UI (``/docs``) and ReDoc (``/redoc``), served from here under a strict Content-Security-Policy.

The pages are FastAPI's own (``get_swagger_ui_html``, ``get_redoc_html``), their scripts and styles
the ones the ``fastapi-offline`` package ships, served at ``/static/docs``. Each page's policy allows
only this origin and the page's own inline scripts (by their SHA-256), so the pages work offline and
ask nothing of anyone else: ReDoc's attribution logo, which it fetches from its CDN, is blocked by
the browser before any request leaves.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from app.policy import PUBLIC
from app.routing import policy_route

ASSETS = Path(fastapi_offline.__file__).parent / "static"
STATIC_PATH = "/static/docs"
DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(html: bytes) -> str:
    """This origin only, plus the page's inline scripts by hash. Styles may be inline (both UIs set
    styles from script); ReDoc's search runs in a worker made from a blob."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ).replace("  ", " ")


def _secured(page: HTMLResponse) -> HTMLResponse:
    page.headers["content-security-policy"] = content_security_policy(bytes(page.body))
    page.headers["x-content-type-options"] = "nosniff"
    page.headers["referrer-policy"] = "no-referrer"
    return page


def install_api_docs(app: FastAPI) -> None:
    """Serve the two documentation pages and their assets (the app is made with ``docs_url=None``)."""
    app.mount(STATIC_PATH, StaticFiles(directory=ASSETS), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect = app.swagger_ui_oauth2_redirect_url or f"{DOCS_PATH}/oauth2-redirect"
    swagger = _secured(
        get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect,
            swagger_js_url=f"{STATIC_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_PATH}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
    )
    redirect = _secured(get_swagger_ui_oauth2_redirect_html())
    redoc = _secured(
        get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{STATIC_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{STATIC_PATH}/favicon.png",
            with_google_fonts=False,
        )
    )

    def page(html: HTMLResponse) -> HTMLResponse:
        return HTMLResponse(bytes(html.body), headers=dict(html.headers))

    router = APIRouter(route_class=policy_route(PUBLIC), include_in_schema=False)

    @router.get(DOCS_PATH)
    async def swagger_ui() -> HTMLResponse:
        return page(swagger)

    @router.get(oauth2_redirect)
    async def swagger_ui_redirect() -> HTMLResponse:
        return page(redirect)

    @router.get(REDOC_PATH)
    async def redoc_ui() -> HTMLResponse:
        return page(redoc)

    app.include_router(router)
