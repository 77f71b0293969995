"""``python -m app.healthcheck``: exit 0 when the local service is ready over HTTP and, where it is
on, over gRPC (the container HEALTHCHECK)."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from app.config import Settings, get_settings

TIMEOUT_S = 2.0


def http_ready(host: str, settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{settings.port}/health/ready", timeout=TIMEOUT_S) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def grpc_ready(host: str, settings: Settings) -> bool:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(f"{host}:{settings.grpc_port}") as channel:
        try:
            answer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerReady(
                service_pb2.ServerReadyRequest(), timeout=TIMEOUT_S
            )
        except grpc.RpcError:
            return False
    return bool(answer.ready)


def main() -> int:
    settings = get_settings()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
    ready = http_ready(host, settings) and (settings.grpc_port == 0 or grpc_ready(host, settings))
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
