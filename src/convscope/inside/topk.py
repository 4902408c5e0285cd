"""Top-k dataset examples: for every map of a layer, the images that activate it most.

All maps of a layer are handled in one pass over the images: each batch's
per-map maxima ``(B, C)`` are merged with the running top-k ``(k, C)`` by one
``torch.topk`` along the image axis — no loop over maps. Any model and image
layout (gray ``(N, H, W)``, RGB ``(N, H, W, 3)``); receptive fields come from
:func:`convscope.receptive_field.receptive_fields` (exact geometry, or the
measured gradient support where the geometry cannot be traced — ``field_method``
says which).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from convscope.address import resolve_address
from convscope.inference import to_input
from convscope.receptive_field import ReceptiveFields, receptive_fields
from convscope.probe import Probe


@dataclass(frozen=True)
class TopK:
    """The strongest images per map.

    Attributes:
        layer: layer name.
        values: ``(C, k)`` the maximal activation of each map in each chosen image,
            descending along ``k``.
        indices: ``(C, k)`` int64 image indices into the images given.
        positions: ``(C, k, 2)`` int64 ``(row, col)`` of the maximal unit, or
            ``None`` for dense layers.
        rectangles: ``(C, k, 4)`` int64 receptive field ``(top, left, bottom, right)``
            of that unit in input pixels (bottom/right exclusive), or ``None``.
        num_images: how many images were searched.
        fields: how the receptive fields were found (``None`` for dense layers).
    """

    layer: str
    values: torch.Tensor
    indices: torch.Tensor
    positions: torch.Tensor | None
    rectangles: torch.Tensor | None
    num_images: int
    fields: ReceptiveFields | None = None

    @property
    def field_method(self) -> str | None:
        """``"geometry"``, ``"gradient"``, ``"whole"`` or ``None`` (dense layer)."""
        return None if self.fields is None else self.fields.method

    @property
    def k(self) -> int:
        return int(self.values.shape[1])

    def to_dict(self) -> dict:
        maps = []
        for m in range(self.values.shape[0]):
            entry = {
                "map": m,
                "images": [int(i) for i in self.indices[m]],
                "activations": [float(v) for v in self.values[m]],
            }
            if self.positions is not None:
                entry["positions"] = self.positions[m].tolist()
                entry["receptive_fields"] = self.rectangles[m].tolist()
            maps.append(entry)
        out = {"layer": self.layer, "k": self.k, "num_images": self.num_images, "maps": maps}
        if self.fields is not None:
            out["receptive_field"] = self.fields.to_dict()
        return out


class _RunningTopK:
    """Running top-k over batches for one layer: ``(k, C)`` values, image indices, flat positions."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.values: torch.Tensor | None = None
        self.indices: torch.Tensor | None = None
        self.flat: torch.Tensor | None = None
        self.map_width: int | None = None  # None: dense layer

    def update(self, output: torch.Tensor, start: int) -> None:
        output = output.float()
        if output.ndim == 4:
            self.map_width = output.shape[3]
            maxima, flat = output.flatten(2).max(dim=2)  # (B, C) each
        else:
            maxima = output.reshape(output.shape[0], -1)
            flat = torch.zeros_like(maxima, dtype=torch.long)
        index = torch.arange(start, start + output.shape[0], device=output.device)[:, None].expand_as(maxima)
        if self.values is not None:
            maxima = torch.cat([self.values, maxima])
            index = torch.cat([self.indices, index])
            flat = torch.cat([self.flat, flat])
        # Stable descending sort: equal activations keep the earlier image first.
        order = torch.sort(maxima, dim=0, descending=True, stable=True).indices[: self.k]
        self.values, self.indices, self.flat = maxima.gather(0, order), index.gather(0, order), flat.gather(0, order)

    def result(self, model: nn.Module, layer: str, total: int) -> TopK:
        assert self.values is not None and self.indices is not None and self.flat is not None
        values = self.values.T.contiguous().cpu()
        indices = self.indices.T.contiguous().cpu().long()
        positions = rectangles = fields = None
        if self.map_width is not None:
            flat = self.flat.T.contiguous().cpu()
            positions = torch.stack([flat // self.map_width, flat % self.map_width], dim=-1).long()
            fields = receptive_fields(model, layer)
            rectangles = fields.rectangles(positions)
        return TopK(layer=layer, values=values, indices=indices, positions=positions, rectangles=rectangles,
                    num_images=total, fields=fields)


@torch.no_grad()
def topk_layers(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    layers: Sequence[str],
    *,
    k: int = 9,
    batch_size: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, TopK]:
    """For every map (node) of each of ``layers``, the ``k`` images with the highest
    maximal activation — all maps of all layers in ONE pass over ``images``.

    Args:
        model: the network.
        images: uint8 ``(N, H, W)`` or ``(N, H, W, 3)``, e.g. ``load_split("test").images``.
        layers: layer names (``"Conv2D_3"``; a map part is ignored).
        k: images per map (at most N).
        batch_size: images per forward pass.
        progress: optional ``progress(done, total)`` callback.

    Returns:
        ``{layer: TopK}``. Ties keep the lower image index first.
    """
    names = list(dict.fromkeys(resolve_address(model, layer).layer for layer in layers))
    total = len(images)
    if total == 0:
        raise ValueError("no images to search")
    k = max(1, min(int(k), total))
    running = {name: _RunningTopK(k) for name in names}
    was_training = model.training
    model.eval()
    try:
        with Probe(model, names, detach=True) as probe:
            for start in range(0, total, batch_size):
                outputs = probe.run(to_input(model, images[start : start + batch_size]))
                for name, output in outputs.items():
                    running[name].update(output, start)
                if progress is not None:
                    progress(min(start + batch_size, total), total)
    finally:
        model.train(was_training)
    return {name: running[name].result(model, name, total) for name in names}


def topk_examples(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    layer: str,
    *,
    k: int = 9,
    batch_size: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> TopK:
    """For every map (node) of ``layer``, the ``k`` images with the highest maximal
    activation (one pass over the images; see :func:`topk_layers`)."""
    name = resolve_address(model, layer).layer
    return topk_layers(model, images, [name], k=k, batch_size=batch_size, progress=progress)[name]
