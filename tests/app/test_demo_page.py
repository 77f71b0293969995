"""The demo page and the offline API docs, in a real browser (Debian's Chromium driven by Playwright)
against a real server on a loopback port. Every request outside 127.0.0.1 is blocked and fails the test."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.pages import CONTENT_SECURITY_POLICY
from tests.images import decode_png, png
from tests.server import MODELS, REPO, running_server

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = REPO / "docs" / "demo-page.png"


def _version(bundle: str) -> str:
    return str(json.loads((MODELS / bundle / "manifest.json").read_text())["version"])


_MISSING = not Path(CHROMIUM).exists() or importlib.util.find_spec("playwright") is None
if _MISSING and not os.environ.get("CI"):  # in CI a missing browser fails the run instead
    pytest.skip("needs Debian's chromium and playwright (.ci/run installs both)", allow_module_level=True)

from playwright.sync_api import Browser, ConsoleMessage, Page, Route, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running_server({"DENOISE_MODELS": "", "DENOISE_WORKERS": "1", "DENOISE_LOG_LEVEL": "warning"}) as (address, _):
        yield address


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield launched
        launched.close()


class Visit:
    """A page whose every request is checked: loopback only, and no console error."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.foreign: list[str] = []
        self.console_errors: list[str] = []
        self.expected_statuses: set[int] = set()
        self.tolerated: set[str] = set()

    def expect_status(self, status: int) -> None:
        """Chromium logs an HTTP error answer as a console error; expected for an error this test provokes."""
        self.expected_statuses.add(status)

    def check(self) -> None:
        foreign = [url for url in self.foreign if url not in self.tolerated]
        assert foreign == [], f"requests outside 127.0.0.1: {foreign}"
        assert self.console_errors == []


@pytest.fixture
def visit(browser: Browser) -> Iterator[Visit]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    seen = Visit(page)

    def only_loopback(route: Route) -> None:
        request_url = route.request.url
        if request_url.startswith(("http://127.0.0.1:", "data:", "blob:")):
            route.continue_()
        else:
            seen.foreign.append(request_url)
            route.abort()

    def console(message: ConsoleMessage) -> None:
        expected = any(f"status of {status} " in message.text for status in seen.expected_statuses) or (
            bool(seen.tolerated) and "net::ERR_FAILED" in message.text
        )
        if message.type == "error" and not expected:
            seen.console_errors.append(message.text)

    context.route("**/*", only_loopback)
    page.on("console", console)
    page.on("pageerror", lambda error: seen.console_errors.append(str(error)))
    yield seen
    context.close()
    seen.check()


def pixels_of(page: Page, canvas: str) -> np.ndarray:
    values = page.evaluate(
        """(id) => {
            const canvas = document.getElementById(id);
            const data = canvas.getContext("2d").getImageData(0, 0, 28, 28).data;
            return Array.from({length: 784}, (_, i) => data[i * 4]);
        }""",
        canvas,
    )
    return np.array(values, dtype=np.uint8).reshape(28, 28)


def runs(page: Page) -> int:
    return int(page.locator("body").get_attribute("data-runs") or 0)


def wait_run(page: Page, after: int) -> None:
    page.locator(f"body[data-runs='{after + 1}']").wait_for(state="attached")


def open_page(visit: Visit, url: str) -> Page:
    page = visit.page
    page.goto(f"{url}/")
    page.locator("#samples button").first.wait_for()
    return page


def api_denoise(url: str, pixels: np.ndarray, **params: str) -> np.ndarray:
    response = httpx.post(f"{url}/denoise", params=params, content=png(pixels), headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    return decode_png(response.content)


def test_root_redirects_to_the_page_with_a_strict_policy(url: str) -> None:
    response = httpx.get(f"{url}/", follow_redirects=True)
    assert response.status_code == 200
    assert str(response.url) == f"{url}/demo/"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY


def test_a_drawn_stroke_is_denoised_as_the_api_does(visit: Visit, url: str) -> None:
    page = open_page(visit, url)
    box = page.locator("#pad").bounding_box()
    assert box is not None
    before = runs(page)
    page.mouse.move(box["x"] + 140, box["y"] + 40)
    page.mouse.down()
    for y in range(40, 241, 20):
        page.mouse.move(box["x"] + 140 + (y - 140) / 8, box["y"] + y)
    page.mouse.up()
    wait_run(page, before)
    clean, noisy = pixels_of(page, "clean"), pixels_of(page, "noisy")
    assert clean[5:23].max(axis=1).min() > 200  # the stroke, sampled to 28x28: light on every row it crossed
    assert clean[:, :5].max() == 0  # and black beside it
    assert np.array_equal(pixels_of(page, "denoised"), api_denoise(url, noisy))
    assert "PSNR" in (page.locator("#denoised-metrics").text_content() or "")
    assert page.locator("#latent canvas").count() == 8
    assert f"mnist {_version('mnist')}" in (page.locator("#served-by").text_content() or "")


def test_a_sample_image_and_the_noise_are_deterministic_per_seed(visit: Visit, url: str) -> None:
    page = open_page(visit, url)
    samples = httpx.get(f"{url}/models/mnist/samples").json()["samples"]
    before = runs(page)
    page.locator("#samples button").nth(2).click()
    wait_run(page, before)
    assert np.array_equal(pixels_of(page, "clean"), decode_png(base64.b64decode(samples[2]["png"])))

    def noisy_for(seed: int) -> np.ndarray:
        count = runs(page)
        page.locator("#seed").fill(str(seed))
        page.locator("#seed").dispatch_event("change")
        wait_run(page, count)
        return pixels_of(page, "noisy")

    first, other, again = noisy_for(5), noisy_for(6), noisy_for(5)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    count = runs(page)
    page.locator("#noise-kind").select_option("salt-pepper")
    wait_run(page, count)
    assert not np.array_equal(pixels_of(page, "noisy"), again)
    assert np.array_equal(pixels_of(page, "denoised"), api_denoise(url, pixels_of(page, "noisy")))


def test_upload_of_another_size_in_rgb_with_resize(visit: Visit, url: str, tmp_path: Path) -> None:
    page = open_page(visit, url)
    visit.expect_status(422)  # the first try, before resize is ticked
    rgb = np.zeros((40, 60, 3), dtype=np.uint8)
    rgb[8:32, 25:35] = (250, 240, 200)
    upload = tmp_path / "wide.png"
    Image.fromarray(rgb, "RGB").save(upload)
    before = runs(page)
    page.locator("#file").set_input_files(str(upload))
    wait_run(page, before)
    assert "send 28x28 or add ?resize=true" in (page.locator("#upload-error").text_content() or "")
    before = runs(page)
    page.locator("#resize").check()
    wait_run(page, before)
    assert page.locator("#upload-error").text_content() == ""
    response = httpx.post(
        f"{url}/denoise", params={"resize": "true"}, content=upload.read_bytes(), headers={"content-type": "image/png"}
    )
    assert np.array_equal(pixels_of(page, "denoised"), decode_png(response.content))


def test_an_upload_says_it_has_no_clean_image_and_shows_the_apis_verdict(
    visit: Visit, url: str, tmp_path: Path
) -> None:
    page = open_page(visit, url)
    upload = tmp_path / "digit.png"
    upload.write_bytes((MODELS / "mnist" / "samples" / "00.png").read_bytes())
    before = runs(page)
    page.locator("#file").set_input_files(str(upload))
    wait_run(page, before)
    assert page.locator("#clean").is_hidden()  # not a black square: there is no clean reference
    assert "none for an upload" in (page.locator("#clean-caption").text_content() or "")
    response = httpx.post(f"{url}/denoise", content=upload.read_bytes(), headers={"content-type": "image/png"})
    threshold = json.loads((MODELS / "mnist" / "manifest.json").read_text())["anomaly"]["threshold"]
    said = page.locator("#anomaly").text_content() or ""
    word = "unusual" if response.headers["x-anomaly"] == "true" else "typical"
    assert said.startswith(f"Input {word} for mnist")
    assert f"{float(response.headers['x-anomaly-score']):.2f}" in said
    assert f"threshold {threshold:.2f}" in said
    # Back to a sample: the clean image is shown again.
    before = runs(page)
    page.locator("#samples button").first.click()
    wait_run(page, before)
    assert page.locator("#clean").is_visible()
    assert page.locator("#clean-caption").text_content() == "clean"


def test_a_bad_upload_shows_the_api_message_beside_it(visit: Visit, url: str, tmp_path: Path) -> None:
    page = open_page(visit, url)
    visit.expect_status(400)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    expected = httpx.post(f"{url}/denoise", content=bad.read_bytes(), headers={"content-type": "image/png"})
    before = runs(page)
    page.locator("#file").set_input_files(str(bad))
    wait_run(page, before)
    assert page.locator("#upload-error").text_content() == expected.json()["error"]["message"]
    assert page.locator("#draw-error").text_content() == ""


def test_switching_model(visit: Visit, url: str) -> None:
    page = open_page(visit, url)
    page.locator("#model").select_option("fashion-mnist")
    page.locator("#samples button[aria-label*='Ankle boot']").first.wait_for()
    before = runs(page)
    page.locator("#samples button").first.click()
    wait_run(page, before)
    assert f"fashion-mnist {_version('fashion-mnist')}" in (page.locator("#served-by").text_content() or "")
    noisy = pixels_of(page, "noisy")
    assert np.array_equal(pixels_of(page, "denoised"), api_denoise(url, noisy, model="fashion-mnist"))


def _sample_shown(browser: Browser, url: str, sample: int, **context_options: Any) -> tuple[Any, Page]:
    """A fresh browser context showing the page with one sample denoised."""
    context = browser.new_context(**context_options)
    page = context.new_page()
    page.goto(f"{url}/")
    page.locator("#samples button").first.wait_for()
    before = runs(page)
    page.locator("#samples button").nth(sample).click()
    wait_run(page, before)
    return context, page


def test_phone_width_and_screenshot(browser: Browser, url: str) -> None:
    phone, page = _sample_shown(
        browser, url, 4, viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
    )
    assert page.evaluate("() => document.scrollingElement.scrollWidth") <= 390  # nothing wider than a phone
    phone.close()
    wide, page = _sample_shown(browser, url, 3, viewport={"width": 1100, "height": 860})
    shot = page.screenshot(full_page=True)
    wide.close()
    assert Image.open(io.BytesIO(shot)).size[0] == 1100
    if os.environ.get("UPDATE_SCREENSHOT"):  # the README's picture: UPDATE_SCREENSHOT=1 make test
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(shot)


@pytest.mark.parametrize(
    ("path", "ready"), [("/docs", ".opblock"), ("/redoc", "h2:has-text('Denoise one image or a batch')")]
)
def test_api_docs_render_offline_under_a_strict_policy(visit: Visit, url: str, path: str, ready: str) -> None:
    """The pages render with no request leaving this origin: ReDoc's attribution logo, which its bundle
    asks its CDN for, is refused by the page's Content-Security-Policy before any request is made."""
    page = visit.page
    refused: list[str] = []
    page.on(
        "console",
        lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None,
    )
    response = page.goto(f"{url}{path}")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "unsafe-eval" not in policy
    page.locator(ready).first.wait_for()
    if path == "/docs":
        assert page.locator(".opblock").count() >= 6
    assert all("cdn.redoc.ly" in text for text in refused), refused  # only the logo, nothing of the page's own
    visit.console_errors = [text for text in visit.console_errors if text not in refused]


def test_the_page_can_be_turned_off(make_client: Any) -> None:
    client: TestClient = make_client(demo=False)
    assert client.get("/demo/").status_code == 404
    assert client.get("/").status_code == 404
    assert client.get("/docs").status_code == 200
