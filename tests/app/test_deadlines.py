"""Deadlines: a request whose deadline has passed is not run, on every front door, and is counted.
Work queued for a client that has gone away is not run either."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from app.errors import ClientGone, DeadlineExceeded
from app.runtime.batcher import Batcher, Until
from tests.conftest import MODEL, digit, png
from tests.server import TEST_SETTINGS, free_port, running_server

PNG = {"content-type": "image/png"}
TIMEOUT = "x-envoy-expected-rq-timeout-ms"


def _metric(client: TestClient, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.split()[-1])
    return 0.0


def _images_run(client: TestClient) -> float:
    return _metric(client, f'denoise_images_total{{graph="autoencoder",model="{MODEL}"}}')


@pytest.fixture
def slow_batches(make_client: Any) -> TestClient:
    """A batching window of 300 ms: a request waits that long for company before its batch is formed."""
    client: TestClient = make_client(batch_max_delay_ms=300)
    return client


def test_expired_request_is_not_run_and_answers_504(slow_batches: TestClient) -> None:
    before = _images_run(slow_batches)
    response = slow_batches.post("/denoise", content=png(digit(1)), headers={**PNG, TIMEOUT: "5"})
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "deadline_exceeded"
    assert "not run" in error["message"]
    assert _images_run(slow_batches) == before  # dropped before it joined a batch
    assert _metric(slow_batches, 'denoise_deadline_expired_total{protocol="rest"}') == 1


def test_a_deadline_that_holds_is_served(slow_batches: TestClient) -> None:
    for value in ("10000", "0"):  # 0: no deadline, as in Envoy
        response = slow_batches.post("/denoise", content=png(digit(2)), headers={**PNG, TIMEOUT: value})
        assert response.status_code == 200


@pytest.mark.parametrize("value", ["soon", "-5", "1.5", "9" * 20])
def test_a_malformed_deadline_header_is_400(client: TestClient, value: str) -> None:
    response = client.post("/denoise", content=png(digit(3)), headers={**PNG, TIMEOUT: value})
    assert response.status_code == 400
    assert "X-Envoy-Expected-Rq-Timeout-Ms" in response.json()["error"]["message"]


def _v2_body(timeout: object) -> dict[str, Any]:
    image = png(digit(4))
    import base64

    return {
        "inputs": [{"name": "png", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(image).decode()]}],
        "parameters": {"timeout": timeout},
    }


def test_v2_timeout_parameter_in_microseconds(slow_batches: TestClient) -> None:
    response = slow_batches.post(f"/v2/models/{MODEL}/infer", json=_v2_body(1000))  # 1 ms
    assert response.status_code == 504
    assert "not run" in response.json()["error"]
    assert _metric(slow_batches, 'denoise_deadline_expired_total{protocol="v2"}') == 1
    assert slow_batches.post(f"/v2/models/{MODEL}/infer", json=_v2_body(10_000_000)).status_code == 200
    # 2**64 and beyond: past Triton's unsigned 64 bits; a 401-digit integer once overflowed into a 500.
    for bad in ("1000", -1, 1.5, True, 2**64, 10**400):
        response = slow_batches.post(f"/v2/models/{MODEL}/infer", json=_v2_body(bad))
        assert response.status_code == 400, bad
        # a number past a double's range is refused as the JSON is read, before its field is looked at
        assert ("number is infinity" if bad == 10**400 else "timeout") in response.json()["error"]
        assert len(response.json()["error"]) < 300  # what was sent is quoted clipped


def test_v2_integer_too_long_to_parse_is_400(slow_batches: TestClient) -> None:
    body = json.dumps(_v2_body(0)).replace('"timeout": 0', '"timeout": 1' + "0" * 5000)
    response = slow_batches.post(f"/v2/models/{MODEL}/infer", content=body)
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


@pytest.fixture(scope="module")
def grpc_server() -> Iterator[tuple[str, str]]:
    port = free_port()
    env = {**TEST_SETTINGS, "DENOISE_GRPC_PORT": str(port), "DENOISE_BATCH_MAX_DELAY_MS": "300"}
    with running_server(env) as (url, _):
        yield url, f"127.0.0.1:{port}"


def _grpc_request(timeout_us: int | None) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="png", datatype="BYTES", shape=[1]).contents.bytes_contents.append(png(digit(5)))
    if timeout_us is not None:
        request.parameters["timeout"].int64_param = timeout_us
    return request


def test_grpc_expired_by_parameter_or_client_deadline_is_not_run(grpc_server: tuple[str, str]) -> None:
    import httpx

    url, address = grpc_server
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(_grpc_request(1000))  # the V2 timeout parameter: 1 ms
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "not run" in raised.value.details()
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(_grpc_request(None), timeout=0.05)  # the client's own deadline (grpc-timeout)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert stub.ModelInfer(_grpc_request(None), timeout=30).outputs  # time enough: served
    metrics = httpx.get(f"{url}/metrics").text
    expired = next(
        line for line in metrics.splitlines() if line.startswith('denoise_deadline_expired_total{protocol="grpc"}')
    )
    assert float(expired.split()[-1]) >= 1


@dataclass
class BusySlot:
    """A batcher with one inference slot, held by a first request of 3 images until ``release`` is set."""

    batcher: Batcher
    release: threading.Event
    #: The size of every batch the graph was called with.
    calls: list[int]


@contextlib.asynccontextmanager
async def busy_batcher(max_batch: int) -> AsyncIterator[BusySlot]:
    release, calls = threading.Event(), []

    def run(x: np.ndarray) -> tuple[np.ndarray]:
        calls.append(len(x))
        release.wait(timeout=10)
        return (x + 1,)

    batcher = Batcher(run, name="t", max_batch=max_batch, max_delay_s=0, queue_size=8, concurrency=1)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(np.zeros((3, 1), dtype=np.float32)))
    while not calls:  # the only slot is now busy
        await asyncio.sleep(0.001)
    try:
        yield BusySlot(batcher, release, calls)
    finally:
        release.set()
        assert (await first)[0].shape == (3, 1)
        await batcher.stop()


def test_batcher_drops_a_request_whose_deadline_passes_while_it_queues() -> None:
    """A request queued behind a busy inference slot, whose deadline passes before its batch is formed,
    is not run: its caller gets DeadlineExceeded, and the graph never sees its images."""

    async def scenario() -> list[int]:
        async with busy_batcher(max_batch=4) as busy:
            deadline = time.monotonic() + 0.02
            late = asyncio.ensure_future(busy.batcher.submit(np.ones((1, 1), dtype=np.float32), Until(deadline)))
            while time.monotonic() < deadline:  # the deadline passes while it queues
                await asyncio.sleep(0.001)
            busy.release.set()
            with pytest.raises(DeadlineExceeded):
                await late
        return busy.calls

    assert asyncio.run(scenario()) == [3]


def test_batcher_drops_work_whose_client_goes_away_while_it_queues() -> None:
    """Work queued behind a busy inference slot whose client goes away before its batch is formed is
    not run: the graph never sees its images, and the work queued beside it still runs."""
    gone = False

    async def scenario() -> list[int]:
        nonlocal gone
        async with busy_batcher(max_batch=8) as busy:
            submit = busy.batcher.submit
            left = asyncio.ensure_future(submit(np.ones((1, 1), dtype=np.float32), Until(gone=lambda: gone)))
            stayed = asyncio.ensure_future(submit(np.ones((2, 1), dtype=np.float32)))
            await asyncio.sleep(0)  # both queued
            gone = True
            busy.release.set()
            assert (await stayed)[0].tolist() == [[2.0], [2.0]]
            with pytest.raises(ClientGone):
                await left
        return busy.calls

    assert asyncio.run(scenario()) == [3, 2]


def test_work_of_a_disconnected_http_client_is_dropped() -> None:
    """Over real HTTP: a request waiting in a batching window whose client closes its connection is
    not run (no image reaches the graph); it is logged and counted as 499."""
    settings = {**TEST_SETTINGS, "DENOISE_BATCH_MAX_DELAY_MS": "1000"}
    with running_server(settings) as (url, _):
        import httpx

        def metric(line_start: str) -> float:
            for line in httpx.get(f"{url}/metrics").text.splitlines():
                if line.startswith(line_start):
                    return float(line.split()[-1])
            return 0.0

        in_flight = f'denoise_model_work_in_flight{{model="{MODEL}"}}'
        body = png(digit(3))
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            head = f"POST /denoise HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n"
            sock.sendall(head.encode() + b"\r\n" + body)
            waited = time.monotonic() + 10
            while metric(in_flight) < 1:  # sampled every 0.5 s: the request waits for company
                assert time.monotonic() < waited, "the request never queued"
                time.sleep(0.05)
        # The connection is closed while the request still waits for its batch to form.
        dropped = f'denoise_requests_total{{endpoint="/denoise",model="{MODEL}",protocol="rest",status="499"}}'
        waited = time.monotonic() + 10
        while metric(dropped) < 1:
            assert time.monotonic() < waited, "the dropped request was never counted"
            time.sleep(0.05)
        assert metric(f'denoise_images_total{{graph="autoencoder",model="{MODEL}"}}') == 0
        served = httpx.post(f"{url}/denoise", content=body, headers=PNG)  # the worker serves on
        assert served.status_code == 200
        assert metric(f'denoise_images_total{{graph="autoencoder",model="{MODEL}"}}') == 1
