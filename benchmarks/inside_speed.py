"""Speed of the look-inside engines on the 10,000 MNIST test images (CPU or CUDA).

Measures, side by side in one run:

1. activations of every layer for all test images: one probe pass capturing all
   layers vs. one pass per layer;
2. top-k (k=9) for all maps of all layers: one pass for all layers vs. one pass per
   layer;
3. top-k batched over maps (the engine) vs. a per-map loop, on a subset of images
   and a few maps of Conv2D_3 (the loop is extrapolated to all 128 maps).

Usage::

    CONVSCOPE_DATA=/path/to/mnist python benchmarks/inside_speed.py [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from convscope.address import layer_names
from convscope.data import load_split
from convscope.inference import to_input
from convscope.inside import layer_activations, topk_layers
from convscope.models import load_model
from convscope.probe import Probe


def timed(func, repeat: int = 1):
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


@torch.no_grad()
def per_map_loop_topk(model, images, layer: str, maps: list[int], k: int = 9, batch_size: int = 1000):
    """The naive way: one pass over the images per map."""
    out = {}
    for map_index in maps:
        maxima = []
        with Probe(model, [layer], detach=True) as probe:
            for start in range(0, len(images), batch_size):
                act = probe.run(to_input(model, images[start : start + batch_size]))[layer][:, map_index]
                maxima.append(act.flatten(1).amax(1).cpu())
        out[map_index] = torch.topk(torch.cat(maxima), k).indices
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--loop-images", type=int, default=2000, help="images for the per-map loop comparison")
    parser.add_argument("--loop-maps", type=int, default=4, help="maps timed in the per-map loop")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(None, device=args.device)
    images = load_split("test").images
    n = len(images)
    layers = [name for name in layer_names(model)]  # every module layer + logits + probabilities
    module_layers = [name for name in layers if name not in ("logits", "probabilities")]
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {n:,} test images, "
          f"batch {args.batch_size}, torch {torch.__version__}")

    # Warm-up (allocator, kernels).
    layer_activations(model, images[:500], module_layers)

    t_all, acts = timed(lambda: layer_activations(model, images, layers, batch_size=args.batch_size))
    size_mb = sum(t.numel() * t.element_size() for t in acts.values()) / 2**20
    del acts
    t_each = 0.0
    for name in module_layers:
        seconds, out = timed(lambda name=name: layer_activations(model, images, [name], batch_size=args.batch_size))
        del out
        t_each += seconds
    print("\n1. activations of every layer, all test images")
    print(f"   one pass, all {len(layers)} layers         : {t_all:7.2f} s  {n / t_all:9.0f} images/s  ({size_mb:.0f} MiB of activations)")
    print(f"   one pass per layer ({len(module_layers)} passes)  : {t_each:7.2f} s  {n / t_each:9.0f} images/s")
    print(f"   ratio per-layer / one-pass      : {t_each / t_all:7.2f}x")

    t_topk, results = timed(lambda: topk_layers(model, images, module_layers, k=9, batch_size=args.batch_size))
    maps_total = sum(r.values.shape[0] for r in results.values())
    t_topk_each = 0.0
    for name in module_layers:
        seconds, _ = timed(lambda name=name: topk_layers(model, images, [name], k=9, batch_size=args.batch_size))
        t_topk_each += seconds
    print(f"\n2. top-9 for all {maps_total:,} maps/nodes of {len(module_layers)} layers, all test images")
    print(f"   one pass, all layers            : {t_topk:7.2f} s  {n / t_topk:9.0f} images/s")
    print(f"   one pass per layer              : {t_topk_each:7.2f} s  {n / t_topk_each:9.0f} images/s")
    print(f"   ratio per-layer / one-pass      : {t_topk_each / t_topk:7.2f}x")

    subset = images[: args.loop_images]
    maps = list(range(args.loop_maps))
    t_batched, batched = timed(lambda: topk_layers(model, subset, ["Conv2D_3"], k=9, batch_size=args.batch_size))
    t_loop, loop = timed(lambda: per_map_loop_topk(model, subset, "Conv2D_3", maps, batch_size=args.batch_size))
    agree = all(set(loop[m].tolist()) == set(batched["Conv2D_3"].indices[m].tolist()) for m in maps)
    per_map = t_loop / len(maps)
    print(f"\n3. Conv2D_3 top-9, {len(subset):,} images: all 128 maps batched vs a per-map loop")
    print(f"   batched, 128 maps               : {t_batched:7.2f} s")
    print(f"   per-map loop, {len(maps)} maps measured   : {t_loop:7.2f} s  → 128 maps ≈ {per_map * 128:7.1f} s")
    print(f"   ratio loop(128) / batched       : {per_map * 128 / t_batched:7.1f}x   (same images chosen: {agree})")


if __name__ == "__main__":
    main()
