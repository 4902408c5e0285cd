"""Helpers shared by the importer tests: run an imported model layer by layer and
bring Keras' golden outputs (NHWC, Flatten in channels-last order) into PyTorch order."""

from __future__ import annotations

import numpy as np
import torch

from convscope.importers import KerasImport, KerasLayer


def layer_outputs(imported: KerasImport, x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """Every top-level child's output for a Keras-layout input batch ``(N, H, W, C)``."""
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    outputs = {}
    with torch.no_grad():
        for name, child in imported.module.named_children():
            x = child(x)
            outputs[name] = x.numpy()
    return outputs


def to_torch_order(keras_value: np.ndarray, row: KerasLayer) -> np.ndarray:
    """A Keras layer output in the imported model's layout: NHWC → NCHW; a flattened map
    (or what follows it before the next Dense) from channels-last to channel-major order."""
    if keras_value.ndim == 4:
        return keras_value.transpose(0, 3, 1, 2)
    if row.channels_last_of is not None:
        c, h, w = row.channels_last_of
        n = keras_value.shape[0]
        return keras_value.reshape(n, h, w, c).transpose(0, 3, 1, 2).reshape(n, -1)
    return keras_value


def compare_layers(imported: KerasImport, x_nhwc: np.ndarray, golden: dict[str, np.ndarray],
                   atol: float = 1e-5, rtol: float = 1e-6) -> dict[str, float]:
    """Assert that every Keras layer's golden output (``golden["act_<name>"]``) is reproduced.

    A layer whose final softmax was removed is compared through a softmax of its output;
    a dropped trailing softmax layer through the softmax of the model's output.
    Returns the largest absolute deviation per layer.
    """
    outputs = layer_outputs(imported, x_nhwc)
    last = list(outputs.values())[-1]
    deviations = {}
    for row in imported.layer_table:
        if row.keras_class == "InputLayer":
            continue
        expected = to_torch_order(golden[f"act_{row.name}"], row)
        if row.module is None:  # removed trailing softmax layer: the 'probabilities' pseudo-layer
            assert imported.aliases[row.name] == "probabilities"
            got = torch.softmax(torch.from_numpy(last), dim=1).numpy()
        elif row.note.startswith("softmax removed"):
            got = torch.softmax(torch.from_numpy(outputs[row.module]), dim=1).numpy()
        else:
            got = outputs[row.module]
        assert got.shape == expected.shape, (row.name, got.shape, expected.shape)
        assert got.shape[1:] == row.output_shape, (row.name, got.shape, row.output_shape)
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=f"layer {row.name}")
        deviations[row.name] = float(np.abs(got - expected).max())
    return deviations


def keras_standardize(images_uint8: np.ndarray) -> np.ndarray:
    """``tf.image.per_image_standardization(x / 255)`` in float32, as the README states:
    per image mean 0 and std ``max(std, 1/sqrt(pixels))``. Returns ``(N, H, W, 1)``."""
    x = images_uint8.astype(np.float32) / np.float32(255)
    flat = x.reshape(len(x), -1)
    mean = flat.mean(axis=1, dtype=np.float32)[:, None, None]
    std = flat.std(axis=1, dtype=np.float32)[:, None, None]
    return ((x - mean) / np.maximum(std, np.float32(1.0 / np.sqrt(flat.shape[1]))))[..., None]
