"""Shared fixtures: the committed model bundles, PNG builders and a TestClient running the lifespan."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
MODEL = "mnist"


def png(pixels: np.ndarray, mode: str | None = None, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def digit(seed: int) -> np.ndarray:
    """A light stroke on black, different for every seed, like the images the models learned."""
    rng = np.random.default_rng(seed)
    image = np.zeros((28, 28), dtype=np.uint8)
    row, col = rng.integers(6, 22, size=2)
    image[row - 4 : row + 4, max(col - 1, 0) : col + 2] = 255
    image[max(row - 5, 0), 6:22] = rng.integers(100, 256)
    noisy = image.astype(np.float32) + rng.normal(0, 60, size=image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        assert image.mode == "L"
        assert image.size == (28, 28)
        return np.asarray(image)


def service_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "model_dir": MODELS,
        "models": MODEL,
        "default_model": MODEL,
        "batch_max_size": 8,
        "max_batch_images": 32,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(service_settings())) as test_client:
        yield test_client


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """Build a client with other settings; each is closed (lifespan shut down) after the test."""
    opened: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        test_client = TestClient(create_app(service_settings(**overrides)))
        test_client.__enter__()
        opened.append(test_client)
        return test_client

    yield make
    for test_client in opened:
        test_client.__exit__(None, None, None)


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    """A writable copy of the committed bundle, for tests that damage it."""
    target = tmp_path / "models" / MODEL
    shutil.copytree(MODELS / MODEL, target, ignore=shutil.ignore_patterns("report"))
    return target
