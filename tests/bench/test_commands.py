"""The benchmark commands the docs give, run briefly as written (figures are not judged here: a
shared machine cannot time anything fairly inside a test suite)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.server import REPO

pytestmark = pytest.mark.slow


def _run(*argv: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_guard_measures_both_and_fails_below_its_limit() -> None:
    """Two rounds (the lean script first in the second), a ratio per round and their median; a limit no
    service can meet fails the run, naming what failed."""
    if shutil.which("wrk") is None and not os.environ.get("CI"):
        pytest.skip("needs wrk (apt-get install wrk; .ci/run installs it)")
    command = [sys.executable, "-m", "bench.guard", "--rounds", "2", "--seconds", "1", "--min-ratio", "1000"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    rounds = [line.split()[2] for line in lines if re.match(r"round \d (ours|lean script) +CPU ", line)]
    assert rounds == ["ours", "lean", "lean", "ours"]
    assert len([line for line in lines if re.match(r"round \d lean script / ours: [\d.]+x$", line)]) == 2
    assert re.search(r"int8 autoencoder, batch 64, 1 thread: \d+ µs per image", result.stdout)
    assert "bench.guard: FAIL: CPU per request only" in result.stdout
    assert "(needs 1000.0x)" in result.stdout


def test_liveness_bench_runs_both_front_doors() -> None:
    output = _run("bench.liveness", "--seconds", "2")
    assert "/v2/models/mnist/infer" in output
    assert "/denoise?resize=true" in output
    assert output.count("/health/live p50") == 2


def test_cpu_bench_compares_with_the_lean_script() -> None:
    if shutil.which("wrk") is None and not os.environ.get("CI"):
        pytest.skip("needs wrk (apt-get install wrk; .ci/run installs it)")
    setting = "DENOISE_BATCH_CONCURRENCY=1"
    output = _run("bench.cpu", "--rounds", "1", "--seconds", "2", "--before", "HEAD", "--env", setting, "--floor")
    assert "lean script's CPU per request / ours:" in output
    assert "lean script's CPU per request / ours at HEAD:" in output  # the same service, checked out apart
    assert f"lean script's CPU per request / ours with {setting}:" in output
    # the floor: the lean script on the int8 graph, and a bare ASGI app answering every request with a PNG
    assert "lean script's CPU per request / lean script, int8 graph:" in output
    assert "lean script's CPU per request / bare ASGI, int8 graph:" in output
    assert output.count("errors 0") == 6
    # our service's three set-ups say how many images each ONNX Runtime call held; the peers have no /metrics
    per_call = re.findall(r"^(\S.*?) +CPU .* errors 0 +([\d.]+) images per ONNX Runtime call$", output, re.MULTILINE)
    assert {name for name, _ in per_call} == {"ours", "ours at HEAD", f"ours with {setting}"}
    assert all(float(images) >= 1 for _, images in per_call)


def test_asgi_cost_bench_measures_the_app_in_process_before_and_after() -> None:
    output = _run("bench.asgi_cost", "--requests", "200", "--concurrency", "4", "--rounds", "1", "--before", "HEAD")
    figures = dict(re.findall(r"^(ours(?: at HEAD)?)\s+(\d+) µs CPU per request \(rounds", output, re.MULTILINE))
    assert set(figures) == {"ours", "ours at HEAD"}
    assert all(int(value) > 0 for value in figures.values())


def test_server_bench_runs_both_apps_under_both_servers() -> None:
    if shutil.which("wrk") is None and not os.environ.get("CI"):
        pytest.skip("needs wrk (apt-get install wrk; .ci/run installs it)")
    output = _run("bench.asgi_servers", "--rounds", "1", "--seconds", "1")
    summaries = [line for line in output.splitlines() if "ms/request" in line and not line.startswith("round")]
    assert [line.split(" CPU ")[0].strip() for line in summaries] == [
        "ours, uvicorn",
        "ours, granian",
        "lean, uvicorn",
        "lean, granian",
    ]
    assert all("errors 0" in line for line in summaries)
    assert "ours: granian's CPU per request against uvicorn's:" in output


def test_tracing_bench_measures_off_and_on() -> None:
    if shutil.which("wrk") is None and not os.environ.get("CI"):
        pytest.skip("needs wrk (apt-get install wrk; .ci/run installs it)")
    output = _run("bench.tracing", "--rounds", "1", "--seconds", "1")
    summaries = {line.split("  ")[0].strip(): line for line in output.splitlines() if line.startswith("tracing ")}
    assert set(summaries) == {"tracing off", "tracing on, 10% sampled", "tracing on, all sampled"}
    assert all("errors 0" in line for line in summaries.values())
    assert all(int(summaries[name].rsplit(" ", 1)[1]) > 0 for name in summaries if name != "tracing off")


def test_multipart_bench_reads_every_part_with_each_reader() -> None:
    output = _run("bench.multipart_readers", "--parts", "20", "--rounds", "1")
    assert "20 PNG parts" in output
    for reader in ("ours (multipart's push parser)", "Starlette's request.form()", "python-multipart, in memory"):
        assert re.search(rf"{re.escape(reader)} +\d+\.\d$", output, re.MULTILINE), output


def test_span_cost_bench_measures_each_content() -> None:
    output = _run("bench.span_cost", "--spans", "600", "--rounds", "1")
    row = r"make and end +(\d+\.\d) µs +encode +(\d+\.\d) µs +total +(\d+\.\d) µs$"
    figures = re.findall(row, output, re.MULTILINE)
    assert len(figures) == 3, output
    assert all(float(value) > 0 for row in figures for value in row)
    for content in ("FastAPI's attributes alone", "as the service records it", "the steps as events"):
        assert content in output


def test_codec_floor_bench_measures_the_ceiling_and_the_codec() -> None:
    output = _run("bench.codec_floor", "--images", "16", "--rounds", "2", "--seconds", "0.4", "--threads", "1")
    assert "16 images of noisy-digit.png per request; cores: 1" in output
    ceiling = r"round \d: ceiling (\d+) images/s \(([\d.]+) µs of CPU per image\); "
    codec = r"PNG decode ([\d.]+) µs, encode ([\d.]+) µs per image; bound ([\d.]+)%$"
    figures = re.findall(ceiling + codec, output, re.MULTILINE)
    assert len(figures) == 2, output
    for images_per_s, model_us, decode_us, encode_us, bound in figures:
        assert float(model_us) == pytest.approx(1e6 / float(images_per_s), rel=0.01)  # the ceiling's CPU per image
        assert float(decode_us) > 0
        assert float(encode_us) > 0
        codec_us = float(decode_us) + float(encode_us)
        assert float(bound) == pytest.approx(100 / (1 + codec_us / (1e6 / float(images_per_s))), abs=0.1)
    assert re.search(r"the codec's bound: [\d.]+% of the in-process ceiling", output)


def test_the_codec_bound_is_what_the_codec_leaves_of_the_ceiling() -> None:
    from bench.codec_floor import bound

    assert bound(10_000, 0, 2) == 1.0
    assert bound(10_000, 100, 2) == pytest.approx(1 / 1.5)  # 200 µs of model and 100 of codec per image, 2 cores
    assert bound(5_000, 100, 1) == pytest.approx(1 / 1.5)
