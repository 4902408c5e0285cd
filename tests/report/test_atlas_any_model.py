"""The atlas of models and data it was not written for: an RGB model trained on an
image folder of real photos, a residual net with nested names on a .npz dataset, a
Keras file, a Fashion-MNIST model trained by ``convscope train`` — each checked
against independent computations and in headless Chromium — plus chunked stages
that equal one pass, and the atlas split into one page per layer."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from convscope.report import QUICK, AtlasOptions, build_atlas
from zoo import PHOTO_CLASSES, make_photo_folder, residual_net, rgb_net

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
KERAS = Path(__file__).resolve().parents[3] / "shared" / "data" / "keras"
#: a small profile: every section, little work
TINY = dataclasses.replace(QUICK, name="tiny", oip_steps=20, precursor_candidates=32, precursor_dataset=64,
                           precursor_preactivation_steps=10, class_steps=15, dream_width=96, dream_octaves=2,
                           dream_steps=2, carve_rounds=1, carve_epochs=5, mistakes=3, ig_steps=8)


def _assert_most_confused(confusion, compare: dict) -> None:
    """The compared pair has the largest symmetric confusion count (an independent numpy count)."""
    confusion = np.asarray(confusion)
    symmetric = confusion + confusion.T
    np.fill_diagonal(symmetric, -1)
    a, b = compare["class_a"], compare["class_b"]
    assert a < b and symmetric[a, b] == symmetric.max()


def _options(out: Path, **changes) -> AtlasOptions:
    return AtlasOptions(out_dir=out, profile=changes.pop("profile", TINY), seed=0, history_search=[],
                        command="pytest", **changes)


def check_in_chromium(index: Path) -> dict:
    """Open a page in headless Chromium: no console errors, no failed or external
    requests, no broken images. Returns a few facts for the caller."""
    sync_api = pytest.importorskip("playwright.sync_api") if not os.environ.get("CI") else __import__(
        "playwright.sync_api", fromlist=["sync_playwright"])
    if not CHROMIUM.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; CI must install Debian's chromium")
        pytest.skip("chromium not installed")
    errors, failed, requested = [], [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.on("request", lambda r: requested.append(r.url))
            page.goto(index.as_uri(), wait_until="load")
            page.wait_for_function("Array.from(document.images).every(i => i.complete)")
            facts = page.evaluate("""() => ({
                images: document.images.length,
                broken: Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.alt),
                text: document.body.innerText,
                tiles: Object.fromEntries(Array.from(document.querySelectorAll('.oip-gallery'))
                    .map(g => [g.dataset.layer, g.querySelectorAll('a.tile').length])),
                sections: Array.from(document.querySelectorAll('section[data-layer]')).map(s => s.dataset.layer),
            })""")
        finally:
            browser.close()
    assert errors == [] and failed == []
    assert all(url.startswith(("file:", "data:")) for url in requested)
    assert facts["broken"] == []
    return facts


# ----------------------------------------------------------------------------- an RGB model on real photos
@pytest.fixture(scope="module")
def photo_model(tmp_path_factory):
    """A small RGB net trained for a few epochs on an image folder of real photo crops."""
    from convscope.data.catalog import split_for_model
    from convscope.spec import spec_of
    from convscope.training import train
    from convscope.training.recipes import Recipe

    folder = make_photo_folder(tmp_path_factory.mktemp("photos"), per_class=40, size=40)
    net = rgb_net(classes=tuple(PHOTO_CLASSES))
    import convscope

    convscope.wrap(net, spec_of(net).replace(dataset=str(folder)))
    train_split = split_for_model(spec_of(net), "train")
    test_split = split_for_model(spec_of(net), "test")
    recipe = Recipe(name="photos", epochs=6, batch_size=16, optimizer="adam", lr=2e-3, schedule="constant",
                    eps=1e-8, l2_dense=0.0, preprocessing="meanstd", init="torch")
    with torch.random.fork_rng():
        state = train(net, train_split, test_split, recipe, seed=0)
    return net, test_split, state


def test_rgb_model_trains_on_the_photo_folder(photo_model):
    net, test_split, state = photo_model
    from convscope.evaluation import evaluate_model

    assert test_split.images.shape == (32, 32, 32, 3)
    accuracy = evaluate_model(net, test_split).accuracy
    assert accuracy == state.history[-1].test_accuracy
    assert accuracy >= 0.6  # 4 photos, chance is 0.25


def test_atlas_of_an_rgb_model(photo_model, tmp_path):
    from convscope.evaluation import evaluate_model
    from PIL import Image
    import io

    net, test_split, _ = photo_model
    result = build_atlas(_options(tmp_path / "rgb"), model=net)
    summary = json.loads(result.summary.read_text())
    card = summary["stages"]["model_card"]
    assert card["evaluation"]["accuracy"] == evaluate_model(net, test_split).accuracy
    assert card["evaluation"]["class_names"] == list(PHOTO_CLASSES)
    assert summary["provenance"]["layers"] == ["conv1", "conv2", "conv3", "heads.hidden"]
    assert summary["provenance"]["input"].startswith("3×32×32")
    for layer, maps in (("conv1", 12), ("conv2", 16), ("conv3", 24)):
        assert summary["stages"][f"oip:{layer}"]["maps"] == maps
    # colour OIPs: the stored pictures are RGB
    oip = result.results["oip:conv1"]
    picture = Image.open(io.BytesIO(oip.images["oip/0"]))
    assert picture.mode == "RGB" and picture.size == (32, 32)
    assert oip.arrays["oips"].shape == (12, 3, 32, 32)
    # the most confused pair is the model's own
    _assert_most_confused(card["evaluation"]["confusion"], summary["stages"]["compare"])
    facts = check_in_chromium(result.index)
    assert facts["tiles"] == {"conv1": 12, "conv2": 16, "conv3": 24}
    assert facts["sections"] == ["conv1", "conv2", "conv3", "heads.hidden"]
    for name in PHOTO_CLASSES:
        assert name in facts["text"]
    assert "4 versus 9" not in facts["text"]


def test_chunked_stages_equal_one_pass(photo_model, tmp_path):
    """OIPs in chunks of 5 maps and top-k over shards of 7 images give the atlas of
    one batch and one pass: the same examples, the same starts, the same OIPs."""
    net, _, _ = photo_model
    layers = ["conv1", "conv3"]
    whole = build_atlas(_options(tmp_path / "whole", layers=layers), model=net)
    chunked = build_atlas(_options(tmp_path / "chunked", layers=layers,
                                   profile=dataclasses.replace(TINY, oip_chunk=5, topk_shard=7)), model=net)
    assert "oip:conv3@5-9" in chunked.results and "topk@7-13" in chunked.results
    for layer in layers:
        a, b = whole.results["topk"], chunked.results["topk"]
        assert np.array_equal(a.indices(layer), b.indices(layer))
        assert np.array_equal(a.values(layer), b.values(layer))
        oa, ob = whole.results[f"oip:{layer}"], chunked.results[f"oip:{layer}"]
        assert oa.source == ob.source and oa.dead == ob.dead
        np.testing.assert_allclose(oa.arrays["final_loss"], ob.arrays["final_loss"], rtol=1e-4, atol=1e-5)


def test_split_pages_with_image_files(photo_model, tmp_path):
    net, _, _ = photo_model
    result = build_atlas(_options(tmp_path / "split", layers=["conv1", "heads.hidden"], pages="split"), model=net)
    assert [p.name for p in result.pages] == ["index.html", "conv1.html", "heads.hidden.html"]
    assert len(list((result.out_dir / "img").rglob("*.png"))) > 20
    assert "data:image/png" not in result.index.read_text()
    facts = check_in_chromium(result.pages[1])
    assert facts["tiles"] == {"conv1": 12}
    check_in_chromium(result.index)


# ----------------------------------------------------------------------------- nested names, a .npz dataset
def test_atlas_of_a_residual_net_on_an_npz_dataset(tmp_path, test_split):
    from PIL import Image

    import convscope
    from convscope.spec import spec_of

    small = np.stack([np.asarray(Image.fromarray(im).resize((20, 20), Image.Resampling.BILINEAR)) for im in test_split.images[:300]])
    np.savez(tmp_path / "mnist20.npz", images=small, labels=test_split.labels[:300])
    net = residual_net()
    convscope.wrap(net, spec_of(net).replace(dataset=str(tmp_path / "mnist20.npz")))
    result = build_atlas(_options(tmp_path / "res"), model=net)
    summary = json.loads(result.summary.read_text())
    assert summary["provenance"]["layers"] == ["stem", "stages.0.body.0", "stages.0.conv2", "stages.1.body.0",
                                               "stages.1.conv2"]
    assert summary["stages"]["oip:stages.1.conv2"]["maps"] == 8
    # the deepest conv layer's map carved into the photo responds most to the photo
    dream = summary["stages"]["dream"]
    assert dream["carve"]["map"].startswith("stages.1.conv2:")
    facts = check_in_chromium(result.index)
    assert facts["tiles"]["stages.0.conv2"] == 8


# ----------------------------------------------------------------------------- Keras and Fashion-MNIST, through the CLI
def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "convscope", *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    return run


def test_report_of_a_keras_file(tmp_path):
    model = KERAS / "seed_model_a_keras2.h5"
    if not model.is_file():
        pytest.fail(f"{model} is missing (../shared/data/keras)")
    run = _cli("report", "--model", str(model), "--preprocess", "standardize", "--quick", "--out", str(tmp_path / "k"),
               "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    index = Path(json.loads(run.stdout)["index"])
    summary = json.loads((index.parent / "atlas.json").read_text())
    # the Keras layer names, Keras' parameter count, the accuracy Keras reports for this file
    assert summary["provenance"]["layers"] == ["Conv2D_1", "Conv2D_2", "Conv2D_3", "dense_14"]
    assert summary["stages"]["model_card"]["total_params"] == 208_982
    assert abs(summary["stages"]["model_card"]["evaluation"]["accuracy"] - 0.9899) < 1e-9
    assert summary["provenance"]["model_kind"] == "keras"
    facts = check_in_chromium(index)
    assert facts["sections"] == ["Conv2D_1", "Conv2D_2", "Conv2D_3", "dense_14"]


def test_fashion_mnist_end_to_end(tmp_path):
    """convscope train --dataset fashion-mnist, then the atlas: its accuracy is
    evaluate's, its class names are Fashion-MNIST's, its comparison is the model's
    own most confused pair."""
    run = _cli("train", "--dataset", "fashion-mnist", "--train-limit", "3000", "--epochs", "1", "--out",
               str(tmp_path / "run"), "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    model = tmp_path / "run" / "seed_cnn.json"
    config = json.loads(model.read_text())
    assert config["dataset"] == "fashion-mnist" and config["class_names"][9] == "Ankle boot"
    assert config["image_conversion"] == "resize"
    evaluated = json.loads(_cli("evaluate", "--model", str(model), "--json").stdout)
    report = _cli("report", "--model", str(model), "--quick", "--out", str(tmp_path / "atlas"), "--json")
    assert report.returncode == 0, report.stderr[-2000:]
    index = Path(json.loads(report.stdout)["index"])
    summary = json.loads((index.parent / "atlas.json").read_text())
    card = summary["stages"]["model_card"]["evaluation"]
    assert card["accuracy"] == evaluated["accuracy"]
    assert card["class_names"][5] == "Sandal" and "fashion-mnist" in summary["provenance"]["data"]
    compare = summary["stages"]["compare"]
    _assert_most_confused(card["confusion"], compare)
    facts = check_in_chromium(index)
    assert "Ankle boot" in facts["text"] and "Trouser" in facts["text"]
    names = card["class_names"]
    assert f"{names[compare['class_a']]} versus {names[compare['class_b']]}" in facts["text"]
