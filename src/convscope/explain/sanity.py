"""The model-parameter randomisation test (Adebayo et al. 2018, "Sanity checks
for saliency maps").

Randomise the model's layers cascading from the top (``Dense_2``, then also
``Dense_1``, ``Conv2D_3`` ... for the reference models; in general every layer
with a weight matrix or kernel, in the order the forward pass calls them,
last first) and measure how similar each method's map stays to
the map of the trained model. A method whose maps barely change while the
network is destroyed does not explain the network (it behaves like an edge
detector). Similarity per image: Spearman rank correlation of ``|attribution|``
and SSIM of the maps scaled to 0..1 by their maximum ``|attribution|``; reported
as the mean over images.

Example::

    result = sanity_check(model, x, seed=0)      # the registry's default methods
    result = sanity_check(model, x, methods=("saliency", "gbp", "deconvnet"), seed=0)
    result.spearman["gbp"]     # [1.0, 0.93, 0.91, ...] one value per stage
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convscope.explain.base import _spec, eval_mode, predicted_classes
from convscope.explain.registry import make_method, sanity_methods


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks ``1..n`` along the last dimension, ties sharing their mean rank."""
    flat = values.reshape(-1, values.shape[-1]).detach().cpu().double().numpy()
    out = np.empty_like(flat)
    for i, row in enumerate(flat):
        _, inverse, counts = np.unique(row, return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        out[i] = (ends - (counts - 1) / 2.0)[inverse]
    return torch.from_numpy(out).reshape(values.shape)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per row of ``(N, D)`` tensors (ties: mean ranks).

    A constant row has no defined correlation: it gets 0.
    """
    ra, rb = average_ranks(a.reshape(a.shape[0], -1)), average_ranks(b.reshape(b.shape[0], -1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denom = ra.norm(dim=1) * rb.norm(dim=1)
    return torch.where(denom > 0, (ra * rb).sum(1) / denom.clamp_min(1e-300), torch.zeros_like(denom)).float()


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image of ``(N, 1, H, W)`` or
    ``(N, H, W)`` maps: Gaussian window, ``K1=0.01, K2=0.03``, valid positions only.

    Returns ``(N,)``; ``ssim(x, x) == 1``.
    """
    if a.ndim == 3:
        a, b = a[:, None], b[:, None]
    a, b = a.double(), b.double()
    # maps smaller than the window (tiny inputs, coarse Grad-CAM): the largest odd window that fits
    window = min(window, a.shape[-2], a.shape[-1])
    window -= 1 - window % 2
    kernel = _gaussian_window(window, sigma, a.dtype).to(a.device).expand(a.shape[1], 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=a.shape[1])

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean(dim=(1, 2, 3)).float()


def _unit_scale(maps: torch.Tensor) -> torch.Tensor:
    """``|maps|`` divided by each map's maximum (0..1; all-zero maps stay 0)."""
    flat = maps.abs().reshape(maps.shape[0], -1)
    peak = flat.amax(1, keepdim=True)
    return torch.where(peak > 0, flat / peak.clamp_min(1e-30), flat).reshape(maps.shape)


def _units(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Top-level layers; containers the model never calls (ModuleList/ModuleDict) are opened."""
    out: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            out.extend(_units(child, full + "."))
        else:
            out.append((full, child))
    return out


def _randomisable(module: nn.Module) -> bool:
    # a layer with a weight matrix or kernel; BatchNorm/LayerNorm scales alone are not re-drawn
    return any(p.ndim >= 2 for p in module.parameters())


def randomisable_layers(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> list[str]:
    """Layers the cascade randomises, top (output) first: the top-level layers
    (members of never-called ``ModuleList``/``ModuleDict`` containers count as
    layers) that hold a weight matrix or kernel, in the order the forward pass
    calls them (one pass on zeros of ``input_shape``, default the spec's; without
    either, the order they are registered in)."""
    units = [(name, module) for name, module in _units(model) if _randomisable(module)]
    shape = input_shape if input_shape is not None else (_spec(model).input_shape if _spec(model) is not None else None)
    if shape is not None and units:
        from convscope.probe import reached_outputs

        try:
            param = next(model.parameters())
            device, dtype = param.device, param.dtype
        except StopIteration:
            device, dtype = torch.device("cpu"), torch.float32
        with eval_mode(model):
            order = list(reached_outputs(model, torch.zeros((1, *shape), device=device, dtype=dtype)))
        position = {name: i for i, name in enumerate(order)}
        # a layer's output appears when it returns; a layer the pass never reaches is left out
        units = sorted((u for u in units if u[0] in position), key=lambda u: position[u[0]])
    return [name for name, _ in units][::-1]


@torch.no_grad()
def randomise_layer(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every parameter of ``module`` in place: weights uniform in
    ``±1/sqrt(fan_in)`` (PyTorch's default scale), biases likewise."""
    for sub in module.modules():
        weight = getattr(sub, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.ndim < 2:
            continue
        fan_in = weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in)
        for param in (weight, getattr(sub, "bias", None)):
            if isinstance(param, torch.Tensor):
                fresh = torch.rand(param.shape, generator=generator, dtype=param.dtype) * 2 - 1
                param.copy_((fresh * bound).to(param.device))


@dataclass
class SanityResult:
    """Result of :func:`sanity_check`.

    Attributes:
        stages: ``["original", "Dense_2", "Dense_1", ...]`` — stage k has the top k
            layers randomised (cumulative).
        methods: method names.
        spearman: ``{method: [mean Spearman of |attr| vs original, per stage]}``.
        ssim: ``{method: [mean SSIM vs original, per stage]}``.
        spearman_per_image / ssim_per_image: ``{method: (stages, N)}`` tensors.
        maps: ``{method: (stages, N, C, H, W)}`` the attribution maps.
        targets: ``(N,)`` classes explained (the trained model's predictions).
        params: seed and method options.
    """

    stages: list[str]
    methods: list[str]
    spearman: dict[str, list[float]]
    ssim: dict[str, list[float]]
    spearman_per_image: dict[str, torch.Tensor]
    ssim_per_image: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor]
    targets: torch.Tensor
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no maps)."""
        return {
            "test": "cascading model-parameter randomisation (Adebayo et al. 2018)",
            "stages": self.stages,
            "methods": self.methods,
            "spearman_abs": {m: [round(v, 4) for v in vals] for m, vals in self.spearman.items()},
            "ssim": {m: [round(v, 4) for v in vals] for m, vals in self.ssim.items()},
            "targets": [int(t) for t in self.targets],
            "n_images": int(self.targets.numel()),
            "params": self.params,
        }


def sanity_check(
    model: nn.Module,
    inputs: torch.Tensor,
    methods: Sequence[str] | None = None,
    *,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    options: dict[str, dict[str, Any]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SanityResult:
    """Cascading randomisation test on a copy of ``model`` (``model`` is untouched).

    Args:
        model: the trained network.
        inputs: ``(N, C, H, W)`` model inputs.
        methods: registered method names (default: the registry's sanity methods,
            :func:`convscope.explain.registry.sanity_methods`).
        layers: layers to randomise in this order (default:
            :func:`randomisable_layers`, output first).
        seed: seed of the random weights.
        options: per-method options, e.g. ``{"gradcam": {"layer": "Conv2D_2"}}``.
        progress: ``progress(done, total)`` after each stage.

    Returns:
        A :class:`SanityResult`; targets are the trained model's predicted classes.
    """
    methods = list(methods) if methods is not None else sanity_methods()
    if not methods:
        raise ValueError("the sanity check needs at least one method")
    options = options or {}
    work = copy.deepcopy(model)
    layers = list(layers) if layers is not None else randomisable_layers(work, tuple(inputs.shape[1:]))
    modules = dict(work.named_modules())
    unknown = [name for name in layers if name not in modules or name == ""]
    if unknown:
        raise ValueError(f"cannot randomise {unknown}: not layers of the model; e.g. {', '.join(randomisable_layers(work, tuple(inputs.shape[1:]))[:6])}")
    targets = predicted_classes(model, inputs)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    stages = ["original", *layers]
    maps: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    for stage_index, stage in enumerate(stages):
        if stage_index > 0:
            randomise_layer(modules[stage], generator)
        for method in methods:
            explainer, rest = make_method(work, method, **options.get(method, {}))
            maps[method].append(explainer.attribute(inputs, targets, **rest).detach().cpu())
        if progress is not None:
            progress(stage_index + 1, len(stages))
    stacked = {m: torch.stack(v) for m, v in maps.items()}
    rank_corr: dict[str, torch.Tensor] = {}
    structural: dict[str, torch.Tensor] = {}
    for method, stack in stacked.items():
        original = stack[0]
        rank_corr[method] = torch.stack([spearman(original.abs().flatten(1), s.abs().flatten(1)) for s in stack])
        reference = _unit_scale(original.sum(1, keepdim=True))
        structural[method] = torch.stack([ssim(reference, _unit_scale(s.sum(1, keepdim=True))) for s in stack])
    return SanityResult(
        stages=stages,
        methods=list(methods),
        spearman={m: [float(v) for v in c.mean(1)] for m, c in rank_corr.items()},
        ssim={m: [float(v) for v in c.mean(1)] for m, c in structural.items()},
        spearman_per_image=rank_corr,
        ssim_per_image=structural,
        maps=stacked,
        targets=targets.cpu(),
        params={"seed": seed, "layers": layers, "options": options},
    )
