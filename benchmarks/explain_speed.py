"""Attribution speed: each convscope method vs Captum's on the same batch, same process.

A batch of 256 MNIST test images, Model A (the shipped model), CPU, the true
labels as targets. Each pair is timed alternately (ours, Captum, ours, ...) after
one warm-up call each, and the median of ``--repeats`` runs is reported with the
ratio ours / Captum (target: <= 1.0). The maps are also compared (max abs
difference) so a fast wrong answer would show.

    python benchmarks/explain_speed.py                    # 256 images, 3 repeats, 2 threads
    python benchmarks/explain_speed.py --batch 64 --repeats 5
    CONVSCOPE_DATA=/path/to/mnist python benchmarks/explain_speed.py

No assertions: prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256, help="test images in the batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per implementation (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: $CONVSCOPE_DATA / cache)")
    parser.add_argument("--only", default=None, help="comma-separated method names to run")
    args = parser.parse_args()

    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    from captum import attr as captum

    from convscope import explain as ours
    from convscope.data import load_split
    from convscope.inference import to_input
    from convscope.models import load_model

    model = load_model(None, device="cpu")
    split = load_split("test", data_dir=args.data_dir)
    x = to_input(model, split.images[: args.batch])
    labels = torch.as_tensor(split.labels[: args.batch].copy())

    def gradcam_captum():
        cam = captum.LayerGradCam(model, model.Conv2D_3).attribute(x, target=labels, relu_attributions=True)
        return captum.LayerAttribution.interpolate(cam, (28, 28), interpolate_mode="bilinear")

    noise_std = float(0.15 * (x.amax() - x.amin()))
    pairs = {
        "saliency": (lambda: ours.Saliency(model).attribute(x, labels),
                     lambda: captum.Saliency(model).attribute(x, target=labels, abs=False)),
        "deconvnet": (lambda: ours.Deconvnet(model).attribute(x, labels),
                      lambda: captum.Deconvolution(model).attribute(x, target=labels)),
        "gbp": (lambda: ours.GuidedBackprop(model).attribute(x, labels),
                lambda: captum.GuidedBackprop(model).attribute(x, target=labels)),
        "gradcam": (lambda: ours.GradCAM(model, "Conv2D_3").attribute(x, labels), gradcam_captum),
        "ggradcam": (lambda: ours.GuidedGradCAM(model, "Conv2D_3").attribute(x, labels, mode="nearest"),
                     lambda: captum.GuidedGradCam(model, model.Conv2D_3).attribute(x, target=labels)),
        "occlusion": (lambda: ours.Occlusion(model).attribute(x, labels, window=4, stride=2, baseline=0.0),
                      lambda: captum.Occlusion(model).attribute(
                          x, target=labels, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2), baselines=0.0)),
        "occlusion (baseline min)": (
            lambda: ours.Occlusion(model).attribute(x, labels, window=4, stride=2, baseline="min"),
            lambda: captum.Occlusion(model).attribute(
                x, target=labels, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2),
                baselines=x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x).contiguous())),
        "occlusion (Captum 64 per eval)": (
            lambda: ours.Occlusion(model).attribute(x, labels, window=4, stride=2, baseline=0.0),
            lambda: captum.Occlusion(model).attribute(
                x, target=labels, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2), baselines=0.0,
                perturbations_per_eval=64)),
        "ig (50 steps)": (lambda: ours.IntegratedGradients(model).attribute(x, labels, steps=50),
                          lambda: captum.IntegratedGradients(model).attribute(x, target=labels, n_steps=50)),
        "smoothgrad (25 samples)": (
            lambda: ours.SmoothGrad(ours.Saliency(model), samples=25).attribute(x, labels),
            lambda: captum.NoiseTunnel(captum.Saliency(model)).attribute(
                x, target=labels, nt_type="smoothgrad", nt_samples=25, stdevs=noise_std, abs=False)),
    }
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        pairs = {k: v for k, v in pairs.items() if k.split(" ")[0] in wanted or k in wanted}

    print(f"{args.batch} test images, Model A, {args.threads} threads, median of {args.repeats} alternating runs")
    print(f"{'method':<32}{'convscope s':>12}{'Captum s':>11}{'ratio':>8}{'max |diff|':>12}")
    for name, (mine, theirs) in pairs.items():
        a, b = mine(), theirs()  # warm-up, and the maps to compare
        diff = "(noise)" if name.startswith("smoothgrad") else f"{float((a - b.detach()).abs().max()):.1e}"
        times_ours, times_captum = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            mine()
            times_ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            theirs()
            times_captum.append(time.perf_counter() - start)
        t_ours, t_captum = statistics.median(times_ours), statistics.median(times_captum)
        print(f"{name:<32}{t_ours:>12.3f}{t_captum:>11.3f}{t_ours / t_captum:>8.2f}{diff:>12}", flush=True)


if __name__ == "__main__":
    main()
