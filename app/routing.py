"""The route class every router of the app uses: each route applies its :class:`~app.policy.Policy`
to the request's context (:mod:`app.context`) once FastAPI has matched it, before its body is read
or its dependencies run."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine
from contextlib import ExitStack
from typing import Any, ClassVar

from fastapi import Request, Response
from fastapi.routing import APIRoute

from app.context import RequestContext
from app.errors import ApiError
from app.policy import KEYED, Policy


def request_context(request: Request) -> RequestContext:
    """The context :class:`app.middleware.RequestContextMiddleware` made for this request."""
    context: RequestContext = request.scope["state"]["context"]
    return context


class PolicyRoute(APIRoute):
    policy: ClassVar[Policy] = KEYED

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
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
