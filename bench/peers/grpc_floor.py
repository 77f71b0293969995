"""The gRPC door's floor: the Open Inference Protocol's ``ModelInfer`` over grpcio's asyncio server
(as our service serves it), doing what ``bare_asgi.py`` does for ``/denoise`` and nothing else: the one
PNG of the request decoded, one ``session.run`` of the lean script's session, the PNG encoded
(``bare_asgi.denoise_png``). No validation, limits, batching, metrics or logs: what is left of a call
is grpcio's exchange, the PNG codec and the model. ``ServerReady`` answers, for the bench to wait on.
Several processes share the port (``SO_REUSEPORT``), as our service's workers do.

    LEAN_MODEL=models/mnist/autoencoder.int8.onnx python -m bench.peers.grpc_floor PORT [PROCESSES]
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc


class Floor(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerReadyResponse(ready=True)

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        from bench.peers.bare_asgi import denoise_png  # the session, made in this process

        element = request.raw_input_contents[0]  # BYTES: a 4-byte little-endian length, then the PNG
        png = denoise_png(element[4 : 4 + int.from_bytes(element[:4], "little")])
        response = service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id)
        response.outputs.add(name="denoised_png", datatype="BYTES", shape=[1])
        response.raw_output_contents.append(len(png).to_bytes(4, "little") + png)
        return response


async def serve(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Floor(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def run(port: int) -> None:
    asyncio.run(serve(port))


def main() -> None:
    port = int(sys.argv[1])
    processes = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    spawn = multiprocessing.get_context("spawn")  # each process makes its own session and event loop
    children = [spawn.Process(target=run, args=(port,)) for _ in range(processes)]
    for child in children:
        child.start()
    for child in children:
        child.join()


if __name__ == "__main__":
    main()
