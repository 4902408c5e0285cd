"""Training throughput of Model A and the fraction of the machine's fp32 matmul rate
it reaches, both measured in the same run.

What is timed: one training step = forward + cross-entropy (label smoothing as in the
fast recipe) + L2 on the dense kernels + backward + Adam step, on a batch of
preprocessed 28×28 inputs already in memory (no data loading or augmentation), at
the fast recipe's batch size and at the reference's batch 64.

Model FLOPs are counted analytically: multiply-accumulates of every Conv2d / Linear
(output elements × fan-in) × 2 FLOPs per MAC × 3 for forward + backward (the input
gradient and the weight gradient each cost about one forward). This slightly
overcounts (Conv2D_1 needs no input gradient) and ignores ReLU, pooling and Adam.

The matmul rate is a large square fp32 ``torch.matmul`` (2·n³ FLOPs). Measurements
are interleaved in rounds (matmul, batch 256, batch 64, matmul, …) so each training
figure is divided by the mean of the matmul rates measured right before and after
it; the table shows medians over the rounds, because on a shared machine the rates
drift.

Usage::

    python benchmarks/train_throughput.py [--seconds 2] [--rounds 3] [--threads N] [--matmul-size 2048] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from torch import nn
from torch.nn import functional as F

from convscope.models import build_model
from convscope.training.loop import init_weights, l2_penalty, make_optimizer
from convscope.training.recipes import get_recipe


def layer_macs(model: nn.Module, input_shape: tuple[int, ...] = (1, 1, 28, 28)) -> list[tuple[str, int]]:
    """Multiply-accumulates per image of every Conv2d / Linear, from the output shapes."""
    rows: list[tuple[str, int]] = []
    hooks = []

    def hook(name: str):
        def record(module: nn.Module, _inputs, output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            else:
                fan_in = module.in_features
            rows.append((name, int(output[0].numel()) * fan_in))

        return record

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(input_shape))
    finally:
        for handle in hooks:
            handle.remove()
    return rows


def matmul_gflops(n: int, seconds: float) -> tuple[float, float]:
    """Sustained fp32 GFLOP/s of an ``n × n`` matmul, and the CPU share it got."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    out = torch.empty(n, n)
    torch.matmul(a, b, out=out)  # warm-up
    runs, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        torch.matmul(a, b, out=out)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and runs >= 3:
            return 2 * n**3 * runs / elapsed / 1e9, cpu_share(cpu, elapsed)


def cpu_share(cpu_start: float, elapsed: float) -> float:
    """CPU seconds this process got per wall second per torch thread (1.0 = the
    threads never waited for a core; lower = other work shared the machine)."""
    return (time.process_time() - cpu_start) / elapsed / torch.get_num_threads()


def train_images_per_second(batch_size: int, seconds: float, seed: int = 0) -> tuple[float, float, float]:
    """Images/s, ms/step and CPU share of Model A's training step at ``batch_size``."""
    recipe = get_recipe("fast")
    model = build_model("seed_cnn")
    init_weights(model, recipe.init, seed)
    model.train()
    optimizer = make_optimizer(model, recipe)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(8, batch_size, 1, 28, 28, generator=generator)  # a few batches, cycled
    labels = torch.randint(0, 10, (8, batch_size), generator=generator)

    def step(i: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs[i % 8])
        loss = F.cross_entropy(logits, labels[i % 8], label_smoothing=recipe.label_smoothing)
        loss = loss + l2_penalty(model, recipe.l2_dense)
        loss.backward()
        optimizer.step()

    for i in range(3):  # warm-up (allocator, oneDNN primitive caches)
        step(i)
    steps, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        step(steps)
        steps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and steps >= 5:
            return steps * batch_size / elapsed, 1000 * elapsed / steps, cpu_share(cpu, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per measurement (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows medians (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--matmul-size", type=int, default=2048, help="square matmul size n (default 2048)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    model = build_model("seed_cnn")
    macs = layer_macs(model)
    macs_per_image = sum(m for _, m in macs)
    train_flops_per_image = macs_per_image * 2 * 3

    print(f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print("Model A multiply-accumulates per image (forward):")
    for name, count in macs:
        print(f"  {name:<22} {count:>12,}")
    print(f"  {'total':<22} {macs_per_image:>12,}  → training ≈ {train_flops_per_image / 1e6:.1f} MFLOP per image (×2 FLOP/MAC ×3 fwd+bwd)")

    fast_batch = get_recipe("fast").batch_size
    configs = [(f"fast, batch {fast_batch}", fast_batch), ("reference, batch 64", 64)]
    # Interleave: matmul, each batch size, matmul, ... so every training figure has a
    # matmul rate measured right before and right after it (the machine is shared).
    matmuls = [matmul_gflops(args.matmul_size, args.seconds)]
    rounds: list[list[dict]] = []
    print(f"\n{'round':<7}{'matmul GFLOP/s':>15}  " + "  ".join(f"{label + ' img/s':>26}" for label, _ in configs))
    for round_index in range(args.rounds):
        rows = []
        for label, batch in configs:
            images_per_s, ms_per_step, share = train_images_per_second(batch, args.seconds, seed=round_index)
            rows.append({"label": label, "batch_size": batch, "images_per_s": images_per_s, "ms_per_step": ms_per_step, "cpu_share": share})
        matmuls.append(matmul_gflops(args.matmul_size, args.seconds))
        peak = (matmuls[-2][0] + matmuls[-1][0]) / 2
        for row in rows:
            row["gflops"] = row["images_per_s"] * train_flops_per_image / 1e9
            row["matmul_gflops"] = peak
            row["fraction_of_matmul"] = row["gflops"] / peak
            row["images_per_cpu_s"] = row["images_per_s"] / max(1e-9, row["cpu_share"] * threads)
        rounds.append(rows)
        print(f"{round_index + 1:<7}{peak:>15.1f}  " + "  ".join(f"{row['images_per_s']:>26,.0f}" for row in rows))

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

    summary = []
    for column, (label, batch) in enumerate(configs):
        cells = [r[column] for r in rounds]
        row = {"label": label, "batch_size": batch}
        for key in ("images_per_s", "ms_per_step", "gflops", "fraction_of_matmul", "cpu_share", "images_per_cpu_s", "matmul_gflops"):
            row[key] = median([c[key] for c in cells])
        row["epoch_s"] = 60_000 / row["images_per_s"]
        summary.append(row)

    print(f"\nMedians over {args.rounds} rounds (fp32 matmul {args.matmul_size}×{args.matmul_size}: "
          f"{median([m[0] for m in matmuls]):.1f} GFLOP/s, CPU share {median([m[1] for m in matmuls]):.2f}):")
    print(
        f"{'recipe / batch':<22}{'images/s':>10}{'ms/step':>10}{'GFLOP/s':>10}{'of matmul':>11}{'epoch (60k)':>13}"
        f"{'CPU share':>11}{'img/CPU-s':>11}"
    )
    for row in summary:
        print(
            f"{row['label']:<22}{row['images_per_s']:>10,.0f}{row['ms_per_step']:>10.1f}{row['gflops']:>10.1f}"
            f"{100 * row['fraction_of_matmul']:>10.1f}%{row['epoch_s']:>12.1f}s{row['cpu_share']:>11.2f}"
            f"{row['images_per_cpu_s']:>11,.0f}"
        )
    print(
        "CPU share: CPU seconds per wall second per thread; < 1 means other processes took cores during the run.\n"
        "img/CPU-s: images per CPU-second, i.e. roughly what one fully available core would do."
    )
    ratios = [r[0]["images_per_s"] / r[1]["images_per_s"] for r in rounds]
    print(f"\nbatch {fast_batch} vs 64: {median(ratios):.2f}× the images/s (per round: {', '.join(f'{x:.2f}' for x in ratios)})")
    if args.json:
        print(
            json.dumps(
                {
                    "torch": torch.__version__,
                    "threads": threads,
                    "macs_per_image": macs_per_image,
                    "train_flops_per_image": train_flops_per_image,
                    "matmul": [{"gflops": g, "cpu_share": c} for g, c in matmuls],
                    "rounds": rounds,
                    "medians": summary,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
