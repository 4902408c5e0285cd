"""One registry for the explanation methods: a method registered in a test (as a
user would) shows up everywhere that lists methods — the CLI's --method choices and
help, --method all, SmoothGrad's bases, --sanity-methods — with its options read
from its signatures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from convscope.cli import main
from convscope.explain import (
    METHODS, Attribution, Saliency, SmoothGrad, make_method, method_info, method_names, options_for, register_method,
    sanity_methods, smoothable_methods, unregister_method,
)


def test_the_built_in_methods_and_what_is_derived_from_them():
    assert method_names()[:8] == ["saliency", "deconvnet", "gbp", "gradcam", "ggradcam", "occlusion", "ig", "smoothgrad"]
    assert list(METHODS)[:8] == method_names()[:8] and METHODS["gbp"].__name__ == "GuidedBackprop"
    assert smoothable_methods()[:5] == ["saliency", "deconvnet", "gbp", "ggradcam", "ig"]
    assert sanity_methods()[:5] == ["saliency", "deconvnet", "gbp", "gradcam", "ig"]
    # options come from the signatures: constructor first, then attribute's keywords
    assert method_info("occlusion").options() == ("window", "stride", "baseline", "batch_size")
    assert method_info("gradcam").constructor_options() == ("layer",)
    assert method_info("ig").call_options() == ("baseline", "steps", "method", "batch_size")  # not return_convergence_delta
    assert method_info("smoothgrad").options()[:4] == ("base", "samples", "noise_level", "squared")
    pool = {"layer": "Conv2D_2", "keep": "max", "steps": 9, "window": None, "base": "deconvnet", "samples": 2}
    assert options_for("gradcam", pool) == {"layer": "Conv2D_2"}
    assert options_for("occlusion", pool) == {}  # None means the method's own default
    assert options_for("smoothgrad", pool) == {"keep": "max", "base": "deconvnet", "samples": 2}


def test_make_method_refuses_options_a_method_does_not_take(shipped_model):
    with pytest.raises(ValueError, match="has no option 'steps'; its options: keep"):
        make_method(shipped_model, "deconvnet", steps=3)
    with pytest.raises(ValueError, match="unknown method 'lrp'; choose one of: saliency"):
        make_method(shipped_model, "lrp")


@pytest.mark.parametrize("name", ["all", "Saliency", "1st", "", "a b"])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError, match="method name"):
        register_method(name)(type("M", (Attribution,), {}))


def test_a_taken_name_and_a_non_method_are_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_method("saliency")(type("Other", (Attribution,), {}))
    with pytest.raises(ValueError, match="Attribution subclass"):
        register_method("thing")(object)
    assert METHODS["saliency"] is Saliency


@pytest.fixture()
def user_methods():
    """Register two methods as a user would; remove them afterwards."""

    @register_method("xgrad", sanity=True)
    class InputTimesGradient(Attribution):
        """input × gradient: a first-order Taylor term per pixel."""

        title = "input × gradient"
        gradient_based = True

        def attribute(self, inputs, target=None, *, absolute: bool = False):
            inputs = self._check_inputs(inputs)
            result = inputs * self._gradient(inputs, self._target(inputs, target), None)
            return result.abs() if absolute else result

    @register_method("blank")
    class Blank(Attribution):
        """all zeros (not a gradient method)."""

        def attribute(self, inputs, target=None):
            return torch.zeros_like(self._check_inputs(inputs))

    yield InputTimesGradient
    unregister_method("xgrad")
    unregister_method("blank")


def test_a_registered_method_is_listed_and_built(user_methods, shipped_model, test_split):
    from convscope.inference import to_input

    assert method_names()[-2:] == ["xgrad", "blank"] and METHODS["xgrad"] is user_methods
    assert "xgrad" in smoothable_methods() and "blank" not in smoothable_methods()
    assert "xgrad" in sanity_methods()
    assert method_info("xgrad").options() == ("absolute",) and method_info("xgrad").summary.startswith("input ×")
    x = to_input(shipped_model, test_split.images[:2])
    explainer, rest = make_method(shipped_model, "xgrad", absolute=True)
    assert torch.equal(explainer.attribute(x, 3, **rest), (x * Saliency(shipped_model).attribute(x, 3)).abs())
    # SmoothGrad wraps it by name, with its own option passed through
    smooth, rest = make_method(shipped_model, "smoothgrad", base="xgrad", samples=3, seed=1, absolute=True)
    assert isinstance(smooth, SmoothGrad) and smooth.method.name == "xgrad" and rest == {"absolute": True}
    expected = SmoothGrad(user_methods(shipped_model), samples=3, seed=1).attribute(x, 3, absolute=True)
    assert torch.equal(smooth.attribute(x, 3, **rest), expected)
    with pytest.raises(ValueError, match="wraps a gradient method"):
        make_method(shipped_model, "smoothgrad", base="blank")


@pytest.fixture()
def run(mnist_dir, tmp_path):
    def invoke(*args: str):
        return CliRunner().invoke(main, ["explain", *args, "--data-dir", str(mnist_dir), "--out", str(tmp_path)])

    return invoke


def test_a_registered_method_in_the_cli(user_methods, run, tmp_path, shipped_model, test_split):
    from convscope.inference import to_input

    help_text = CliRunner().invoke(main, ["explain", "--help"]).output
    assert "xgrad" in help_text and "input × gradient: a first-order" in help_text
    result = run("--method", "xgrad", "--image", "test:3", "--target", "2", "--json")
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)["results"][0]
    assert entry["method"] == "xgrad" and entry["title"] == "input × gradient"
    x = to_input(shipped_model, test_split.images[3])
    expected = (x * Saliency(shipped_model).attribute(x, 2))[0, 0].numpy()
    assert np.allclose(np.load(tmp_path / entry["npy"]), expected, atol=1e-7)
    # --method all runs it, after the built-in ones
    result = run("--method", "all", "--image", "test:3", "--target", "2", "--samples", "2", "--steps", "4", "--json")
    assert result.exit_code == 0, result.output
    assert [e["method"] for e in json.loads(result.stdout)["results"]][-2:] == ["xgrad", "blank"]
    # SmoothGrad wraps it: --smooth-base takes its name
    result = run("--method", "smoothgrad", "--smooth-base", "xgrad", "--samples", "3", "--image", "test:3",
                 "--target", "2", "--json")
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)["results"][0]
    assert entry["params"]["base"] == "xgrad" and entry["title"] == "SmoothGrad (input × gradient)"
    smooth = SmoothGrad(user_methods(shipped_model), samples=3, noise_level=0.15, seed=0).attribute(x, 2)
    assert np.allclose(np.load(tmp_path / entry["npy"]), smooth[0, 0].numpy(), atol=1e-6)
    # ... but not a method that is not a gradient method
    result = run("--method", "smoothgrad", "--smooth-base", "blank")
    assert result.exit_code == 2 and "'blank' is not one of" in result.output
    # the sanity check takes it too
    result = run("--sanity", "--sanity-methods", "xgrad", "--sanity-images", "2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sanity"]["methods"] == ["xgrad"]


def test_an_unregistered_method_leaves_the_cli(run):
    result = run("--method", "xgrad")
    assert result.exit_code == 2 and "'xgrad' is not one of 'saliency'" in result.output
