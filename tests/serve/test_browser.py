"""The explorer page in headless Chromium (Debian's, through Playwright) against a
real server on 127.0.0.1: draw with the mouse, open a map card, explain, compare
two inputs, follow a shared link. The page runs under its own content security
policy, so waits poll with ``page.evaluate`` (no string evaluation in the page)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.report.test_report import ARTIFACTS, _launch
from tests.serve.conftest import REPO


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api") if not os.environ.get("CI") else __import__(
        "playwright.sync_api", fromlist=["sync_playwright"])
    with sync_api.sync_playwright() as playwright:
        chromium = _launch(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


class Watched:
    """A page with its console errors and every URL it requested."""

    def __init__(self, browser, server) -> None:
        self.server = server
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": 1500, "height": 1100})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.wait("window.explorer && window.explorer.loaded")

    def value(self, expression: str):
        return self.page.evaluate(expression)

    def wait(self, expression: str, timeout: float = 90) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.page.evaluate(f"() => {{ try {{ return !!({expression}); }} catch (e) {{ return false; }} }}"):
                return
            time.sleep(0.1)
        state = self.page.evaluate("() => { const s = window.explorer && window.explorer.state; return s && {a: !!s.a, b: !!s.b, "
                                   "card: !!s.card, explained: !!s.explained, errors: s.errors, url: location.href}; }")
        raise AssertionError(f"timed out waiting for {expression}; status: {self.page.inner_text('#status')}; {state}")

    def settled(self) -> None:
        self.wait("!window.explorer.state.inflight && window.explorer.state.shownVersion === window.explorer.state.padVersion"
                  " && window.explorer.state.a")

    def check_clean(self) -> None:
        assert self.errors == []
        origin = self.server.url.rstrip("/")
        assert all(url.startswith((origin + "/", "data:", "blob:")) for url in self.requests), [
            u[:80] for u in self.requests if not u.startswith((origin + "/", "data:", "blob:"))]
        assert self.requests  # it did talk to the server

    def stroke(self, points: list[tuple[float, float]]) -> None:
        box = self.page.locator("#pad").bounding_box()
        page = self.page
        page.mouse.move(box["x"] + points[0][0] * box["width"], box["y"] + points[0][1] * box["height"])
        page.mouse.down()
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            for t in np.linspace(0, 1, 8)[1:]:
                page.mouse.move(box["x"] + (x0 + t * (x1 - x0)) * box["width"], box["y"] + (y0 + t * (y1 - y0)) * box["height"])
        page.mouse.up()


@pytest.fixture
def watched(browser, server):
    page = Watched(browser, server)
    yield page
    page.page.close()


def _predict(path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-m", "convscope", "predict", "-i", str(path), "--json", "--out",
                             str(path.parent / "predict-out")], capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)["predictions"][0]


def test_drawing_shows_what_predict_says(watched, tmp_path):
    w = watched
    w.open(w.server.url)
    assert w.value("document.getElementById('pad').hidden") is False
    assert w.page.locator("#pad").is_visible() and not w.page.locator("#drop").is_visible()
    w.stroke([(0.55, 0.15), (0.5, 0.5), (0.45, 0.85)])
    w.settled()
    first = w.value("document.querySelector('canvas[data-layer=\"Conv2D_1\"]').toDataURL()")
    forwards = w.value("window.explorer.state.forwards")
    w.stroke([(0.3, 0.2), (0.7, 0.2), (0.55, 0.85)])  # turn the 1 into a 7
    w.settled()
    assert w.value("window.explorer.state.forwards") > forwards
    second = w.value("document.querySelector('canvas[data-layer=\"Conv2D_1\"]').toDataURL()")
    assert second != first  # the activation grids follow the drawing
    shown = w.value("document.getElementById('bars').dataset.predicted")
    probabilities = w.value("window.explorer.state.a.probabilities")
    png = w.value("document.getElementById('pad').toDataURL('image/png')")
    path = tmp_path / "drawing.png"
    path.write_bytes(base64.b64decode(png.split(",", 1)[1]))
    predicted = _predict(path)
    assert shown == predicted["predicted_name"]
    assert np.allclose(probabilities, predicted["probabilities"], atol=1e-6)
    texts = w.value("Array.from(document.querySelectorAll('#bars .num')).map(e => e.textContent)")
    assert texts == [f"{100 * p:.1f}%" for p in predicted["probabilities"]]
    layers = w.value("Array.from(document.querySelectorAll('canvas[data-which=\"a\"]')).map(c => c.dataset.layer)")
    assert layers == ["Conv2D_1", "Max_Pool_1", "Conv2D_2", "Max_Pool_2", "Conv2D_3", "Dense_1", "Dense_2"]
    ARTIFACTS.mkdir(exist_ok=True)
    w.page.screenshot(path=str(ARTIFACTS / "explorer-drawing.png"))
    w.check_clean()


def test_card_explain_compare_and_shared_link(watched, browser, server, shipped_model, test_split):
    from convscope.inside import layer_activations

    w = watched
    w.open(server.url)
    w.page.fill("#ref", "test:1270")
    w.page.click("#ref-form button")
    w.wait("window.explorer.state.a && window.explorer.state.a.source === 'test:1270'")
    # a map card: click the first map of Conv2D_2
    w.page.locator("canvas[data-layer='Conv2D_2'][data-which='a']").click(position={"x": 3, "y": 3})
    w.wait("window.explorer.state.card && window.explorer.state.card.data")
    assert w.value("location.hash") == "#Conv2D_2-0"
    assert w.value("document.querySelectorAll('#card-filters canvas').length") == 1
    w.wait("window.explorer.state.deconv && window.explorer.state.deconv.map === 0")
    w.page.click("#oip-go")
    w.wait("document.querySelector('#card-oip img.oip')")
    # explain with another method and class
    w.page.select_option("#method", "gbp")
    w.page.select_option("#target", "9")
    w.page.click("#explain")
    w.wait("window.explorer.state.explained")
    assert w.value("window.explorer.state.explained.method") == "gbp"
    assert w.value("window.explorer.state.explained.target") == 9
    assert w.value("document.querySelectorAll('#explain-out canvas').length") == 2
    # compare: pin test:1270 as B, then show test:1816
    w.page.click("#pin")
    w.page.fill("#ref", "test:1816")
    w.page.click("#ref-form button")
    w.wait("window.explorer.state.a.source === 'test:1816' && document.querySelectorAll('canvas[data-which=\"diff\"]').length")
    diffs = w.value("window.explorer.state.diffMax")
    acts = layer_activations(shipped_model, test_split.images[[1816, 1270]], ["Conv2D_3", "Dense_1"])
    for name in ("Conv2D_3", "Dense_1"):
        assert abs(diffs[name] - float((acts[name][0] - acts[name][1]).abs().max())) < 1e-4
    assert w.value("document.querySelectorAll('canvas[data-which=\"diff\"]').length") == 7
    ARTIFACTS.mkdir(exist_ok=True)
    w.page.evaluate("window.scrollTo(0, 0)")
    w.page.screenshot(path=str(ARTIFACTS / "explorer-card-compare.png"))
    # the card still shows map 0 of Conv2D_2; select a unit by clicking, then share the link
    link = w.value("location.href")
    assert "input=test%3A1816" in link and "b=test%3A1270" in link and "method=gbp" in link and "target=9" in link
    assert link.endswith("#Conv2D_2-0")
    w.check_clean()
    other = Watched(browser, server)
    try:
        other.open(link)
        other.wait("window.explorer.state.a && window.explorer.state.b && window.explorer.state.card && "
                   "window.explorer.state.card.data && window.explorer.state.explained")
        state = other.value("({a: window.explorer.state.a.source, b: window.explorer.state.b.source, "
                            "card: [window.explorer.state.card.layer, window.explorer.state.card.map], "
                            "method: window.explorer.state.explained.method, target: window.explorer.state.explained.target,"
                            " unit: window.explorer.state.unit, diffs: document.querySelectorAll('canvas[data-which=\"diff\"]').length})")
        assert state == {"a": "test:1816", "b": "test:1270", "card": ["Conv2D_2", 0], "method": "gbp", "target": 9,
                         "unit": w.value("window.explorer.state.unit"), "diffs": 7}
        assert other.value("document.getElementById('method').value") == "gbp"
        other.check_clean()
    finally:
        other.page.close()


def _pad_pixels(w) -> np.ndarray:
    """The pad's red channel sampled at the centre of each of its 28×28 cells (the pad is 6× the input)."""
    data = w.value("Array.from(document.getElementById('pad').getContext('2d').getImageData(0, 0, 168, 168).data)")
    rgba = np.asarray(data, dtype=np.uint8).reshape(168, 168, 4)
    return rgba[3::6, 3::6, 0]


def test_a_picked_image_shows_on_the_pad_and_drawing_continues_on_it(watched, test_split):
    w = watched
    w.open(w.server.url)
    assert int(_pad_pixels(w).max()) == 0  # black before anything is drawn or picked
    w.page.fill("#ref", "test:1270")
    w.page.click("#ref-form button")
    w.wait("window.explorer.state.a && window.explorer.state.a.source === 'test:1270'")
    assert np.array_equal(_pad_pixels(w), test_split.images[1270])  # the pad shows the picked image, scaled
    w.page.click("#random")
    w.wait("window.explorer.state.a && window.explorer.state.a.source !== 'test:1270'")
    picked = int(w.value("window.explorer.state.a.source").split(":")[1])
    assert np.array_equal(_pad_pixels(w), test_split.images[picked])
    before = _pad_pixels(w)
    w.stroke([(0.1, 0.1), (0.3, 0.1)])  # a stroke in the top left corner, on top of the image
    w.settled()
    after = _pad_pixels(w)
    assert w.value("window.explorer.state.a.source") != f"test:{picked}"  # now the drawing is the input
    assert np.array_equal(after[10:, 10:], before[10:, 10:]) and after[:6, :10].max() == 255  # image kept, stroke added
    w.page.click("#clear")
    assert int(_pad_pixels(w).max()) == 0
    w.check_clean()


def test_a_drawn_input_travels_in_the_link(watched, browser, server):
    w = watched
    w.open(server.url)
    w.stroke([(0.3, 0.3), (0.7, 0.3), (0.7, 0.7), (0.3, 0.7), (0.3, 0.3)])
    w.settled()
    pixels = w.value("Array.from(window.explorer.state.a.pixels)")
    link = w.value("location.href")
    assert "input=px%3A" in link
    other = Watched(browser, server)
    try:
        other.open(link)
        other.wait("window.explorer.state.a")
        assert other.value("Array.from(window.explorer.state.a.pixels)") == pixels
        assert other.value("window.explorer.state.a.probabilities") == w.value("window.explorer.state.a.probabilities")
        other.check_clean()
    finally:
        other.page.close()
    w.check_clean()


def test_rgb_model_gets_an_upload_pad(browser, mnist_dir, tmp_path):
    """A model where drawing makes no sense (RGB, resized photos, no dataset): the pad is an upload pad, and
    an uploaded photo shows every layer."""
    from PIL import Image

    from tests.serve.conftest import start_server, stop_server

    rgb = start_server("--model", "tests/zoo.py:rgb_net", mnist_dir=mnist_dir)
    try:
        w = Watched(browser, rgb)
        w.open(rgb.url)
        assert w.value("document.getElementById('pad').hidden") is True
        assert not w.page.locator("#pad").is_visible()  # hidden on screen too, not only in the DOM
        assert w.value("document.getElementById('drop').hidden") is False
        assert w.page.locator("#drop").is_visible()
        assert w.value("document.getElementById('random').disabled") is True  # no dataset
        photo = tmp_path / "photo.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(photo)
        w.page.set_input_files("#upload", str(photo))
        w.wait("window.explorer.state.a")
        shown = w.value("({p: window.explorer.state.a.probabilities, shape: window.explorer.state.a.shape, "
                        "grids: document.querySelectorAll('canvas[data-which=\"a\"]').length})")
        status, answer, _ = rgb.request("POST", "/api/forward?layers=none", photo.read_bytes(), {"Content-Type": "image/png"})
        assert status == 200 and shown["p"] == answer["probabilities"] and shown["shape"] == [32, 32, 3]
        assert shown["grids"] == 7
        ARTIFACTS.mkdir(exist_ok=True)
        w.page.screenshot(path=str(ARTIFACTS / "explorer-rgb.png"))
        w.check_clean()
        w.page.close()
    finally:
        stop_server(rgb)
    assert not any("Traceback" in line for line in rgb.stderr)
