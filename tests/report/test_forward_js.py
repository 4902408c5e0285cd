"""The in-page forward pass (``report/assets/forward.js``) against PyTorch, in
headless Chromium: every layer, the logits and the probabilities of 100 real test
images, for Model A (shipped), Model B (random weights) and the imported Keras
Model A; a model with batch-norm, padding and other activations; and the page's
MNIST conversion against :func:`convscope.data.user_image.mnistify`.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from convscope.report.html import asset
from convscope.report.jsmodel import JSForwardUnsupported, forward_program

from tests.report.test_report import _launch

KERAS_A = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "keras" / "seed_model_a_keras2.h5"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def page():
    """One headless Chromium page with forward.js loaded (no network: a blank page)."""
    sync_api = pytest.importorskip("playwright.sync_api") if not os.environ.get("CI") else __import__(
        "playwright.sync_api", fromlist=["sync_playwright"])
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            tab = browser.new_page()
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.set_content("<!DOCTYPE html><html><body><script>" + asset("forward.js") + "</script></body></html>")
            tab.errors = errors  # type: ignore[attr-defined]
            yield tab
        finally:
            browser.close()
    assert errors == []


def _js_forward(page, program: dict, images: np.ndarray) -> dict:
    """Run the program on uint8 images ``(N, H, W[, C])`` in the page; every layer's output, the logits,
    the probabilities, and the mean time per image (ms)."""
    pixels = base64.b64encode(np.ascontiguousarray(images, dtype=np.uint8).tobytes()).decode("ascii")
    got = page.evaluate(
        """([program, pixels, n]) => {
            const F = window.ConvscopeForward, net = new F.Network(program);
            const all = F.decodeBase64(pixels), per = all.length / n, runs = [];
            net.forward(all.subarray(0, per));  // warm the JIT once
            const t0 = performance.now();
            for (let i = 0; i < n; i++) runs.push(net.forward(all.subarray(i * per, (i + 1) * per)));
            const ms = (performance.now() - t0) / n;
            const pack = (pick) => {  // every image's values as one float32 buffer, base64
                const parts = runs.map(pick), size = parts.reduce((a, p) => a + p.length, 0);
                const buffer = new Float32Array(size); let at = 0;
                for (const p of parts) { buffer.set(p, at); at += p.length; }
                const bytes = new Uint8Array(buffer.buffer); let text = '';
                for (let i = 0; i < bytes.length; i += 32768) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 32768));
                return btoa(text);
            };
            const out = {ms: ms, logits: pack(r => r.logits), probabilities: pack(r => r.probabilities)};
            for (const l of program.layers) out[l.name] = pack(r => r.layers[l.name].data);
            return out;
        }""",
        [program, pixels, len(images)],
    )
    return {name: (value if name == "ms" else np.frombuffer(base64.b64decode(value), dtype="<f4").reshape(len(images), -1))
            for name, value in got.items()}


def _torch_outputs(model: nn.Module, images: np.ndarray) -> dict[str, np.ndarray]:
    from convscope.inside import layer_activations
    from convscope.layers import model_layers

    names = [layer.name for layer in model_layers(model)]
    outputs = layer_activations(model, images, names + ["logits", "probabilities"])
    return {name: value.numpy().reshape(len(images), -1) for name, value in outputs.items()}


def _check(page, model: nn.Module, images: np.ndarray) -> float:
    model.eval()
    program = forward_program(model)
    got = _js_forward(page, program, images)
    want = _torch_outputs(model, images)
    assert set(want) == {layer["name"] for layer in program["layers"]} | {"logits", "probabilities"}
    assert set(got) == set(want) | {"ms"}
    for name, values in want.items():
        js = got[name].astype(np.float64)
        assert js.shape == values.shape, name
        error = np.abs(js - values).max()
        assert error <= TOLERANCE, f"{name}: JS differs from PyTorch by {error:.3g}"
    assert (np.argmax(got["probabilities"], axis=1) == want["probabilities"].argmax(1)).all()
    return float(got["ms"])


def test_model_a_equals_pytorch_on_100_test_images(page, shipped_model, test_split):
    ms = _check(page, shipped_model, test_split.images[:100])
    print(f"JS forward pass of Model A in headless Chromium: {ms:.2f} ms per image")


def test_model_b_equals_pytorch(page, test_split):
    from convscope.models import build_model

    torch.manual_seed(3)
    model = build_model("model_b")
    with torch.no_grad():  # non-zero biases, so padding and bias handling both matter
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.bias.uniform_(-0.2, 0.2)
    _check(page, model, test_split.images[100:200])


def test_imported_keras_model_equals_pytorch(page, test_split):
    from convscope.models.loading import load_any

    if not KERAS_A.is_file():
        pytest.fail(f"{KERAS_A} is missing (../shared/data/keras)")
    model = load_any(str(KERAS_A), spec_fields={"preprocessing": "standardize"})
    assert type(model) is nn.Sequential  # the importer's plain tree, Keras layer names
    _check(page, model, test_split.images[200:300])


class _Odd(nn.Module):
    def forward(self, x):
        return x * 2


def test_other_layers_rgb_and_preprocessing(page):
    """Batch-norm, padding, strides, dilation, groups, avg/adaptive pooling and many activations on an
    RGB mean/std model (random weights and statistics)."""
    from convscope.models.graph import GlobalPool2d, PaddedAvgPool2d
    from convscope.spec import wrap

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.LeakyReLU(0.1)),
        nn.ZeroPad2d((1, 0, 1, 0)),
        nn.Conv2d(8, 8, 3, stride=2, groups=2, dilation=1, padding="valid"), nn.ELU(),
        nn.Conv2d(8, 12, 3, padding="same", dilation=2), nn.GELU(),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), nn.SiLU(),
        nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False), nn.Tanh(),
        PaddedAvgPool2d((2, 2), (1, 1), (0, 1, 0, 1)), nn.SELU(),
        nn.AdaptiveAvgPool2d((2, 3)), nn.Flatten(), nn.Linear(72, 16), nn.BatchNorm1d(16), nn.Sigmoid(),
        nn.Dropout(0.5), nn.Linear(16, 5),
    )
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    model = wrap(net, input_shape=(3, 17, 15), class_names=list("abcde"), preprocessing="meanstd",
                 mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    images = np.random.default_rng(0).integers(0, 256, (8, 17, 15, 3), dtype=np.uint8)
    _check(page, model, images)
    pooled = wrap(nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), GlobalPool2d("max"), nn.Linear(4, 3)),
                  input_shape=(1, 12, 12), class_names=["x", "y", "z"], preprocessing="unit")
    _check(page, pooled, np.random.default_rng(1).integers(0, 256, (4, 12, 12), dtype=np.uint8))


def test_unsupported_models_have_no_program():
    from convscope.spec import wrap

    odd = wrap(nn.Sequential(nn.Flatten(), nn.Linear(784, 10), _Odd()), input_shape=(1, 28, 28),
               class_names=[str(i) for i in range(10)])
    with pytest.raises(JSForwardUnsupported, match="_Odd"):
        forward_program(odd)
    reflect = wrap(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.Flatten(),
                                 nn.Linear(2 * 28 * 28, 10)), input_shape=(1, 28, 28),
                   class_names=[str(i) for i in range(10)])
    with pytest.raises(JSForwardUnsupported, match="reflect"):
        forward_program(reflect)


def test_page_conversion_equals_mnistify(page):
    """Strokes drawn on a 280×280 canvas in the page, converted by the page's mnistify and by
    convscope's (from the same pixels): the same 28×28 digit, at most one grey level apart."""
    from convscope.data.user_image import mnistify

    drawings = page.evaluate(
        """() => {
            const F = window.ConvscopeForward, out = [];
            const strokes = [
                [[140, 40], [140, 240]], [[80, 60], [200, 60], [120, 240]], [[60, 200], [220, 90], [230, 230]],
                [[100, 100], [180, 100], [180, 180], [100, 180], [100, 100]], [[20, 20], [70, 45]],
                [[150, 30], [90, 150], [200, 150], [150, 250]],
            ];
            for (const [i, points] of strokes.entries()) {
                const c = document.createElement('canvas'); c.width = 280; c.height = 280;
                const g = c.getContext('2d'); g.fillStyle = i % 2 ? '#fff' : '#000'; g.fillRect(0, 0, 280, 280);
                g.strokeStyle = i % 2 ? '#222' : '#fff'; g.lineWidth = 6 + 5 * i; g.lineCap = 'round'; g.beginPath();
                g.moveTo(...points[0]); for (const p of points.slice(1)) g.lineTo(...p); g.stroke();
                const gray = F.grayOf(g.getImageData(0, 0, 280, 280).data);
                const done = F.mnistify(gray, 280, 280);
                const bytes = Uint8Array.from(gray); let text = '';
                for (let k = 0; k < bytes.length; k += 32768) text += String.fromCharCode.apply(null, bytes.subarray(k, k + 32768));
                out.push({gray: btoa(text), image: Array.from(done.image), inverted: done.inverted});
            }
            return out;
        }""")
    for drawing in drawings:
        gray = np.frombuffer(base64.b64decode(drawing["gray"]), dtype=np.uint8).reshape(280, 280).astype(np.float64)
        want = mnistify(gray)
        got = np.asarray(drawing["image"], dtype=np.int64).reshape(28, 28)
        assert drawing["inverted"] == want.inverted
        difference = np.abs(got - want.image.astype(np.int64))
        assert difference.max() <= 1 and (difference > 0).sum() <= 3, difference.max()


def test_program_is_json_and_compact(shipped_model):
    program = forward_program(shipped_model)
    text = json.dumps(program)
    assert program["weight_count"] == 208_982
    assert len(base64.b64decode(program["weights"])) == 4 * 208_982
    assert len(text) < 1.2e6  # float32 base64: 1.11 MB of weights, a few kB of layer list
    assert [layer["name"] for layer in program["layers"]] == [
        "Conv2D_1", "Max_Pool_1", "Conv2D_2", "Max_Pool_2", "Conv2D_3", "Flatten", "Dense_1", "Dense_2"]
