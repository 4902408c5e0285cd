"""Strategy 0 (the reference) against strategy 1 and the modern options, on Conv2D_3.

Run:  python benchmarks/oip_options.py [--maps 32] [--steps 600] [--threads 2]

Every variant optimises the same sample of Conv2D_3 maps (every 128/MAPS-th map)
for STEPS steps (strategy 1: 20/40/80/400 = 540) from the same seed, and is
scored on the *clean* objective: mean activation of the map on the standardised,
untransformed image. Columns:

  mean act   mean final activation over the sampled maps (and ratio to strategy 0)
  wins       maps where the variant ends higher than strategy 0
  non-zero   maps with a non-zero final activation
  steps→90%  median step at which the variant first reaches 90 % of strategy 0's
             final activation (over maps where strategy 0 is non-zero; n = how many got there)
  time       wall seconds for the variant
"""

from __future__ import annotations

import argparse
import time

import torch

from convscope.models import load_model
from convscope.optvis import objectives as obj
from convscope.optvis.ascent import reference_ascent
from convscope.optvis.init import random_initial_images
from convscope.optvis.modern import diversity, modern_ascent
from convscope.optvis.precursor import precursor_starts
from convscope.optvis.strategies import coarse_to_fine_ascent


def first_reach(history: torch.Tensor, steps: list[int], target: torch.Tensor) -> list[int | None]:
    """Per member, the first recorded step with history >= target (None if never)."""
    out = []
    for i in range(history.shape[1]):
        hit = torch.nonzero(history[:, i] >= target[i]).flatten()
        out.append(int(steps[int(hit[0])]) if len(hit) else None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=32)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(None)
    maps = list(range(0, 128, max(1, 128 // args.maps)))[: args.maps]
    n, steps = len(maps), args.steps
    target = obj.channels("Conv2D_3", maps)

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(args.seed)

    start = random_initial_images(n, generator=gen())
    precursor = precursor_starts(model, "Conv2D_3", maps, generator=gen()).images
    rows = []

    def run(name: str, fn) -> None:
        t0 = time.perf_counter()
        final, history, record_steps = fn()
        rows.append((name, final, history, record_steps, time.perf_counter() - t0))

    def reference(initial):
        res = reference_ascent(model, target, initial, steps=steps)
        return res.final_loss, res.losses, list(range(steps + 1))

    def modern(**kwargs):
        def fn():
            res = modern_ascent(model, target, n, steps=steps, generator=gen(), **kwargs)
            return res.final_loss, res.clean_losses, res.record_steps
        return fn

    def strategy1():
        res = coarse_to_fine_ascent(model, target, n, generator=gen())
        return res.final_loss, res.losses, list(range(res.losses.shape[0]))

    run("strategy 0 (reference)", lambda: reference(start))
    run("strategy 0 + precursor start", lambda: reference(precursor))
    run("strategy 1 (coarse-to-fine)", strategy1)
    run("Fourier 1/f, unit-RMS step", modern(parametrisation="fourier", lr=0.01))
    run("Fourier 1/f + Adam", modern(parametrisation="fourier", optimizer="adam"))
    run("pixels + Adam (lr 0.05)", modern(initial=start, optimizer="adam"))
    run("transforms (±2px, ±10%, ±10°)", modern(initial=start, transforms=True))
    run("TV 0.5 + L1 0.1 penalties", modern(initial=start, tv=0.5, l1=0.1))
    run("blur every 4 steps (σ 0.5)", modern(initial=start, blur_every=4))
    run("precursor + Fourier + Adam", modern(parametrisation="fourier", optimizer="adam", initial=precursor))

    base_final = rows[0][1]
    goal = 0.9 * base_final
    alive = base_final > 0
    print(f"Conv2D_3, {n} maps {maps[0]}..{maps[-1]} step {maps[1] - maps[0]}, {steps} steps, seed {args.seed}, "
          f"threads {args.threads}")
    print(f"{'variant':34s} {'mean act':>9s} {'ratio':>6s} {'wins':>5s} {'non-zero':>8s} {'steps→90%':>12s} {'time s':>7s}")
    for name, final, history, record_steps, seconds in rows:
        reach = first_reach(history, record_steps, goal)
        reached = [r for i, r in enumerate(reach) if alive[i] and r is not None]
        median = f"{int(torch.tensor(reached).float().median())} (n={len(reached)})" if reached else "—"
        ratio = float(final.mean() / base_final.mean())
        wins = int((final > base_final + 1e-9).sum())
        print(f"{name:34s} {float(final.mean()):9.3f} {ratio:6.2f} {wins:5d} {int((final > 0).sum()):5d}/{n:<2d} "
              f"{median:>12s} {seconds:7.1f}")

    # diversity: 4 members per map for 8 maps; distinctness = 1 - mean pairwise image correlation within a map
    few = maps[:8]
    groups = torch.arange(len(few)).repeat_interleave(4)
    members = [few[g] for g in groups.tolist()]
    div_target = obj.channels("Conv2D_3", members)
    for weight in (0.0, 2.0):
        extra = None if weight == 0 else -weight * diversity("Conv2D_2", groups)
        res = modern_ascent(model, div_target, len(members), steps=steps, generator=gen(), extra=extra)
        flat = res.images.reshape(len(members), -1)
        corr = torch.corrcoef(flat)
        same = (groups[:, None] == groups[None, :]) & ~torch.eye(len(members), dtype=torch.bool)
        print(f"diversity weight {weight:3.1f}: mean activation {float(res.final_loss.mean()):.3f}, "
              f"mean within-map image correlation {float(corr[same].mean()):.3f} (lower = more distinct)")


if __name__ == "__main__":
    main()
