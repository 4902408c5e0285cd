"""OIP speed against Lucent, and the modern path against the reference path.

Run (Lucent is not a dependency: install it beside, without its dependencies —
its transforms need kornia; torchvision is only imported for an ImageNet
normaliser that is not used here, so a stand-in is provided when torchvision is
missing)::

    pip install --target /tmp/lucent-site --no-deps torch-lucent==0.1.8 kornia==0.5.11   # 0.6 lacks get_rotation_matrix2d
    LUCENT_SITE=/tmp/lucent-site python benchmarks/lucent_compare.py [--threads 1] [--maps 128] [--steps 512]

Measured side by side in one run on the shipped Model A, all 128 maps of
Conv2D_3 for STEPS steps, no early stop, no precursor (the same work for all):

1. convscope, reference path (strategy 0: pixels, unit-RMS step, re-standardise);
2. convscope, modern path (Fourier 1/f image + Adam), without and with transforms;
3. Lucent's ``render_vis`` (batched: one image per map, its default transforms
   and FFT image at the model's 28×28, Adam lr 0.05), if Lucent is importable.

Prints the per-step times, the modern/reference ratio (target ≤ 1.3×) and how much
faster convscope is than Lucent on each path (target ≥ 10×).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types

import torch

from convscope.app.oip import ModernOptions, OIPOptions, run_oips
from convscope.models import load_model


def _import_lucent():
    site = os.environ.get("LUCENT_SITE")
    if site and site not in sys.path:
        sys.path.insert(0, site)
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - a stand-in for the one class Lucent imports from it
        vision = types.ModuleType("torchvision")
        transforms = types.ModuleType("torchvision.transforms")

        class Normalize:  # only used for ImageNet models (preprocess=True), which is off here
            def __init__(self, mean, std):
                self.mean, self.std = mean, std

        transforms.Normalize = Normalize
        vision.transforms = transforms
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = vision, transforms
    try:
        from lucent.optvis import objectives, param, render

        return objectives, param, render
    except Exception as exc:  # noqa: BLE001 - Lucent is optional
        print(f"Lucent not available ({exc}); see the module docstring to install it for this comparison")
        return None


def time_convscope(model, maps: list[int], steps: int, modern: ModernOptions) -> float:
    options = OIPOptions(steps=steps, precursor=False, early_stop=False, criterion=None if modern.active else 2e-4,
                         modern=modern, per_map=False)
    started = time.perf_counter()
    run = run_oips(model, [("Conv2D_3", maps)], options).layers[0]
    seconds = time.perf_counter() - started
    # both paths drop members dead from the start (the modern one only without transforms)
    MEMBER_STEPS[modern.active] = run.member_steps or len(maps) * steps
    return seconds


#: member-steps of the last run of each path (``False``: reference, ``True``: modern)
MEMBER_STEPS: dict[bool, int] = {}


def time_lucent(lucent, model, maps: list[int], steps: int) -> float:
    objectives, param, render = lucent
    objective = sum(objectives.channel("Conv2D_3", m, batch=i) for i, m in enumerate(maps))
    param_f = lambda: param.image(28, batch=len(maps), channels=1, fft=True, decorrelate=False)  # noqa: E731
    started = time.perf_counter()
    render.render_vis(model, objective, param_f, thresholds=(steps,), preprocess=False, progress=False,
                      show_image=False, fixed_image_size=28)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--maps", type=int, default=128)
    parser.add_argument("--steps", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(None)
    maps = list(range(args.maps))
    print(f"{args.maps} maps of Conv2D_3 × {args.steps} steps, {args.threads} thread(s), load average "
          f"{os.getloadavg()[0]:.1f}")
    time_convscope(model, maps[:8], 10, ModernOptions())  # warm-up (the first Adam step imports a lot)
    time_convscope(model, maps[:8], 10, ModernOptions(parametrisation="fourier", optimizer="adam"))
    reference = time_convscope(model, maps, args.steps, ModernOptions())
    reference_members = MEMBER_STEPS[False]
    modern = time_convscope(model, maps, args.steps, ModernOptions(parametrisation="fourier", optimizer="adam"))
    modern_members = MEMBER_STEPS[True]
    modern_t = time_convscope(model, maps, args.steps,
                              ModernOptions(parametrisation="fourier", optimizer="adam", transforms=True))
    per_step = lambda seconds: 1000 * seconds / args.steps  # noqa: E731
    print(f"convscope reference path:            {reference:7.2f} s  ({per_step(reference):.1f} ms/step)")
    print(f"convscope modern (fourier + adam):   {modern:7.2f} s  ({per_step(modern):.1f} ms/step)  "
          f"= {modern / reference:.2f}× the reference path (target ≤ 1.3×)")
    per_member = (modern / modern_members) / (reference / reference_members)
    print(f"  per member-step: reference {1e3 * reference / reference_members:.3f} ms ({reference_members:,} member-steps: "
          f"dead members leave the batch), modern {1e3 * modern / modern_members:.3f} ms ({modern_members:,}) "
          f"= {per_member:.2f}×")
    print(f"convscope modern + transforms:       {modern_t:7.2f} s  ({per_step(modern_t):.1f} ms/step)  "
          f"= {modern_t / reference:.2f}× the reference path")
    lucent = _import_lucent()
    if lucent is not None:
        seconds = time_lucent(lucent, load_model(None), maps, args.steps)
        print(f"Lucent render_vis (fft + transforms): {seconds:7.2f} s  ({per_step(seconds):.1f} ms/step)")
        print(f"convscope is {seconds / reference:.1f}× faster on the reference path and {seconds / modern_t:.1f}× "
              f"faster on the modern path with transforms ({seconds / modern:.1f}× without) (target ≥ 10×)")


if __name__ == "__main__":
    main()
