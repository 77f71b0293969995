"""``inference.GRPCInferenceService``: the Open Inference Protocol over gRPC, in the HTTP service's process.

grpcio's asyncio server runs on the service's event loop (``DENOISE_GRPC_PORT``; 0 turns it off),
with the protocol's stubs as ``tritonclient`` ships them. What every call needs (request id, the
key decision and admission from the method's policy, error mapping, metrics and the access line) is
one server interceptor over the same request context as HTTP (:mod:`app.context`); the servicer
only translates messages to the same models, image pipeline and batchers.
Several workers share the port (``SO_REUSEPORT``), as they share the HTTP one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from starlette.concurrency import run_in_threadpool
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from app import __version__
from app.config import Settings
from app.context import RequestContext, Services, request_id
from app.errors import ApiError, bounded, described
from app.policy import ADMIN, INFERENCE, KEYED, PUBLIC
from app.repository import ModelRepository, check_load_parameters
from app.runtime.registry import Registry
from app.v2 import inference
from app.v2.catalog import Catalog, V2Model
from app.v2.rest import EXTENSIONS, SERVER_NAME
from app.v2.tensors import (
    InferRequest,
    RequestedOutput,
    Tensor,
    V2Error,
    check_shape,
    from_binary,
    from_values,
    to_binary,
)

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
#: The typed ``contents`` field of each datatype (FP16 travels only as raw bytes).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
MAX_SEND_BYTES = 256 * 1024 * 1024


def _parameters(parameters: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, parameter in parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, kind) if kind else None
    return values


def _tensor(request: service_pb2.ModelInferRequest, index: int) -> Tensor:
    spec = request.inputs[index]
    name, datatype = spec.name, spec.datatype
    if datatype not in CONTENTS and datatype != "FP16":
        raise V2Error(f"input {name!r}: datatype {datatype!r} is not a V2 datatype")
    shape = check_shape(name, list(spec.shape))
    if request.raw_input_contents:
        if spec.contents.ListFields():
            raise V2Error(
                f"input {name!r}: data given both in raw_input_contents and in contents; send it in one of them"
            )
        return Tensor(name, datatype, shape, from_binary(name, datatype, shape, request.raw_input_contents[index]))
    if datatype not in CONTENTS:
        raise V2Error(f"input {name!r}: {datatype} must be sent in raw_input_contents")
    return Tensor(name, datatype, shape, from_values(name, datatype, shape, getattr(spec.contents, CONTENTS[datatype])))


def infer_request(request: service_pb2.ModelInferRequest) -> InferRequest:
    if not request.inputs:
        raise V2Error("request has no inputs")
    if request.raw_input_contents and len(request.raw_input_contents) != len(request.inputs):
        raise V2Error(
            f"raw_input_contents has {len(request.raw_input_contents)} entries for {len(request.inputs)} inputs"
        )
    return InferRequest(
        id=request.id or None,
        inputs=[_tensor(request, i) for i in range(len(request.inputs))],
        outputs=[RequestedOutput(output.name, True) for output in request.outputs],
        parameters=_parameters(request.parameters),
    )


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


#: Each method's policy (:mod:`app.policy`); methods not named need a key where keys are set.
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


def _find(catalog: Catalog, name: str, version: str) -> V2Model:
    model = catalog.find(name, version)
    call = current()
    call.model, call.version = model.bundle.manifest.name, model.version
    return model


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """The protocol's messages translated to the service's models; errors are raised as ApiError."""

    def __init__(self, registry: Registry, catalog: Catalog, repository: ModelRepository, settings: Settings) -> None:
        self.registry = registry
        self.catalog = catalog
        self.repository = repository
        self.settings = settings

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.registry.ready)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ModelReadyResponse(ready=self.catalog.get(request.name, request.version or None) is not None)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=list(EXTENSIONS))

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        described = _find(self.catalog, request.name, request.version).metadata()
        return json_format.ParseDict(described, service_pb2.ModelMetadataResponse())

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        described = _find(self.catalog, request.name, request.version).config(self.settings.max_batch_images)
        return service_pb2.ModelConfigResponse(config=json_format.ParseDict(described, model_config_pb2.ModelConfig()))

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        entries = await run_in_threadpool(self.repository.index, request.ready)
        models = [service_pb2.RepositoryIndexResponse.ModelIndex(**entry) for entry in entries]
        return service_pb2.RepositoryIndexResponse(models=models)

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        check_load_parameters(_parameters(request.parameters))
        current().model, _ = self.repository.bundle(request.model_name)  # a label only once it names a bundle
        await self.repository.load(request.model_name)
        return service_pb2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        current().model, _ = self.repository.bundle(request.model_name)
        await self.repository.unload(request.model_name)
        return service_pb2.RepositoryModelUnloadResponse()

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        model = _find(self.catalog, request.model_name, request.model_version)
        parsed = infer_request(request)
        call = current()
        call.images = parsed.inputs[0].shape[0] if parsed.inputs[0].shape else 0
        call.deadline = inference.deadline(parsed, call.received, call.deadline)
        outputs = await inference.run(model, parsed, self.settings, call.until())
        response = service_pb2.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        for tensor, _ in outputs:
            response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))
            response.raw_output_contents.append(to_binary(tensor))
        return response


async def start(
    registry: Registry,
    catalog: Catalog,
    repository: ModelRepository,
    settings: Settings,
    services: Services,
    outer: Sequence[grpc.aio.ServerInterceptor] = (),
) -> grpc.aio.Server | None:
    """Serve gRPC on ``DENOISE_GRPC_PORT`` (None when it is 0); ``outer`` interceptors (tracing) run
    around the request context's."""
    if settings.grpc_port == 0:
        return None
    server = grpc.aio.server(
        interceptors=[*outer, RequestContextInterceptor(services)],
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.so_reuseport", 1),
        ],
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceService(registry, catalog, repository, settings), server
    )
    address = f"{settings.host}:{settings.grpc_port}"
    server.add_insecure_port(address)
    await server.start()
    log.info("gRPC (Open Inference Protocol) listening on %s", address)
    return server
