"""The inference routes' hot path: a request with no query string is handed straight to its route function.

For each request FastAPI walks its routers, solves the route's dependencies and validates its
query parameters. For a single-image ``/denoise`` on the bench machine that was about a fifth of the
CPU the whole request cost (160 of 680 µs; ``python -m bench.profile``). A request with no query
string has nothing to validate: every parameter takes its default. So for the paths in ``routes``
(path formats as FastAPI writes them; path parameters are matched as Starlette does and handed over
in ``request.path_params``) this middleware calls the route function itself, with those defaults, and
renders what it raises with the app's own exception handlers; the response is the one FastAPI would
have sent, byte for byte (tests/app/test_fastlane.py compares them). Everything else (a query
string, another path or method) goes through FastAPI as before.

It sits inside :class:`app.middleware.RequestContextMiddleware`, so request ids, API keys, limits,
metrics and the access log are the same either way. FastAPI's ``dependency_overrides`` do not reach
this lane: a test that overrides a dependency of these routes must send a query string.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

#: A route function with every query parameter at its default (path parameters in ``request.path_params``).
Handler = Callable[[Request], Awaitable[Response]]
ExceptionHandler = Callable[[Request, Any], Response | Awaitable[Response]]


class FastLane:
    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Mapping[str, Handler],
        exception_handlers: Mapping[Any, ExceptionHandler],
    ) -> None:
        self.app = app
        self.exact = {path: handler for path, handler in routes.items() if "{" not in path}
        self.templated = [(compile_path(path), handler) for path, handler in routes.items() if "{" in path]
        # A live view: handlers registered after this middleware is built still count.
        self.exception_handlers = exception_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope["query_string"]:
            handler = self._handler(scope)
        if handler is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await handler(request)
        except Exception as exc:
            render = self._handler_for(exc)
            if render is None:
                raise  # as through FastAPI: ServerErrorMiddleware answers 500 with the app's handler
            rendered = render(request, exc)
            response = await rendered if inspect.isawaitable(rendered) else rendered
        await response(scope, receive, send)

    def _handler(self, scope: Scope) -> Handler | None:
        path: str = scope["path"]
        handler = self.exact.get(path)
        if handler is not None:
            return handler
        for (pattern, _, convertors), candidate in self.templated:
            match = pattern.match(path)
            if match is not None:
                scope["path_params"] = {
                    name: convertors[name].convert(value) for name, value in match.groupdict().items()
                }
                return candidate
        return None

    def _handler_for(self, exc: Exception) -> ExceptionHandler | None:
        """The app's handler for ``exc``, as Starlette's ExceptionMiddleware would choose it."""
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None  # that one is ServerErrorMiddleware's, outside this layer
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                return handler
        return None
