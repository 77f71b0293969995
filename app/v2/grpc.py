"""``inference.GRPCInferenceService``: the Open Inference Protocol over gRPC, in the HTTP service's process.

grpcio's asyncio server runs on the service's event loop (``DENOISE_GRPC_PORT``; 0 turns it off),
with the protocol's stubs as ``tritonclient`` ships them. Every call goes through the same models,
batchers, limits, API keys, metrics and access log as HTTP; only the framing differs.
Several workers share the port (``SO_REUSEPORT``), as they share the HTTP one.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from app import __version__
from app.auth import ApiKeys
from app.config import Settings
from app.errors import ApiError, described
from app.metrics import Metrics
from app.middleware import WorkInProgress, record, request_id
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
T = TypeVar("T")
#: Calls that never need an API key: the probes.
PUBLIC = frozenset({"ServerLive", "ServerReady"})
MAX_SEND_BYTES = 256 * 1024 * 1024


@dataclass
class _Call:
    """What one call's access-log line and metrics say."""

    method: str
    request_id: str
    model: str = "-"
    images: int = 0
    status: grpc.StatusCode = grpc.StatusCode.OK
    started: float = field(default_factory=time.perf_counter)


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


class MalformedMessages(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """A request message that does not parse is answered ``INVALID_ARGUMENT`` (grpcio's own answer
    to a deserializer that fails is ``UNKNOWN``, which tells the client nothing it can act on)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        behaviour = handler.unary_unary

        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"the request message does not parse: {request.error}"
                )
            return await behaviour(request, context)

        return handler._replace(request_deserializer=_tolerant(handler.request_deserializer), unary_unary=checked)


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        registry: Registry,
        catalog: Catalog,
        settings: Settings,
        metrics: Metrics,
        keys: ApiKeys,
        work: WorkInProgress,
    ) -> None:
        self.registry = registry
        self.catalog = catalog
        self.settings = settings
        self.metrics = metrics
        self.keys = keys
        self.work = work

    def _find(self, call: _Call, name: str, version: str) -> V2Model:
        model = self.catalog.find(name, version)
        call.model = model.bundle.manifest.name
        return model

    @asynccontextmanager
    async def _call(
        self, method: str, context: grpc.aio.ServicerContext, counted: bool = False
    ) -> AsyncIterator[_Call]:
        """Request id, API key, in-flight limit, error mapping, and the access-log line and metrics."""
        metadata = {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}
        call = _Call(method, request_id(metadata.get("x-request-id", "").encode("latin-1", "replace")))
        context.set_trailing_metadata((("x-request-id", call.request_id),))
        entered = False
        message = ""
        try:
            if method not in PUBLIC and self.keys.enabled:
                self.keys.check(metadata.get("authorization", ""))
            if counted:
                refusal = self.work.refusal()
                if refusal is not None:
                    raise refusal
                self.work.count += 1
                entered = True
            yield call
        except ApiError as exc:
            call.status = CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT)
            message = described(exc)
        except Exception:
            log.exception("gRPC %s failed", method, extra={"request_id": call.request_id})
            call.status = grpc.StatusCode.INTERNAL
            message = "internal error; the request id identifies it in the logs"
        finally:
            if entered:
                self.work.count -= 1
            peer = context.peer() or "-"
            record(
                self.metrics,
                protocol="grpc",
                request_id=call.request_id,
                method="POST",
                path=f"/inference.GRPCInferenceService/{method}",
                query="",
                endpoint=method,
                status=call.status.name,
                model=call.model,
                images=call.images,
                seconds=time.perf_counter() - call.started,
                client=peer.split(":")[1] if peer.count(":") >= 2 else peer,
                error=call.status != grpc.StatusCode.OK,
            )
        if call.status != grpc.StatusCode.OK:
            await context.abort(call.status, message)

    async def _serve(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        handler: Callable[[_Call], T | Awaitable[T]],
        counted: bool = False,
    ) -> T:
        async with self._call(method, context, counted) as call:
            result = handler(call)
            return await result if inspect.isawaitable(result) else result
        raise AssertionError("unreachable: a failed call is aborted")

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._serve("ServerLive", context, lambda _: service_pb2.ServerLiveResponse(live=True))

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._serve(
            "ServerReady", context, lambda _: service_pb2.ServerReadyResponse(ready=self.registry.ready)
        )

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def ready(_: _Call) -> Any:
            return service_pb2.ModelReadyResponse(
                ready=self.catalog.get(request.name, request.version or None) is not None
            )

        return await self._serve("ModelReady", context, ready)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def metadata(_: _Call) -> Any:
            return service_pb2.ServerMetadataResponse(
                name=SERVER_NAME, version=__version__, extensions=list(EXTENSIONS)
            )

        return await self._serve("ServerMetadata", context, metadata)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def metadata(call: _Call) -> Any:
            described = self._find(call, request.name, request.version).metadata()
            return json_format.ParseDict(described, service_pb2.ModelMetadataResponse())

        return await self._serve("ModelMetadata", context, metadata)

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def config(call: _Call) -> Any:
            described = self._find(call, request.name, request.version).config(self.settings.max_batch_images)
            return service_pb2.ModelConfigResponse(
                config=json_format.ParseDict(described, model_config_pb2.ModelConfig())
            )

        return await self._serve("ModelConfig", context, config)

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def index(_: _Call) -> Any:
            models = [
                service_pb2.RepositoryIndexResponse.ModelIndex(name=m.name, version=m.version, state="READY")
                for m in self.catalog.models.values()
            ]
            return service_pb2.RepositoryIndexResponse(models=models)

        return await self._serve("RepositoryIndex", context, index)

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def infer(call: _Call) -> Any:
            model = self._find(call, request.model_name, request.model_version)
            parsed = infer_request(request)
            shape = parsed.inputs[0].shape
            call.images = shape[0] if shape else 0
            outputs = await inference.run(model, parsed, self.settings)
            response = service_pb2.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
            for tensor, _ in outputs:
                response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))
                response.raw_output_contents.append(to_binary(tensor))
            return response

        return await self._serve("ModelInfer", context, infer, counted=True)


async def start(
    registry: Registry, catalog: Catalog, settings: Settings, metrics: Metrics, keys: ApiKeys, work: WorkInProgress
) -> grpc.aio.Server | None:
    """Serve gRPC on ``DENOISE_GRPC_PORT`` (None when it is 0)."""
    if settings.grpc_port == 0:
        return None
    server = grpc.aio.server(
        interceptors=[MalformedMessages()],
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.so_reuseport", 1),
        ],
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceService(registry, catalog, settings, metrics, keys, work), server
    )
    address = f"{settings.host}:{settings.grpc_port}"
    server.add_insecure_port(address)
    await server.start()
    log.info("gRPC (Open Inference Protocol) listening on %s", address)
    return server
