"""Attribution use cases: explain one image (methods × targets, or every class),
explain a gallery of images, and the sanity check of the methods.

Each function takes the model, the images and options, and returns a
:class:`~convscope.app.base.Result` with its JSON, lazily drawn figures and raw
arrays; the CLI, the atlas and the explorer call the same functions::

    from convscope.app.explain import explain_image, explain_gallery, sanity_check

    result = explain_image(model, picture, ["gbp", "gradcam"], targets=[None, "Sandal"])
    result.runs[0].attributions            # (1, C, H, W) for method 0, target 0
    result.to_json()["results"][0]["max"]
    result.figures()["explain_all_methods"]()   # a matplotlib Figure (drawn on demand)

    gallery = explain_gallery(model, split.images[:6], ["saliency", "ig"], target="label",
                              labels=split.labels[:6], options={"steps": 32, "baseline": "min"})
    check = sanity_check(model, split.images[:8], seed=0)   # the registry's default methods

Images are uint8 pictures — ``(H, W)`` / ``(H, W, 3)`` for one image, ``(N, H, W)``
/ ``(N, H, W, 3)`` for several — or float model inputs ``(N, C, H, W)``. Options
are one pool (``{"steps": 32, "window": 5, "layer": "Conv2D_2", ...}``); each
method gets the ones it takes (:func:`convscope.explain.options_for`).
No file is read or written here, nothing is printed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from convscope.app.base import Result
from convscope.progress import Progress

TargetLike = Any


# -- inputs ---------------------------------------------------------------------------


@dataclass
class PreparedImages:
    """Model inputs and what to draw for them.

    Attributes:
        inputs: ``(N, C, H, W)`` model inputs on the model's device.
        pictures: ``N`` drawable pictures, uint8 ``(H, W)`` / ``(H, W, 3)`` (or the
            float input when the preprocessing cannot be inverted).
    """

    inputs: torch.Tensor
    pictures: list[np.ndarray]


def prepare_images(model: nn.Module, images: Any, *, single: bool = False) -> PreparedImages:
    """uint8 pictures or float model inputs → :class:`PreparedImages`.

    Args:
        model: the network (its spec says the layout and preprocessing).
        images: uint8 ``(N, H, W)`` / ``(N, H, W, 3)`` / ``(N, C, H, W)`` (or one
            picture ``(H, W)`` / ``(H, W, 3)`` when ``single``), or a float tensor
            ``(N, C, H, W)`` / ``(C, H, W)`` of model inputs.
        single: ``images`` is one picture.

    Raises:
        ValueError: images that do not fit the model (the message says why).
    """
    from convscope.data.preprocess import to_channels_first, to_pixels
    from convscope.device import model_device
    from convscope.inference import to_input
    from convscope.spec import spec_of

    spec = spec_of(model)
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        inputs = images[None] if images.ndim == 3 else images
        if inputs.ndim != 4 or tuple(inputs.shape[1:]) != spec.input_shape:
            raise ValueError(f"model inputs must be (N, {', '.join(map(str, spec.input_shape))}); got {tuple(images.shape)}")
        inputs = inputs.to(model_device(model))
        pixels = to_pixels(inputs.detach(), spec).cpu()
        if spec.preprocessing in ("unit", "meanstd", "raw"):
            pictures = [_picture(p.round().clamp(0, 255).to(torch.uint8).numpy()) for p in pixels]
        else:  # per-image standardisation cannot be undone: draw the input itself
            pictures = [_picture(p.numpy()) for p in pixels]
        return PreparedImages(inputs, pictures)
    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise ValueError(f"pictures must be uint8 (0..255); got {array.dtype} (give float model inputs as a torch tensor)")
    if single:
        array = array[None]
    channels_first = to_channels_first(array, spec.input_shape)
    inputs = to_input(model, channels_first)
    return PreparedImages(inputs.to(model_device(model)), [_picture(p.numpy()) for p in channels_first])


def _picture(channels_first: np.ndarray) -> np.ndarray:
    return channels_first[0] if channels_first.shape[0] == 1 else np.moveaxis(channels_first, 0, -1)


@torch.no_grad()
def class_probabilities(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Softmax of the model's logits ``(N, K)`` on CPU (eval mode for the call)."""
    from convscope.explain.base import eval_mode
    from convscope.spec import model_output

    with eval_mode(model):
        return torch.softmax(model_output(model(inputs)).float(), dim=1).cpu()


# -- numbers --------------------------------------------------------------------------


def attribution_stats(values: torch.Tensor) -> dict[str, Any]:
    """Summary numbers of one map ``(C, H, W)``: min, max, sum, abs_sum,
    positive_share (share of the absolute mass that is positive) and, for more
    than one channel, channel_abs_share (each channel's share of the absolute mass)."""
    flat = values.detach().reshape(-1).double()
    abs_sum = float(flat.abs().sum())
    total = abs_sum or 1.0
    stats: dict[str, Any] = {
        "min": float(flat.min()), "max": float(flat.max()), "sum": float(flat.sum()),
        "abs_sum": abs_sum, "positive_share": float(flat.clamp_min(0).sum()) / total,
    }
    if values.ndim == 3 and values.shape[0] > 1:
        per_channel = values.detach().double().abs().reshape(values.shape[0], -1).sum(1)
        stats["channel_abs_share"] = [float(v) / total for v in per_channel]
    return stats


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "target"


def _class_name(class_names: Sequence[str], index: int | None) -> str | None:
    if index is None or not 0 <= index < len(class_names):
        return None
    return class_names[index]


def _class_text(class_names: Sequence[str], index: int) -> str:
    name = _class_name(class_names, index)
    return f"class {index}" if name is None or name == str(index) else f"class {index} ({name})"


def _checked_pool(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The option pool, refusing keys no registered method takes (a typo must not be ignored)."""
    from convscope.explain.registry import method_info, method_names

    pool = dict(options or {})
    known = {"base"} | {key for name in method_names() for key in method_info(name).options()}
    unknown = sorted(set(pool) - known)
    if unknown:
        raise ValueError(f"no explanation method takes the option(s) {', '.join(unknown)}; options: {', '.join(sorted(known))}")
    return pool


def _method_list(methods: str | Sequence[str] | None, default: Callable[[], list[str]]) -> list[str]:
    from convscope.explain.registry import method_info, method_names

    if methods is None:
        names = default()
    elif isinstance(methods, str):
        names = method_names() if methods == "all" else [methods]
    else:
        names = list(methods)
    if not names:
        raise ValueError("no methods given")
    for name in names:
        method_info(name)  # ValueError listing the registered methods
    return list(dict.fromkeys(names))


# -- one method's maps -----------------------------------------------------------------


@dataclass
class MethodRun:
    """One method on one target for a batch.

    Attributes:
        method: registered name.
        title: for figures (``"Grad-CAM (Conv2D_3)"``).
        signed: whether signs carry meaning.
        target: what was explained, as JSON (class index, address, or one class per input).
        target_text: for titles (``"class 5 (Sandal)"``, ``"Conv2D_3:56"``).
        attributions: ``(N, C, H, W)`` on CPU.
        details: per-input extras ``{"delta": (N,)}`` (integrated gradients).
        params: every option as it took effect (given or default; Grad-CAM's layer,
            occlusion's window and stride filled in for the input size).
        stem: file stem for its figure / array.
    """

    method: str
    title: str
    signed: bool
    target: Any
    target_text: str
    attributions: torch.Tensor
    details: dict[str, torch.Tensor] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    stem: str = ""

    @property
    def delta(self) -> torch.Tensor | None:
        return self.details.get("delta")


def _build(model: nn.Module, names: Sequence[str], pool: Mapping[str, Any]) -> dict[str, tuple[Any, dict[str, Any], dict[str, Any]]]:
    """``{name: (method, attribute options, options given)}``: every method built (and so
    its options checked: a bad layer, an unknown base) before any work starts."""
    from convscope.explain.registry import make_method, options_for

    built = {}
    for name in names:
        given = options_for(name, pool)
        explainer, rest = make_method(model, name, **given)
        built[name] = (explainer, rest, given)
    return built


def _run_method(built: tuple[Any, dict[str, Any], dict[str, Any]], name: str, inputs: torch.Tensor, given: Any) -> MethodRun:
    explainer, rest, _ = built
    attributions, details = explainer.attribute_with_details(inputs, given, **rest)
    return MethodRun(
        method=name, title=explainer.title or name, signed=bool(explainer.signed), target=None, target_text="",
        attributions=attributions.detach().float().cpu(),
        details={key: value.detach().float().cpu() for key, value in details.items()},
        # every option as it took effect (defaults filled in: Grad-CAM's layer, occlusion's window)
        params=explainer.used_options(tuple(inputs.shape[1:]), **rest),
    )


def _resolved(model: nn.Module, inputs: torch.Tensor, target: TargetLike, predicted: torch.Tensor):
    """Resolve (and so validate) a target before any heavy work."""
    from convscope.explain.base import resolve_target

    return resolve_target(model, target, inputs.shape[0], predicted.to(inputs.device) if target is None else None,
                          tuple(inputs.shape[1:]))


def _json_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


# -- explain one image -------------------------------------------------------------------


@dataclass
class ExplainResult(Result):
    """:func:`explain_image`'s result: one image, several methods × targets (or every class).

    Attributes:
        runs: one :class:`MethodRun` per method × target (attributions ``(1, C, H, W)``),
            or per method with every class (``(K, C, H, W)``, class k in row k).
        picture: the image as drawn (uint8 ``(H, W)`` / ``(H, W, 3)``).
        probabilities: ``(K,)`` the model's class probabilities for the image.
    """

    kind = "explain"

    model_name: str
    class_names: list[str]
    input_shape: tuple[int, int, int]
    source: str
    label: int | None
    picture: np.ndarray
    probabilities: torch.Tensor
    methods: list[str]
    runs: list[MethodRun]
    all_classes: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def predicted(self) -> int:
        return int(self.probabilities.argmax())

    @property
    def image_title(self) -> str:
        title = self.source + (f"  label {_class_label(self.class_names, self.label)}" if self.label is not None else "")
        return title + f"\npredicted {_class_label(self.class_names, self.predicted)} (p={float(self.probabilities[self.predicted]):.3f})"

    def run(self, method: str, index: int = 0) -> MethodRun:
        """The ``index``-th run of ``method``."""
        return [r for r in self.runs if r.method == method][index]

    def to_json(self) -> dict[str, Any]:
        entries = []
        draws = self._draws_per_run()
        for run in self.runs:
            entry: dict[str, Any] = {"method": run.method, "title": run.title, "signed": run.signed,
                                     "params": {k: _json_value(v) for k, v in run.params.items()}}
            if self.all_classes:
                entry["target"] = "all classes"
                entry["per_class"] = [attribution_stats(run.attributions[k]) for k in range(run.attributions.shape[0])]
                if run.delta is not None:
                    entry["ig_delta"] = [float(d) for d in run.delta]
            else:
                entry["target"] = run.target
                if isinstance(run.target, int):
                    entry["target_name"] = _class_name(self.class_names, run.target)
                entry.update(attribution_stats(run.attributions[0]))
                if run.delta is not None:
                    entry["ig_delta"] = float(run.delta[0])
            entry["npy"] = f"{run.stem}.npy"
            if draws:
                entry["png"] = f"{run.stem}.png"
            entries.append(entry)
        return {
            "model": self.model_name, "image": self.source, "label": self.label,
            "label_name": _class_name(self.class_names, self.label), "predicted": self.predicted,
            "predicted_name": _class_name(self.class_names, self.predicted),
            "probabilities": [round(float(p), 6) for p in self.probabilities],
            "class_names": list(self.class_names), "input_shape": list(self.input_shape),
            "all_classes": self.all_classes, "methods": list(self.methods), "results": entries,
            "options": {k: _json_value(v) for k, v in self.options.items()},
        }

    def _draws_per_run(self) -> bool:
        return len(self.methods) == 1

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for run in self.runs:
            maps = run.attributions.numpy()
            maps = maps[:, 0] if maps.shape[1] == 1 else maps  # gray: (N, H, W); RGB keeps channels
            out[run.stem] = maps if self.all_classes else maps[0]
        return out

    def figures(self) -> dict[str, Callable[[], Figure]]:
        from convscope.render import explain as draw

        figures: dict[str, Callable[[], Figure]] = {}
        if self._draws_per_run():
            for run in self.runs:
                if self.all_classes:
                    figures[run.stem] = lambda run=run: draw.all_classes_figure(
                        self.picture, run.attributions, probabilities=self.probabilities.tolist(), signed=run.signed,
                        method_title=run.title, image_title=self.image_title, label=self.label,
                        class_names=self.class_names)
                else:
                    note = f"IG convergence delta {float(run.delta[0]):+.2e}" if run.delta is not None else ""
                    figures[run.stem] = lambda run=run, note=note: draw.explanation_figure(
                        self.picture, run.attributions[0], signed=run.signed, method_title=run.title,
                        target_text=run.target_text, image_title=self.image_title, note=note)
            return figures
        # several methods: one side-by-side figure per target
        by_target: dict[str, list[MethodRun]] = {}
        for run in self.runs:
            by_target.setdefault(str(run.target), []).append(run)
        for i, (key, runs) in enumerate(by_target.items()):
            target = runs[0].target
            text = _class_text(self.class_names, target) if isinstance(target, int) else key
            stem = "explain_all_methods" if i == 0 else "explain_all_methods_" + _safe_name(
                f"class{target}" if isinstance(target, int) else key)
            figures[stem] = lambda runs=runs, text=text: draw.methods_figure(
                self.picture, {r.title: (r.attributions[0], r.signed) for r in runs}, image_title=self.image_title,
                target_text=f"target: {text}")
        return figures

    def summary(self) -> list[str]:
        lines = []
        for run in self.runs:
            line = f"{run.title:<28} target {'all classes' if self.all_classes else run.target_text}"
            if not self.all_classes:
                stats = attribution_stats(run.attributions[0])
                line += f"  min {stats['min']:+.3g}  max {stats['max']:+.3g}  sum {stats['sum']:+.3g}"
                if run.delta is not None:
                    line += f"  IG delta {float(run.delta[0]):+.2e}"
            lines.append(line)
        lines.append(f"{self.source}: predicted {_class_label(self.class_names, self.predicted)} "
                     f"(p={float(self.probabilities[self.predicted]):.3f})")
        return lines


def _class_label(class_names: Sequence[str], index: int | None) -> str:
    name = _class_name(class_names, index)
    return str(index) if name is None or name == str(index) else f"{index} {name}"


def explain_image(
    model: nn.Module,
    image: Any,
    methods: str | Sequence[str] = "deconvnet",
    targets: TargetLike | Sequence[TargetLike] = None,
    *,
    all_classes: bool = False,
    options: Mapping[str, Any] | None = None,
    label: int | None = None,
    source: str = "image",
    progress: Progress | None = None,
) -> ExplainResult:
    """Explain one image with one or several methods, for one or several targets.

    Args:
        model: the network (with a spec).
        image: one uint8 picture ``(H, W)`` / ``(H, W, 3)`` or a float model input
            ``(C, H, W)`` / ``(1, C, H, W)``.
        methods: a registered name, ``"all"``, or a list of names.
        targets: one target, or a list/tuple of targets: ``None`` (the predicted
            class), a class index, a class name (``"Sandal"``), a map
            ``"Conv2D_3:56"`` or a unit ``"Conv2D_3:56@1,1"``.
        all_classes: explain every class logit instead (one run per method with
            ``K`` maps; ``targets`` must be ``None``).
        options: one option pool for all methods (``layer``, ``keep``, ``window``,
            ``stride``, ``baseline``, ``steps``, ``samples``, ``noise_level``,
            ``seed``, ``base`` …); each method takes what it understands.
        label: the image's true class, if known.
        source: where the image came from (``"test:1302"``, a file name).
        progress: reports one step per method × target; cancelling raises
            :class:`~convscope.progress.Cancelled`.

    Raises:
        ValueError: unknown method or option, a bad target (``AddressError``), an
            image that does not fit the model — before any attribution is computed.
    """
    from convscope.spec import spec_of

    spec = spec_of(model)
    names = _method_list(methods, lambda: ["deconvnet"])
    pool = _checked_pool(options)
    prepared = prepare_images(model, image, single=not (isinstance(image, torch.Tensor) and image.is_floating_point()))
    if prepared.inputs.shape[0] != 1:
        raise ValueError(f"explain_image takes one image; got {prepared.inputs.shape[0]} (use explain_gallery)")
    probabilities = class_probabilities(model, prepared.inputs)[0]
    predicted = probabilities.argmax()[None]
    target_list = list(targets) if isinstance(targets, (list, tuple)) else [targets]
    if not target_list:
        raise ValueError("no targets given (None = the predicted class)")
    if all_classes and any(t is not None for t in target_list):
        raise ValueError("all_classes explains every class logit; give no target with it")
    class_names = list(spec.class_names)
    jobs: list[tuple[str, Any, Any, str, torch.Tensor]] = []  # (method, given, json target, text, inputs)
    if all_classes:
        k = len(class_names)
        inputs = prepared.inputs.expand(k, *prepared.inputs.shape[1:]).contiguous()
        for name in names:
            jobs.append((name, torch.arange(k), "all classes", "all classes", inputs))
    else:
        resolved = [_resolved(model, prepared.inputs, t, predicted) for t in target_list]
        for name in names:
            for target in resolved:
                described = target.describe()
                text = _class_text(class_names, described) if isinstance(described, int) else str(described)
                given = target.classes if target.classes is not None else str(target.address)
                jobs.append((name, given, described, text, prepared.inputs))
    built = _build(model, names, pool)
    runs: list[MethodRun] = []
    stems: set[str] = set()
    with _task(progress, "explain", len(jobs)) as task:
        for i, (name, given, described, text, inputs) in enumerate(jobs):
            runs.append(_job(built[name], name, given, described, text, inputs, all_classes, stems))
            if task is not None:
                task.update(i + 1)
    return ExplainResult(
        model_name=spec.name, class_names=class_names, input_shape=spec.input_shape, source=source, label=label,
        picture=prepared.pictures[0], probabilities=probabilities, methods=names, runs=runs, all_classes=all_classes,
        options=pool,
    )


def _task(progress: Progress | None, label: str, total: float | None):
    import contextlib

    return progress.task(label, total=total) if progress is not None else contextlib.nullcontext()


def _job(
    built: tuple[Any, dict[str, Any], dict[str, Any]], name: str, given: Any, described: Any, text: str,
    inputs: torch.Tensor, all_classes: bool, stems: set[str],
) -> MethodRun:
    """Run one method × target of :func:`explain_image` and name its files (unique stems)."""
    run = _run_method(built, name, inputs, given)
    run.target, run.target_text = described, text
    if all_classes:
        stem = f"explain_{name}_all_classes"
    else:
        stem = f"explain_{name}_" + _safe_name(f"class{described}" if isinstance(described, int) else str(described))
    base, n = stem, 2
    while stem in stems:
        stem, n = f"{base}_{n}", n + 1
    stems.add(stem)
    run.stem = stem
    if name == "deconvnet" and not isinstance(described, int) and "@" not in str(described) and not all_classes:
        run.target_text += f" (keep {run.params.get('keep', 'map')})"
    return run


# -- a gallery of images -----------------------------------------------------------------------


@dataclass
class GalleryResult(Result):
    """:func:`explain_gallery`'s result: several images × several methods.

    Attributes:
        runs: one :class:`MethodRun` per method, attributions ``(N, C, H, W)``.
        pictures: the images as drawn.
        probabilities: ``(N, K)``.
        targets: per image, what was explained (class index or address).
    """

    kind = "explain_gallery"

    model_name: str
    class_names: list[str]
    sources: list[str]
    labels: list[int | None]
    pictures: list[np.ndarray]
    probabilities: torch.Tensor
    methods: list[str]
    runs: list[MethodRun]
    targets: list[Any]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def predicted(self) -> list[int]:
        return [int(v) for v in self.probabilities.argmax(1)]

    def to_json(self) -> dict[str, Any]:
        images = []
        for i, source in enumerate(self.sources):
            predicted = self.predicted[i]
            images.append({
                "image": source, "label": self.labels[i], "label_name": _class_name(self.class_names, self.labels[i]),
                "predicted": predicted, "predicted_name": _class_name(self.class_names, predicted),
                "p_predicted": round(float(self.probabilities[i, predicted]), 6), "target": self.targets[i],
            })
        results = []
        for run in self.runs:
            entry: dict[str, Any] = {
                "method": run.method, "title": run.title, "signed": run.signed,
                "params": {k: _json_value(v) for k, v in run.params.items()},
                "per_image": [attribution_stats(run.attributions[i]) for i in range(run.attributions.shape[0])],
                "npy": f"explain_gallery_{run.method}.npy",
            }
            if run.delta is not None:
                entry["ig_delta"] = [float(d) for d in run.delta]
            results.append(entry)
        return {"model": self.model_name, "class_names": list(self.class_names), "images": images,
                "methods": list(self.methods), "results": results,
                "options": {k: _json_value(v) for k, v in self.options.items()}}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for run in self.runs:
            maps = run.attributions.numpy()
            out[f"explain_gallery_{run.method}"] = maps[:, 0] if maps.shape[1] == 1 else maps
        return out

    def figures(self) -> dict[str, Callable[[], Figure]]:
        from convscope.render.explain import gallery_figure

        def titles() -> list[str]:
            out = []
            for i, source in enumerate(self.sources):
                target = self.targets[i]
                what = _class_label(self.class_names, target) if isinstance(target, int) else str(target)
                out.append(f"{source}\npred {_class_label(self.class_names, self.predicted[i])}, target {what}")
            return out

        return {"explain_gallery": lambda: gallery_figure(
            self.pictures, {r.title: (r.attributions, r.signed) for r in self.runs}, image_titles=titles())}

    def summary(self) -> list[str]:
        lines = [f"{len(self.sources)} images × {len(self.runs)} methods ({', '.join(self.methods)})"]
        for run in self.runs:
            peaks = [float(run.attributions[i].abs().max()) for i in range(run.attributions.shape[0])]
            lines.append(f"{run.title:<28} peak |attribution| per image: " + " ".join(f"{p:.3g}" for p in peaks))
        return lines


def explain_gallery(
    model: nn.Module,
    images: Any,
    methods: str | Sequence[str] = ("saliency",),
    target: TargetLike = None,
    *,
    labels: Sequence[int] | None = None,
    sources: Sequence[str] | None = None,
    options: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> GalleryResult:
    """Explain several images with one or several methods (one batch per method).

    Args:
        model: the network (with a spec).
        images: uint8 ``(N, H, W)`` / ``(N, H, W, 3)`` pictures or float inputs ``(N, C, H, W)``.
        methods: a registered name, ``"all"`` or a list.
        target: ``None`` (each image's predicted class), ``"label"`` (each image's
            true class, needs ``labels``), a class index or name, one class per image
            (a list), or a map/unit address.
        labels: the images' true classes, if known.
        sources: names for titles and JSON (default ``image 0`` …).
        options: one option pool for all methods (see :func:`explain_image`).
        progress: one step per method; cancelling raises ``Cancelled``.

    Raises:
        ValueError: bad method, option, target or images — before any attribution.
    """
    from convscope.spec import spec_of

    spec = spec_of(model)
    names = _method_list(methods, lambda: ["saliency"])
    pool = _checked_pool(options)
    prepared = prepare_images(model, images)
    n = prepared.inputs.shape[0]
    label_list: list[int | None] = [None if v is None else int(v) for v in labels] if labels is not None else [None] * n
    if len(label_list) != n:
        raise ValueError(f"got {len(label_list)} labels for {n} images")
    source_list = list(sources) if sources is not None else [f"image {i}" for i in range(n)]
    if len(source_list) != n:
        raise ValueError(f"got {len(source_list)} sources for {n} images")
    probabilities = class_probabilities(model, prepared.inputs)
    if isinstance(target, str) and target == "label":
        if any(v is None for v in label_list):
            raise ValueError("target 'label' needs the images' labels")
        target = [int(v) for v in label_list]  # type: ignore[misc]
    resolved = _resolved(model, prepared.inputs, target, probabilities.argmax(1))
    given = resolved.classes if resolved.classes is not None else str(resolved.address)
    per_image = [int(v) for v in resolved.classes] if resolved.classes is not None else [str(resolved.address)] * n
    built = _build(model, names, pool)
    runs = []
    with _task(progress, "explain gallery", len(names)) as task:
        for i, name in enumerate(names):
            run = _run_method(built[name], name, prepared.inputs, given)
            run.target, run.target_text, run.stem = resolved.describe(), "", f"explain_gallery_{name}"
            runs.append(run)
            if task is not None:
                task.update(i + 1)
    return GalleryResult(
        model_name=spec.name, class_names=list(spec.class_names), sources=source_list, labels=label_list,
        pictures=prepared.pictures, probabilities=probabilities, methods=names, runs=runs, targets=per_image,
        options=pool,
    )


# -- the sanity check ---------------------------------------------------------------------------


@dataclass
class SanityCheckResult(Result):
    """:func:`sanity_check`'s result: the engine's
    :class:`~convscope.explain.sanity.SanityResult` with the images it used."""

    kind = "sanity"

    model_name: str
    class_names: list[str]
    sources: list[str]
    labels: list[int | None]
    pictures: list[np.ndarray]
    probabilities: torch.Tensor
    check: Any  # SanityResult

    def to_json(self) -> dict[str, Any]:
        predicted = int(self.probabilities[0].argmax())
        return {
            "model": self.model_name, "image": self.sources[0], "label": self.labels[0],
            "predicted": predicted, "predicted_name": _class_name(self.class_names, predicted),
            "probabilities": [round(float(p), 6) for p in self.probabilities[0]],
            "sanity": self.check.to_dict(), "images_used": list(self.sources),
        }

    def figures(self) -> dict[str, Callable[[], Figure]]:
        from convscope.render.explain import sanity_figure

        return {"sanity": lambda: sanity_figure(self.check, image=self.pictures[0], image_index=0,
                                                image_title=self.sources[0])}

    def summary(self) -> list[str]:
        check = self.check
        labels = ["trained", *(f"+{n}" for n in check.stages[1:])]
        widths = [max(11, len(label) + 2) for label in labels]
        first = max(16, *(len(m) + 7 for m in check.methods))
        lines = [f"{'method':<{first}}" + "".join(f"{s:>{w}}" for s, w in zip(labels, widths))]
        for method in check.methods:
            for name, values in ((" ρ", check.spearman[method]), (" SSIM", check.ssim[method])):
                lines.append(f"{method + name:<{first}}" + "".join(f"{v:>{w}.3f}" for v, w in zip(values, widths)))
        lines.append(f"Spearman ρ of |attribution| and SSIM vs the trained model's map, mean over {len(self.sources)} "
                     "images; layers randomised cumulatively from the top.")
        return lines


def sanity_check(
    model: nn.Module,
    images: Any,
    methods: Sequence[str] | None = None,
    *,
    labels: Sequence[int] | None = None,
    sources: Sequence[str] | None = None,
    seed: int = 0,
    layers: Sequence[str] | None = None,
    options: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> SanityCheckResult:
    """The cascading model-parameter randomisation test (Adebayo et al. 2018) on
    a copy of ``model``.

    Args:
        model: the trained network (left untouched).
        images: uint8 pictures ``(N, H, W)`` / ``(N, H, W, 3)`` or float inputs ``(N, C, H, W)``.
        methods: registered names (default: the registry's sanity methods).
        labels / sources: for the JSON and titles.
        seed: seed of the random weights.
        layers: layers to randomise, top first (default: every layer with a weight
            matrix or kernel, from the output down).
        options: one option pool (see :func:`explain_image`).
        progress: one step per stage; cancelling raises ``Cancelled``.
    """
    from convscope.explain.registry import options_for, sanity_methods
    from convscope.explain.sanity import sanity_check as run_check
    from convscope.spec import spec_of

    spec = spec_of(model)
    names = _method_list(methods, sanity_methods)
    pool = _checked_pool(options)
    prepared = prepare_images(model, images)
    n = prepared.inputs.shape[0]
    source_list = list(sources) if sources is not None else [f"image {i}" for i in range(n)]
    label_list: list[int | None] = [None if v is None else int(v) for v in labels] if labels is not None else [None] * n
    if len(source_list) != n or len(label_list) != n:
        raise ValueError(f"give one source and one label per image ({n} images)")
    probabilities = class_probabilities(model, prepared.inputs)
    _build(model, names, pool)  # check every method and option before the long work
    with _task(progress, "sanity check", None) as task:
        callback = (lambda done, total: task.update(done, total)) if task is not None else None
        check = run_check(model, prepared.inputs, names, layers=layers, seed=seed,
                          options={name: options_for(name, pool) for name in names}, progress=callback)
    return SanityCheckResult(model_name=spec.name, class_names=list(spec.class_names), sources=source_list,
                             labels=label_list, pictures=prepared.pictures, probabilities=probabilities, check=check)


__all__ = [
    "ExplainResult", "GalleryResult", "MethodRun", "PreparedImages", "SanityCheckResult", "attribution_stats",
    "class_probabilities", "explain_gallery", "explain_image", "prepare_images", "sanity_check",
]
