"""Logs: one JSON object per line on stderr from every process, an access line per request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.images import digit, png
from tests.server import REPO, TEST_SETTINGS, running_server


def _lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text, "the server wrote nothing on stderr"
    return [json.loads(line) for line in text.splitlines()]  # fails on any line that is not JSON


def test_multi_worker_server_writes_json_lines_with_an_access_line_per_request(tmp_path: Path) -> None:
    log_file = tmp_path / "stderr.log"
    env = {**TEST_SETTINGS, "DENOISE_WORKERS": "2", "DENOISE_LOG_LEVEL": "info"}
    sent: dict[str, int] = {}
    with log_file.open("wb") as stderr, running_server(env, stderr=stderr) as (url, _):
        body = png(digit(0))
        for number in range(12):
            # A connection per request, so that both workers answer some.
            rid = f"logs-test-{number}"
            response = httpx.post(
                f"{url}/denoise", content=body, headers={"Content-Type": "image/png", "X-Request-ID": rid}
            )
            sent[rid] = response.status_code
        bad = httpx.post(
            f"{url}/denoise", content=b"junk", headers={"Content-Type": "image/png", "X-Request-ID": "bad-1"}
        )
        sent["bad-1"] = bad.status_code
        assert httpx.get(f"{url}/health/live", headers={"X-Request-ID": "probe-1"}).status_code == 200
    lines = _lines(log_file)
    assert all({"time", "level", "logger", "message", "pid"} <= line.keys() for line in lines)
    access = {line["request_id"]: line for line in lines if line["logger"] == "denoise.access"}
    assert "probe-1" not in access  # liveness probes stay out of the access log
    ours = {rid: line for rid, line in access.items() if line["path"] == "/denoise"}
    assert set(ours) == set(sent)  # every request, once
    for rid, status in sent.items():
        line = access[rid]
        assert line["status"] == status
        assert line["endpoint"] == "/denoise"
        assert line["method"] == "POST"
        assert line["duration_ms"] > 0
    assert access["logs-test-0"]["model"] == "mnist"
    assert access["logs-test-0"]["images"] == 1
    assert sent["bad-1"] == 400
    workers = {line["pid"] for line in lines if "loaded from" in line["message"]}
    assert len(workers) == 2, "each worker logs its model loading"
    assert all("CPUExecutionProvider" in line["message"] for line in lines if "loaded from" in line["message"])
    assert any(line["logger"].startswith("uvicorn") for line in lines)


def test_text_format_for_a_terminal(tmp_path: Path) -> None:
    log_file = tmp_path / "stderr.log"
    env = {**TEST_SETTINGS, "DENOISE_LOG_LEVEL": "info", "DENOISE_LOG_FORMAT": "text"}
    with log_file.open("wb") as stderr, running_server(env, stderr=stderr) as (url, _):
        httpx.post(
            f"{url}/denoise", content=png(digit(0)), headers={"Content-Type": "image/png", "X-Request-ID": "t-1"}
        )
    text = log_file.read_text()
    access = [line for line in text.splitlines() if "denoise.access: POST" in line]
    assert len(access) == 1
    assert "POST /denoise 200 model=mnist images=1" in access[0]
    assert "request_id=t-1" in access[0]
    assert not text.lstrip().startswith("{")


def test_text_logs_escape_what_a_client_sends(tmp_path: Path) -> None:
    """A path with an encoded newline, a raw CR or an ANSI escape cannot forge or colour a text log line."""
    log_file = tmp_path / "stderr.log"
    env = {**TEST_SETTINGS, "DENOISE_LOG_LEVEL": "info", "DENOISE_LOG_FORMAT": "text"}
    forged = "2026-12-02 00:00:00,000 INFO    denoise.access: FORGED"
    with log_file.open("wb") as stderr, running_server(env, stderr=stderr) as (url, _):
        assert httpx.get(f"{url}/nothing%0a{forged.replace(' ', '%20')}").status_code == 404
        assert httpx.get(f"{url}/nothing%0d%1b[31mred").status_code == 404
        assert httpx.get(f"{url}/x", headers={"X-Request-ID": "id\x1b[31m"}).status_code in (400, 404)
    lines = log_file.read_text().splitlines()
    assert not any(line.startswith("2026-12-02 00:00:00") for line in lines)
    assert not any("\x1b" in line or "\r" in line for line in lines)
    assert any("FORGED" in line and "\\x0a" in line for line in lines)


def test_library_warnings_become_json_lines() -> None:
    """In a process of its own: configuring logging here would replace pytest's handlers."""
    code = (
        "import logging, warnings\n"
        "from app.logs import configure\n"
        "configure('info', 'json')\n"
        "warnings.warn('something odd in a library', UserWarning, stacklevel=1)\n"
        "logging.getLogger('onnxruntime').error('a library error')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["logger"] for line in lines] == ["py.warnings", "onnxruntime"]
    assert "something odd in a library" in lines[0]["message"]
    assert lines[1]["level"] == "ERROR"


def test_records_skip_the_fields_no_format_shows() -> None:
    """The caller's function and line (a walk up the stack per record) and the thread are not looked up;
    the pid, which JSON lines carry, is."""
    code = (
        "import logging, os\n"
        "from app.logs import configure\n"
        "configure('info', 'json')\n"
        "records = []\n"
        "handler = logging.Handler()\n"
        "handler.emit = records.append\n"
        "logging.getLogger('denoise').addHandler(handler)\n"
        "logging.getLogger('denoise').info('fields')\n"
        "(r,) = records\n"
        "print(r.funcName, r.lineno, r.thread, r.processName, r.process == os.getpid(), sep='|')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "(unknown function)|0|None|None|True"
    (line,) = [json.loads(text) for text in result.stderr.splitlines()]
    assert (line["logger"], line["message"], line["pid"] > 0) == ("denoise", "fields", True)
