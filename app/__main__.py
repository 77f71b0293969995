"""``denoise-serve`` / ``python -m app``: run the service with uvicorn, configured from the environment."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from types import FrameType

import uvicorn
from pydantic import ValidationError
from uvicorn.supervisors import Multiprocess

from app import logs, tracing
from app.config import Settings, get_settings
from app.logs import LogFormat
from app.runtime.providers import ProviderError, available_providers, requested_providers

log = logging.getLogger("denoise")


#: uvicorn's exit status when a server could not start.
STARTUP_FAILURE = 3


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, closing its own copy of the listening socket before it stops the
    workers. The socket then closes as the last worker stops accepting, and a client connecting
    after that is refused at once, instead of waiting in the backlog of a socket no process accepts
    from any more and being reset (its request sent, unanswered) when the supervisor exits."""

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


def serve(config: uvicorn.Config) -> None:
    """``uvicorn.run`` for an app given by import string, with :class:`Supervisor` for several workers."""
    if config.workers > 1:
        Supervisor(config, sockets=[config.bind_socket()]).run()
        return
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _check_grpc_port(settings: Settings) -> None:
    """Exit with one line when another process holds the gRPC port. The workers bind it with
    ``SO_REUSEPORT`` (to share it), which would let a second service bind it too and split the calls
    with the first; a bind without that option fails while anyone holds the port, as the HTTP port's does."""
    if settings.grpc_port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET) as probe:
        try:
            probe.bind((settings.host, settings.grpc_port))
        except OSError as exc:
            log.error(
                "cannot serve gRPC on %s:%d (DENOISE_GRPC_PORT): %s; another process holds it: stop it, or set "
                "another port (0 turns gRPC off)",
                settings.host,
                settings.grpc_port,
                exc.strerror,
            )
            sys.exit(STARTUP_FAILURE)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def _settings_or_exit() -> Settings:
    """Settings, or a clear message and exit status 2 (no traceback, no restart loop of retries)."""
    try:
        settings = get_settings()
    except ValidationError as exc:
        # Logged in the format asked for where that setting itself is valid, else as JSON.
        fmt: LogFormat = "text" if os.environ.get("DENOISE_LOG_FORMAT", "").strip().lower() == "text" else "json"
        logs.configure("info", fmt)
        for error in exc.errors():
            name = "DENOISE_" + "_".join(str(part) for part in error["loc"]).upper()
            shown = "(hidden)" if "KEY" in name else repr(error.get("input"))
            log.error("configuration error: %s: %s (got %s)", name, error["msg"], shown)
        sys.exit(2)
    logs.configure(settings.log_level, settings.log_format)
    try:
        requested_providers(settings.providers, available_providers())
        tracing.check_environment()
    except (ProviderError, tracing.TracingConfigError) as exc:
        log.error("configuration error: %s", exc)
        sys.exit(2)
    return settings


def main() -> None:
    settings = _settings_or_exit()
    _check_grpc_port(settings)
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal: exit 0 then.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    made: list[str] = []
    if settings.worker_count > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Each worker writes its metrics here and /metrics sums them, whichever worker answers.
        made.append(tempfile.mkdtemp(prefix="denoise-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = made[-1]
    if settings.worker_count > 1 and settings.worker_state_dir is None:
        # The workers share the repository API's decisions and what each serves here.
        made.append(tempfile.mkdtemp(prefix="denoise-workers-"))
        os.environ["DENOISE_WORKER_STATE_DIR"] = made[-1]
    try:
        config = uvicorn.Config(
            "app.main:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.worker_count,
            log_level=settings.log_level,
            # Applied again by uvicorn in every worker process it spawns.
            log_config=logs.log_config(settings.log_level, settings.log_format),
            access_log=False,  # the app writes one structured line per request
            timeout_graceful_shutdown=settings.shutdown_grace_s,
            timeout_keep_alive=settings.keep_alive_s,
            limit_concurrency=settings.max_connections,
            http="app.protocol:GuardedHttpToolsProtocol",
        )
        serve(config)
    finally:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
