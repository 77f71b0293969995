"""What every gRPC call needs, as one ``grpc.aio`` server interceptor over the same request context as
HTTP (:mod:`app.context`): the request id, the method's declared policy (key and admission), errors as
gRPC status codes, metrics and the access line."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from app.context import RequestContext, Services, request_id
from app.errors import ApiError, bounded, described
from app.policy import ADMIN, INFERENCE, KEYED, PUBLIC
from app.v2.tensors import V2Error

log = logging.getLogger("denoise.grpc")

#: gRPC status codes for the HTTP statuses of the service's errors (:mod:`app.errors`).
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class _Undecodable:
    """Stands for a request message that did not parse, so that the call can say so."""

    def __init__(self, error: DecodeError) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return _Undecodable(exc)

    return deserialize


#: Every method of ``inference.GRPCInferenceService`` with its policy (a test checks the table against the
#: service descriptor); a method missing from it would be served as an admin's (fail closed).
POLICIES = {
    "ServerLive": PUBLIC,
    "ServerReady": PUBLIC,
    "ModelReady": KEYED,
    "ServerMetadata": KEYED,
    "ModelMetadata": KEYED,
    "ModelInfer": INFERENCE,
    "ModelStreamInfer": INFERENCE,
    "ModelConfig": KEYED,
    "ModelStatistics": KEYED,
    "RepositoryIndex": KEYED,
    "RepositoryModelLoad": ADMIN,
    "RepositoryModelUnload": ADMIN,
    "SystemSharedMemoryStatus": KEYED,
    "SystemSharedMemoryRegister": ADMIN,
    "SystemSharedMemoryUnregister": ADMIN,
    "CudaSharedMemoryStatus": KEYED,
    "CudaSharedMemoryRegister": ADMIN,
    "CudaSharedMemoryUnregister": ADMIN,
    "TraceSetting": ADMIN,
    "LogSettings": ADMIN,
}
_CURRENT: ContextVar[RequestContext] = ContextVar("grpc_request_context")


def current() -> RequestContext:
    """The context of the call being served."""
    return _CURRENT.get()


class RequestContextInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """What every gRPC call needs, around the servicer's method: the request id (``x-request-id``
    metadata in, trailing metadata out), the method's policy (API key from the ``authorization``
    metadata, the admission slot), errors as gRPC status codes with the message, and the
    request's metrics and access line. A request message that does not parse is answered
    ``INVALID_ARGUMENT`` (grpcio's own answer to a failing deserializer is ``UNKNOWN``)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        behaviour = handler.unary_unary
        path: str = handler_call_details.method
        name = path.rsplit("/", 1)[-1]
        policy = POLICIES.get(name, ADMIN)

        async def served(request: Any, context: grpc.aio.ServicerContext) -> Any:
            metadata = {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}
            peer = context.peer() or "-"
            call = RequestContext(
                self.services,
                protocol="grpc",
                request_id=request_id(metadata.get("x-request-id", "")),
                method="POST",
                path=path,
                client=peer.split(":")[1] if peer.count(":") >= 2 else peer,
                endpoint=name,
            )
            remaining = context.time_remaining()  # the client's deadline (grpc-timeout), if it set one
            if remaining is not None:
                call.deadline = call.received + remaining
            context.set_trailing_metadata((("x-request-id", call.request_id),))
            token = _CURRENT.set(call)
            status, message = grpc.StatusCode.OK, ""
            try:
                if isinstance(request, _Undecodable):
                    raise V2Error(f"the request message does not parse: {request.error}")
                with call.admit(policy, name, metadata.get("authorization")):
                    return await behaviour(request, context)
            except ApiError as exc:
                status, message = CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), described(exc)
            except asyncio.CancelledError:  # the client cancelled, or its deadline passed: queued work is dropped
                expired = call.deadline is not None and time.monotonic() >= call.deadline
                status = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
                raise
            except Exception:
                log.exception("gRPC %s failed", name, extra={"request_id": call.request_id})
                status, message = grpc.StatusCode.INTERNAL, "internal error; the request id identifies it in the logs"
            finally:
                _CURRENT.reset(token)
                call.finish(status.name, error=status != grpc.StatusCode.OK)
            await context.abort(status, bounded(message))

        return handler._replace(request_deserializer=_tolerant(handler.request_deserializer), unary_unary=served)
