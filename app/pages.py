"""The demo page: static files served by the app itself, under a strict Content-Security-Policy."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.policy import PUBLIC
from app.routing import policy_route

DEMO_FILES = Path(__file__).parent / "static" / "demo"
DEMO_PATH = "/demo"

#: Only this origin, no inline code, no framing: the page loads nothing from anywhere else.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class _WithHeaders:
    """Adds the page's security headers to every response of ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_demo(app: FastAPI) -> None:
    """Serve the page at ``/demo/`` and redirect ``/`` to it."""
    app.mount(DEMO_PATH, _WithHeaders(StaticFiles(directory=DEMO_FILES, html=True)), name="demo")

    router = APIRouter(route_class=policy_route(PUBLIC), include_in_schema=False)

    @router.get("/")
    async def home() -> RedirectResponse:
        return RedirectResponse(f"{DEMO_PATH}/")

    app.include_router(router)
