"""Import time of Keras files (target: Model A in ≤ 1 s).

Measures ``read_keras`` on the real Model A files (Keras-2 ``.h5`` and Keras-3
``.keras``) and Model B: the first call in this process (includes importing h5py)
and the best of several warm calls, plus, for reference, loading the native
shipped Model A (safetensors + JSON) in the same run.

Then Model A's Keras file against its native import (``convscope import``: a
``"graph"`` model, safetensors + JSON) through ``load_any``, the way every command
loads a model (spec attached, one forward pass to check it): best of several calls
each, and their ratio.

Usage::

    python benchmarks/keras_import.py [--keras-dir ../shared/data/keras] [--repeat 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from convscope.importers import read_keras
from convscope.models import load_model, save_model
from convscope.models.loading import load_any

DEFAULT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "keras"
FILES = ("seed_model_a_keras2.h5", "seed_model_a_keras3.keras", "seed_model_b_keras2.h5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keras-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"{'file':<28}{'first call':>12}{'best warm':>12}   target ≤ 1 s")
    for name in FILES:
        path = args.keras_dir / name
        start = time.perf_counter()
        read_keras(path)
        first = time.perf_counter() - start
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = read_keras(path)
            best = min(best, time.perf_counter() - start)
        verdict = "ok" if first <= 1.0 else "SLOW"
        print(f"{name:<28}{first:>11.3f}s{best:>11.3f}s   {verdict} ({result.total_params:,} params, {result.format})")

    best_native = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        load_model(None, device="cpu")
        best_native = min(best_native, time.perf_counter() - start)
    print(f"{'native shipped Model A':<28}{'':>12}{best_native:>11.3f}s   (load_model, for comparison)")

    keras_a = args.keras_dir / FILES[0]
    with tempfile.TemporaryDirectory() as folder:
        native_a = Path(folder) / "model_a"
        save_model(load_any(keras_a, spec_fields={"preprocessing": "standardize"}), native_a)
        best = {}
        for label, ref in (("Keras .h5", keras_a), ("native import", native_a.with_suffix(".json"))):
            best[label] = float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                load_any(ref)
                best[label] = min(best[label], time.perf_counter() - start)
    print()
    print(f"Model A through load_any (best of {args.repeat}):")
    for label, seconds in best.items():
        print(f"  {label:<26}{seconds:>11.3f}s")
    print(f"  native / Keras: {best['native import'] / best['Keras .h5']:.2f}")


if __name__ == "__main__":
    main()
