"""Shared fixtures: the committed model bundles, PNG builders and a TestClient running the lifespan."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.images import decode_png, digit, png
from tests.server import MODEL, MODELS, REPO

__all__ = ["MODEL", "MODELS", "REPO", "decode_png", "digit", "png", "service_settings"]


def service_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "model_dir": MODELS,
        "models": MODEL,
        "default_model": MODEL,
        "batch_max_size": 8,
        "max_batch_images": 32,
        "grpc_port": 0,
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
