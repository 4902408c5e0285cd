"""Preprocessing: per-image standardisation (the reference's) and [0, 1] scaling, chosen
by the model's config."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from convscope.data import preprocess
from convscope.inference import to_input


def test_standardize_gives_mean_0_std_1_per_image(test_split):
    images = test_split.images[:64]
    x = preprocess(images, "standardize")
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    flat = x.reshape(64, -1)
    torch.testing.assert_close(flat.mean(dim=1), torch.zeros(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.std(dim=1, unbiased=False), torch.ones(64), atol=1e-5, rtol=0)
    # Same as doing it by hand in float64 on the first image.
    first = images[0].astype(np.float64)
    expected = (first - first.mean()) / (first.std() + 1e-7)
    np.testing.assert_allclose(x[0, 0].numpy(), expected, atol=1e-5)


def test_unit_scaling_and_shapes():
    image = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    x = preprocess(image, "unit")
    assert x.shape == (1, 1, 2, 2)
    torch.testing.assert_close(x[0, 0], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    assert preprocess(np.zeros((3, 1, 28, 28), np.uint8), "unit").shape == (3, 1, 28, 28)
    blank = preprocess(np.zeros((28, 28), np.uint8), "standardize")
    assert torch.isfinite(blank).all() and blank.abs().max() == 0  # a blank image does not divide by zero


def test_bad_method_or_shape_is_refused():
    with pytest.raises(ValueError, match="unknown preprocessing 'zscore'"):
        preprocess(np.zeros((28, 28), np.uint8), "zscore")
    with pytest.raises(ValueError, match="expected gray images"):
        preprocess(np.zeros((1, 1, 1, 28, 28), np.uint8))


def test_read_only_dataset_arrays_are_accepted_without_warning(test_split):
    assert not test_split.images.flags.writeable
    with _no_warnings():  # torch warns on non-writable numpy arrays; preprocess copies them
        preprocess(test_split.images[:2])


def test_model_spec_chooses_the_preprocessing(shipped_model, test_split):
    from convscope.spec import spec_of, wrap

    model = copy.deepcopy(shipped_model)
    images = test_split.images[:4]
    torch.testing.assert_close(to_input(model, images), preprocess(images, "standardize"))
    wrap(model, spec_of(model).replace(preprocessing="unit"))
    torch.testing.assert_close(to_input(model, images), preprocess(images, "unit"))
    expected = torch.as_tensor(np.array(images), dtype=torch.float32)[:, None] / 255.0
    torch.testing.assert_close(to_input(model, images), expected)


def test_meanstd_and_raw_preprocessing_per_channel():
    from convscope.spec import ModelSpec

    spec = ModelSpec((3, 2, 2), ("a", "b"), "meanstd", mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    pixels = np.array([[[[0, 255, 51]] * 2] * 2], dtype=np.uint8)  # (1, 2, 2, 3), channels last
    x = preprocess(pixels, spec)
    assert x.shape == (1, 3, 2, 2)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([(0 - 0.5) / 0.5, (1 - 0.25) / 0.25, 0.2 / 2.0]))
    raw = preprocess(pixels, spec.replace(preprocessing="raw", mean=None, std=None))
    torch.testing.assert_close(raw[0, :, 1, 1], torch.tensor([0.0, 255.0, 51.0]))


@pytest.mark.parametrize(
    "shape, fits",
    [
        ((4, 32, 32, 3), True),   # channels last
        ((4, 3, 32, 32), True),   # channels first
        ((32, 32, 3), True),      # one image
        ((4, 32, 32), False),     # gray images for an RGB model
        ((4, 28, 28, 3), False),  # wrong size
        ((4, 32, 3, 32), False),  # neither layout
    ],
)
def test_layout_is_checked_against_the_spec(shape, fits):
    from convscope.data.preprocess import ImageLayoutError, to_channels_first
    from convscope.spec import ModelSpec

    spec = ModelSpec((3, 32, 32), ("a", "b"), "unit")
    images = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape) % 256
    if fits:
        out = to_channels_first(images, spec.input_shape)
        assert tuple(out.shape[1:]) == (3, 32, 32)
        if shape[-1] == 3:  # channels last: pixel (0, 1) of image 0 keeps its three values
            flat = images.reshape(-1, 32, 32, 3)
            assert out[0, :, 0, 1].tolist() == flat[0, 0, 1].tolist()
    else:
        with pytest.raises(ImageLayoutError, match="do not fit the model's input 3×32×32"):
            to_channels_first(images, spec.input_shape)


class _no_warnings:
    """Fail on any warning inside the block."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        return False
