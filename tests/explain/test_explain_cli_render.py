"""``convscope explain`` end to end, and the explain renderers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from convscope.cli import main


@pytest.fixture()
def run(mnist_dir, tmp_path):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, ["explain", *args, "--data-dir", str(mnist_dir), "--out", str(tmp_path)])

    return invoke


def test_deconvnet_map_target_writes_png_npy_json(run, tmp_path, shipped_model, test_split):
    result = run("--method", "deconvnet", "--image", "test:1816", "--target", "Conv2D_3:56", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["image"] == "test:1816" and data["label"] == int(test_split.labels[1816])
    assert abs(sum(data["probabilities"]) - 1) < 1e-4
    entry = data["results"][0]
    assert entry["method"] == "deconvnet" and entry["target"] == "Conv2D_3:56" and entry["params"]["keep"] == "map"
    # per-entry files are named relative to the output folder; "files" has the full paths
    assert entry["npy"] == "explain_deconvnet_Conv2D_3_56.npy" and entry["png"] == "explain_deconvnet_Conv2D_3_56.png"
    assert str(tmp_path / entry["npy"]) in data["files"] and str(tmp_path / entry["png"]) in data["files"]
    saved = np.load(tmp_path / entry["npy"])
    assert saved.shape == (28, 28)
    assert entry["max"] == pytest.approx(float(saved.max()), rel=1e-5)
    # the file holds what the engine computes
    from convscope.explain import Deconvnet
    from convscope.inference import to_input

    expected = Deconvnet(shipped_model).attribute(to_input(shipped_model, test_split.images[1816]), "Conv2D_3:56")
    assert np.allclose(saved, expected[0, 0].numpy(), atol=1e-6)
    assert (tmp_path / "explain_deconvnet_Conv2D_3_56.png").stat().st_size > 10_000
    on_disk = json.loads((tmp_path / "explain.json").read_text())
    # the saved JSON and stdout list the same files, explain.json itself last
    assert on_disk["files"] == data["files"] and data["files"][-1] == str(tmp_path / "explain.json")
    assert {k: v for k, v in on_disk.items() if k != "files"} == {k: v for k, v in data.items() if k != "files"}


def test_all_classes_and_ig_delta(run, tmp_path):
    result = run("--method", "ig", "--all-classes", "--steps", "16", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    entry = data["results"][0]
    assert len(entry["per_class"]) == 10 and len(entry["ig_delta"]) == 10
    maps = np.load(tmp_path / entry["npy"])
    assert maps.shape == (10, 28, 28)
    # class maps really differ (IG is class sensitive)
    assert not np.allclose(maps[0], maps[1])
    assert (tmp_path / "explain_ig_all_classes.png").exists()


def test_every_method_side_by_side(run, tmp_path):
    result = run("--method", "all", "--target", "4", "--samples", "2", "--steps", "8")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "explain_all_methods.png").exists()
    data = json.loads((tmp_path / "explain.json").read_text())
    assert [e["method"] for e in data["results"]] == [
        "saliency", "deconvnet", "gbp", "gradcam", "ggradcam", "occlusion", "ig", "smoothgrad"]
    assert all(e["target"] == 4 for e in data["results"])


def test_sanity_command(run, tmp_path):
    result = run("--sanity", "--sanity-methods", "saliency,gradcam", "--sanity-images", "2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["sanity"]["stages"][0] == "original" and data["sanity"]["n_images"] == 2
    assert data["sanity"]["spearman_abs"]["saliency"][0] == 1.0
    assert (tmp_path / "sanity.png").exists() and (tmp_path / "sanity.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "Conv2D_9:3"], "valid layers"),
        (["--target", "Conv2D_3:999"], "0..127"),
        (["--target", "11"], "0..9"),
        (["--all-classes", "--target", "3"], "drop --target"),
        (["--image", "test:99999"], "0..9999"),
        (["--baseline", "black"], "--baseline"),
        (["--sanity", "--sanity-methods", "saliency,lrp"], "lrp"),
        (["--method", "gradcam", "--layer", "Dense_1"], "Grad-CAM"),
    ],
)
def test_bad_input_is_one_clear_line(run, args, message):
    result = run(*args)
    assert result.exit_code != 0
    assert message in result.output
    # click ends a ClickException / usage error with SystemExit; any other exception would be a traceback.
    assert isinstance(result.exception, SystemExit), repr(result.exception)


def test_renderers_share_scales_and_centre_signed_maps():
    from convscope.render.explain import all_classes_figure, explanation_figure, methods_figure, overlay_rgba

    image = np.zeros((28, 28), dtype=np.uint8)
    image[8:20, 12:16] = 255
    maps = torch.randn(10, 1, 28, 28) * torch.arange(1, 11).view(10, 1, 1, 1)
    fig = all_classes_figure(image, maps, probabilities=np.full(10, 0.1), label=3)
    panels = [ax for ax in fig.axes if ax.images and ax.get_title().startswith("class")]
    assert len(panels) == 10
    limits = {ax.images[0].get_clim() for ax in panels}
    assert len(limits) == 1  # one shared scale
    low, high = limits.pop()
    assert low == -high == pytest.approx(-float(maps.abs().max()))  # centred on 0
    assert all(ax.images[0].get_interpolation() == "nearest" for ax in panels)
    fig = explanation_figure(image, maps[0], signed=False, method_title="Grad-CAM", target_text="class 4")
    assert fig.axes[1].images[0].get_cmap().name == "inferno"
    assert fig.axes[0].images[0].get_cmap().name == "gray"
    fig = methods_figure(image, {"a": (maps[0], True), "b": (maps[1].abs(), False)})
    assert len([ax for ax in fig.axes if ax.images]) == 5
    rgba = overlay_rgba(np.array([[0.0, 1.0], [-2.0, 2.0]]), True, -2.0, 2.0)
    assert rgba[0, 0, 3] == 0 and rgba[1, 1, 3] == pytest.approx(0.85) and rgba[0, 1, 3] == pytest.approx(0.425)


def test_all_classes_figure_for_many_classes_and_rgb():
    from convscope.render.explain import MAX_CLASS_PANELS, all_classes_figure

    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[4:12, 4:12, 0] = 255  # a red square
    maps = torch.randn(60, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    probabilities = np.linspace(0.0, 1.0, 60)
    probabilities /= probabilities.sum()
    names = [f"kind{k}" for k in range(60)]
    fig = all_classes_figure(image, maps, probabilities=probabilities, class_names=names, label=59)
    panels = [ax for ax in fig.axes if ax.images and ax.get_title().startswith("class")]
    assert len(panels) == MAX_CLASS_PANELS == 40
    # the most probable classes are drawn (here the last 40), with their names
    assert panels[0].get_title().startswith("class 20 kind20") and "◀" in panels[-1].get_title()
    assert "the 40 most probable of 60 classes" in fig._suptitle.get_text()
    shown = np.asarray(fig.axes[0].images[0].get_array())
    assert shown.shape == (16, 16, 3) and shown[8, 8].tolist() == [255, 0, 0]  # the input in colour
    summed = maps[20].sum(0).numpy()  # an RGB map is drawn as the sum over its channels
    assert np.allclose(np.asarray(panels[0].images[0].get_array()), summed, atol=1e-5)
