"""The Docker engine and the image, built once per test session for every container test."""

from __future__ import annotations

import pytest

from tests.deploy.engine import Engine, build_image, start_engine


@pytest.fixture(scope="session")
def engine() -> Engine:
    return start_engine()


@pytest.fixture(scope="session")
def image(engine: Engine) -> float:
    """Build the image as a user builds it; seconds the build took."""
    return build_image(engine)
