"""The Grafana dashboard (deploy/grafana/): every panel's query, run by a real Prometheus scraping a real
two-worker service under mixed traffic, parses and returns data; variables and data sources are consistent."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import yaml

from tests.deploy.tools import prometheus_tool
from tests.images import decode_png
from tests.server import MODEL, MODELS, REPO, TEST_SETTINGS, free_port, poll, running_server, stop_tree

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "denoise.json"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
PNG = {"content-type": "image/png"}
ADMIN_KEY = "dashboard-test-admin"
#: What the panels' Grafana variables stand for in the test: every model and protocol, and a window
#: that covers the traffic sent.
VARIABLES = {"$__rate_interval": "1m", "$model": ".+", "$protocol": ".+"}


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def _panels() -> list[dict[str, Any]]:
    return [panel for panel in _dashboard()["panels"] if panel["type"] != "row"]


def _queries() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in _panels() for target in panel["targets"]]


def test_dashboard_is_consistent() -> None:
    dashboard = _dashboard()
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert variables == {"datasource", "model", "protocol"}
    titles = [panel["title"] for panel in _panels()]
    assert len(titles) == len(set(titles)), "panel titles repeat"
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in _panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["description"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables, (panel["title"], used - variables)
    for path in PROVISIONING.glob("*.yml"):
        assert yaml.safe_load(path.read_text())["apiVersion"] == 1


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A two-worker service (one request in progress per worker, so that bursts are shed) and a real
    Prometheus scraping it every second; yields the service's URL, its gRPC address and Prometheus's URL."""
    binary = prometheus_tool("prometheus")
    grpc_port = free_port()
    env = {
        **TEST_SETTINGS,
        "DENOISE_WORKERS": "2",
        "DENOISE_MAX_INFLIGHT": "1",
        "DENOISE_GRPC_PORT": str(grpc_port),
        "DENOISE_ADMIN_API_KEYS": ADMIN_KEY,
    }
    with running_server(env) as (url, _):
        port = free_port()
        config = tmp_path / "prometheus.yml"
        target = url.removeprefix("http://")
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [{"job_name": "denoise", "static_configs": [{"targets": [target]}]}],
                }
            )
        )
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        prometheus_url = f"http://127.0.0.1:{port}"
        try:
            poll(lambda: _ok(f"{prometheus_url}/-/ready"), 30, "Prometheus ready")
            yield url, f"127.0.0.1:{grpc_port}", prometheus_url
        finally:
            stop_tree(process)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _samples() -> list[bytes]:
    folder = MODELS / MODEL / "samples"
    return [(folder / item["file"]).read_bytes() for item in json.loads((folder / "index.json").read_text())]


def _v2(image: bytes, timeout_us: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [{"name": "png", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(image).decode()]}]
    }
    if timeout_us is not None:
        body["parameters"] = {"timeout": timeout_us}
    return body


def _traffic(url: str, grpc_address: str, seconds: float) -> dict[int, int]:
    """Everything the panels show, for ``seconds``: a model reload, served requests on every protocol,
    bad images, images unlike the training data, expired deadlines and bursts that are shed. Returns
    the HTTP statuses seen."""
    from tests.images import png

    digits = _samples()
    unusual = png(255 - decode_png(digits[0]))  # a scan sent dark on light: flagged
    statuses: dict[int, int] = {}

    async def burst(client: httpx.AsyncClient) -> None:
        files = [("file", (f"{i}.png", digits[i % len(digits)], "image/png")) for i in range(32)]
        responses = await asyncio.gather(*(client.post("/denoise", files=files) for _ in range(8)))
        for response in responses:
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    grpc_client = triton_grpc.InferenceServerClient(grpc_address)
    tensor = triton_grpc.InferInput("png", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([digits[1]], dtype=np.object_))
    ends = time.monotonic() + seconds
    try:
        with httpx.Client(base_url=url) as client:
            # A model version loaded (in every worker) and a request the repository refuses.
            admin = {"authorization": f"Bearer {ADMIN_KEY}"}
            assert client.post(f"/v2/repository/models/{MODEL}/load", headers=admin).status_code == 200
            while time.monotonic() < ends:
                for response in (
                    client.post("/denoise", content=digits[0], headers=PNG),
                    client.post("/denoise", content=unusual, headers=PNG),
                    client.post("/denoise", content=b"not an image", headers=PNG),
                    client.post(f"/v2/models/{MODEL}/infer", json=_v2(digits[2])),
                    client.post(f"/v2/models/{MODEL}/infer", json=_v2(digits[2], timeout_us=1)),
                ):
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                grpc_client.infer(MODEL, [tensor])

                async def bursts() -> None:
                    async with httpx.AsyncClient(base_url=url, timeout=30) as async_client:
                        await burst(async_client)

                asyncio.run(bursts())
    finally:
        grpc_client.close()
    return statuses


def _values(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def test_every_panel_query_returns_data_from_a_real_prometheus(prometheus: tuple[str, str, str]) -> None:
    url, grpc_address, prometheus_url = prometheus
    poll(
        lambda: _ok(f"{prometheus_url}/api/v1/query?query=up") and _up(prometheus_url),
        30,
        "Prometheus scraping the service",
    )
    statuses = _traffic(url, grpc_address, seconds=8)
    assert {200, 400, 503, 504} <= set(statuses), statuses

    def query(expr: str) -> dict[str, Any]:
        for name, value in VARIABLES.items():
            expr = expr.replace(name, value)
        response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expr})
        assert response.status_code == 200, (expr, response.text)  # it parses
        body: dict[str, Any] = response.json()
        return body

    def empty() -> list[str]:
        missing = []
        for title, expr in _queries():
            values = _values(query(expr)["data"]["result"])
            if not any(math.isfinite(value) for value in values):
                missing.append(title)
        return missing

    missing: list[str] = []

    def complete() -> bool:
        missing[:] = empty()
        return not missing

    try:
        poll(complete, 30, "data in every panel")  # the next scrapes see all of the traffic
    except AssertionError:
        raise AssertionError(f"panels without data: {missing}") from None
    # The model variable's values come from the service's series.
    labels = httpx.get(
        f"{prometheus_url}/api/v1/label/model/values", params={"match[]": "denoise_images_total"}
    ).json()["data"]
    assert MODEL in labels


def _up(prometheus_url: str) -> bool:
    result = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": 'up{job="denoise"}'}).json()["data"]["result"]
    return bool(result) and result[0]["value"][1] == "1"


def test_operations_doc_describes_every_panel() -> None:
    section = (REPO / "docs" / "operations.md").read_text().split("\n## Dashboard\n", 1)[1].split("\n## ", 1)[0]
    for panel in _panels():
        assert f"| {panel['title']} | {panel['description']} |" in section, panel["title"]
