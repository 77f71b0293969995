"""bench.profile's split of py-spy samples into layers (the script itself needs wrk, py-spy and ptrace)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.profile import OTHER, layer_of, split

ROUTE = "denoise (app/routes/inference.py:170)"
ENCODE = "encode_png (app/imaging.py:123)"


@pytest.mark.parametrize(
    ("stack", "layer"),
    [
        # the innermost layer wins: the codec under our encoder is encoding, not the route that called it
        ([ROUTE, ENCODE], "PNG encode (libpng)"),
        (
            [ROUTE, "decode (app/imaging.py:110)", "ImageFile.load (PIL/ImageFile.py:425)"],
            "PNG decode (libpng, Pillow)",
        ),
        ([ROUTE, "decode (app/imaging.py:110)", "_decode_gray (app/imaging.py:80)"], "PNG decode (libpng, Pillow)"),
        (
            ["_worker (concurrent/futures/thread.py:83)", "Session.run (onnxruntime/capi/x.py:406)"],
            "model (ONNX Runtime)",
        ),
        (["record (app/middleware.py:230)", "Logger.info (logging/__init__.py:1489)"], "access log (logging, JSON)"),
        (
            ["record (app/middleware.py:230)", "Histogram.observe (prometheus_client/metrics.py:600)"],
            "metrics (prometheus_client)",
        ),
        (
            [
                "FastAPI.__call__ (fastapi/applications.py:1224)",
                "RequestContextMiddleware.__call__ (app/middleware.py:128)",
            ],
            "request context (ids, keys, limits)",
        ),
        (
            [
                "FastAPI.__call__ (fastapi/applications.py:1229)",
                "NativeTelemetry.__call__ (fastapi/telemetry/_asgi.py:322)",
                "Tracer.start_span (opentelemetry/sdk/trace/__init__.py:1138)",
            ],
            "telemetry (FastAPI's hooks, OpenTelemetry, OTLP export)",
        ),
        (
            ["FastAPI.__call__ (fastapi/applications.py:1229)", "_legacy_otel (fastapi/telemetry/_asgi.py:79)"],
            "telemetry (FastAPI's hooks, OpenTelemetry, OTLP export)",
        ),
        (
            [
                "NativeTelemetry.__call__ (fastapi/telemetry/_asgi.py:429)",
                "APIRouter.app (fastapi/routing.py:2929)",
            ],
            "FastAPI and Starlette",
        ),
        (["main (<string>:1)", "somewhere (numpy/core.py:1)"], OTHER),
    ],
)
def test_a_sample_goes_to_its_innermost_layer(stack: list[str], layer: str) -> None:
    assert layer_of(stack) == layer


@pytest.mark.parametrize("leaf", ["_worker (concurrent/futures/thread.py:81)", "Runner.run (asyncio/runners.py:118)"])
def test_a_waiting_thread_is_left_out(leaf: str) -> None:
    assert layer_of(["Thread._bootstrap (threading.py:1002)", leaf]) is None


def test_split_counts_samples_per_layer(tmp_path: Path) -> None:
    raw = tmp_path / "1.txt"
    raw.write_text(
        f"{ROUTE};{ENCODE} 7\n"
        "Thread._bootstrap (threading.py:1002);_worker (concurrent/futures/thread.py:81) 50\n"
        f"{ROUTE} 3\n"
    )
    assert split([raw]) == {"PNG encode (libpng)": 7, "routes and responses": 3}
