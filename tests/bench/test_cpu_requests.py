"""``bench.cpu --request``: each request it names is one the service answers (the bodies it writes are
checked against a running service), and a run of one measures our service alone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench.cpu import REQUESTS, workload
from tests.server import REPO, TEST_SETTINGS, running_server

pytestmark = pytest.mark.slow


def test_every_request_is_answered_with_200(tmp_path: Path) -> None:
    with running_server({**TEST_SETTINGS, "DENOISE_MAX_BATCH_IMAGES": "256"}) as (url, _):
        for name in REQUESTS:
            load = workload(name, tmp_path)
            response = httpx.post(
                f"{url}{load.path}", content=load.body.read_bytes(), headers={"content-type": load.content_type}
            )
            assert response.status_code == 200, (name, response.text[:300])
            if name == "batch256":
                assert len(response.json()["images"]) == load.images == 256


def test_a_request_other_than_denoise_measures_our_service_alone() -> None:
    if shutil.which("wrk") is None and not os.environ.get("CI"):
        pytest.skip("needs wrk (apt-get install wrk; .ci/run installs it)")
    command = [sys.executable, "-m", "bench.cpu", "--rounds", "1", "--seconds", "1", "--request", "encode"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^ours +CPU [\d.]+ ms/request .* errors 0", result.stdout, re.MULTILINE)
    assert "lean script" not in result.stdout
