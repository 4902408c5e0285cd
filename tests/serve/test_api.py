"""The explorer's HTTP API on a real server (127.0.0.1, a free port): answers equal to
the library's own (the engines through the application layer), concurrency equal to
sequential, bad requests refused cleanly (4xx JSON, no traceback, no hang), and no
bind outside this machine without --allow-remote."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.serve.conftest import REPO, assert_concurrent_equal_sequential


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _drawing(seed: int) -> bytes:
    """A pad-like drawing: white strokes on black, RGBA 168×168."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGBA", (168, 168), (0, 0, 0, 255))
    points = [tuple(int(v) for v in rng.integers(24, 144, 2)) for _ in range(3)]
    ImageDraw.Draw(image).line(points, fill=(255, 255, 255, 255), width=12)
    return _png(image)


def _floats(entry: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(entry["data"]), dtype="<f4").reshape(entry["shape"])


def test_health_and_model(server, shipped_model):
    from convscope.layers import model_layers
    from convscope.receptive_field import receptive_fields

    status, health, _ = server.request("GET", "/api/health")
    assert status == 200 and health["status"] == "ok" and health["name"] == "seed_cnn"
    status, info, _ = server.request("GET", "/api/model")
    assert status == 200
    assert info["spec"]["input_shape"] == [1, 28, 28] and info["drawable"] is True
    assert [(l["name"], l["kind"], tuple(l["shape"])) for l in info["layers"]] == [
        (l.name, l.kind, l.shape) for l in model_layers(shipped_model)]
    conv2 = next(l for l in info["layers"] if l["name"] == "Conv2D_2")
    assert np.array_equal(np.asarray(conv2["receptive_fields"]["table"]), receptive_fields(shipped_model, "Conv2D_2").table)
    assert {"saliency", "deconvnet", "gbp", "gradcam", "ig"} <= set(info["methods"])
    assert info["dataset"]["size"] == 10_000 and info["limits"]["max_body_bytes"] == 10 * 1024 * 1024


def test_forward_of_a_file_is_what_predict_and_activations_give(server, shipped_model, tmp_path):
    """An uploaded drawing is converted as `convscope predict` converts the same file, and every layer's
    activations are the engine's."""
    from convscope.app import inside
    from convscope.data.user_image import load_image_for_model
    from convscope.spec import spec_of

    body = _drawing(1)
    path = tmp_path / "drawing.png"
    path.write_bytes(body)
    status, data, _ = server.request("POST", "/api/forward?layers=all&encoding=base64", body, {"Content-Type": "image/png"})
    assert status == 200, data
    prepared = load_image_for_model(path, spec_of(shipped_model))
    seen = np.frombuffer(base64.b64decode(data["input"]["pixels"]), dtype=np.uint8).reshape(28, 28)
    assert np.array_equal(seen, prepared.image)
    expected = inside.predict(shipped_model, [prepared.image]).predictions[0].probabilities
    assert np.allclose(data["probabilities"], np.asarray(expected), atol=1e-6)
    assert data["predicted"] == int(np.asarray(expected).argmax())
    acts = inside.activations(shipped_model, prepared.image, "all")
    assert set(data["layers"]) == {"Conv2D_1", "Max_Pool_1", "Conv2D_2", "Max_Pool_2", "Conv2D_3", "Flatten", "Dense_1",
                                   "Dense_2"}
    # the server's worker processes compute each input alone: exactly the engine's pass over that one image
    # (the in-process batcher's answers, --processes 0, are checked in test_processes.py)
    names = list(data["layers"]) + ["probabilities"]
    alone = _engine_alone(prepared.image, names, tmp_path)
    for name, entry in data["layers"].items():
        assert np.array_equal(_floats(entry), alone[name]), name
        assert np.allclose(_floats(entry), acts.values[name].numpy(), rtol=1e-5, atol=1e-6), name


_ALONE = """
import sys
import numpy as np
from convscope.inside import layer_activations
from convscope.models import load_model
image = np.load(sys.argv[1])
names = sys.argv[3].split(",")
values = layer_activations(load_model(None), image[None], names)
np.savez(sys.argv[2], **{name: values[name][0].numpy() for name in names})
"""


def _engine_alone(image: np.ndarray, names: list[str], folder) -> dict:
    """The engine's pass over ``image`` alone, with the server's MKL setting (``MKL_CBWR``,
    read when torch loads, so in a fresh process): float32 sums may otherwise take
    another order in MKL's kernels."""
    np.save(folder / "alone-in.npy", image)
    env = {**os.environ, "MKL_CBWR": "AUTO,STRICT", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", _ALONE, str(folder / "alone-in.npy"), str(folder / "alone.npz"),
                           ",".join(names)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(np.load(folder / "alone.npz"))


def _padded_reference(model, image: np.ndarray) -> dict:
    """The engine's activations of ``image`` as the first of a zero-padded batch of the
    explorer's measured smallest consistent size."""
    from convscope.inside import layer_activations
    from convscope.layers import model_layers
    from convscope.serve.batcher import consistent_min_batch

    names = [layer.name for layer in model_layers(model)] + ["probabilities"]
    size = consistent_min_batch(model, image.shape, names, 8)
    stack = np.zeros((size, *image.shape), np.uint8)
    stack[0] = image
    return layer_activations(model, stack, names, batch_size=size)


def test_compact_u8_encoding_is_within_half_a_level_of_the_floats(server):
    """encoding=u8: a quarter of the bytes; offset + level * scale is within scale / 2 of the float value, and
    the levels are the ones the page's colour scale gives the floats (round((v - min(0, min)) / (max - ...) * 255))."""
    body = _drawing(3)
    status, floats, raw_floats = server.request("POST", "/api/forward?encoding=base64", body, {"Content-Type": "image/png"})
    assert status == 200
    status, compact, raw_compact = server.request("POST", "/api/forward?encoding=u8", body, {"Content-Type": "image/png"})
    assert status == 200, compact
    assert len(raw_compact) < 0.4 * len(raw_floats)
    assert compact["probabilities"] == floats["probabilities"] and compact["input"] == floats["input"]
    for name, entry in compact["layers"].items():
        exact = _floats(floats["layers"][name]).astype(np.float64)
        assert entry["dtype"] == "uint8" and entry["shape"] == floats["layers"][name]["shape"]
        levels = np.frombuffer(base64.b64decode(entry["data"]), dtype=np.uint8).reshape(entry["shape"])
        decoded = entry["offset"] + levels * entry["scale"]
        assert entry["offset"] == min(0.0, floats["layers"][name]["min"]) and entry["max"] == floats["layers"][name]["max"]
        assert np.abs(decoded - exact).max() <= entry["scale"] / 2 * (1 + 1e-9), name
        page = np.floor(np.clip((exact - entry["offset"]) / (entry["max"] - entry["offset"]), 0, 1) * 255 + 0.5)
        assert np.array_equal(levels, page), name
    status, error, _ = server.request("POST", "/api/forward?encoding=f16", body, {"Content-Type": "image/png"})
    assert status == 400 and "u8" in error["error"]


def test_forward_json_pixels_and_dataset_refs(server, shipped_model, test_split):
    from convscope.inside import layer_activations

    image = test_split.images[1270]
    status, by_pixels, _ = server.request("POST", "/api/forward", {"pixels": image.tolist(), "layers": ["Conv2D_3", "Dense_1"]})
    assert status == 200, by_pixels
    status, by_ref, _ = server.request("POST", "/api/forward", {"image": "test:1270", "layers": ["Conv2D_3", "Dense_1"]})
    assert status == 200 and by_ref["input"]["label"] == int(test_split.labels[1270])
    want = layer_activations(shipped_model, image, ["Conv2D_3", "Dense_1", "probabilities"])
    for data in (by_pixels, by_ref):
        assert set(data["layers"]) == {"Conv2D_3", "Dense_1"}
        assert np.allclose(np.asarray(data["layers"]["Conv2D_3"]["data"]), want["Conv2D_3"][0].numpy(), atol=1e-6)
        assert np.allclose(data["probabilities"], want["probabilities"][0].numpy(), atol=1e-6)
    assert np.array_equal(np.asarray(by_pixels["input"]["pixels"]), image)  # model-size pixels are used as they are


def test_eight_concurrent_clients_equal_sequential(server):
    assert_concurrent_equal_sequential(server, [_drawing(seed) for seed in range(8)])


def test_explain_equals_the_library(server, shipped_model, test_split):
    from convscope.explain import Deconvnet, Saliency
    from convscope.inference import to_input

    x = to_input(shipped_model, test_split.images[7][None])
    status, data, _ = server.request("POST", "/api/explain", {"image": "test:7", "method": "saliency", "target": 4,
                                                              "encoding": "base64"})
    assert status == 200, data
    assert data["target"] == 4 and data["signed"] is True
    want = Saliency(shipped_model).attribute(x, 4)[0].numpy()
    assert np.allclose(_floats(data["attribution"]), want, atol=1e-6 * float(np.abs(want).max()))
    status, data, _ = server.request("POST", "/api/explain", {"image": "test:7", "method": "deconvnet",
                                                              "target": "Conv2D_3:120", "encoding": "base64"})
    assert status == 200 and data["target"] == "Conv2D_3:120"
    want = Deconvnet(shipped_model).attribute(x, "Conv2D_3:120")[0].numpy()
    assert np.allclose(_floats(data["attribution"]), want, atol=1e-5 * float(np.abs(want).max()))
    status, by_name, _ = server.request("POST", "/api/explain", {"image": "test:7", "method": "gbp", "target": "9"})
    assert status == 200 and by_name["target"] == 9


def test_pick_images(server, shipped_model, test_split):
    from convscope.inference import predict_logits

    status, first, _ = server.request("GET", "/api/pick?how=misclassified&seed=5")
    status2, again, _ = server.request("GET", "/api/pick?how=misclassified&seed=5")
    assert status == status2 == 200 and first == again  # a seed reproduces the choice
    picks = [first] + [server.request("GET", f"/api/pick?how=misclassified&seed={seed}")[1] for seed in range(6)]
    indices = [int(p["image"].split(":")[1]) for p in picks]
    predicted = predict_logits(shipped_model, test_split.images[indices]).argmax(1).tolist()
    assert [p["predicted"] for p in picks] == predicted
    assert all(p["label"] == int(test_split.labels[i]) != p["predicted"] for p, i in zip(picks, indices))
    assert len(set(indices)) > 1 and 0 < first["pool"] < 500  # the model makes a few dozen mistakes
    status, of_class, _ = server.request("GET", "/api/pick?how=class&class=4&seed=1")
    assert status == 200 and of_class["label"] == 4 and int(test_split.labels[int(of_class["image"][5:])]) == 4


def _wait_job(server, job: dict, timeout: float = 120) -> dict:
    end = time.time() + timeout
    while job["status"] in ("queued", "running") and time.time() < end:
        time.sleep(0.2)
        status, job, _ = server.request("GET", f"/api/jobs/{job['id']}")
        assert status == 200
    return job


def test_card_oip_and_topk_jobs(server, shipped_model, test_split):
    from convscope.inside import conv_filters, layer_activations
    from convscope.receptive_field import receptive_fields

    status, card, _ = server.request("GET", "/api/card?layer=Conv2D_2&map=5")
    assert status == 200 and card["anchor"] == "Conv2D_2-5" and card["oip"] is None and card["topk"] is None
    kernels = _floats(card["filters"])
    assert np.array_equal(kernels, conv_filters(shipped_model, "Conv2D_2").weights[5].numpy())
    status, job, _ = server.request("POST", "/api/oip", {"layer": "Conv2D_2", "map": 5})
    assert status in (200, 202)
    job = _wait_job(server, job)
    assert job["status"] == "done", job
    assert job["result"]["png"].startswith("data:image/png;base64,") and job["result"]["final"] > 0
    status, job, _ = server.request("POST", "/api/topk", {"layer": "Conv2D_3", "map": 7})
    job = _wait_job(server, job)
    assert job["status"] == "done", job
    top = job["result"]
    indices = [int(ref.split(":")[1]) for ref in top["images"]]
    assert len(indices) == 9 and top["num_images"] == 10_000 and top["values"] == sorted(top["values"], reverse=True)
    maps = layer_activations(shipped_model, test_split.images[indices], "Conv2D_3")["Conv2D_3"][:, 7]  # (9, 3, 3)
    assert np.allclose(top["values"], maps.amax(dim=(1, 2)).numpy(), atol=1e-5)
    fields = receptive_fields(shipped_model, "Conv2D_3")
    strongest = [divmod(int(m.argmax()), 3) for m in maps]
    assert top["rects"] == [list(fields.rectangle(r, c)) for r, c in strongest]
    pixels = np.frombuffer(base64.b64decode(top["pixels"]), dtype=np.uint8).reshape(9, 28, 28)
    assert np.array_equal(pixels, test_split.images[indices])
    status, card, _ = server.request("GET", "/api/card?layer=Conv2D_2&map=5")  # known now
    assert card["oip"]["source"] == "computed"
    status, card, _ = server.request("GET", "/api/card?layer=Conv2D_3&map=7")
    assert card["topk"]["images"] == job["result"]["images"]


def test_a_job_can_be_cancelled(server):
    status, job, _ = server.request("POST", "/api/topk", {"layer": "Conv2D_1", "map": 0})
    assert status in (200, 202)
    status, cancelled, _ = server.request("DELETE", f"/api/jobs/{job['id']}")
    assert status == 200
    final = _wait_job(server, cancelled)
    assert final["status"] in ("cancelled", "done")  # a job that already finished stays done
    status, missing, _ = server.request("GET", "/api/jobs/nope")
    assert status == 404 and "no job" in missing["error"]


def _huge_png() -> bytes:
    """9000×9000 one-bit pixels (81 megapixels, above the 50-megapixel limit) in about 100 kB."""
    return _png(Image.new("1", (9000, 9000), 0))


BAD = [
    # (method, path, body, headers, status, words in the message)
    ("POST", "/api/forward", b"this is not an image", {"Content-Type": "image/png"}, 400, "not an image"),
    ("POST", "/api/forward", b"", {"Content-Type": "image/png"}, 400, "send an image file"),
    ("POST", "/api/forward", b"{not json", {"Content-Type": "application/json"}, 400, "not valid JSON"),
    ("POST", "/api/forward", b"[1, 2]", {"Content-Type": "application/json"}, 400, "JSON object"),
    ("POST", "/api/forward", {"pixels": [[1, 2], [3]]}, None, 400, "rectangular"),
    ("POST", "/api/forward", {"pixels": [[[1, 2, 3, 4]]]}, None, 400, "shape"),
    ("POST", "/api/forward", {"pixels": [[300, 0], [0, 0]]}, None, 400, "0..255"),
    ("POST", "/api/forward", {"pixels": [[0] * 28] * 28, "image": "test:1"}, None, 400, "exactly one input"),
    ("POST", "/api/forward", {"image": "test:10000"}, None, 400, "0..9999"),
    ("POST", "/api/forward", {"image": "train:5"}, None, 400, "test split only"),
    ("POST", "/api/forward", {"image": "test:1", "layers": ["Conv2D_9"]}, None, 400, "unknown layer"),
    ("POST", "/api/forward", {"image": "test:1", "encoding": "xml"}, None, 400, "encoding"),
    ("POST", "/api/forward", {"png": "@@@"}, None, 400, "base64"),
    ("POST", "/api/forward", None, None, 400, "send an image file"),
    ("POST", "/api/explain", {"image": "test:1", "method": "magic"}, None, 400, "unknown method"),
    ("POST", "/api/explain", {"image": "test:1", "method": "saliency", "target": 99}, None, 400, "class index 99"),
    ("POST", "/api/explain", {"image": "test:1", "method": "saliency", "target": "Conv2D_3:999"}, None, 400, "0..127"),
    ("POST", "/api/explain", {"image": "test:1", "method": "ig", "options": {"steps": 100000}}, None, 400, "steps"),
    ("POST", "/api/explain", {"image": "test:1", "method": "ig", "options": {"evil": 1}}, None, 400, "unknown option"),
    ("GET", "/api/card?layer=Conv2D_3&map=500", None, None, 404, "0..127"),
    ("GET", "/api/card?layer=Nope&map=0", None, None, 404, "unknown layer"),
    ("GET", "/api/pick?how=sideways", None, None, 400, "random, class or misclassified"),
    ("GET", "/api/pick?how=random&seed=abc", None, None, 400, "whole number"),
    ("POST", "/api/oip", {"layer": "Dense_1", "map": 0}, None, 400, "conv layers"),
    ("GET", "/api/nothing", None, None, 404, "no such page"),
    ("GET", "/api/forward", None, None, 405, "not allowed"),
    ("GET", "/static/../../etc/passwd", None, None, 404, ""),
]


@pytest.mark.parametrize("method,path,body,headers,status,words", BAD, ids=[f"{b[0]} {b[1]} {i}" for i, b in enumerate(BAD)])
def test_bad_requests_get_a_clear_4xx(server, method, path, body, headers, status, words):
    got, data, raw = server.request(method, path, body, headers)
    assert got == status, raw[:300]
    assert isinstance(data, dict) and words in data["error"], data
    assert b"Traceback" not in raw and b'File "' not in raw


def test_oversized_uploads_are_refused(server):
    huge = _huge_png()
    assert len(huge) < 10 * 1024 * 1024
    status, data, _ = server.request("POST", "/api/forward", huge, {"Content-Type": "image/png"})
    assert status == 413 and "megapixel" in data["error"]
    status, data, _ = server.request("POST", "/api/forward", b"\0" * (10 * 1024 * 1024 + 1), {"Content-Type": "image/png"})
    assert status == 413 and "limit" in data["error"]
    encoded = base64.b64encode(huge).decode()
    status, data, _ = server.request("POST", "/api/forward", {"png": encoded})
    assert status == 413 and "megapixel" in data["error"]


def test_foreign_host_header_is_refused(server):
    status, _, raw = server.request("GET", "/api/health", headers={"Host": "attacker.example"})
    assert status == 400 and b"Traceback" not in raw


def test_the_page_and_its_assets_come_from_the_server(server):
    status, _, html = server.request("GET", "/")
    assert status == 200 and b"/static/explorer.js" in html and b"http" not in html.replace(b"http-equiv", b"")
    for name in ("explorer.js", "explorer.css", "forward.js"):
        status, _, text = server.request("GET", f"/static/{name}")
        assert status == 200 and len(text) > 1000
        assert b"https://" not in text and b"http://" not in text


def _serve(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "convscope", "serve", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=REPO)


def test_non_loopback_bind_needs_allow_remote():
    from convscope.cli.serve_cmd import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("127.1.2.3") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")
    assert not is_loopback("::")
    result = _serve("--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0" in result.stderr and "--allow-remote" in result.stderr
    assert "Traceback" not in result.stderr and "http://" not in result.stdout


def test_served_connections_have_nagle_off():
    """The listening socket names TCP, so asyncio turns Nagle's algorithm off on every accepted connection
    (with it on, each small answer waited ~40 ms for the client's delayed ACK)."""
    import asyncio
    import socket

    from convscope.cli.serve_cmd import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    seen: list[int] = []

    async def main() -> None:
        async def handle(reader, writer) -> None:
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        for _ in range(50):
            if seen:
                break
            await asyncio.sleep(0.05)
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
    assert seen and seen[0] != 0
