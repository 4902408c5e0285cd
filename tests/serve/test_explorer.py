"""The explorer's answers without HTTP: any model (an RGB model with a ModuleDict, a
model returning a tuple), inputs of other sizes, no dataset, and a built atlas'
stored stages (read back, or refused for another model)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from convscope.serve import Explorer, RequestError
from tests import zoo


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def test_rgb_model_forward_and_explain():
    from convscope.app import inside
    from convscope.data.user_image import convert_image
    from convscope.inside import layer_activations
    from convscope.report.views import draw_view

    model = zoo.rgb_net()
    explorer = Explorer(model)
    info = explorer.model_info()
    assert info["drawable"] is False and info["dataset"] is None
    assert [layer["name"] for layer in info["layers"]] == ["conv1", "bn1", "conv2", "conv3", "pool", "heads.hidden", "heads.out"]
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)
    item = explorer.input_from_bytes(_png(photo))
    assert np.array_equal(item.image, convert_image(photo, explorer.spec).image)  # resized as `predict` would
    data = explorer.forward(item, "all", "base64")
    want = inside.activations(model, item.image, "all")
    padded = layer_activations(model, np.stack([item.image] + [np.zeros_like(item.image)] * (explorer.batcher.min_batch - 1)),
                               explorer.layer_names, batch_size=explorer.batcher.min_batch)
    for name in ("conv1", "pool", "heads.hidden"):
        got = np.frombuffer(base64.b64decode(data["layers"][name]["data"]), dtype="<f4").reshape(data["layers"][name]["shape"])
        assert np.array_equal(got, padded[name][0].numpy())  # a row of the batched pass, exactly
        assert np.allclose(got, want.values[name].numpy(), rtol=1e-5, atol=1e-6)  # the single pass, to rounding
    assert np.allclose(data["probabilities"], want.probabilities.numpy(), atol=1e-6)
    exact = explorer.input_from_pixels(item.image.tolist())  # model-size pixels: used as they are
    assert np.array_equal(exact.image, item.image)
    explained = explorer.explain(item, "gradcam", "brick", {"layer": "conv3"}, "list")
    assert explained["target"] == 1 and np.asarray(explained["attribution"]["data"]).shape[1:] == (32, 32)
    assert draw_view(model, [], [], []) is None  # its forward is its own Python code: no pad in the atlas


def test_tuple_output_model_and_no_dataset():
    model = zoo.tuple_net()
    explorer = Explorer(model, split_note="no dataset: start with --dataset")
    item = explorer.input_from_pixels(np.pad(np.full((30, 10), 255, np.uint8), ((13, 13), (23, 23))).tolist())
    assert item.image.shape == (28, 28)  # another size: converted MNIST-style
    data = explorer.forward(item, ["conv", "fc"], "list")
    assert set(data["layers"]) == {"conv", "fc"} and abs(sum(data["probabilities"]) - 1) < 1e-5
    with pytest.raises(RequestError, match="start with --dataset") as error:
        explorer.pick("random")
    assert error.value.status == 404
    with pytest.raises(RequestError, match="no ink"):
        explorer.input_from_bytes(_png(np.zeros((40, 40), np.uint8)))


def _fake_atlas(folder, model, layer: str, maps: int) -> bytes:
    """An atlas folder holding a stored OIP stage and a top-k stage for ``layer``."""
    from convscope.report import images as img
    from convscope.report.build import model_sha256
    from convscope.report.cache import StageCache
    from convscope.report.stages import LayerOIPs, TopK

    cache = StageCache(folder / ".stages")
    picture = img.input_png(np.linspace(-3, 3, 784).reshape(1, 28, 28), "viridis", -3, 3)
    oips = LayerOIPs(layer=layer, maps=maps, status=["converged"] * maps, source=["random"] * maps, dead=[False] * maps,
                     fires_on_data=[True] * maps, snapshot_steps=[0, 10], alive=maps, params={"steps": 30},
                     arrays={"final_loss": np.arange(maps, dtype=np.float64)},
                     images={f"oip/{m}": picture for m in range(maps)})
    cache.save(f"oip:{layer}", "k1" * 32, oips, 1.0)
    top = TopK(k=3, num_images=10_000, layers={layer: {"maps": maps, "receptive_field": [3, 3]}},
               arrays={f"indices/{layer}": np.tile(np.array([5, 9, 2], np.int32), (maps, 1)),
                       f"values/{layer}": np.tile(np.array([3.0, 2.0, 1.0], np.float32), (maps, 1)),
                       f"rects/{layer}": np.zeros((maps, 3, 4), np.int16)},
               images={"strip/x/0": b"png"})
    cache.save("topk", "k2" * 32, top, 1.0)
    (folder / "atlas.json").write_text(json.dumps({"provenance": {"model_sha256": model_sha256(model)}}))
    return picture


def test_stages_of_a_built_atlas_are_read(tmp_path, shipped_model, test_split):
    picture = _fake_atlas(tmp_path, shipped_model, "Conv2D_1", 32)
    explorer = Explorer(shipped_model, split=test_split, atlas_dir=tmp_path)
    assert explorer.atlas.usable and explorer.model_info()["atlas"]["oip_layers"] == ["Conv2D_1"]
    card = explorer.card("Conv2D_1", 4)
    assert card["oip"]["source"] == "atlas" and card["oip"]["final"] == 4.0
    assert base64.b64decode(card["oip"]["png"].split(",", 1)[1]) == picture
    assert card["topk"]["source"] == "atlas" and card["topk"]["images"] == ["test:5", "test:9", "test:2"]
    job = explorer.oip_job("Conv2D_1", 4)
    assert job.status == "done" and job.result["source"] == "atlas"  # nothing to compute
    assert explorer.card("Conv2D_2", 0)["oip"] is None  # not in the atlas


def test_an_atlas_of_another_model_is_not_used(tmp_path, shipped_model, test_split):
    from convscope.models import build_model

    _fake_atlas(tmp_path, build_model("seed_cnn"), "Conv2D_1", 32)  # fresh random weights
    explorer = Explorer(shipped_model, split=test_split, atlas_dir=tmp_path)
    assert not explorer.atlas.usable and "another model" in explorer.atlas.note
    assert explorer.card("Conv2D_1", 4)["oip"] is None
    empty = Explorer(shipped_model, split=test_split, atlas_dir=tmp_path / "missing")
    assert not empty.atlas.usable and "no atlas.json" in empty.atlas.note


def test_concurrent_forward_passes_in_threads_equal_sequential(shipped_model, test_split):
    """The explorer shares one model between threads: the probe keeps each thread's values apart."""
    from concurrent.futures import ThreadPoolExecutor

    explorer = Explorer(shipped_model, split=test_split)
    items = [explorer.input_from_ref(f"test:{i}") for i in range(16)]
    sequential = [explorer.forward(item, "all", "base64") for item in items]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda item: explorer.forward(item, "all", "base64"), items * 3))
    assert parallel == sequential * 3
    assert len({tuple(answer["probabilities"]) for answer in sequential}) == 16


_CONCURRENT = """
import contextlib, json, os, sys, threading
from convscope.data import load_split
from convscope.models import load_model
from convscope.serve import Explorer

explorer = Explorer(load_model(None, device="cpu"), split=load_split("test", data_dir=sys.argv[1]))
min_batch = int(sys.argv[2]) if len(sys.argv) > 2 else None
if min_batch is not None:
    from convscope.serve.batcher import ForwardBatcher
    explorer._batcher = ForwardBatcher(explorer.model, explorer.layer_names + ["probabilities"], (28, 28), min_batch=min_batch)
items = [explorer.input_from_ref(f"test:{i}") for i in (3, 14, 159, 2653, 589, 7932, 384, 626)]
alone = [explorer.forward(item, "all", "base64") for item in items]
assert len({json.dumps(a["probabilities"]) for a in alone}) == len(items)  # different inputs: equality means something
batcher, equal, batched = explorer.batcher, 0, 0
for trial in range(5):
    passes, answers, go = batcher.passes, {}, threading.Barrier(len(items))
    stacks = [contextlib.ExitStack() for _ in items]
    for stack in stacks:  # all announced first (as the server does while decoding): the batcher waits for them
        stack.enter_context(batcher.expecting())

    def ask(i):
        go.wait()
        pending = batcher.submit(items[i].image)
        stacks[i].close()
        answers[i] = explorer.forward_answer(items[i], explorer.layer_names, "base64", pending.result(60))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    batched += batcher.passes - passes < len(items)
    equal += sum(answers[i] == alone[i] for i in range(len(items)))
print(json.dumps({"equal": equal, "batched": batched, "min_batch": batcher.min_batch}))
"""


def _concurrent(mnist_dir, *args: str) -> dict:
    import os
    import subprocess
    import sys

    from tests.serve.conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + str(REPO), "OMP_NUM_THREADS": "1",
           "MKL_CBWR": "AUTO,STRICT"}  # as `convscope serve` sets it (see its docstring)
    done = subprocess.run([sys.executable, "-c", _CONCURRENT, str(mnist_dir), *args], capture_output=True, text=True, check=False,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_concurrent_forwards_are_batched_and_equal_their_sequential_answers(mnist_dir):
    """Eight threads asking at once, five times: their requests share batched passes (fewer passes than
    requests), and each gets exactly (bit for bit) the answer it gets alone. In a fresh interpreter, since MKL
    reads its reproducibility setting when it starts."""
    result = _concurrent(mnist_dir)
    assert result["batched"] == 5 and result["equal"] == 40, result


def test_without_padding_batched_answers_would_differ(mnist_dir):
    """Why passes are padded: with every pass at its own size (no padding), a batched answer is not the one the
    same input gets alone (float32 rounding of another kernel) — so the test above can fail."""
    result = _concurrent(mnist_dir, "1")
    assert result["batched"] == 5 and result["equal"] < 40, result


def test_batched_rows_equal_the_engine_on_the_same_batch(shipped_model, test_split):
    """A row of a batched pass is the engine's (layer_activations) on the same padded batch, exactly."""
    from convscope.inside import layer_activations
    from convscope.serve.batcher import BatchedActivations

    names = ["Conv2D_1", "Dense_1", "probabilities"]
    images = [test_split.images[i] for i in (5, 6, 7)]
    rows = BatchedActivations(shipped_model, names)(images, pad_to=5)
    stack = np.concatenate([np.stack(images), np.zeros((2, 28, 28), np.uint8)])
    want = layer_activations(shipped_model, stack, names, batch_size=5)
    for i, row in enumerate(rows):
        for name in names:
            assert np.array_equal(row[name].numpy(), want[name][i].numpy()), (i, name)
