"""The OIPs of every channel of a ResNet-18-style network: the local executor
against Ray with 2 workers on this machine, in one run.

The network (defined here, never part of the package): ResNet-18's layout —
a 3×3 stem (64 maps, no down-sampling: a 64×64 input), four stages of two basic
blocks with 64, 128, 256 and 512 maps, batch norm, a linear head — for
3×64×64 inputs and 10 classes, with seeded random weights, wrapped with
``convscope.wrap``. Its 20 convolutions hold 4,800 channels.

The work: the atlas' OIP chunk stages (``stage_oip_chunk``, chunks of
``--chunk`` maps, precursor starts, the reference ascent for a fixed number of
steps, the pictures) for all channels, the same task list on each executor:

* ``local ×1``: the local executor, one PyTorch thread (the atlas' default);
* ``local ×2``: the local executor, two PyTorch threads (this process uses both cores);
* ``local 2×1``: the local executor with 2 workers (two stages at once in threads, one PyTorch thread each);
* ``ray 2×1``: Ray, a local instance with 2 CPUs, 2 worker actors of one thread.

Printed: wall and CPU seconds, the time per unit-step (seconds ÷ the member
steps the ascents ran), Ray's overhead against ``local ×2`` (the same two cores;
target ≤ 15 %) and against the ideal ``local ×1 ÷ 2``, Ray's start-up (instance
and actors), and how busy the machine was (load average, and the CPU time other
processes took while each run ran). Results must be identical on every executor
(checked).

    PYTHONPATH=src python benchmarks/ray_scaling.py                  # the whole network, 6 steps
    PYTHONPATH=src python benchmarks/ray_scaling.py --width 16 --steps 4   # a quick look
    PYTHONPATH=src python benchmarks/ray_scaling.py --width 8 --steps 2 --candidates 4  # ~5 min on a busy 2-core box

Needs Ray (pip install "convscope[ray]"). Figures measured so far: docs/SCALING.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import convscope
from convscope.progress import Progress
from convscope.report.executor import Env, EnvSpec, LocalExecutor, StageTask
from convscope.report.profile import QUICK


# ----------------------------------------------------------------------------- the network
class BasicBlock(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or inputs != outputs:
            self.downsample = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """ResNet-18's layout for 3×64×64 inputs: ``(N, 3, 64, 64)`` → ``(N, classes)`` logits."""

    def __init__(self, width: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers, inputs = [], width
        for i, outputs in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(inputs, outputs, stride), BasicBlock(outputs, outputs, 1)))
            inputs = outputs
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inputs, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet18(dataset: Path, width: int = 64, seed: int = 0) -> nn.Module:
    """The seeded network, its batch norms with varied running statistics, wrapped with its spec."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = ResNet18(width)
    for module in net.modules():  # not all-identity batch norms: channels differ, as in a trained net
        if isinstance(module, nn.BatchNorm2d):
            count = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(count, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(count, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(count, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(count, generator=generator))
    net.eval()
    return convscope.wrap(net, input_shape=(3, 64, 64), class_names=[f"class {i}" for i in range(10)],
                          preprocessing="meanstd", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                          image_conversion="resize", dataset=str(dataset), name=f"resnet18-{width}")


def make_dataset(folder: Path, count: int = 64, seed: int = 0) -> Path:
    """A small ``.npz`` dataset of random 64×64 RGB images (the stages' Env needs one)."""
    rng = np.random.default_rng(seed)
    path = folder / "images.npz"
    np.savez(path, images=rng.integers(0, 256, (count, 64, 64, 3), dtype=np.uint8),
             labels=rng.integers(0, 10, count).astype(np.int64))
    return path


def oip_tasks(model: nn.Module, steps: int, chunk: int, candidates: int) -> list[StageTask]:
    """One ``stage_oip_chunk`` task per ``chunk`` maps of every conv layer (the atlas' chunks)."""
    from convscope.address import layer_output_shapes
    from convscope.layers import conv_layers

    shapes = layer_output_shapes(model)
    params = {"steps": steps, "epsilon": 0.04, "criterion": 0.0, "report_steps": 2, "candidates": candidates,
              "dataset": 0, "preactivation_steps": 0, "seed": 0}
    tasks = []
    for layer in conv_layers(model):
        count = int(shapes[layer][0])
        for start in range(0, count, chunk):
            maps = list(range(start, min(count, start + chunk)))
            tasks.append(StageTask(f"oip:{layer}@{maps[0]}-{maps[-1]}", f"OIPs of {layer} {maps[0]}–{maps[-1]}",
                                   "convscope.report.stages:stage_oip_chunk", {"layer": layer, "maps": maps, **params},
                                   cost=len(maps)))
    return tasks


# ----------------------------------------------------------------------------- measuring
def other_cpu_seconds() -> float:
    """CPU seconds all processes have used (from /proc/stat; minus ours gives the others')."""
    with open("/proc/stat") as handle:
        fields = handle.readline().split()[1:]
    user, nice, system = (int(v) for v in fields[:3])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def run(executor, tasks: list[StageTask]) -> dict:
    results: dict = {}
    cpu = [0.0]

    def done(task, result, seconds, task_cpu):
        results[task.name] = result
        cpu[0] += task_cpu

    machine_before, load_before = other_cpu_seconds(), os.getloadavg()[0]
    started = time.perf_counter()
    executor.run(tasks, done, Progress())
    wall = time.perf_counter() - started
    machine = other_cpu_seconds() - machine_before
    steps = sum(r.member_steps for r in results.values())
    return {"wall": wall, "task_cpu": cpu[0], "machine_cpu": machine, "load": (load_before + os.getloadavg()[0]) / 2,
            "member_steps": steps, "results": results}


def same(a: dict, b: dict) -> bool:
    from convscope.report.codec import encode

    for name, result in a.items():
        ma, xa, ba = encode(result)
        mb, xb, bb = encode(b[name])
        if ma != mb or ba != bb or xa.keys() != xb.keys() or any(not np.array_equal(xa[k], xb[k]) for k in xa):
            return False
    return a.keys() == b.keys()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=64, help="maps of the first stage (64: ResNet-18)")
    parser.add_argument("--steps", type=int, default=6, help="ascent steps per OIP")
    parser.add_argument("--chunk", type=int, default=128, help="maps per OIP chunk (the full profile's)")
    parser.add_argument("--candidates", type=int, default=16, help="precursor candidates per chunk")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()

    import ray

    from convscope.report.build import data_sha256, model_sha256
    from convscope.report.ray_executor import RayExecutor, RayOptions

    folder = Path(tempfile.mkdtemp(prefix="ray-scaling-"))
    dataset = make_dataset(folder)
    model = resnet18(dataset, args.width)
    tasks = oip_tasks(model, args.steps, args.chunk, args.candidates)
    channels = sum(len(t.params["maps"]) for t in tasks)
    profile = dataclasses.replace(QUICK, name="bench", oip_chunk=args.chunk)
    env = Env.open(EnvSpec(None, {}, None, None, "cpu", profile, 0, (), ()), model=model)
    print(f"{model.convscope_spec.name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
          f"{channels} channels in {len({t.params['layer'] for t in tasks})} conv layers, {len(tasks)} chunks of "
          f"≤ {args.chunk} maps, {args.steps} steps; torch {torch.__version__}, ray {ray.__version__}, "
          f"{os.cpu_count()} CPUs")

    rows = {}
    rows["local ×1"] = run(LocalExecutor(env, threads=1), tasks)
    print(f"  local ×1 done: {rows['local ×1']['wall']:.1f} s")
    rows["local ×2"] = run(LocalExecutor(env, threads=2), tasks)
    print(f"  local ×2 done: {rows['local ×2']['wall']:.1f} s")
    rows["local 2×1"] = run(LocalExecutor(env, threads=1, workers=2), tasks)
    print(f"  local 2×1 done: {rows['local 2×1']['wall']:.1f} s")

    identity = {"library": convscope.__version__, "model_sha256": model_sha256(model), "data_sha256": data_sha256(env.split)}
    started = time.perf_counter()
    executor = RayExecutor(RayOptions(workers=2), threads=1)
    executor.prepare(env, identity, model_given=True)
    ray_module = executor._ray()
    instance = time.perf_counter() - started
    executor._start_workers(ray_module)
    ray_module.get([w.ready_ref for w in executor._workers])
    for worker in executor._workers:
        worker.ready_ref = None
    actors = time.perf_counter() - started - instance
    try:
        rows["ray 2×1"] = run(executor, tasks)
    finally:
        executor.close()
    print(f"  ray 2×1 done: {rows['ray 2×1']['wall']:.1f} s (start-up before: instance {instance:.1f} s, "
          f"actors with the model {actors:.1f} s)")

    identical = all(same(rows["local ×1"]["results"], rows[k]["results"]) for k in ("local 2×1", "ray 2×1"))
    print()
    print(f"{'executor':<10} {'wall s':>8} {'task CPU s':>11} {'machine CPU s':>14} {'load':>5} {'member steps':>13} "
          f"{'ms / unit-step':>15} {'CPU ms / unit-step':>19}")
    for name, r in rows.items():
        print(f"{name:<10} {r['wall']:>8.1f} {r['task_cpu']:>11.1f} {r['machine_cpu']:>14.1f} {r['load']:>5.1f} "
              f"{r['member_steps']:>13,} {1000 * r['wall'] / r['member_steps']:>15.3f} "
              f"{1000 * r['task_cpu'] / r['member_steps']:>19.3f}")
    local1, local2, workers2, ray_ = (rows[k]["wall"] for k in ("local ×1", "local ×2", "local 2×1", "ray 2×1"))
    print()
    print(f"Ray 2×1 vs local ×2 (same 2 cores): {100 * (ray_ / local2 - 1):+.1f} % wall "
          f"(target ≤ +15 %); vs local 2×1 (two stages at once in threads): {100 * (ray_ / workers2 - 1):+.1f} %; "
          f"vs ideal local ×1 ÷ 2: {100 * (ray_ / (local1 / 2) - 1):+.1f} %")
    print(f"Ray start-up (not in the run above): local instance {instance:.1f} s, 2 actors {actors:.1f} s")
    print(f"results identical on every executor: {identical}")
    print(f"machine: load average {os.getloadavg()[0]:.1f} at the end; 'machine CPU s' is the CPU time of every "
          "process on the machine during the run (2 cores give at most 2 s per wall second)")
    if args.json:
        args.json.write_text(json.dumps({
            "network": model.convscope_spec.name, "channels": channels, "steps": args.steps, "chunk": args.chunk,
            "rows": {k: {kk: vv for kk, vv in v.items() if kk != "results"} for k, v in rows.items()},
            "ray_startup": {"instance": instance, "actors": actors}, "identical": identical,
        }, indent=2))


if __name__ == "__main__":
    main()
