"""Models that were never in the package, written as a user would, for the
"any model" tests: every engine must work on them, and the probe must return what
an explicit forward pass computes.

* :class:`ResidualNet` — gray 20×20, nested names (``stem``, ``stages.0.body``…),
  one in-place ``nn.ReLU`` module reused twice per block, a skip connection.
* :class:`RGBNet` — RGB 32×32, ``F.relu``, BatchNorm, a strided conv, a
  ``ModuleDict`` of heads, average pooling.
* :class:`TupleNet` — returns ``(logits, features)``; its ``forward`` catches
  ``Exception`` (the probe's early stop must survive it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import convscope


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
        )
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.ReLU(inplace=True)  # used twice in forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.body(x))
        y = self.conv2(y)
        return self.act(y + x)


class ResidualNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.stem_act = nn.ReLU(inplace=True)
        self.stages = nn.ModuleList([ResidualBlock(8), ResidualBlock(8)])
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(8 * 10 * 10, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.stem(x))
        for stage in self.stages:
            x = stage(x)
        x = self.pool(x)
        return self.head(torch.flatten(x, 1))

    def explicit(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every interesting intermediate value, computed by hand (no hooks)."""
        out: dict[str, torch.Tensor] = {}
        s = self.stem(x)
        out["stem"] = s.clone()
        x = F.relu(s)
        out["stem_act"] = x
        for i, stage in enumerate(self.stages):
            body = stage.body(x)
            out[f"stages.{i}.body"] = body.clone()
            y = F.relu(body)
            out[f"stages.{i}.act"] = y  # first call of the reused ReLU
            c2 = stage.conv2(y)
            out[f"stages.{i}.conv2"] = c2.clone()
            x = F.relu(c2 + x)
            out[f"stages.{i}"] = x
        p = self.pool(x)
        out["pool"] = p
        out["head"] = self.head(torch.flatten(p, 1))
        return out


class RGBNet(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(12)
        self.conv2 = nn.Conv2d(12, 16, 3, stride=2, padding=1)  # 32 -> 16
        self.conv3 = nn.Conv2d(16, 24, 3)  # 16 -> 14
        self.pool = nn.AvgPool2d(2)  # 14 -> 7
        self.heads = nn.ModuleDict({"hidden": nn.Linear(24 * 7 * 7, 32), "out": nn.Linear(32, classes)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.conv2(x))
        x = self.pool(F.relu(self.conv3(x)))
        x = F.relu(self.heads["hidden"](torch.flatten(x, 1)))
        return self.heads["out"](x)


class TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 5)  # 28 -> 24
        self.pool = nn.MaxPool2d(4)  # -> 6
        self.fc = nn.Linear(6 * 6 * 6, 10)

    def forward(self, x: torch.Tensor):
        try:
            features = self.pool(torch.relu(self.conv(x)))
        except Exception:  # a user's forward that swallows errors
            features = torch.zeros(x.shape[0], 6, 6, 6)
        return self.fc(features.flatten(1)), features


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw every parameter and BatchNorm statistic from ``seed`` (deterministic,
    non-trivial running statistics), eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * (1.0 / max(1, parameter[0].numel()) ** 0.5))
        for sub in module.modules():
            if isinstance(sub, nn.BatchNorm2d):
                sub.running_mean.copy_(torch.randn(sub.num_features, generator=generator) * 0.1)
                sub.running_var.copy_(torch.rand(sub.num_features, generator=generator) + 0.5)
    return module.eval()


def residual_net(seed: int = 0) -> nn.Module:
    return convscope.wrap(
        seeded(ResidualNet(), seed), input_shape=(1, 20, 20), class_names=[str(i) for i in range(10)],
        preprocessing="unit", image_conversion="resize", name="residual-net",
    )


def rgb_net(seed: int = 0, classes: tuple[str, ...] = ("sky", "brick", "grass", "water")) -> nn.Module:
    return convscope.wrap(
        seeded(RGBNet(len(classes)), seed), input_shape=(3, 32, 32), class_names=list(classes),
        preprocessing="meanstd", mean=(0.5, 0.45, 0.4), std=(0.25, 0.25, 0.25), image_conversion="resize",
        name="rgb-net",
    )


def tuple_net(seed: int = 0) -> nn.Module:
    return convscope.wrap(
        seeded(TupleNet(), seed), input_shape=(1, 28, 28), class_names=[str(i) for i in range(10)],
        preprocessing="standardize", dataset="mnist", image_conversion="digit", name="tuple-net",
    )


PHOTO_CLASSES = {"astronaut": "astronaut", "cat": "chelsea", "coffee": "coffee", "rocket": "rocket"}


def make_photo_folder(root, per_class: int = 40, size: int = 40, seed: int = 0):
    """An RGB image-folder dataset from real photos that ship with scikit-image:
    ``root/<class>/<i>.png``, one class per photo, random ``size``×``size`` crops
    (half of them at another size, so loading must resize). Returns ``root``."""
    from pathlib import Path

    import numpy as np
    import skimage.data
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for name, photo_name in PHOTO_CLASSES.items():
        photo = getattr(skimage.data, photo_name)()
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            crop = size if i % 2 == 0 else size + 8
            top = int(rng.integers(0, photo.shape[0] - crop))
            left = int(rng.integers(0, photo.shape[1] - crop))
            Image.fromarray(photo[top : top + crop, left : left + crop]).save(folder / f"{i:03d}.png")
    return root
