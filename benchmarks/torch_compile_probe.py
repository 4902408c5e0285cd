"""Would ``torch.compile`` speed up an OIP step on this CPU? (issue 15)

Run:  python benchmarks/torch_compile_probe.py [--members 87] [--threads 1]

One reference-path step of Conv2D_3 OIPs on the shipped Model A, written as plain
PyTorch (first two conv blocks with pooling, then each member's own Conv2D_3 map
through one grouped convolution, mean activation, input gradient), timed side by
side in one run: eager, then ``torch.compile`` (inductor). Prints the compile
time, both per-step times and their ratio, and the largest difference of the
scores and gradients. (87 members: the live members of the 128-map batch after
the dead ones left it.)
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from convscope.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=87)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(None).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    w1, b1 = model.Conv2D_1.conv.weight, model.Conv2D_1.conv.bias
    w2, b2 = model.Conv2D_2.conv.weight, model.Conv2D_2.conv.bias
    maps = torch.arange(args.members) % model.Conv2D_3.conv.out_channels
    w3, b3 = model.Conv2D_3.conv.weight[maps], model.Conv2D_3.conv.bias[maps]

    def score(x: torch.Tensor) -> torch.Tensor:
        y = F.max_pool2d(F.conv2d(x, w1, b1), 2).relu()
        y = F.max_pool2d(F.conv2d(y, w2, b2), 2).relu()  # (N, 64, 5, 5)
        n, c, h, w = y.shape
        out = F.conv2d(y.reshape(1, n * c, h, w), w3, b3, groups=n).relu()
        return out.reshape(n, -1).mean(1)

    def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        scores = score(x)
        (gradient,) = torch.autograd.grad(scores.sum(), x)
        return scores.detach(), gradient

    images = torch.randn(args.members, 1, 26, 26, generator=torch.Generator().manual_seed(0))

    def per_step(function) -> float:
        function(images)
        started = time.perf_counter()
        for _ in range(args.repeats):
            function(images)
        return (time.perf_counter() - started) / args.repeats * 1e3

    print(f"{args.members} members, {args.threads} thread(s), torch {torch.__version__}, load average "
          f"{os.getloadavg()[0]:.1f}")
    eager = per_step(step)
    started = time.perf_counter()
    compiled_step = torch.compile(step, dynamic=False)
    compiled_step(images)
    compile_seconds = time.perf_counter() - started
    compiled = per_step(compiled_step)
    (s0, g0), (s1, g1) = step(images), compiled_step(images)
    print(f"eager:    {eager:7.1f} ms/step")
    print(f"compiled: {compiled:7.1f} ms/step ({eager / compiled:.2f}x eager) after {compile_seconds:.1f} s of compiling")
    print(f"largest difference: scores {(s0 - s1).abs().max():.2e}, gradients {(g0 - g1).abs().max():.2e}")


if __name__ == "__main__":
    main()
