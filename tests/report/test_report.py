"""The atlas: build it (quick profile) on the real MNIST test set with the shipped
model, open it in headless Chromium, and check what a reader would see; then
check that stored stages are reused and that an interrupted build resumes.

Chromium: Debian's ``/usr/bin/chromium`` driven by Playwright (the Python
package only; no browser download). Without it the browser test is skipped —
or fails when ``CI`` is set, because CI must run it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from convscope.report import AtlasOptions, build_atlas
from convscope.report.cache import StageCache

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
EXPECTED_TILES = {"Conv2D_1": 32, "Conv2D_2": 64, "Conv2D_3": 128}


def _options(out: Path, mnist_dir: Path) -> AtlasOptions:
    # history_search=[]: the test must not depend on training runs lying around
    return AtlasOptions(out_dir=out, data_dir=mnist_dir, profile="quick", seed=0, history_search=[],
                        command="pytest tests/report")


@pytest.fixture(scope="module")
def evaluation(shipped_model, test_split):
    """The engine's evaluation of the shipped model on the test set (the atlas must show these numbers)."""
    from convscope.evaluation import evaluate_model

    return evaluate_model(shipped_model, test_split)


@pytest.fixture(scope="module")
def atlas(tmp_path_factory, mnist_dir):
    """One quick atlas, built once for the module: ``(result, stages computed)``."""
    out = tmp_path_factory.mktemp("atlas")
    computed: list[str] = []
    result = build_atlas(_options(out, mnist_dir), on_stage=computed.append)
    return result, computed


def test_build_writes_one_self_contained_page(atlas):
    result, computed = atlas
    planned = [t.name for t in result.timings]
    assert sorted(computed) == sorted(planned)  # a fresh folder: every stage computed (in dependency waves)
    assert planned[:4] == ["model_card", "training", "activations", "topk@0-9999"]
    assert {"topk", "oip:Conv2D_1@0-31", "oip:Conv2D_2@0-63", "oip:Conv2D_3@0-127", "oip:Conv2D_1", "oip:Conv2D_2",
            "oip:Conv2D_3", "deconv", "classes", "compare", "mistakes", "dream"} <= set(planned)
    for stage in ("activations", "topk", "oip:Conv2D_3", "deconv", "compare", "mistakes"):  # dependencies first
        assert computed.index(stage) > computed.index("model_card" if stage in ("activations", "compare", "mistakes")
                                                      else "topk@0-9999")
    text = result.index.read_text(encoding="utf-8")
    # nothing is fetched from anywhere: no external URLs in src/href, no stylesheet or script files
    assert not re.search(r'(?:src|href)\s*=\s*"(?:https?:)?//', text)
    assert "<link rel=\"stylesheet\"" not in text and "<script src" not in text
    assert "@import" not in text and "url(http" not in text
    # every section and every per-map anchor is there
    for anchor in ("model-card", "layer-Conv2D_1", "layer-Conv2D_2", "layer-Conv2D_3", "layer-Dense_1",
                   "classes", "compare", "mistakes", "dream", "provenance", "Conv2D_3-120", "Conv2D_1-0"):
        assert f'id="{anchor}"' in text, anchor
    summary = json.loads(result.summary.read_text())
    assert summary["provenance"]["model_sha256"] and len(summary["provenance"]["model_sha256"]) == 64
    assert summary["provenance"]["model_name"] == "seed_cnn" and "shipped" in summary["provenance"]["model"]
    assert [t["stage"] for t in summary["timings"]][:-1] == planned
    # the index is the only page; no half-written temporary files are left
    assert not list(result.out_dir.glob("*.part")) and not list(result.out_dir.glob(".*.part"))


def test_atlas_numbers_match_the_engines(atlas, evaluation):
    result, _ = atlas
    summary = json.loads(result.summary.read_text())
    card = summary["stages"]["model_card"]
    assert card["evaluation"]["accuracy"] == evaluation.accuracy
    assert card["evaluation"]["num_errors"] == evaluation.num_errors
    assert card["total_params"] == 208_982
    oip = summary["stages"]["oip:Conv2D_3"]
    assert oip["maps"] == 128 and len(oip["dead"]) == 128
    # a map marked alive really reached a positive objective, a dead one did not
    assert oip["alive"] == sum(not d for d in oip["dead"])
    assert oip["alive"] > 61  # the reference found OIPs for 61 of 128; the precursor does better
    mistakes = summary["stages"]["mistakes"]["mistakes"]
    assert mistakes and all(m["true"] != m["predicted"] for m in mistakes)
    assert all(int(evaluation.predictions[m["index"]]) == m["predicted"] for m in mistakes)
    compare = summary["stages"]["compare"]
    # the model's most confused pair on its own test set is 4 and 9 (tied with 3 and 5 at 6 confusions;
    # the probability mass decides), as the engine says
    assert (compare["class_a"], compare["class_b"]) == (4, 9)
    pair = evaluation.most_confused_pair()
    assert (pair.a, pair.b) == (4, 9)
    symmetric = evaluation.confusion + evaluation.confusion.T
    symmetric[range(10), range(10)] = -1
    assert symmetric[4, 9] == symmetric.max()
    assert all(e["label"] == 4 and e["predicted"] == 4 for e in compare["details"]["ambiguous_a"])


def _launch(playwright):
    if not CHROMIUM.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; CI must install Debian's chromium (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium chromium-driver); browser check skipped")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


def test_atlas_in_headless_chromium(atlas, evaluation):
    sync_api = pytest.importorskip("playwright.sync_api") if not os.environ.get("CI") else __import__(
        "playwright.sync_api", fromlist=["sync_playwright"])
    result, _ = atlas
    console_errors: list[str] = []
    failed: list[str] = []
    requested: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: console_errors.append(str(exc)))
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.on("request", lambda r: requested.append(r.url))
            page.goto(result.index.as_uri(), wait_until="load")
            page.wait_for_function("Array.from(document.images).every(i => i.complete)")
            broken = page.evaluate(
                "() => Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.alt)")
            n_images = page.evaluate("() => document.images.length")
            tiles = page.evaluate(
                "() => Object.fromEntries(Array.from(document.querySelectorAll('.oip-gallery'))"
                ".map(g => [g.dataset.layer, g.querySelectorAll('a.tile img').length]))")
            cards = page.evaluate(
                "() => Object.fromEntries(Array.from(document.querySelectorAll('.cards'))"
                ".map(g => [g.dataset.layer, g.querySelectorAll('article.map').length]))")
            sections = page.evaluate(
                "() => Array.from(document.querySelectorAll('section[data-layer]')).map(s => s.dataset.layer)")
            shown_accuracy = page.get_attribute("#test-accuracy", "data-value")
            shown_text = page.inner_text("#test-accuracy")
            dead_tiles = page.evaluate("() => document.querySelectorAll('#layer-Conv2D_3 a.tile.dead').length")
            # the sticky table of contents stays in view after scrolling
            page.evaluate("() => window.scrollTo(0, document.body.scrollHeight / 2)")
            toc_top = page.evaluate("() => document.querySelector('nav.toc').getBoundingClientRect().top")
            # the gallery tile of map 120 links to the map's own card
            page.click("#layer-Conv2D_3 a.tile[href='#Conv2D_3-120']")
            try:
                page.wait_for_function(
                    "() => { const r = document.getElementById('Conv2D_3-120').getBoundingClientRect();"
                    " return r.top >= -2 && r.top < window.innerHeight; }", timeout=10_000)
                target_visible = True
            except sync_api.TimeoutError:
                target_visible = False
            # the "go to map" box in the table of contents
            page.fill("nav.toc input[name=address]", "Conv2D_2:5")
            page.press("nav.toc input[name=address]", "Enter")
            page.wait_for_function("() => location.hash === '#Conv2D_2-5'", timeout=10_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.goto(result.index.as_uri(), wait_until="load")
            page.screenshot(path=str(ARTIFACTS / "atlas-quick.png"))
            page.locator("#layer-Conv2D_3").screenshot(path=str(ARTIFACTS / "atlas-quick-Conv2D_3.png"))
        finally:
            browser.close()
    assert console_errors == []
    assert failed == []
    assert all(url.startswith(("file:", "data:")) for url in requested), [u[:80] for u in requested
                                                                          if not u.startswith(("file:", "data:"))]
    assert n_images > 1000 and broken == []
    assert tiles == EXPECTED_TILES
    assert cards == EXPECTED_TILES
    assert sections == ["Conv2D_1", "Conv2D_2", "Conv2D_3", "Dense_1"]
    summary = json.loads(result.summary.read_text())
    assert dead_tiles == sum(summary["stages"]["oip:Conv2D_3"]["dead"])
    assert float(shown_accuracy) == evaluation.accuracy
    assert shown_text.strip() == f"{100 * evaluation.accuracy:.2f} %"
    assert abs(toc_top) < 1
    assert target_visible
    assert (ARTIFACTS / "atlas-quick.png").stat().st_size > 10_000


def test_second_build_reuses_every_stage(atlas, tmp_path, mnist_dir):
    result, _ = atlas
    out = tmp_path / "again"
    shutil.copytree(result.out_dir, out)
    computed: list[str] = []
    again = build_atlas(_options(out, mnist_dir), on_stage=computed.append)
    assert computed == []
    assert again.cached == [t.name for t in result.timings]
    assert again.index.read_text().count('class="tile') == result.index.read_text().count('class="tile')
    # a changed parameter (the seed) invalidates the stages that depend on it
    computed.clear()
    changed = _options(out, mnist_dir)
    changed.seed = 1

    def stop(name: str) -> None:  # stop before computing anything: we only need to know it would
        computed.append(name)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_atlas(changed, on_stage=stop)
    assert computed == ["model_card"]


def test_interrupted_build_resumes(atlas, tmp_path, mnist_dir):
    """Forget the last two stages (as if the build had stopped there), interrupt
    the next build in the last stage, then resume: only the missing stage runs,
    and the old page stays intact until the new one is complete."""
    result, _ = atlas
    out = tmp_path / "resume"
    shutil.copytree(result.out_dir, out)
    names = [t.name for t in result.timings]
    cache = StageCache(out / ".stages")
    for name in names[-2:]:
        assert cache.forget(name) == 1
    old_page = (out / "index.html").read_bytes()

    computed: list[str] = []

    def interrupt_last(name: str) -> None:
        computed.append(name)
        if name == names[-1]:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_atlas(_options(out, mnist_dir), on_stage=interrupt_last)
    assert computed == names[-2:]
    assert any(cache.folder.glob(f"{names[-2]}--*.json")) and not any(cache.folder.glob(f"{names[-1]}--*.json"))
    assert (out / "index.html").read_bytes() == old_page  # not touched by the interrupted build

    computed.clear()
    resumed = build_atlas(_options(out, mnist_dir), on_stage=computed.append)
    assert computed == [names[-1]]
    assert resumed.executed == [names[-1]]
    assert 'id="dream"' in resumed.index.read_text()


def test_cli_report_json_and_bad_layer(atlas, tmp_path, mnist_dir):
    from convscope.cli import main

    result, _ = atlas
    out = tmp_path / "cli"
    shutil.copytree(result.out_dir, out)
    runner = CliRunner()
    ok = runner.invoke(main, ["report", "--quick", "--out", str(out), "--data-dir", str(mnist_dir), "--json"])
    assert ok.exit_code == 0, ok.output
    payload = json.loads(ok.stdout)
    assert Path(payload["index"]).is_file()
    # only the training curves may be recomputed (the CLI also searches ./runs for a training history)
    assert sum(not t["cached"] for t in payload["timings"]) <= 1
    bad = runner.invoke(main, ["report", "--quick", "--out", str(out), "--data-dir", str(mnist_dir),
                               "--layers", "Conv2D_9"])
    assert bad.exit_code != 0
    assert "Conv2D_9" in bad.output and "Conv2D_1" in bad.output  # names the problem and the valid layers


def test_training_history_is_found_with_the_model_only(tmp_path):
    """Curves come from the history stored with the model: in its config, beside
    its file, or in a run folder whose model file has the same weights hash —
    never from an unrelated run."""
    from types import SimpleNamespace

    from convscope.report.stages import find_history

    def model(sha: str, training: dict | None = None):
        return SimpleNamespace(config=SimpleNamespace(training=training or {}, weights_sha256=sha))

    epochs = [{"epoch": 1, "train_loss": 0.3, "train_accuracy": 0.9, "test_loss": 0.2, "test_accuracy": 0.95,
               "lr_start": 1e-3, "lr_end": 1e-3, "seconds": 1.0, "images_per_second": 100.0}]
    elsewhere = tmp_path / "models" / "mine.json"
    elsewhere.parent.mkdir()
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "seed_cnn.json").write_text(json.dumps({"weights_sha256": "aaa"}))
    (runs / "a" / "history.json").write_text(json.dumps(
        {"epochs": epochs, "lr_history": [1e-3], "model_files": ["somewhere/else/seed_cnn.json"]}))
    history, source = find_history(model("aaa"), str(elsewhere), [runs])
    assert history is not None and source.endswith("history.json")  # matched by hash (file found beside the history)
    history, source = find_history(model("bbb"), str(elsewhere), [runs])
    assert history is None and "no training history" in source
    embedded, source = find_history(model("bbb", {"history": {"epochs": epochs}}), str(elsewhere), [runs])
    assert embedded["epochs"] == epochs and source == "model config"
    (elsewhere.parent / "history.json").write_text(json.dumps({"epochs": epochs}))
    beside, source = find_history(model("bbb"), str(elsewhere), [])
    assert beside["epochs"] == epochs and source == str(elsewhere.parent / "history.json")


def test_atlas_draw_pad(atlas, shipped_model, test_split):
    """The atlas' draw pad, offline from disk: the sample digits and a drawing made with the mouse give the
    probabilities PyTorch gives on the same pixels, and the drawing is converted as mnistify converts it."""
    import numpy as np

    from convscope.data.user_image import mnistify
    from convscope.inside import layer_activations

    sync_api = pytest.importorskip("playwright.sync_api") if not os.environ.get("CI") else __import__(
        "playwright.sync_api", fromlist=["sync_playwright"])
    result, _ = atlas
    text = result.index.read_text(encoding="utf-8")
    assert 'id="draw"' in text and 'href="#draw"' in text
    assert re.search(r"The model(?:'|&#39;)s 208,982 weights add 1\.1 MB to this file", text)
    errors: list[str] = []
    requested: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda r: requested.append(r.url))
            page.goto(result.index.as_uri(), wait_until="load")
            page.wait_for_function("window.atlasDraw && window.atlasDraw.runs >= 1", timeout=30_000)
            sample = page.evaluate("window.atlasDraw.last")
            assert page.evaluate("document.querySelectorAll('.draw-sample').length") == 10
            grids = page.evaluate("Array.from(document.querySelectorAll('#draw-layers canvas')).map(c => c.dataset.layer)")
            page.locator("#draw").scroll_into_view_if_needed()
            box = page.locator("#draw-canvas").bounding_box()
            page.mouse.move(box["x"] + 0.35 * box["width"], box["y"] + 0.2 * box["height"])
            page.mouse.down()
            for t in np.linspace(0, 1, 12)[1:]:
                page.mouse.move(box["x"] + (0.35 + 0.3 * t) * box["width"], box["y"] + 0.2 * box["height"])
            for t in np.linspace(0, 1, 12)[1:]:
                page.mouse.move(box["x"] + (0.65 - 0.2 * t) * box["width"], box["y"] + (0.2 + 0.65 * t) * box["height"])
            page.mouse.up()
            page.wait_for_function("window.atlasDraw.last && window.atlasDraw.last.source === 'your drawing'", timeout=30_000)
            page.wait_for_timeout(300)  # the last animation frame's conversion
            drawn = page.evaluate("window.atlasDraw.last")
            gray = page.evaluate("Array.from(ConvscopeForward.grayOf(document.getElementById('draw-canvas')"
                                 ".getContext('2d').getImageData(0, 0, 280, 280).data))")
            ARTIFACTS.mkdir(exist_ok=True)
            page.locator("#draw").screenshot(path=str(ARTIFACTS / "atlas-draw-pad.png"))
        finally:
            browser.close()
    assert errors == []
    assert all(url.startswith(("file:", "data:")) for url in requested)
    assert grids == ["Conv2D_1", "Max_Pool_1", "Conv2D_2", "Max_Pool_2", "Conv2D_3", "Dense_1", "Dense_2"]
    index = int(sample["source"].split(":")[1])
    assert np.array_equal(np.asarray(sample["pixels"], dtype=np.uint8).reshape(28, 28), test_split.images[index])
    converted = mnistify(np.asarray(gray, dtype=np.float64).reshape(280, 280)).image
    pixels = np.asarray(drawn["pixels"], dtype=np.uint8).reshape(28, 28)
    assert np.abs(pixels.astype(int) - converted.astype(int)).max() <= 1
    for shown in (sample, drawn):
        picture = np.asarray(shown["pixels"], dtype=np.uint8).reshape(28, 28)
        want = layer_activations(shipped_model, picture, ["probabilities"])["probabilities"][0].numpy()
        assert np.abs(np.asarray(shown["probabilities"]) - want).max() < 1e-4
        assert shown["predicted"] == int(want.argmax())
    assert drawn["predicted"] == 7  # a seven, drawn with the mouse
