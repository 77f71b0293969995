"""``inference.GRPCInferenceService``: the Open Inference Protocol over gRPC, in the HTTP service's process.

grpcio's asyncio server runs on the service's event loop (``DENOISE_GRPC_PORT``; 0 turns it off).
What every call needs is the interceptor's (:mod:`app.v2.grpc_interceptor`); the servicer here only
translates messages (:mod:`app.v2.grpc_messages`) to the V2 data plane's calls
(:mod:`app.v2.dataplane`), which REST uses too. Several workers share the port (``SO_REUSEPORT``),
as they share the HTTP one; ``python -m app`` refuses to start when another process holds it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from app.config import Settings
from app.context import Services
from app.v2.dataplane import DataPlane
from app.v2.grpc_interceptor import RequestContextInterceptor, current
from app.v2.grpc_messages import infer_request, infer_response, parameters

log = logging.getLogger("denoise.grpc")

MAX_SEND_BYTES = 256 * 1024 * 1024


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """The protocol's messages translated to the data plane's calls; errors are raised as ApiError."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerLiveResponse(live=self.plane.live())

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.plane.ready())

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ModelReadyResponse(ready=self.plane.model_ready(request.name, request.version))

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return json_format.ParseDict(self.plane.metadata(), service_pb2.ServerMetadataResponse())

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        described = self.plane.model_metadata(request.name, request.version, current())
        return json_format.ParseDict(described, service_pb2.ModelMetadataResponse())

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        described = self.plane.model_config(request.name, request.version, current())
        return service_pb2.ModelConfigResponse(config=json_format.ParseDict(described, model_config_pb2.ModelConfig()))

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        entries = await self.plane.index(request.ready)
        return service_pb2.RepositoryIndexResponse(
            models=[service_pb2.RepositoryIndexResponse.ModelIndex(**entry) for entry in entries]
        )

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.plane.load(request.model_name, parameters(request.parameters), current())
        return service_pb2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.plane.unload(request.model_name, current())
        return service_pb2.RepositoryModelUnloadResponse()

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        model = self.plane.model(request.model_name, request.model_version, current())
        answer = await self.plane.infer(model, infer_request(request), current())
        return infer_response(model.name, model.version, request.id, answer.outputs)


async def start(
    plane: DataPlane,
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
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(plane), server)
    address = f"{settings.host}:{settings.grpc_port}"
    server.add_insecure_port(address)
    await server.start()
    log.info("gRPC (Open Inference Protocol) listening on %s", address)
    return server
