"""DeepDream memory: the plan's estimate against the measured peak, side by side.

Each case runs ``convscope.app.dream.dream_photo`` (the whole use case: colour
photo in, 8-bit dream out) in its own subprocess and reports the dream's peak
resident memory above what the process held before it (``ru_maxrss``), next to
the estimate of :func:`convscope.dream.memory.plan_memory`. Cases: the shipped
gray model and the test zoo's RGB model, each tiling, photos of 1 and 4
megapixels, and fullconv forced into stripes by a small ``memory_limit``.

    python benchmarks/dream_memory.py             # all cases (a few minutes on 2 cores)
    python benchmarks/dream_memory.py --quick     # 1-megapixel cases only

No assertions; the estimate is meant to be an upper bound within about +50 %.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys
import numpy as np, torch
from PIL import Image
config = json.loads(sys.argv[1])
torch.set_num_threads(1)
sys.path.insert(0, config["tests"])
from convscope.app.dream import dream_photo
from convscope.photos import default_photo
if config["model"] == "rgb":
    import zoo
    model = zoo.rgb_net()
else:
    from convscope.models import load_model
    model = load_model(None)
photo = np.asarray(Image.fromarray(default_photo()).resize((config["width"], config["height"]), Image.BICUBIC))
small = np.asarray(Image.fromarray(photo).resize((96, 96)))
dream_photo(model, small, tiling=config["tiling"], octaves=1, steps=1)  # warm up: kernels, caches
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = dream_photo(model, photo, tiling=config["tiling"], octaves=2, steps=1, memory_limit=config.get("limit"),
                     objective=config.get("objective"))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
memory = result.engine.memory
print(json.dumps({"measured_mb": (peak - base) / 1024, "estimate_mb": memory["estimate_bytes"] / 2**20,
                  "stripes": memory["stripe_pixels"], "tile_batch": memory["tile_batch"], "seconds": result.seconds}))
"""


def run(config: dict) -> dict:
    config = {**config, "tests": str(Path(__file__).resolve().parents[1] / "tests")}
    completed = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config)], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        return {"error": (completed.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = [1000] if args.quick else [1000, 2000]
    cases = []
    for side in sizes:
        for tiling in ("fullconv", "tiles", "downscale"):
            cases.append((f"shipped {tiling} {side}²", {"model": "shipped", "tiling": tiling, "width": side, "height": side}))
        cases.append((f"shipped fullconv {side}² 0.3 GB", {"model": "shipped", "tiling": "fullconv", "width": side,
                                                           "height": side, "limit": 0.3}))
        for tiling in ("fullconv", "tiles"):
            cases.append((f"rgb-net {tiling} {side}²", {"model": "rgb", "tiling": tiling, "width": side, "height": side}))
    print(f"{'case':32s} {'estimate MB':>12s} {'measured MB':>12s} {'ratio':>6s}  plan")
    for label, config in cases:
        result = run(config)
        if "error" in result:
            print(f"{label:32s} error: {result['error']}")
            continue
        ratio = result["estimate_mb"] / max(result["measured_mb"], 1e-9)
        plan = f"stripes {result['stripes']:,} px" if result["stripes"] else f"tile chunk {result['tile_batch']}"
        print(f"{label:32s} {result['estimate_mb']:12.0f} {result['measured_mb']:12.0f} {ratio:6.2f}  {plan}  "
              f"({result['seconds']:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
