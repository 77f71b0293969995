"""The anomaly score on every endpoint: headers for one image, lists in input order for JSON, the
threshold read from the manifest, typical test images passed and unlike ones flagged."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import MODEL, MODELS, png

PNG = {"content-type": "image/png"}
JSON = {"accept": "application/json"}


def samples() -> list[bytes]:
    """The bundle's clean test images (three per class)."""
    folder = MODELS / MODEL / "samples"
    return [(folder / item["file"]).read_bytes() for item in json.loads((folder / "index.json").read_text())]


def inverted(image: bytes) -> bytes:
    """The same image dark on light: a scan sent without ``invert=true``."""
    from tests.images import decode_png

    return png(255 - decode_png(image))


def header_score(response: object) -> tuple[float, bool]:
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["x-anomaly"] in {"true", "false"}
    return float(headers["x-anomaly-score"]), headers["x-anomaly"] == "true"


def threshold(client: TestClient) -> float:
    (model,) = [m for m in client.get("/models").json()["models"] if m["name"] == MODEL]
    return float(model["anomaly"]["threshold"])


def test_models_lists_the_manifest_method_threshold_and_evaluation(client: TestClient) -> None:
    manifest = json.loads((MODELS / MODEL / "manifest.json").read_text())["anomaly"]
    (model,) = [m for m in client.get("/models").json()["models"] if m["name"] == MODEL]
    assert model["anomaly"]["method"] == manifest["method"]
    assert model["anomaly"]["threshold"] == manifest["threshold"]
    assert model["anomaly"]["false_flags"] == manifest["false_flags"]
    assert set(model["anomaly"]["against"]) == set(manifest["against"])
    assert "details" not in model["anomaly"]


@pytest.mark.parametrize("path", ["/denoise", "/encode", "/reconstruct"])
def test_one_image_gets_its_score_and_flag_in_headers(client: TestClient, path: str) -> None:
    response = client.post(path, content=samples()[0], headers=PNG)
    assert response.status_code == 200
    score, flagged = header_score(response)
    assert np.isfinite(score)
    assert flagged == (score > threshold(client))


@pytest.mark.parametrize("path", ["/denoise", "/encode", "/reconstruct"])
def test_batches_list_scores_and_flags_in_input_order(client: TestClient, path: str) -> None:
    images = [*samples()[:3], inverted(samples()[0]), samples()[3]]
    singles = [header_score(client.post(path, content=image, headers=PNG)) for image in images]
    response = client.post(
        path, files=[("file", (f"{i}.png", image, "image/png")) for i, image in enumerate(images)], headers=JSON
    )
    assert response.status_code == 200
    body = response.json()
    assert "x-anomaly-score" not in response.headers  # several images: in the body only
    assert len(body["anomaly_scores"]) == len(body["anomalous"]) == len(images)
    assert body["anomalous"] == [flag for _, flag in singles]
    assert np.allclose(body["anomaly_scores"], [score for score, _ in singles], atol=1e-4)
    assert body["anomalous"][3]
    assert not body["anomalous"][0]


def test_single_image_as_json_carries_both(client: TestClient) -> None:
    response = client.post("/denoise", content=samples()[1], headers={**PNG, **JSON})
    body = response.json()
    score, flagged = header_score(response)
    assert body["anomalous"] == [flagged]
    assert body["anomaly_scores"] == [pytest.approx(score, abs=1e-4)]


def test_latents_have_no_score(client: TestClient) -> None:
    encoded = client.post("/encode", content=samples()[0], headers=PNG).json()
    assert len(encoded["anomaly_scores"]) == 1
    one = client.post("/reconstruct", json=encoded)  # /encode's answer is accepted as it is
    assert one.status_code == 200
    assert "x-anomaly-score" not in one.headers
    two = client.post("/reconstruct", json={**encoded, "latents": encoded["latents"] * 2})
    assert "anomaly_scores" not in two.json()


def test_typical_test_images_pass_and_unlike_ones_are_flagged(client: TestClient) -> None:
    clean = [header_score(client.post("/denoise", content=image, headers=PNG))[1] for image in samples()]
    flipped = [header_score(client.post("/denoise", content=inverted(i), headers=PNG))[1] for i in samples()]
    assert not clean[0]
    assert sum(clean) <= 1  # the calibration lets about 2% of typical inputs through as flagged
    assert all(flipped)
    other = "fashion-mnist" if MODEL == "mnist" else "mnist"
    garments = [(MODELS / other / "samples" / f"{i:02d}.png").read_bytes() for i in range(0, 30, 3)]
    flagged = [header_score(client.post("/denoise", content=image, headers=PNG))[1] for image in garments]
    assert sum(flagged) >= 8


@pytest.mark.parametrize(("value", "expect"), [(-1e9, "true"), (1e9, "false")])
def test_threshold_is_read_from_the_manifest(
    bundle_copy: Path, make_client: Callable[..., TestClient], value: float, expect: str
) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["anomaly"]["threshold"] = value
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    client = make_client(model_dir=bundle_copy.parent)
    assert threshold(client) == value
    response = client.post("/denoise", content=samples()[0], headers=PNG)
    assert response.headers["x-anomaly"] == expect
    batch = client.post("/encode", files=[("file", ("a.png", samples()[0], "image/png"))] * 2).json()
    assert batch["anomalous"] == [expect == "true"] * 2


def test_scoring_can_be_turned_off(make_client: Callable[..., TestClient]) -> None:
    client = make_client(anomaly_scores=False)
    response = client.post("/denoise", content=samples()[0], headers=PNG)
    assert response.status_code == 200
    assert "x-anomaly-score" not in response.headers
    assert "anomaly_scores" not in client.post("/encode", content=samples()[0], headers=PNG).json()
