"""DeepDream speed and peak memory per tiling mode, measured side by side.

A 1024×1024 photo (matplotlib's Grace Hopper, resized), 4 octaves × 10 steps,
the whole-layer objective Conv2D_3, each tiling mode (and a few fullconv
variants) in its own subprocess, so each peak memory (ru_maxrss) is its own.

    python benchmarks/dream_speed.py               # all modes
    python benchmarks/dream_speed.py --size 512    # smaller photo
    python benchmarks/dream_speed.py --big         # also 4000×3000, 1 octave × 2 steps (bounded memory)

Prints seconds, peak RSS and the ratio to fullconv. No assertions. "fullconv, no
rewrites" runs on a plain frozen channels-last copy instead of the gradient twin
(convscope.models.twin: ReLU after max-pool, fast 1-channel input gradient), to
show what those rewrites buy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from PIL import Image
config = json.loads(sys.argv[1])
torch.set_num_threads(config["threads"])
from convscope.models import load_model
from convscope.optvis.objectives import parse_objective
from convscope.photos import default_photo
from convscope.dream import deep_dream
if config.get("twin") == "frozen":  # the model copy without the exact rewrites, for comparison
    import convscope.dream.octaves as octaves
    from convscope.models.twin import frozen_twin
    octaves.prepare_model = lambda model, read_layers=None: frozen_twin(model)
model = load_model(None)
gray = Image.fromarray(default_photo(gray=True)).resize((config["width"], config["height"]), Image.BICUBIC)
image = torch.from_numpy(np.asarray(gray, dtype=np.float32).copy())
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
result = deep_dream(model, parse_objective(config["objective"]), image, tiling=config["tiling"],
                    octaves=config.get("octaves", 4), steps=config.get("steps", 10), step_size=0.05, bfloat16=config["bf16"], tile_batch=config["tile_batch"])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mb": peak / 1024, "before_mb": base_rss / 1024,
                  "gain": result.objective_after / max(result.objective_before, 1e-12),
                  "octaves": result.octave_sizes}))
"""


def run(config: dict) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(config)], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr else "failed"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--big", action="store_true", help="also 4000×3000 (1 octave × 2 steps): peak memory")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    args = parser.parse_args()
    # One thread by default: on this shared 2-core machine two OpenMP threads were
    # measured several times slower than one (they spin-wait for each other).
    base = {"width": args.size, "height": args.size, "objective": "Conv2D_3", "bf16": False, "threads": args.threads,
            "tile_batch": 512}
    cases = [
        ("downscale", {**base, "tiling": "downscale"}),
        ("tiles", {**base, "tiling": "tiles"}),
        ("fullconv", {**base, "tiling": "fullconv"}),
        ("fullconv, no rewrites", {**base, "tiling": "fullconv", "twin": "frozen"}),
        ("fullconv, 2 threads", {**base, "tiling": "fullconv", "threads": 2}),
        ("fullconv, bf16", {**base, "tiling": "fullconv", "bf16": True}),
    ]
    if args.big:
        # memory only: one octave, two steps on a 12-megapixel photo
        big = {**base, "width": 4000, "height": 3000, "octaves": 1, "steps": 2}
        cases.append(("tiles 4000x3000 1x2", {**big, "tiling": "tiles", "tile_batch": 256}))
        cases.append(("fullconv 4000x3000 1x2", {**big, "tiling": "fullconv"}))
    import os

    print(f"DeepDream, {args.size}x{args.size} photo, Conv2D_3 layer objective, 4 octaves x 10 steps, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    results = {}
    for label, config in cases:
        results[label] = run(config)
        print(f"  {label:22s} {json.dumps(results[label])}", flush=True)
    reference = results.get("fullconv", {}).get("seconds")
    print()
    print(f"{'mode':22s} {'seconds':>8s} {'peak MB':>8s} {'x fullconv':>10s} {'objective gain':>15s}")
    for label, result in results.items():
        if "error" in result:
            print(f"{label:22s} error: {result['error']}")
            continue
        ratio = result["seconds"] / reference if reference else float("nan")
        print(f"{label:22s} {result['seconds']:8.1f} {result['peak_mb']:8.0f} {ratio:10.2f} {result['gain']:15.2f}")
    fullconv = results.get("fullconv", {})
    if "octaves" in fullconv:
        work = dream_flops(fullconv["octaves"], steps=10)
        print()
        print(f"fullconv work: {work / 1e9:.0f} GFLOP (forward + input gradient up to Conv2D_3, every octave x 10 steps; "
              "convolutions only)")
        for label in ("fullconv", "fullconv, 2 threads"):
            threads = 2 if "2 threads" in label else 1
            if "seconds" in results.get(label, {}):
                rate = work / results[label]["seconds"]
                peak = matmul_flops(threads)
                print(f"  {label:22s} {rate / 1e9:6.1f} GFLOP/s = {rate / peak:.0%} of the fp32 matmul rate with "
                      f"{threads} thread(s) ({peak / 1e9:.0f} GFLOP/s); at 100 % it would take {work / peak:.1f} s")


def dream_flops(octave_sizes: list, steps: int) -> float:
    """Convolution FLOPs of ``steps`` forward + input-gradient passes up to ``Conv2D_3``
    at every octave size (the input gradient costs about one more forward)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from convscope.models import load_model
    from convscope.probe import capture

    model = load_model(None)
    total = 0.0
    for height, width in octave_sizes:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            capture(model, torch.zeros(1, 1, int(height), int(width)), "Conv2D_3")  # the pass stops there
        total += 2 * counter.get_total_flops() * steps
    return total


def matmul_flops(threads: int, size: int = 1024) -> float:
    """The best fp32 matmul rate (FLOP/s) with ``threads`` PyTorch threads."""
    import time

    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - start) / 10)
    torch.set_num_threads(previous)
    return 2 * size**3 / best


if __name__ == "__main__":
    main()
