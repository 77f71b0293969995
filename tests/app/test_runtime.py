"""Provider selection, bundle verification at load, and the dynamic batcher."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.errors import InvalidInput, Overloaded
from app.main import create_app
from app.runtime.batcher import INLINE_MAX_IMAGES, Batcher
from app.runtime.providers import CPU, CUDA, ProviderError, check_active, requested_providers
from denoise_bundle.manifest import MAX_MANIFEST_BYTES
from tests.conftest import MODEL, decode_png, digit, png, service_settings
from tests.images import assert_int8_close


def test_cpu_setting_asks_for_cpu_only() -> None:
    assert requested_providers("cpu", [CUDA, CPU]) == [CPU]


def test_auto_prefers_cuda_when_the_build_has_it() -> None:
    assert requested_providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert requested_providers("auto", [CPU]) == [CPU]


def test_cuda_setting_without_cuda_build_refuses() -> None:
    with pytest.raises(ProviderError, match="onnxruntime-gpu"):
        requested_providers("cuda", [CPU])


def test_auto_falls_back_to_cpu_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """onnxruntime-gpu lists CUDA even with no GPU, then silently runs on CPU."""
    with caplog.at_level(logging.WARNING, logger="denoise.runtime"):
        assert check_active("auto", [CUDA, CPU], [CPU], "graph.onnx") == CPU
    assert "falling back to CPU" in caplog.text


def test_cuda_setting_refuses_a_silent_fallback() -> None:
    with pytest.raises(ProviderError, match="could not use it"):
        check_active("cuda", [CUDA, CPU], [CPU], "graph.onnx")


def test_cuda_active_is_reported() -> None:
    assert check_active("cuda", [CUDA, CPU], [CUDA, CPU], "graph.onnx") == CUDA


def test_service_refuses_to_start_with_cuda_and_no_gpu() -> None:
    app = create_app(service_settings(providers="cuda"))
    with pytest.raises(ProviderError, match="CUDA"), TestClient(app):
        pass


def test_models_lists_bundle_and_provider(client: TestClient) -> None:
    response = client.get("/models")
    assert response.status_code == 200
    body = response.json()
    assert body["default_model"] == MODEL
    assert body["failed"] == {}
    (model,) = body["models"]
    assert model["name"] == MODEL
    assert model["provider"] == CPU
    assert model["image_shape"] == [28, 28, 1]
    assert set(model["graphs"]) == {"autoencoder", "encoder", "decoder", "scorer"}


def test_int8_autoencoder_serves_on_cpu_close_to_float32(
    client: TestClient, make_client: Callable[..., TestClient]
) -> None:
    """The bundle's int8 copy runs /denoise by default; DENOISE_INT8=false runs the float32 graph. Over a
    batch of noisy digits the two agree to within a few grey levels (the gate itself is on PSNR, at export)."""
    (info,) = client.get("/models").json()["models"]
    assert info["graphs"]["autoencoder"] == "autoencoder.int8.onnx"
    assert abs(info["int8"]["worst_psnr_delta_db"]) <= info["int8"]["gate_db"] == 0.05
    float32 = make_client(int8=False)
    (float_info,) = float32.get("/models").json()["models"]
    assert float_info["graphs"]["autoencoder"] == "autoencoder.onnx"
    assert float_info["graphs"]["encoder"] == info["graphs"]["encoder"] == "encoder.onnx"
    files = [("file", (f"{i}.png", png(digit(40 + i)), "image/png")) for i in range(16)]
    outputs = []
    for service in (client, float32):
        body = service.post("/denoise", files=files).json()
        outputs.append(np.stack([decode_png(base64.b64decode(image)).astype(int) for image in body["images"]]))
    assert_int8_close(outputs[0], outputs[1])
    assert not np.array_equal(outputs[0], outputs[1])  # really two different graphs


def test_bundle_without_int8_serves_float32(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    (bundle_copy / manifest.pop("int8")["graph"]["file"]).unlink()
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    client, ready = _start(bundle_copy)
    try:
        assert ready["status"] == "ready"
        (info,) = client.get("/models").json()["models"]
        assert info["graphs"]["autoencoder"] == "autoencoder.onnx"
        assert info["int8"] is None
    finally:
        client.__exit__(None, None, None)


def _start(bundle: Path) -> tuple[TestClient, dict[str, Any]]:
    client = TestClient(create_app(service_settings(model_dir=bundle.parent)))
    client.__enter__()
    return client, client.get("/health/ready").json()


def _assert_refused(bundle: Path, fragment: str) -> None:
    client, ready = _start(bundle)
    try:
        assert ready["status"] == "not ready"
        assert MODEL not in ready["models"]
        assert fragment in ready["failed"][MODEL]
        assert client.get("/models").json()["models"] == []
        assert client.get("/health/live").status_code == 200
    finally:
        client.__exit__(None, None, None)


def test_checksum_mismatch_refuses_the_model(bundle_copy: Path) -> None:
    graph = bundle_copy / "encoder.onnx"
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF
    graph.write_bytes(bytes(data))
    _assert_refused(bundle_copy, "encoder.onnx: SHA-256 differs")


@pytest.mark.parametrize("int8", [True, False])
def test_a_tampered_graph_the_service_would_not_run_still_refuses_the_model(
    bundle_copy: Path, make_client: Callable[..., TestClient], int8: bool
) -> None:
    """On CPU the int8 autoencoder runs, not the float32 one (and with DENOISE_INT8=false the other way
    round); the one not run is checked all the same: a bundle is whole or refused."""
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    idle = manifest["graphs"]["autoencoder"]["file"] if int8 else manifest["int8"]["graph"]["file"]
    graph = bundle_copy / idle
    graph.write_bytes(graph.read_bytes()[:-1] + b"\x00")
    client = make_client(model_dir=bundle_copy.parent, int8=int8)
    ready = client.get("/health/ready").json()
    assert ready["status"] == "not ready"
    assert f"{idle}: SHA-256 differs" in ready["failed"][MODEL]


def test_tampered_int8_graph_refuses_the_model(bundle_copy: Path) -> None:
    graph = bundle_copy / "autoencoder.int8.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\x00")
    _assert_refused(bundle_copy, "autoencoder.int8.onnx: SHA-256 differs")


def test_int8_graph_outside_its_gate_refuses_the_model(bundle_copy: Path) -> None:
    """A manifest cannot ship an int8 graph whose own evaluation says it costs more PSNR than its gate."""
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    row = manifest["int8"]["psnr"]["gaussian 0.5"]
    row["int8"] = row["float32"] - 0.2
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    _assert_refused(bundle_copy, "more than its gate")


def test_int8_graph_not_evaluated_on_every_row_refuses_the_model(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    del manifest["int8"]["psnr"]["poisson 5"]
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    _assert_refused(bundle_copy, "not evaluated on poisson 5")


def test_reasons_name_files_relative_to_the_model_folder_without_digests(bundle_copy: Path) -> None:
    graph = bundle_copy / "encoder.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\x00")
    client, ready = _start(bundle_copy)
    try:
        reason = ready["failed"][MODEL]
        assert reason.startswith(f"{MODEL}/encoder.onnx: ")
        assert str(bundle_copy.parent) not in reason
        assert not re.search("[0-9a-f]{64}", reason)
    finally:
        client.__exit__(None, None, None)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_graph_linked_to_an_endless_device_is_refused_at_once(bundle_copy: Path, device: str) -> None:
    """Only regular files are read: a device would be hashed for ever (and hold the repository's lock)."""
    (bundle_copy / "decoder.onnx").unlink()
    (bundle_copy / "decoder.onnx").symlink_to(device)
    started = time.monotonic()
    _assert_refused(bundle_copy, "decoder.onnx: not a regular file")
    assert time.monotonic() - started < 30


def test_graph_that_is_a_fifo_is_refused_without_blocking(bundle_copy: Path) -> None:
    (bundle_copy / "decoder.onnx").unlink()
    os.mkfifo(bundle_copy / "decoder.onnx")
    _assert_refused(bundle_copy, "decoder.onnx: not a regular file")


def test_manifest_over_its_size_limit_is_refused_unread(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["description"] = "x" * (MAX_MANIFEST_BYTES + 1)
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    _assert_refused(bundle_copy, f"over the limit of {MAX_MANIFEST_BYTES}")


def test_dangling_manifest_link_is_refused_with_its_reason(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.json").unlink()
    (bundle_copy / "manifest.json").symlink_to(bundle_copy / "gone.json")
    _assert_refused(bundle_copy, "manifest.json: not found (a dangling symlink)")


@pytest.mark.parametrize(
    ("index", "fragment"),
    [
        ('[{"file": "00.png", "label": "7"', "unusable"),  # truncated JSON
        ('[{"file": "missing.png", "label": "7"}]', "missing.png: not found"),
        ('[{"file": "../manifest.json", "label": "7"}]', "outside the samples folder"),
        ('{"file": "00.png"}', "not a list"),
    ],
)
def test_broken_samples_leave_the_model_serving_and_answer_404(bundle_copy: Path, index: str, fragment: str) -> None:
    (bundle_copy / "samples" / "index.json").write_text(index)
    client, ready = _start(bundle_copy)
    try:
        assert ready["status"] == "ready"
        response = client.get(f"/models/{MODEL}/samples")
        assert response.status_code == 404
        assert fragment in response.json()["error"]["message"]
        assert client.post("/denoise", content=png(digit(1)), headers={"content-type": "image/png"}).status_code == 200
    finally:
        client.__exit__(None, None, None)


def test_malformed_manifest_refuses_the_model(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.json").write_text("{not json")
    _assert_refused(bundle_copy, "manifest.json: unreadable manifest")


def test_manifest_missing_field_refuses_the_model(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    del manifest["latent_shape"]
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    _assert_refused(bundle_copy, "latent_shape")


def test_missing_graph_refuses_the_model(bundle_copy: Path) -> None:
    (bundle_copy / "decoder.onnx").unlink()
    _assert_refused(bundle_copy, "decoder.onnx")


def test_corrupt_graph_with_matching_checksum_refuses_the_model(bundle_copy: Path) -> None:
    from denoise_bundle import file_sha256

    graph = bundle_copy / "decoder.onnx"
    graph.write_bytes(b"this is not onnx")
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["graphs"]["decoder"]["sha256"] = file_sha256(graph)
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    _assert_refused(bundle_copy, "onnxruntime cannot load")


def test_manifest_disagreeing_with_graph_shape_refuses_the_model(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["latent_shape"] = [7, 7, 4]
    for graph, key in (("encoder", "output"), ("decoder", "input")):
        manifest["graphs"][graph][key]["shape"] = [None, 7, 7, 4]
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    _assert_refused(bundle_copy, "shape")


def test_missing_models_directory_is_not_ready(tmp_path: Path) -> None:
    client = TestClient(create_app(service_settings(model_dir=tmp_path / "absent", models="")))
    with client:
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert "no model bundles found" in ready.json()["failed"]["*"]


def test_concurrent_requests_run_as_one_batch(make_client: Any) -> None:
    """Requests queued while a batch runs are executed together, each caller getting its own result."""
    client = make_client(batch_max_size=8, batch_max_delay_ms=50)
    images = [png(digit(seed)) for seed in range(8)]
    expected = [client.post("/denoise", content=im, headers={"content-type": "image/png"}).content for im in images]
    before = _batch_sizes(client)

    async def send_all() -> list[bytes]:
        import httpx

        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            responses = await asyncio.gather(
                *(http.post("/denoise", content=im, headers={"content-type": "image/png"}) for im in images)
            )
        return [r.content for r in responses]

    assert client.portal is not None
    results = client.portal.call(send_all)
    assert results == expected
    after = _batch_sizes(client)
    assert after["count"] - before["count"] < len(images)  # fewer ONNX calls than requests
    assert after["sum"] - before["sum"] == len(images)


def _batch_sizes(client: TestClient) -> dict[str, float]:
    text = client.get("/metrics").text
    values = {"count": 0.0, "sum": 0.0}
    for line in text.splitlines():
        for key in values:
            prefix = f'denoise_inference_batch_size_{key}{{graph="autoencoder",model="{MODEL}"}}'
            if line.startswith(prefix):
                values[key] = float(line.split()[-1])
    return values


def test_batcher_rejects_at_once_when_queue_full() -> None:
    async def scenario() -> list[Any]:
        batcher = Batcher(lambda x: (x * 2,), name="t", max_batch=1, max_delay_s=0, queue_size=1)
        batcher.start()
        calls = [batcher.submit(np.full((1, 2), i, dtype=np.float32)) for i in range(3)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        await batcher.stop()
        return results

    first, *rest = asyncio.run(scenario())
    assert np.array_equal(first[0], np.zeros((1, 2)))  # the queued request still completes
    assert all(isinstance(r, Overloaded) and r.headers["Retry-After"] == "1" for r in rest)


def test_batcher_splits_every_output_back_to_callers() -> None:
    async def scenario() -> list[tuple[np.ndarray, ...]]:
        batcher = Batcher(lambda x: (x + 1, -x[:, 0]), name="t", max_batch=8, max_delay_s=0.05, queue_size=16)
        batcher.start()
        sizes = [1, 3, 2]
        calls = [batcher.submit(np.full((n, 1), i, dtype=np.float32)) for i, n in enumerate(sizes)]
        results = await asyncio.gather(*calls)
        await batcher.stop()
        return list(results)

    results = asyncio.run(scenario())
    for i, ((first, second), n) in enumerate(zip(results, [1, 3, 2], strict=True)):
        assert first.shape == (n, 1)
        assert np.all(first == i + 1)
        assert np.array_equal(second, np.full(n, -i))


@pytest.mark.parametrize(("merge", "expected_calls"), [(True, [4, 4, 3]), (False, [4, 4, 2, 1])])
def test_large_request_runs_in_chunks_of_max_batch(merge: bool, expected_calls: list[int]) -> None:
    """No ONNX Runtime call exceeds max_batch (its shapes were warmed); results keep their order;
    with merging on, the last chunk shares its call with the request queued behind it."""
    calls: list[int] = []
    observed: list[int] = []

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(x))
        return x * 10, x[:, 0] + 1

    async def scenario() -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        batcher = Batcher(
            run, name="t", max_batch=4, max_delay_s=0, queue_size=8, merge=merge, on_batch=observed.append
        )
        batcher.start()
        large, small = await asyncio.gather(
            batcher.submit(np.arange(10, dtype=np.float32)[:, None]),
            batcher.submit(np.full((1, 1), -1, dtype=np.float32)),
        )
        await batcher.stop()
        return large, small

    large, small = asyncio.run(scenario())
    assert np.array_equal(large[0][:, 0], np.arange(10) * 10)
    assert np.array_equal(large[1], np.arange(10) + 1)  # every output's chunks join in order
    assert np.array_equal(small[0], [[-10]])
    assert calls == expected_calls
    assert observed == calls


def test_batches_run_concurrently_up_to_the_limit() -> None:
    """With concurrency 2, two ONNX Runtime calls are in flight at once (each waits for the other)."""
    both_running = threading.Barrier(2, timeout=5)

    def run(x: np.ndarray) -> tuple[np.ndarray]:
        both_running.wait()
        return (x + 1,)

    async def scenario() -> tuple[np.ndarray, ...]:
        batcher = Batcher(run, name="t", max_batch=2, max_delay_s=0, queue_size=8, concurrency=2)
        batcher.start()
        result = await batcher.submit(np.arange(4, dtype=np.float32)[:, None])  # two chunks of 2
        await batcher.stop()
        return result

    assert np.array_equal(asyncio.run(scenario())[0][:, 0], np.arange(4) + 1)


def test_batching_off_never_merges() -> None:
    calls: list[int] = []

    def run(x: np.ndarray) -> tuple[np.ndarray]:
        calls.append(len(x))
        return (x,)

    async def scenario() -> None:
        batcher = Batcher(run, name="t", max_batch=8, max_delay_s=0.05, queue_size=8, merge=False)
        batcher.start()
        await asyncio.gather(*(batcher.submit(np.zeros((1, 1), dtype=np.float32)) for _ in range(4)))
        await batcher.stop()

    asyncio.run(scenario())
    assert calls == [1, 1, 1, 1]


def test_batches_run_while_the_next_is_produced() -> None:
    """submit_batches: the first batch is on its inference thread while the producer, holding the event
    loop as decoding does, makes the next; the outputs come back whole and in order."""
    first_running = threading.Event()

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first_running.set()
        return x + 1, x[:, 0]

    async def batches() -> AsyncIterator[np.ndarray]:
        yield np.zeros((4, 1), dtype=np.float32)
        assert first_running.wait(timeout=5), "the first batch had not started"  # blocks the loop
        yield np.ones((4, 1), dtype=np.float32)
        yield np.full((2, 1), 2, dtype=np.float32)

    async def scenario() -> tuple[np.ndarray, ...]:
        batcher = Batcher(run, name="t", max_batch=4, max_delay_s=0, queue_size=8)
        batcher.start()
        outputs = await batcher.submit_batches(batches())
        await batcher.stop()
        return outputs

    first, second = asyncio.run(scenario())
    assert first[:, 0].tolist() == [1] * 4 + [2] * 4 + [3] * 2
    assert second.tolist() == [0] * 4 + [1] * 4 + [2] * 2


def test_a_failing_producer_withdraws_its_queued_batches() -> None:
    calls: list[int] = []
    release = threading.Event()

    def run(x: np.ndarray) -> tuple[np.ndarray]:
        calls.append(len(x))
        release.wait(timeout=5)
        return (x,)

    async def batches() -> AsyncIterator[np.ndarray]:
        yield np.zeros((4, 1), dtype=np.float32)  # runs
        yield np.zeros((3, 1), dtype=np.float32)  # queues behind it: one inference thread
        raise InvalidInput("image 7 is not a PNG", index=7)

    async def scenario() -> None:
        batcher = Batcher(run, name="t", max_batch=4, max_delay_s=0, queue_size=8)
        batcher.start()
        with pytest.raises(InvalidInput):
            await batcher.submit_batches(batches())
        release.set()
        await batcher.stop()

    asyncio.run(scenario())
    assert calls == [4]  # the running batch finished; the queued one never ran


def test_a_batch_larger_than_max_batch_is_refused() -> None:
    async def batches() -> AsyncIterator[np.ndarray]:
        yield np.zeros((5, 1), dtype=np.float32)

    async def scenario() -> None:
        batcher = Batcher(lambda x: (x,), name="t", max_batch=4, max_delay_s=0, queue_size=8)
        batcher.start()
        with pytest.raises(ValueError, match="more than max_batch"):
            await batcher.submit_batches(batches())
        await batcher.stop()

    asyncio.run(scenario())


def _thread_recording_batcher(alone: bool, threads: list[str]) -> Batcher:
    def run(x: np.ndarray) -> tuple[np.ndarray]:
        threads.append(threading.current_thread().name)
        return (x + 1,)

    return Batcher(run, name="t", max_batch=8, max_delay_s=0, queue_size=8, alone=lambda: alone)


@pytest.mark.parametrize("alone", [True, False])
def test_an_idle_batcher_runs_a_lone_small_request_on_the_spot(alone: bool) -> None:
    """The only request in progress, a small one, at an idle batcher: no hop to an inference thread."""
    threads: list[str] = []

    async def scenario() -> tuple[np.ndarray, ...]:
        batcher = _thread_recording_batcher(alone, threads)
        batcher.start()
        result = await batcher.submit(np.zeros((2, 1), dtype=np.float32))
        await batcher.stop()
        return result

    assert np.array_equal(asyncio.run(scenario())[0], np.ones((2, 1)))
    assert threads == [threading.current_thread().name if alone else "infer-t_0"]


def test_requests_started_in_the_same_turn_of_the_loop_run_as_one_batch() -> None:
    """Requests whose tasks start one after the other (as the server's, read in one turn of the loop) are
    each alone when they start; the batcher lets them all arrive before deciding, and runs them as one
    batch on an inference thread, not one by one on the loop."""
    threads: list[str] = []
    sizes: list[int] = []
    in_progress = 0

    def run(x: np.ndarray) -> tuple[np.ndarray]:
        threads.append(threading.current_thread().name)
        return (x + 1,)

    async def scenario() -> list[tuple[np.ndarray, ...]]:
        batcher = Batcher(
            run,
            name="t",
            max_batch=8,
            max_delay_s=0,
            queue_size=8,
            on_batch=sizes.append,
            alone=lambda: in_progress <= 1,
        )
        batcher.start()

        async def request(value: float) -> tuple[np.ndarray, ...]:
            nonlocal in_progress
            in_progress += 1
            try:
                return await batcher.submit(np.full((1, 1), value, dtype=np.float32))
            finally:
                in_progress -= 1

        results = await asyncio.gather(*(request(value) for value in range(4)))
        alone = await request(10.0)  # the only one: run on the spot
        await batcher.stop()
        return [*results, alone]

    results = asyncio.run(scenario())
    assert [float(result[0][0, 0]) for result in results] == [1.0, 2.0, 3.0, 4.0, 11.0]
    assert sizes == [4, 1]
    assert threads == ["infer-t_0", threading.current_thread().name]


def test_a_larger_request_and_what_queues_behind_it_go_to_an_inference_thread() -> None:
    """Above INLINE_MAX_IMAGES a request queues; a small one behind it merges with it, not run on the spot."""
    threads: list[str] = []

    async def scenario() -> None:
        batcher = _thread_recording_batcher(True, threads)
        batcher.start()
        big = batcher.submit(np.zeros((INLINE_MAX_IMAGES + 1, 1), dtype=np.float32))
        small = batcher.submit(np.zeros((1, 1), dtype=np.float32))
        results = await asyncio.gather(big, small)
        assert [len(r[0]) for r in results] == [INLINE_MAX_IMAGES + 1, 1]
        await batcher.stop()

    asyncio.run(scenario())
    assert threads == ["infer-t_0"]  # one call, on the inference thread


@pytest.mark.parametrize(
    ("env", "threads", "concurrency"),
    [
        ({"workers": 2}, None, 2),  # one thread per call; two calls per graph when a worker is alone
        ({"workers": 1, "threads": 2}, 2, 1),  # one call already uses the budget
        ({"workers": 2, "threads": 1, "batch_concurrency": 3}, 1, 3),  # explicit
    ],
)
def test_cpu_budget_defaults(env: dict[str, int], threads: int | None, concurrency: int) -> None:
    settings = service_settings(**env)
    if threads is not None:
        assert settings.intra_op_threads == threads
    assert settings.concurrent_batches == concurrency
