"""The route class every router of the app uses: each route applies its :class:`~app.policy.Policy`
to the request's context (:mod:`app.context`) once FastAPI has matched it, before its body is read
or its dependencies run.

A route whose endpoint takes the request alone and returns a response (the inference routes, which
read their uploads and query themselves) is handed the request directly: FastAPI's request handler
would solve an empty set of dependencies (parsing the query string and the cookies to fill no
parameter) and pass the response through unchanged.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Coroutine
from contextlib import ExitStack
from typing import Any, ClassVar

from fastapi import Request, Response
from fastapi.routing import APIRoute
from fastapi.telemetry import get_telemetry_data

from app.context import RequestContext
from app.errors import ApiError
from app.policy import KEYED, Policy


def request_context(request: Request) -> RequestContext:
    """The context :class:`app.middleware.RequestContextMiddleware` made for this request."""
    context: RequestContext = request.scope["state"]["context"]
    return context


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _request_only(endpoint: Callable[..., Any]) -> bool:
    """Whether ``endpoint`` is ``async def f(request: Request) -> <a Response>``."""
    if not inspect.iscoroutinefunction(endpoint):
        return False
    signature = inspect.signature(endpoint, eval_str=True)
    parameters = list(signature.parameters.values())
    returns = signature.return_annotation
    return (
        len(parameters) == 1
        and parameters[0].annotation is Request
        and inspect.isclass(returns)
        and issubclass(returns, Response)
    )


class PolicyRoute(APIRoute):
    policy: ClassVar[Policy] = KEYED

    def _handler(self) -> Handler:
        """FastAPI's request handler, or the endpoint itself where it takes the request alone (see the module)."""
        if self.dependant.dependencies or not _request_only(self.endpoint):
            return super().get_route_handler()
        endpoint: Handler = self.endpoint

        async def direct(request: Request) -> Response:
            telemetry = get_telemetry_data()  # what FastAPI's handler gives its telemetry hooks
            if telemetry is not None:
                telemetry.request = request
            return await endpoint(request)

        return direct

    def get_route_handler(self) -> Handler:
        handler = self._handler()
        policy, endpoint = self.policy, self.path_format

        async def admitted(request: Request) -> Response:
            context = request_context(request)
            with ExitStack() as admission:
                try:
                    admission.enter_context(context.admit(policy, endpoint, request.headers.get("authorization")))
                except ApiError:
                    # Read the (bounded) body before answering: closing a connection with unread data
                    # resets it, and the client would lose the answer (the 401's reason, the 503's Retry-After).
                    with contextlib.suppress(Exception):
                        await request.body()
                    raise
                response = await handler(request)
            return response

        return admitted


def policy_route(policy: Policy) -> type[PolicyRoute]:
    """The route class for a router whose routes all have ``policy``."""
    return type(
        f"PolicyRoute[{policy.access}{', limited' if policy.limited else ''}]", (PolicyRoute,), {"policy": policy}
    )
