"""The attribution use cases (convscope.app.explain) on an RGB model whose dataset
is a folder of real photos, and on the gray residual net: results, JSON, figures in
colour, arrays, the sanity check, progress and cancellation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from zoo import residual_net

from convscope.app.explain import (
    ExplainResult, attribution_stats, explain_gallery, explain_image, prepare_images, sanity_check,
)
from convscope.explain import IntegratedGradients, Occlusion, Saliency
from convscope.progress import Cancelled, Progress


@pytest.fixture(scope="module")
def photos(photo_net):
    from convscope.data.catalog import split_for_model
    from convscope.spec import spec_of

    return split_for_model(spec_of(photo_net), "test")


def _input_images(fig):
    """The arrays of the input panels (the first image of each axes)."""
    return [ax.images[0].get_array() for ax in fig.axes if ax.images]


def test_explain_image_on_an_rgb_photo(photo_net, photos):
    image, label = photos.images[0], int(photos.labels[0])
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    result = explain_image(photo_net, image, ["saliency", "occlusion", "ig"], ["cat", None], label=label,
                           source="test:0", options={"steps": 16, "baseline": "mean", "window": 8, "stride": 4})
    assert isinstance(result, ExplainResult) and len(result.runs) == 6
    x = prepare_images(photo_net, image, single=True).inputs
    # the numbers are the engines' own
    run = result.run("saliency", 0)
    assert run.target == 1 and run.target_text == "class 1 (cat)"
    assert torch.allclose(run.attributions, Saliency(photo_net).attribute(x, 1))
    predicted = int(photo_net(x).argmax())
    assert result.run("saliency", 1).target == predicted == result.predicted
    occlusion = result.run("occlusion", 0)
    assert torch.allclose(occlusion.attributions, Occlusion(photo_net).attribute(x, 1, window=8, stride=4, baseline="mean"))
    ig = result.run("ig", 0)
    expected, delta = IntegratedGradients(photo_net).attribute(x, 1, steps=16, baseline="mean", return_convergence_delta=True)
    assert torch.allclose(ig.attributions, expected, atol=1e-6) and torch.allclose(ig.delta, delta, atol=1e-6)
    data = json.loads(json.dumps(result.to_json()))  # plain JSON types only
    assert data["class_names"] == ["astronaut", "cat", "coffee", "rocket"] and data["input_shape"] == [3, 32, 32]
    assert data["label_name"] == data["class_names"][label] and data["image"] == "test:0"
    assert abs(sum(data["probabilities"]) - 1) < 1e-4
    entry = data["results"][0]
    assert entry["target"] == 1 and entry["target_name"] == "cat" and entry["params"] == {"abs": False}
    stats = attribution_stats(run.attributions[0])
    assert entry["max"] == stats["max"] and len(entry["channel_abs_share"]) == 3
    assert sum(entry["channel_abs_share"]) == pytest.approx(1.0)
    assert data["results"][4]["ig_delta"] == pytest.approx(float(delta[0]), abs=1e-6)
    assert data["results"][2]["params"] == {"window": 8, "stride": 4, "baseline": "mean", "batch_size": 256}
    # defaults are recorded as they took effect: Grad-CAM's layer, occlusion's window for 32 px
    scaled = explain_image(photo_net, image, ["gradcam", "occlusion"], options={"baseline": "min"}).to_json()
    assert scaled["results"][0]["params"]["layer"] == "conv3"
    assert {k: scaled["results"][1]["params"][k] for k in ("window", "stride", "baseline")} == {
        "window": 5, "stride": 2, "baseline": "min"}
    # RGB maps keep their channels in the arrays
    arrays = result.arrays()
    assert arrays["explain_saliency_class1"].shape == (3, 32, 32)
    # several methods: one side-by-side figure per target, the input drawn in colour
    figures = result.figures()
    assert list(figures) == ["explain_all_methods", f"explain_all_methods_class{predicted}"]
    fig = figures["explain_all_methods"]()
    shown = _input_images(fig)[0]
    assert shown.shape == (32, 32, 3) and np.array_equal(np.asarray(shown), image)
    assert any("cat" in line for line in result.summary())


def test_one_method_figure_and_every_class(photo_net, photos):
    image = photos.images[1]
    result = explain_image(photo_net, image, "gbp", all_classes=True, source="test:1")
    run = result.runs[0]
    assert run.attributions.shape == (4, 3, 32, 32)
    x = prepare_images(photo_net, image, single=True).inputs
    for k in range(4):
        assert torch.allclose(run.attributions[k], result_of(photo_net, "gbp", x, k), atol=1e-7)
    data = result.to_json()
    assert data["all_classes"] and len(data["results"][0]["per_class"]) == 4
    assert result.arrays()["explain_gbp_all_classes"].shape == (4, 3, 32, 32)
    fig = result.figures()["explain_gbp_all_classes"]()
    titles = [ax.get_title() for ax in fig.axes]
    assert sum(t.startswith("class ") for t in titles) == 4
    assert any("class 3 rocket" in t for t in titles)
    assert _input_images(fig)[0].shape == (32, 32, 3)
    with pytest.raises(ValueError, match="give no target"):
        explain_image(photo_net, image, "gbp", 1, all_classes=True)


def result_of(model, name, x, target):
    from convscope.explain import make_method

    explainer, rest = make_method(model, name)
    return explainer.attribute(x, target, **rest)[0]


def test_gallery_on_rgb_and_gray_models(photo_net, photos):
    result = explain_gallery(photo_net, photos.images[:4], ["saliency", "gradcam"], target="label",
                             labels=photos.labels[:4], sources=[f"test:{i}" for i in range(4)])
    x = prepare_images(photo_net, photos.images[:4]).inputs
    labels = torch.as_tensor(np.array(photos.labels[:4]))
    assert torch.allclose(result.runs[0].attributions, Saliency(photo_net).attribute(x, labels))
    assert result.runs[1].title == "Grad-CAM (conv3)" and result.runs[1].attributions.shape == (4, 1, 32, 32)
    data = result.to_json()
    assert [image["target"] for image in data["images"]] == [int(v) for v in labels]
    assert len(data["results"][0]["per_image"]) == 4
    fig = result.figures()["explain_gallery"]()
    assert sum(1 for ax in fig.axes if ax.images) == 4 * 3
    # a gray model with a map target, inputs given as float tensors
    net = residual_net()
    x = torch.rand(3, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    gray = explain_gallery(net, x, "deconvnet", "stages.0.conv2:3")
    assert gray.targets == ["stages.0.conv2:3"] * 3 and gray.runs[0].attributions.shape == (3, 1, 20, 20)
    assert gray.arrays()["explain_gallery_deconvnet"].shape == (3, 20, 20)
    with pytest.raises(ValueError, match="needs the images' labels"):
        explain_gallery(net, x, "saliency", "label")


def test_sanity_check_on_an_rgb_model(photo_net, photos):
    before = {k: v.clone() for k, v in photo_net.state_dict().items()}
    result = sanity_check(photo_net, photos.images[:4], ["saliency", "gbp", "gradcam"],
                          sources=[f"test:{i}" for i in range(4)], labels=photos.labels[:4], seed=0)
    assert all(torch.equal(before[k], v) for k, v in photo_net.state_dict().items())
    check = result.check
    # layers with weights, last called first; the ModuleDict's members count as layers, BatchNorm does not
    assert check.stages == ["original", "heads.out", "heads.hidden", "conv3", "conv2", "conv1"]
    assert check.maps["gbp"].shape == (6, 4, 3, 32, 32)
    for method in check.methods:
        assert check.spearman[method][0] == pytest.approx(1.0) and check.ssim[method][0] == pytest.approx(1.0)
        assert check.spearman[method][-1] < 0.9  # every method changes once the whole net is random
    assert check.spearman_per_image["gbp"].shape == (6, 4)
    data = json.loads(json.dumps(result.to_json()))
    assert data["images_used"] == ["test:0", "test:1", "test:2", "test:3"] and data["sanity"]["n_images"] == 4
    fig = result.figures()["sanity"]()
    assert any(np.asarray(a).shape == (32, 32, 3) for a in _input_images(fig))
    assert result.summary()[0].split()[:3] == ["method", "trained", "+heads.out"]
    # the default methods come from the registry
    default = sanity_check(residual_net(), torch.rand(2, 1, 20, 20), layers=["head"])
    assert default.check.methods == ["saliency", "deconvnet", "gbp", "gradcam", "ig"]


def test_progress_reports_and_cancels(photo_net, photos):
    events = []
    progress = Progress(sink=events.append)
    explain_image(photo_net, photos.images[0], ["saliency", "gbp"], [0, 1], progress=progress)
    assert events[-1].finished and events[-1].completed == 4 and events[-1].total == 4
    cancelling = Progress(sink=lambda event: cancelling.cancel() if event.completed >= 1 else None)
    with pytest.raises(Cancelled):
        explain_image(photo_net, photos.images[0], ["saliency", "gbp"], [0, 1], progress=cancelling)
    stopped = Progress(sink=lambda event: stopped.cancel() if event.completed >= 2 else None)
    with pytest.raises(Cancelled):
        sanity_check(photo_net, photos.images[:2], ["saliency"], progress=stopped)


def test_bad_requests_fail_before_any_work(photo_net, photos):
    image = photos.images[0]
    with pytest.raises(ValueError, match="no explanation method takes the option.*stepz"):
        explain_image(photo_net, image, "ig", options={"stepz": 3})
    with pytest.raises(ValueError, match="unknown method 'lrp'"):
        explain_image(photo_net, image, ["saliency", "lrp"])
    with pytest.raises(ValueError, match="neither a class name \\(astronaut, cat, coffee, rocket\\)"):
        explain_image(photo_net, image, "saliency", "dog")
    with pytest.raises(ValueError, match="Grad-CAM needs a layer with maps"):
        explain_image(photo_net, image, "gradcam", options={"layer": "heads.out"})
    with pytest.raises(ValueError, match="do not fit the model's input"):
        explain_image(photo_net, image[:, :, 0], "saliency")
