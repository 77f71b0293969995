"""Metrics for operators: queue depth and requests in flight per model (what an autoscaler targets),
anomaly scores and flagged inputs per model (drift), summed correctly across workers."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MODEL, digit, png
from tests.server import TEST_SETTINGS, poll, running_server

PNG = {"content-type": "image/png"}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_anomaly_scores_and_flagged_inputs_per_model(client: TestClient) -> None:
    before = _samples(client.get("/metrics").text)
    digits = [png(digit(seed)) for seed in range(4)]
    files = [("file", (f"{i}.png", image, "image/png")) for i, image in enumerate(digits)]
    answer = client.post("/denoise", files=files).json()
    blank = np.full((28, 28), 255, dtype=np.uint8)  # a white page: nothing like a digit
    flagged_answer = client.post("/denoise", content=png(blank), headers=PNG)
    assert flagged_answer.headers["x-anomaly"] == "true"
    after = _samples(client.get("/metrics").text)
    scored = _value(after, "denoise_anomaly_score_count", model=MODEL) - _value(
        before, "denoise_anomaly_score_count", model=MODEL
    )
    assert scored == 5
    flagged = _value(after, "denoise_flagged_images_total", model=MODEL) - _value(
        before, "denoise_flagged_images_total", model=MODEL
    )
    assert flagged == 1 + sum(answer["anomalous"])


def test_queue_and_work_in_flight_are_sampled_from_the_batchers(make_client: Any) -> None:
    """While a request waits in a one-second batching window the gauges show it; once it is answered,
    they fall back to zero (sampled every WORK_SAMPLE_S, so a request pays nothing for them)."""
    client: TestClient = make_client(batch_max_delay_ms=1000)
    answers: list[int] = []
    waiting = threading.Thread(
        target=lambda: answers.append(client.post("/denoise", content=png(digit(7)), headers=PNG).status_code)
    )
    waiting.start()
    try:
        poll(lambda: _gauge(client, "denoise_model_work_in_flight", model=MODEL) >= 1, 5, "work in flight shown")
    finally:
        waiting.join(timeout=30)
    assert answers == [200]
    poll(lambda: _gauge(client, "denoise_model_work_in_flight", model=MODEL) == 0, 5, "back to zero")
    samples = _samples(client.get("/metrics").text)
    assert _value(samples, "denoise_queue_depth", graph="autoencoder", model=MODEL) == 0


def _gauge(client: TestClient, name: str, **labels: str) -> float:
    return _value(_samples(client.get("/metrics").text), name, **labels)


def test_gauges_and_histograms_sum_over_workers() -> None:
    env = {**TEST_SETTINGS, "DENOISE_WORKERS": "2"}
    with running_server(env) as (url, _):
        for seed in range(12):
            # A connection per request, so that both workers answer some.
            response = httpx.post(f"{url}/denoise", content=png(digit(seed)), headers=PNG)
            assert response.status_code == 200
        scrapes = [_samples(httpx.get(f"{url}/metrics").text) for _ in range(4)]
    for samples in scrapes:  # whichever worker answers the scrape, the totals are the service's
        assert _value(samples, "denoise_anomaly_score_count", model=MODEL) == 12
        gauges = [key for key in samples if key[0] == "denoise_model_work_in_flight"]
        assert gauges
        assert all(dict(labels).keys() == {"model"} for _, labels in gauges)  # one series, not one per worker
