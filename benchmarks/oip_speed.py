"""OIP speed: batching, early freezing, the 224-map precursor run, FLOP rate.

Run:  python benchmarks/oip_speed.py [--threads 2] [--sample 8] [--steps 600]

Everything is measured side by side in this one run on the shipped Model A:

1. fp32 matmul rate of this machine (the ceiling);
2. all 128 maps of Conv2D_3 × STEPS, batched (one forward/backward per step),
   no early stop — vs the per-map loop of the same algorithm, timed on SAMPLE
   maps and extrapolated to 128 (said in the output);
3. the same batch with early freezing (criterion 5e-4, the reference's upper value),
   as one batch on THREADS PyTorch threads and split over THREADS workers with one
   thread each (``compute_oips(workers=…)``, the CLI's default);
4. all 224 maps of Conv2D_1..3 with the precursor + early freezing (the CLI's
   ``oip --all-layers --early-stop``), end to end, both ways;
5. the achieved FLOP rate (analytic FLOPs of forward + input-gradient passes
   up to the probed layer) as a fraction of the matmul rate — "effective" counts
   the textbook work (whole image, every map), "executed" what the engine really
   computes after skipping unseen pixels and unscored maps.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

from convscope.address import layer_output_shapes
from convscope.layers import conv_layers
from convscope.models import load_model
from convscope.models.twin import input_extent
from convscope.optvis.oip import compute_oips


def matmul_gflops(size: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - start) / repeats)
    return 2 * size**3 / best / 1e9


def flops_per_member_step(model: nn.Module, layer: str, *, executed: bool = False) -> float:
    """Forward + input-gradient FLOPs for one image, up to ``layer`` (convs only;
    ReLU / pooling are negligible). The backward w.r.t. the input costs about one
    forward per conv.

    ``executed=False``: the textbook count (whole 28×28 image, every map of every
    conv). ``executed=True``: what the engine really computes — only the input part
    the layer can see (:func:`~convscope.models.twin.input_extent`) and only each
    member's own map of ``layer`` (:mod:`convscope.optvis.own_channel`)."""
    height, width = model.input_shape[1:]
    if executed:
        height, width = input_extent(model, [layer], (height, width))
    shapes = layer_output_shapes(model, (model.input_shape[0], height, width))
    total = 0.0
    for name, module in model.named_children():
        for sub in module.modules():
            if isinstance(sub, nn.Conv2d):
                c_out, h, w = shapes[name]
                if executed and name == layer:
                    c_out = 1
                k = sub.kernel_size[0] * sub.kernel_size[1] * sub.in_channels
                total += 2.0 * c_out * h * w * k
        if name == layer:
            break
    return 2.0 * total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sample", type=int, default=8, help="maps timed one by one (extrapolated to 128)")
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(None)
    steps, workers = args.steps, args.threads
    print(f"threads={args.threads}  steps={steps}  torch {torch.__version__}  load average {os.getloadavg()[0]:.1f}")

    peak = matmul_gflops()
    print(f"fp32 matmul (1024²): {peak:.1f} GFLOP/s")

    maps = list(range(128))
    # every run starts each map from the same random image (seeded by seed, layer and map)
    reference = dict(seed=0, steps=steps, precursor=False)
    t0 = time.perf_counter()
    batched = compute_oips(model, "Conv2D_3", maps, **reference).ascent
    t_batched = time.perf_counter() - t0

    sample = [int(m) for m in torch.linspace(0, 127, args.sample).round().tolist()]
    t0 = time.perf_counter()
    for m in sample:
        compute_oips(model, "Conv2D_3", [m], **reference)
    t_loop = (time.perf_counter() - t0) / len(sample) * 128

    t0 = time.perf_counter()
    early = compute_oips(model, "Conv2D_3", maps, criterion=5e-4, early_stop=True, **reference).ascent
    t_early = time.perf_counter() - t0
    t0 = time.perf_counter()
    shared = compute_oips(model, "Conv2D_3", maps, criterion=5e-4, early_stop=True, workers=workers, **reference).ascent
    t_shared = time.perf_counter() - t0

    flops3 = flops_per_member_step(model, "Conv2D_3")
    flops3_run = flops_per_member_step(model, "Conv2D_3", executed=True)
    print()
    print(f"Conv2D_3, 128 maps x {steps} steps, reference strategy 0 (the same random starts):")
    print(f"  per-map loop (timed {len(sample)} maps, x128)       : {t_loop:8.2f} s   ({args.threads} PyTorch threads)")
    print(f"  batched, no early stop                        : {t_batched:8.2f} s   speed-up {t_loop / t_batched:5.1f}x")
    print(f"  batched + early freezing (5e-4)               : {t_early:8.2f} s   speed-up {t_loop / t_early:5.1f}x"
          f"   (member-steps {early.member_steps} of {128 * (steps + 1)}; dead {early.status.count('dead')},"
          f" converged {early.status.count('converged')})")
    print(f"  the same split over {workers} workers (1 thread each): {t_shared:8.2f} s   speed-up {t_loop / t_shared:5.1f}x"
          f"   (target >= 30x; {t_early / t_shared:.2f}x the one batch; member-steps {shared.member_steps})")
    rate = batched.member_steps * flops3 / t_batched / 1e9
    rate_run = batched.member_steps * flops3_run / t_batched / 1e9
    print(f"  FLOP rate batched: effective {rate:.1f} GFLOP/s = {rate / peak:.0%} of the matmul rate"
          f" (textbook {flops3 / 1e6:.1f} MFLOP per member-step: 28x28 input, all 128 maps);")
    print(f"                     executed  {rate_run:.1f} GFLOP/s = {rate_run / peak:.0%} of the matmul rate"
          f" ({flops3_run / 1e6:.1f} MFLOP really computed: 26x26 input, own map only)")
    print(f"  non-zero OIPs from one random start each: {int((batched.final_loss > 0).sum())}/128")

    for split in (None, workers):
        print()
        how = f"one batch on {args.threads} PyTorch threads" if split is None else f"split over {split} workers"
        print(f"All conv layers with precursor + early freezing (oip --all-layers --early-stop), {how}:")
        total_time, total_flops, total_run, covered, total_maps = 0.0, 0.0, 0.0, 0, 0
        for layer in conv_layers(model):
            t0 = time.perf_counter()
            result = compute_oips(model, layer, seed=0, steps=steps, criterion=5e-4, early_stop=True, workers=split)
            seconds = time.perf_counter() - t0
            total_time += seconds
            total_flops += result.ascent.member_steps * flops_per_member_step(model, layer)
            total_run += result.ascent.member_steps * flops_per_member_step(model, layer, executed=True)
            covered += result.coverage
            total_maps += len(result.map_indices)
            print(f"  {layer}: {len(result.map_indices):4d} maps  {seconds:6.2f} s  non-zero {result.coverage:4d}"
                  f"  mean steps/map {result.ascent.member_steps / len(result.map_indices):6.1f}"
                  f"  dead {result.ascent.status.count('dead')}")
        print(f"  total: {total_maps} maps in {total_time:.2f} s (target <= 5 s); non-zero {covered}/{total_maps}")
        print(f"  ascent FLOP rate (precursor time included in the time): effective {total_flops / total_time / 1e9:.1f}"
              f" GFLOP/s = {total_flops / total_time / 1e9 / peak:.0%} of matmul; executed {total_run / total_time / 1e9:.1f}"
              f" GFLOP/s = {total_run / total_time / 1e9 / peak:.0%}")


if __name__ == "__main__":
    main()
