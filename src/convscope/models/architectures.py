"""The reference CNNs as plain ``nn.Module``s with the reference's layer names.

Keras layers carry their activation, so here each named conv/dense layer is a
small block whose output is *after* its ReLU (``Conv2D_3`` = post-ReLU maps, as
in the reference); the pre-activation is reachable as ``Conv2D_3.conv``.
``forward`` returns logits; the softmax is the pseudo-layer ``probabilities``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from convscope.spec import SPEC_ATTRIBUTE, ModelSpec, digit_spec


class ConvReLU(nn.Module):
    """3×3 convolution followed by ReLU. Input ``(N, C_in, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=padding)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


class DenseReLU(nn.Module):
    """Fully connected layer followed by ReLU. Input ``(N, F_in)``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.linear(x))


class ConvscopeModel(nn.Sequential):
    """Base of the shipped architectures: a named sequence of layers.

    Attributes:
        architecture: registry name (``"seed_cnn"``, ``"model_b"``).
        input_shape: ``(C, H, W)`` of one input.
        num_classes: number of output logits.
        aliases: extra layer names (the Keras names the reference posts print).
        config: the :class:`~convscope.models.files.ModelConfig` once loaded/trained.
        convscope_spec: the :class:`~convscope.spec.ModelSpec` (MNIST digits until
            a config says otherwise).
    """

    architecture: str = ""
    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    aliases: dict[str, str] = {}

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        super().__init__()
        for name, layer in layers.items():
            self.add_module(name, layer)
        self.config = None
        setattr(self, SPEC_ATTRIBUTE, self.default_spec())

    def default_spec(self) -> ModelSpec:
        """The spec of a freshly built model: MNIST digits, per-image standardisation."""
        return digit_spec(name=self.architecture, aliases=dict(self.aliases))

    @property
    def layer_names(self) -> list[str]:
        """Top-level layer names in forward order."""
        return [name for name, _ in self.named_children()]

    def l2_parameters(self) -> list[nn.Parameter]:
        """The dense kernels (weights, not biases) that the reference regularised with L2."""
        return [module.weight for module in self.modules() if isinstance(module, nn.Linear)]


class SeedCNN(ConvscopeModel):
    """Model A, "the seed CNN" (208,982 parameters).

    ``(N,1,28,28)`` → Conv2D_1 (32,26,26) → Max_Pool_1 (32,13,13) → Conv2D_2
    (64,11,11) → Max_Pool_2 (64,5,5) → Conv2D_3 (128,3,3) → Flatten (1152) →
    Dense_1 (100) → Dense_2 (10 logits).
    """

    architecture = "seed_cnn"
    # the Keras names of the reference posts' summary
    aliases = {"flatten_7": "Flatten", "dense_14": "Dense_1", "dense_15": "Dense_2"}

    def __init__(self) -> None:
        super().__init__(
            {
                "Conv2D_1": ConvReLU(1, 32),
                "Max_Pool_1": nn.MaxPool2d(2),
                "Conv2D_2": ConvReLU(32, 64),
                "Max_Pool_2": nn.MaxPool2d(2),
                "Conv2D_3": ConvReLU(64, 128),
                "Flatten": nn.Flatten(),
                "Dense_1": DenseReLU(1152, 100),
                "Dense_2": nn.Linear(100, 10),
            }
        )


class ModelB(ConvscopeModel):
    """Model B, the second reference (113,514 parameters): same-padded 3×3 convs
    24 → 48 → 64, each followed by 2×2 max-pooling, dense 128 with dropout 0.25,
    dense 10."""

    architecture = "model_b"

    def __init__(self) -> None:
        super().__init__(
            {
                "Conv2D_1": ConvReLU(1, 24, padding=1),
                "Max_Pool_1": nn.MaxPool2d(2),
                "Conv2D_2": ConvReLU(24, 48, padding=1),
                "Max_Pool_2": nn.MaxPool2d(2),
                "Conv2D_3": ConvReLU(48, 64, padding=1),
                "Max_Pool_3": nn.MaxPool2d(2),
                "Flatten": nn.Flatten(),
                "Dense_1": DenseReLU(576, 128),
                "Dropout": nn.Dropout(0.25),
                "Dense_2": nn.Linear(128, 10),
            }
        )


ARCHITECTURES: dict[str, Callable[[], ConvscopeModel]] = {
    "seed_cnn": SeedCNN,
    "model_b": ModelB,
}
_ALIASES = {"a": "seed_cnn", "model_a": "seed_cnn", "seed": "seed_cnn", "b": "model_b"}


def build_model(architecture: str = "seed_cnn") -> ConvscopeModel:
    """A freshly initialised model by registry name (``seed_cnn`` / ``model_b``; ``A``/``B`` also work)."""
    key = architecture.lower()
    key = _ALIASES.get(key, key)
    if key not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[key]()
