"""Write the small Keras fixtures in ``tests/fixtures/keras/`` (never run by the tests).

Needs TensorFlow, Keras 3 and tf-keras, which are NOT dependencies of convscope.
Install them in a throwaway virtualenv outside the repository and run this script
with that interpreter::

    python -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu tf_keras h5py
    /tmp/tfvenv/bin/python tests/importers/make_fixtures.py [--out tests/fixtures/keras]

Versions used for the committed files: tensorflow-cpu 2.21.0, Keras 3.15.1,
tf-keras 2.21.0.

For each small model (random but fixed weights, non-trivial BatchNormalization
statistics) it writes

* ``<name>_keras2.h5`` — legacy HDF5 written by tf-keras (Keras 2),
* ``<name>_keras3.h5`` — legacy HDF5 written by Keras 3,
* ``<name>_keras3.keras`` — the Keras 3 zip format,
* ``flatten_bn_keras2.keras`` — the zip format as tf-keras writes it (its weights
  groups carry no layer names),
* ``<name>_golden.npz`` — ``input`` (NHWC float32) and ``act_<layer>`` for every
  layer, computed by Keras 3 (Keras layout: NHWC maps, Flatten in channels-last
  order). The script checks that tf-keras computes the same values.

plus models the importer must refuse (``branch_*``: a functional graph with an
``Add`` merge; ``two_inputs_keras3.keras``: a model with two inputs).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

SEED = 1234


def _pad_pool(k, two: bool):
    """Sequential, RGB 15×15: same padding with stride 2 / even and rectangular kernels,
    dilation, no-bias conv, BatchNormalization, separate activations, ZeroPadding,
    max/average pooling (same and valid), global average pooling, final softmax."""
    L = k.layers
    return k.Sequential(
        [
            k.Input(shape=(15, 15, 3)),
            L.Conv2D(4, 4, strides=2, padding="same", activation="relu", name="conv_s2_even"),
            L.BatchNormalization(epsilon=0.01, name="bn_2d"),
            L.Activation("elu", name="act_elu"),
            L.Conv2D(6, 3, dilation_rate=2, padding="same", use_bias=False, name="conv_dil"),
            L.Activation("selu", name="act_selu"),
            L.Conv2D(5, (2, 4), padding="same", activation="tanh", name="conv_even_s1"),
            L.MaxPooling2D(3, strides=2, padding="same", name="max_same"),
            L.ZeroPadding2D(((1, 3), (2, 0)), name="zero_pad"),
            L.AveragePooling2D(3, strides=2, padding="same", name="avg_same"),
            L.AveragePooling2D(2, strides=1, name="avg_valid"),
            L.Activation("sigmoid", name="act_sigmoid"),
            L.GlobalAveragePooling2D(name="gap"),
            L.Dense(4, activation="softmax", name="dense_out"),
        ],
        name="pad_pool",
    )


def _flatten_bn(k, two: bool):
    """Functional, gray 12×12: Flatten → Dropout → BatchNormalization(1-D) → Dense
    (the channels-last permutation must reach through both), LeakyReLU / ReLU / ELU
    layers, a trailing Activation('softmax') layer."""
    L = k.layers
    leaky = L.LeakyReLU(alpha=0.2, name="leaky") if two else L.LeakyReLU(negative_slope=0.2, name="leaky")
    x0 = k.Input(shape=(12, 12, 1), name="input_img")
    x = L.Conv2D(3, 3, activation="relu", name="conv_a")(x0)
    x = L.MaxPooling2D(2, name="pool_a")(x)
    x = L.Conv2D(4, 3, strides=2, padding="same", name="conv_b")(x)
    x = leaky(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dropout(0.3, name="drop")(x)
    x = L.BatchNormalization(name="bn_1d")(x)
    x = L.Dense(7, activation="elu", name="dense_h")(x)
    x = L.ReLU(name="relu_l")(x)
    x = L.ELU(alpha=0.5, name="elu_l")(x)
    x = L.Dense(3, name="dense_o")(x)
    x = L.Activation("softmax", name="probs")(x)
    return k.Model(x0, x, name="flatten_bn")


def _misc(k, two: bool):
    """Sequential, 10×10×2: rectangular strides with same padding, BatchNormalization
    without beta/gamma, global max pooling, no-bias Dense with tanh, gelu, swish,
    a trailing Softmax layer."""
    L = k.layers
    return k.Sequential(
        [
            k.Input(shape=(10, 10, 2)),
            L.Conv2D(3, (3, 2), strides=(2, 1), padding="same", activation="selu", name="conv_rect"),
            L.BatchNormalization(center=False, scale=False, name="bn_plain"),
            L.BatchNormalization(center=False, name="bn_scale_only"),
            L.GlobalMaxPooling2D(name="gmp"),
            L.Dense(5, activation="tanh", use_bias=False, name="dense_t"),
            L.Dense(4, activation="gelu", name="dense_g"),
            L.Dense(4, activation="swish", name="dense_s"),
            L.Softmax(name="softmax_l"),
        ],
        name="misc",
    )


def _branch(k, two: bool):
    """A functional graph with a branch and an Add merge: the importer must refuse it."""
    L = k.layers
    x0 = k.Input(shape=(8, 8, 1), name="input_b")
    a = L.Conv2D(2, 3, padding="same", name="conv_trunk")(x0)
    b = L.Conv2D(2, 3, padding="same", name="conv_left")(a)
    c = L.Conv2D(2, 1, name="conv_right")(a)
    x = L.Add(name="merge")([b, c])
    x = L.Flatten(name="flat")(x)
    x = L.Dense(2, name="dense")(x)
    return k.Model(x0, x, name="branch")


def _two_inputs(k, two: bool):
    L = k.layers
    x0 = k.Input(shape=(4, 4, 1), name="in_a")
    x1 = k.Input(shape=(4, 4, 1), name="in_b")
    x = L.Concatenate(name="cat")([x0, x1])
    x = L.Flatten(name="flat")(x)
    x = L.Dense(2, name="dense")(x)
    return k.Model([x0, x1], x, name="two_inputs")


GOLDEN_MODELS = {"pad_pool": _pad_pool, "flatten_bn": _flatten_bn, "misc": _misc}


def _set_weights(model, rng: np.random.Generator) -> None:
    """Deterministic random weights; BatchNormalization gets non-trivial moving statistics."""
    for layer in model.layers:
        values = []
        for weight in layer.weights:
            name = weight.name.split("/")[-1].split(":")[0]
            shape = tuple(weight.shape)
            if name == "moving_variance":
                values.append(rng.uniform(0.3, 2.5, shape))
            elif name == "moving_mean":
                values.append(rng.normal(0.0, 0.7, shape))
            elif name == "gamma":
                values.append(rng.uniform(0.5, 1.8, shape))
            elif name == "bias" and layer.name == "conv_even_s1":
                # mostly negative maps, so that max-pool "same" padding with -inf matters
                values.append(rng.uniform(-2.0, -1.2, shape))
            elif name == "kernel":  # Glorot-like scale: activations of order 1, so float32 rounding stays ~1e-6
                values.append(rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape))
            else:
                values.append(rng.normal(0.0, 0.5, shape))
        if values:
            layer.set_weights([v.astype(np.float32) for v in values])


def _outputs(k, model, x: np.ndarray) -> dict[str, np.ndarray]:
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    probe = k.Model(model.inputs, [layer.output for layer in layers])
    values = probe.predict(x, verbose=0)
    return {f"act_{layer.name}": np.asarray(v, dtype=np.float32) for layer, v in zip(layers, values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "fixtures" / "keras")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import keras
    import tf_keras

    for name, factory in GOLDEN_MODELS.items():
        model3 = factory(keras, two=False)
        model2 = factory(tf_keras, two=True)
        _set_weights(model3, np.random.default_rng(SEED))
        _set_weights(model2, np.random.default_rng(SEED))
        shape = tuple(model3.inputs[0].shape[1:])
        x = np.random.default_rng(SEED + 1).normal(0.0, 1.0, (3, *shape)).astype(np.float32)
        golden = _outputs(keras, model3, x)
        check = _outputs(tf_keras, model2, x)
        for key, value in golden.items():
            np.testing.assert_allclose(check[key], value, atol=1e-5, err_msg=f"{name}: tf-keras differs at {key}")
        np.savez_compressed(args.out / f"{name}_golden.npz", input=x, **golden)
        model2.save(args.out / f"{name}_keras2.h5")
        model3.save(args.out / f"{name}_keras3.h5")
        model3.save(args.out / f"{name}_keras3.keras")
        if name == "flatten_bn":
            model2.save(args.out / f"{name}_keras2.keras")
        print(name, model3.count_params(), "params;", ", ".join(f"{k}{v.shape}" for k, v in golden.items()))

    branch3 = _branch(keras, two=False)
    branch2 = _branch(tf_keras, two=True)
    branch2.save(args.out / "branch_keras2.h5")
    branch3.save(args.out / "branch_keras3.keras")
    _two_inputs(keras, two=False).save(args.out / "two_inputs_keras3.keras")
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {len(list(args.out.iterdir()))} files, {total / 1024:.0f} KiB in {args.out}")


if __name__ == "__main__":
    main()
