"""Golden values of every optimisation engine for fixed seeds, recorded before the
engines were rebuilt on one optimisation core: the rebuilt engines must give the
same numbers. ``python tests/golden/engines.py --record`` rewrites the file (only
do that for a deliberate change of the numbers, and say so in the commit)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

GOLDEN = Path(__file__).with_name("engines.npz")


def _photo() -> np.ndarray:
    from convscope.photos import default_photo

    rgb = default_photo()
    return rgb[200:264, 250:330]  # a 64×80 crop of the face


def compute(model, test_images: np.ndarray) -> dict[str, np.ndarray]:
    """Every engine once, small settings; returns named arrays."""
    from convscope.dream.carve import carve
    from convscope.dream.colour import dream_colour
    from convscope.dream.octaves import deep_dream
    from convscope.inference import to_input
    from convscope.optvis import objectives as obj
    from convscope.optvis.ascent import reference_ascent
    from convscope.optvis.init import unit_generator, unit_initial_images
    from convscope.optvis.modern import modern_ascent, modern_oips
    from convscope.optvis.oip import compute_oips
    from convscope.optvis.precursor import precursor_starts
    from convscope.optvis.strategies import class_patterns, coarse_to_fine_ascent

    out: dict[str, np.ndarray] = {}

    def put(name: str, value) -> None:
        out[name] = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)

    status_code = {"converged": 0, "max_steps": 1, "dead": 2}
    a = compute_oips(model, "Conv2D_3", [120, 45, 7, 56, 27], seed=0, steps=60, n_candidates=64, early_stop=True)
    put("A_images", a.images), put("A_losses", a.ascent.losses), put("A_initial", a.initial_images)
    put("A_status", [status_code[s] for s in a.ascent.status]), put("A_snapshots", a.ascent.snapshots)
    b = compute_oips(model, "Conv2D_2", range(6), precursor=False, seed=1, steps=50)
    put("B_images", b.images), put("B_losses", b.ascent.losses)
    c = reference_ascent(model, obj.channels("Conv2D_3", [1, 2, 3]), unit_initial_images(2, "Conv2D_3", [1, 2, 3]),
                         steps=30, jitter=2, generator=torch.Generator().manual_seed(5))
    put("C_images", c.images), put("C_losses", c.losses)
    d = coarse_to_fine_ascent(model, obj.channels("Conv2D_2", [0, 1, 2, 3]), 4, stage_steps=(5, 5, 5, 10),
                              generator=torch.Generator().manual_seed(0))
    put("D_images", d.images), put("D_losses", d.losses)
    e = class_patterns(model, steps=40, passes=2, seed=0)
    put("E_images", e.images), put("E_first", e.first_pass), put("E_logits", e.logits)
    f = modern_ascent(model, obj.channels("Conv2D_2", [3, 9]), 2, steps=20, lr=0.02, l1=0.1, tv=0.5, blur_every=4,
                      blur_sigma=0.7, initial=unit_initial_images(3, "Conv2D_2", [3, 9]),
                      generator=unit_generator(3, "Conv2D_2", "transforms"), record_every=5)
    put("F_images", f.images), put("F_clean", f.clean_losses)
    g = modern_ascent(model, obj.channels("Conv2D_3", [5, 6]), 2, steps=25, parametrisation="fourier", optimizer="adam",
                      transforms=True, generator=torch.Generator().manual_seed(1), record_every=5)
    put("G_images", g.images), put("G_clean", g.clean_losses)
    h = modern_oips(model, "Conv2D_3", [7, 8], diversity_members=2, steps=20, seed=0)
    put("H_images", h.images), put("H_final", h.final_loss), put("H_similarity", h.similarity)
    dataset = to_input(model, test_images[:200])
    p = precursor_starts(model, "Conv2D_3", list(range(40)), n_candidates=8, generator=torch.Generator().manual_seed(3),
                         dataset_images=dataset, preactivation_steps=40)
    source_code = {"random": 0, "dataset": 1, "preactivation": 2, "none": 3}
    put("P_images", p.images), put("P_scores", p.scores), put("P_source", [source_code[s] for s in p.source])

    photo = _photo()
    gray = torch.as_tensor(photo.astype(np.float32).mean(axis=2))
    for tiling in ("fullconv", "tiles", "downscale"):
        objective = obj.parse_objective("Conv2D_3" if tiling != "downscale" else "Conv2D_3 + 0.5*Dense_1:3")
        r = deep_dream(model, objective, gray, tiling=tiling, octaves=2, steps=3, seed=0)
        put(f"I_{tiling}", r.image), put(f"I_{tiling}_values", r.values)
    k = carve(model, obj.channel("Conv2D_3:56"), gray, rounds=2, epochs=10)
    put("J_pattern", k.pattern), put("J_image", k.image)
    colour = dream_colour(lambda y: deep_dream(model, obj.parse_objective("Conv2D_2"), y, octaves=2, steps=3, seed=1),
                          torch.as_tensor(photo))
    put("K_rgb", colour.image)
    return out


def main() -> None:
    torch.set_num_threads(2)
    from convscope.data import load_split
    from convscope.models import load_model

    values = compute(load_model(None), load_split("test").images)
    if "--record" in sys.argv:
        np.savez_compressed(GOLDEN, **values)
        print(f"recorded {len(values)} arrays into {GOLDEN} ({GOLDEN.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
