"""Use cases of DeepDream: dream a photo, carve a pattern into it, make zoom frames.

::

    from convscope.app.dream import dream_photo, carve_photo, zoom_photo
    run = dream_photo(model, photo, objective="Conv2D_3", tiling="fullconv")
    run.image                     # uint8 (H, W, 3): the dream, as the photo's colours
    run.to_json()["objective_after"]
    run.figures()["dream_comparison"]()      # a matplotlib Figure
    carve_photo(model, photo, objective="Conv2D_3:56").figures()["carve_panels"]()
    zoom_photo(model, photo, 20).frames      # 20 uint8 frames

Any model: a gray model dreams on the photo's luminance and the colours are put
back; an RGB model dreams on all three channels in its own input space
(:mod:`convscope.dream.space`). Photos are uint8 ``(H, W)`` or ``(H, W, 3)`` arrays
(``None``: the photo that ships with matplotlib). The CLI (``convscope dream``),
the atlas and the explorer call these functions; they never read or write files.
Every bad setting raises a ``ValueError`` (one clear message), before any work.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from convscope.app.base import Result
from convscope.optvis.objectives import Objective
from convscope.progress import Progress, silent

#: The reference's defaults for the shipped MNIST models.
REFERENCE_CARVE_OBJECTIVE = "Conv2D_3:56"
REFERENCE_DREAM_OBJECTIVE = "Conv2D_3"
MODES = ("octaves", "carve")


def _model_name(model: nn.Module) -> str:
    from convscope.spec import spec_of

    return spec_of(model).name


def _as_photo_array(photo: np.ndarray | torch.Tensor | None) -> np.ndarray:
    """The photo as uint8 ``(H, W)`` / ``(H, W, 3)`` (``None``: the default photo)."""
    from convscope.dream.space import DreamInputError

    if photo is None:
        from convscope.photos import default_photo

        return default_photo()
    array = photo.detach().cpu().numpy() if isinstance(photo, torch.Tensor) else np.asarray(photo)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise DreamInputError(f"a photo must be (H, W) gray or (H, W, 3) RGB pixels; got shape {tuple(array.shape)}")
    if array.dtype != np.uint8:
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            raise DreamInputError(f"the photo holds {bad:,} NaN or infinite pixel value(s); replace them with finite values")
        array = np.clip(np.round(values), 0, 255).astype(np.uint8)
    return array


def _check_size(model: nn.Module, photo: np.ndarray, what: str = "the photo") -> None:
    from convscope.dream.tiling import TilingError, model_input_size

    height, width = photo.shape[:2]
    need = model_input_size(model)
    if height < need[0] or width < need[1]:
        raise TilingError(f"{what} is {width}x{height} pixels; the model needs at least {need[1]}x{need[0]}")


def _spatial_layers(model: nn.Module) -> list[str]:
    """Layers with maps (``(C, H, W)`` outputs) in forward order, deepest last."""
    from convscope.address import layer_output_shapes

    return [name for name, shape in layer_output_shapes(model).items() if len(shape) == 3]


def default_objective(model: nn.Module, mode: str, photo: np.ndarray | None = None) -> str:
    """The objective a dream uses when none is given.

    The reference models (a ``Conv2D_3`` layer with at least 57 maps): ``Conv2D_3``
    for octaves, ``Conv2D_3:56`` for carving. Any other model: its deepest layer with
    maps; for carving, that layer's map with the largest mean activation on the
    photo (downscaled to the model's input), so the pattern is one the photo has.
    """
    from convscope.address import layer_output_shapes

    shapes = layer_output_shapes(model)
    reference = shapes.get("Conv2D_3")
    if reference is not None and len(reference) == 3 and reference[0] > 56:
        return REFERENCE_CARVE_OBJECTIVE if mode == "carve" else REFERENCE_DREAM_OBJECTIVE
    layers = _spatial_layers(model)
    if not layers:
        from convscope.dream.tiling import TilingError

        raise TilingError("the model has no layer with maps to dream; give an objective such as 'logits:0' with tiling 'tiles'")
    layer = layers[-1]
    if mode != "carve" or photo is None:
        return layer
    return f"{layer}:{strongest_map(model, layer, photo)}"


def strongest_map(model: nn.Module, layer: str, photo: np.ndarray) -> int:
    """The map of ``layer`` with the largest mean activation on ``photo`` downscaled to the input."""
    from convscope.dream.space import DreamSpace, as_photo
    from convscope.dream.tiling import model_input_size, resize
    from convscope.probe import capture
    from convscope.spec import spec_of

    spec = spec_of(model)
    device = next(model.parameters()).device
    pixels = as_photo(torch.from_numpy(np.array(photo, copy=True)), spec.channels).to(device)
    space = DreamSpace.for_image(model, pixels)
    small = resize(space.to_model(pixels), model_input_size(model))
    if space.standardizes:
        from convscope.data.preprocess import standardize

        small = standardize(small)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = capture(model, small, [layer], detach=True)[layer]
    finally:
        model.train(was_training)
    return int(out.reshape(out.shape[0], out.shape[1], -1).mean(dim=-1)[0].argmax())


def resolve_objective(model: nn.Module, objective: str | Objective | None, mode: str, photo: np.ndarray | None) -> Objective:
    """An :class:`Objective` from text (checked strictly against the model), an
    objective object, or ``None`` (:func:`default_objective`)."""
    from convscope.dream.objective import parse_dream_objective

    if isinstance(objective, Objective):
        return objective
    text = default_objective(model, mode, photo) if objective is None else objective
    return parse_dream_objective(model, str(text))


@contextlib.contextmanager
def _out_of_memory_as_error() -> Iterator[None]:
    """An allocation that fails anyway (an estimate below the truth, a budget set
    too high, other programs) becomes one :class:`DreamMemoryError`, not a traceback."""
    from convscope.dream.memory import DreamMemoryError

    advice = ("use a smaller photo, --tiling downscale, or a lower --memory-limit (fullconv then runs in stripes, "
              "tiles in smaller chunks)")
    try:
        yield
    except MemoryError:
        raise DreamMemoryError(f"the dream ran out of memory: {advice}") from None
    except RuntimeError as exc:
        text = str(exc)
        if "allocate" in text or "out of memory" in text.lower():
            first = text.strip().splitlines()[0] if text.strip() else ""
            raise DreamMemoryError(f"the dream ran out of memory ({_short(first, 100)}): {advice}") from None
        raise


class _StepTask:
    """An engine's ``progress(done, total)`` as a :class:`~convscope.progress.Progress`
    task that opens at the first step: work refused before it starts shows no bar."""

    def __init__(self, progress: Progress, label: str) -> None:
        self.progress = progress
        self.label = label
        self.task = None

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.task = self.progress.task(self.label, total)
            self.task.__enter__()
        self.task.update(done, total)

    def __enter__(self) -> "_StepTask":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.__exit__(*exc)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + f"… ({len(text):,} characters)"


# -- results ---------------------------------------------------------------------------


@dataclass
class DreamPhotoResult(Result):
    """:func:`dream_photo`'s result.

    Attributes:
        photo: the input photo, uint8 ``(H, W)`` / ``(H, W, 3)``.
        image: the dream as 8-bit pixels (same size; colour unless gray).
        dreamed: the engine's float dream (luminance ``(H, W)`` for a gray model,
            ``(H, W, 3)`` for an RGB model), 0..255 scale, not clipped.
        engine: the engine's :class:`~convscope.dream.octaves.DreamResult`.
        frames: zoom frames (uint8, frame 0 = ``image``), empty unless asked for.
    """

    kind = "dream"

    model_name: str
    channels: int
    photo: np.ndarray
    image: np.ndarray
    dreamed: np.ndarray
    engine: Any
    clipped_fraction: float
    source: str | None = None
    color: str = "luminance"
    tone: str = "soft"
    guide: str | None = None
    frames: list[np.ndarray] = field(default_factory=list)
    zoom: float | None = None
    seconds: float = 0.0

    mode = "octaves"

    def to_json(self) -> dict[str, Any]:
        height, width = self.photo.shape[:2]
        data = {
            "model": self.model_name, "image": self.source, "mode": self.mode, "channels": self.channels,
            "color": self.color, "tone": self.tone, "guide": self.guide,
            **self.engine.to_dict(),
            "width": int(width), "height": int(height), "seconds": round(self.seconds, 2),
            "clipped_fraction": self.clipped_fraction, "zoom_frames": len(self.frames),
        }
        if self.frames:
            data["zoom"] = self.zoom
        return data

    def images(self) -> dict[str, np.ndarray]:
        """``{stem: uint8 pixels}`` the photos to save: ``dream`` and ``frames/frame_NNNN``."""
        out = {"dream": self.image}
        out.update({f"frames/frame_{index:04d}": frame for index, frame in enumerate(self.frames)})
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {"dream": self.dreamed.astype(np.float32)}

    def figures(self) -> dict[str, Callable[[], Figure]]:
        from convscope.render.dream import dream_comparison, dream_values

        objective = _short(str(self.engine.parameters.get("objective", "")), 60)
        tiling = self.engine.parameters.get("tiling", "")
        title = f"{self.model_name}: {objective} [{tiling}]  objective {self.engine.objective_before:.3g} → {self.engine.objective_after:.3g}"
        steps = int(self.engine.parameters.get("steps", 0))
        return {
            "dream_comparison": lambda: dream_comparison(self.photo, self.image, title=title),
            "dream_values": lambda: dream_values(self.engine.values, steps, title=f"{objective} per step"),
        }

    def summary(self) -> list[str]:
        height, width = self.photo.shape[:2]
        parameters = self.engine.parameters
        lines = [f"note: {note}" for note in self.engine.notes]
        lines.append(
            f"dreamed {self.source or 'the photo'} ({width}x{height}) with {_short(str(parameters.get('objective')))} "
            f"[{self.mode}, {parameters.get('tiling')}] in {self.seconds:.1f} s: objective "
            f"{self.engine.objective_before:.4g} -> {self.engine.objective_after:.4g}"
        )
        return lines


@dataclass
class CarvePhotoResult(Result):
    """:func:`carve_photo`'s result.

    Attributes:
        photo: the input photo, uint8.
        image: the carved photo as 8-bit pixels (the photo's colours put back for a
            gray model; ``color="gray"``: the gray carving).
        engine: the engine's :class:`~convscope.dream.carve.CarveResult` (pattern,
            upscaled dream, final and stretched images).
    """

    kind = "dream"

    model_name: str
    channels: int
    input_size: tuple[int, int]
    photo: np.ndarray
    image: np.ndarray
    engine: Any
    clipped_fraction: float
    source: str | None = None
    color: str = "luminance"
    tone: str = "soft"
    seconds: float = 0.0

    mode = "carve"

    def to_json(self) -> dict[str, Any]:
        height, width = self.photo.shape[:2]
        return {
            "model": self.model_name, "image": self.source, "mode": self.mode, "channels": self.channels,
            "color": self.color, "tone": self.tone, "guide": None,
            **self.engine.to_dict(),
            "width": int(width), "height": int(height), "seconds": round(self.seconds, 2),
            "clipped_fraction": self.clipped_fraction, "zoom_frames": 0,
        }

    def images(self) -> dict[str, np.ndarray]:
        return {"dream": self.image}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"carve_pattern": self.engine.pattern.numpy(), "carve_image": self.engine.image.numpy()}

    def figures(self) -> dict[str, Callable[[], Figure]]:
        from convscope.render.dream import carve_panels

        return {"carve_panels": lambda: carve_panels(self.engine, self.photo, input_size=self.input_size)}

    def summary(self) -> list[str]:
        height, width = self.photo.shape[:2]
        lines = [f"note: {note}" for note in self.engine.notes]
        lines.append(
            f"carved {_short(str(self.engine.parameters.get('objective')))} into {self.source or 'the photo'} "
            f"({width}x{height}) in {self.seconds:.1f} s: objective "
            f"{self.engine.objective_before:.4g} -> {self.engine.objective_after:.4g}"
        )
        return lines


@dataclass
class ZoomResult(Result):
    """:func:`zoom_photo`'s result: ``frames`` uint8 images, frame 0 the dream of the photo."""

    kind = "zoom"

    model_name: str
    photo: np.ndarray
    frames: list[np.ndarray]
    parameters: dict[str, Any]
    source: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        height, width = self.photo.shape[:2]
        return {"model": self.model_name, "image": self.source, "width": int(width), "height": int(height),
                "frames": len(self.frames), "parameters": self.parameters, "seconds": round(self.seconds, 2)}

    def images(self) -> dict[str, np.ndarray]:
        return {f"frames/frame_{index:04d}": frame for index, frame in enumerate(self.frames)}

    def figures(self) -> dict[str, Callable[[], Figure]]:
        from convscope.render.dream import image_row

        picked = sorted(set(np.linspace(0, len(self.frames) - 1, min(6, len(self.frames))).round().astype(int).tolist()))
        return {"zoom_frames": lambda: image_row([self.frames[i] for i in picked], [f"frame {i}" for i in picked],
                                                 title=f"zoom ×{self.parameters.get('zoom')} per frame")}

    def summary(self) -> list[str]:
        return [f"{len(self.frames)} zoom frames of {self.source or 'the photo'} in {self.seconds:.1f} s"]


# -- use cases -------------------------------------------------------------------------


def _check_memory(model: nn.Module, objective: Objective, pixels: np.ndarray, options: dict[str, Any]) -> None:
    """The dream's memory plan for this photo, checked before any full-size copy is made."""
    from convscope.dream.octaves import plan_dream

    plan_dream(model, objective, pixels.shape[:2], tiling=options["tiling"], octave_scale=options["octave_scale"],
               tile_batch=options["tile_batch"], memory_budget=options["memory_budget"]).check()


def _check_frames(pixels: np.ndarray, frames: int, memory_limit: float | None) -> None:
    """Zoom frames are kept in memory (8-bit, the photo's size) until they are written:
    refuse, before any work, a count that would not fit in the memory the dream may use."""
    from convscope.dream.memory import DreamMemoryError, gib, parse_budget

    if not frames:
        return
    budget = parse_budget(memory_limit, torch.device("cpu"))
    height, width = pixels.shape[:2]
    per_frame = height * width * 3
    if budget is not None and frames * per_frame > budget:
        raise DreamMemoryError(
            f"{frames:,} zoom frames of {width}×{height} pixels need {gib(frames * per_frame)} of memory, more than the "
            f"{gib(budget)} the dream may use; ask for at most {budget // per_frame:,} frames (--zoom-frames) or use a "
            "smaller photo"
        )


def _dream_options(
    tiling: str, octaves: int, octave_scale: float, steps: int, step_size: float, jitter: int | None,
    tile_batch: int, bfloat16: bool, memory_limit: float | None, device: torch.device,
) -> dict[str, Any]:
    from convscope.dream.memory import parse_budget
    from convscope.dream.octaves import check_dream_numbers

    check_dream_numbers(octaves=octaves, octave_scale=octave_scale, steps=steps, step_size=step_size, jitter=jitter,
                        tile_batch=tile_batch)
    return dict(tiling=tiling, octaves=octaves, octave_scale=octave_scale, steps=steps, step_size=step_size,
                jitter=jitter, tile_batch=tile_batch, bfloat16=bfloat16, memory_budget=parse_budget(memory_limit, device))


def dream_photo(
    model: nn.Module,
    photo: np.ndarray | torch.Tensor | None = None,
    *,
    objective: str | Objective | None = None,
    tiling: str = "fullconv",
    octaves: int = 4,
    octave_scale: float = 1.4,
    steps: int = 10,
    step_size: float = 0.05,
    jitter: int | None = None,
    seed: int = 0,
    color: str = "luminance",
    tone: str = "soft",
    guide: np.ndarray | torch.Tensor | None = None,
    zoom_frames: int = 0,
    zoom: float = 1.05,
    tile_batch: int = 512,
    bfloat16: bool = False,
    memory_limit: float | None = None,
    source: str | None = None,
    guide_source: str | None = None,
    progress: Progress | None = None,
) -> DreamPhotoResult:
    """DeepDream a photo (octaves, jitter, a tiling), optionally guided and with zoom frames.

    Args:
        model: any model with a spec (gray or RGB, any input size).
        photo: uint8 ``(H, W)`` / ``(H, W, 3)`` (``None``: matplotlib's photo).
        objective: text (``"Conv2D_3"``, ``"Conv2D_3:56 + 0.5*Conv2D_2"``), an
            :class:`Objective`, or ``None`` (:func:`default_objective`).
        tiling, octaves, octave_scale, steps, step_size, jitter, tile_batch, bfloat16:
            see :func:`convscope.dream.octaves.deep_dream`.
        seed: seed of the random rolls (zoom frame ``i`` uses ``seed + i``).
        color: ``"luminance"`` (keep the photo's colours) or ``"gray"``.
        tone: ``"soft"`` or ``"clip"`` (8-bit output near black and white).
        guide: uint8 guide photo: dream toward its features in the objective's layer.
        zoom_frames: also make this many zoom frames (0: none).
        zoom: magnification per zoom frame (> 1).
        memory_limit: GB the dream may use (``None``: 80 % of the free memory).
        source, guide_source: where the photos came from (for JSON and titles).
        progress: reports steps; cancelling it stops the dream (``Cancelled``).

    Raises:
        ValueError: bad settings, objective, photo or tiling; a dream that would
            not fit in memory (:class:`~convscope.dream.memory.DreamMemoryError`).
    """
    from convscope.dream import colour_dream, colour_zoom_frames, deep_dream, guided_objective
    from convscope.dream.octaves import check_dream_numbers
    from convscope.dream.space import as_photo
    from convscope.spec import spec_of

    progress = progress or silent()
    spec = spec_of(model)
    started = time.perf_counter()
    pixels = _as_photo_array(photo)
    _check_size(model, pixels)
    check_dream_numbers(frames=zoom_frames or None, zoom=zoom)
    _check_frames(pixels, zoom_frames, memory_limit)
    device = next(model.parameters()).device
    options = _dream_options(tiling, octaves, octave_scale, steps, step_size, jitter, tile_batch, bfloat16,
                             memory_limit, device)
    target = resolve_objective(model, objective, "octaves", pixels)
    _check_memory(model, target, pixels, options)
    if guide is not None:
        guide_pixels = _as_photo_array(guide)
        with _out_of_memory_as_error():
            target = guided_objective(model, as_photo(torch.from_numpy(guide_pixels.copy()), spec.channels), target, tiling)
    photo_tensor = torch.from_numpy(pixels.copy())
    with _StepTask(progress, "dream") as task, _out_of_memory_as_error():
        dreamed = colour_dream(
            model, lambda x: deep_dream(model, target, x, seed=seed, progress=task, **options),
            photo_tensor, color=color, tone=tone,
        )
    frames: list[np.ndarray] = []
    if zoom_frames:
        with _StepTask(progress, "zoom frames") as task, _out_of_memory_as_error():
            zoomed = colour_zoom_frames(
                model, target, photo_tensor, zoom_frames, zoom=zoom, color=color, tone=tone, seed=seed,
                first=dreamed.dreamed, progress=task, **options,
            )
        frames = [frame.numpy() for frame in zoomed]
    return DreamPhotoResult(
        model_name=spec.name, channels=spec.channels, photo=pixels, image=dreamed.image.numpy(),
        dreamed=dreamed.dreamed.numpy() if dreamed.dreamed is not None else dreamed.luminance.numpy(),
        engine=dreamed.result, clipped_fraction=dreamed.clipped_fraction, source=source, color=color, tone=tone,
        guide=guide_source if guide is not None else None, frames=frames, zoom=zoom if zoom_frames else None,
        seconds=time.perf_counter() - started,
    )


def carve_photo(
    model: nn.Module,
    photo: np.ndarray | torch.Tensor | None = None,
    *,
    objective: str | Objective | None = None,
    rounds: int = 4,
    steps: int = 150,
    step_size: float = 0.01,
    color: str = "luminance",
    tone: str = "soft",
    memory_limit: float | None = None,
    source: str | None = None,
    progress: Progress | None = None,
) -> CarvePhotoResult:
    """Carve one pattern into a photo (the reference's first dream), on any model.

    Args:
        model: any model with a spec.
        photo: uint8 ``(H, W)`` / ``(H, W, 3)`` (``None``: matplotlib's photo).
        objective: text, an :class:`Objective`, or ``None``: ``Conv2D_3:56`` for the
            reference models, else the deepest layer's strongest map on the photo.
        rounds: downscale/ascent/upscale loops.
        steps: ascent steps per round (the reference ascent on the model's input size).
        step_size: the ascent's ε (reference 0.01).
        color, tone, memory_limit, source, progress: as :func:`dream_photo`.

    Raises:
        ValueError: bad settings, objective or photo; not enough memory.
    """
    from convscope.dream import carve, colour_dream
    from convscope.dream.memory import parse_budget
    from convscope.dream.octaves import check_dream_numbers
    from convscope.dream.tiling import model_input_size
    from convscope.spec import spec_of

    progress = progress or silent()
    spec = spec_of(model)
    started = time.perf_counter()
    pixels = _as_photo_array(photo)
    _check_size(model, pixels)
    check_dream_numbers(rounds=rounds, epochs=steps, epsilon=step_size)
    target = resolve_objective(model, objective, "carve", pixels)
    # carving runs the model on its input size only; the full-size copies are what counts
    _check_memory(model, target, pixels, dict(tiling="downscale", octave_scale=math.inf, tile_batch=1,
                                              memory_budget=parse_budget(memory_limit, next(model.parameters()).device)))
    with _StepTask(progress, "carve") as task, _out_of_memory_as_error():
        carved = colour_dream(
            model, lambda x: carve(model, target, x, rounds=rounds, epochs=steps, epsilon=step_size, progress=task),
            torch.from_numpy(pixels.copy()), color=color, tone=tone,
        )
    return CarvePhotoResult(
        model_name=spec.name, channels=spec.channels, input_size=model_input_size(model), photo=pixels,
        image=carved.image.numpy(), engine=carved.result, clipped_fraction=carved.clipped_fraction, source=source,
        color=color, tone=tone, seconds=time.perf_counter() - started,
    )


def zoom_photo(
    model: nn.Module,
    photo: np.ndarray | torch.Tensor | None = None,
    frames: int = 10,
    *,
    zoom: float = 1.05,
    objective: str | Objective | None = None,
    tiling: str = "fullconv",
    octaves: int = 4,
    octave_scale: float = 1.4,
    steps: int = 10,
    step_size: float = 0.05,
    jitter: int | None = None,
    seed: int = 0,
    color: str = "luminance",
    tone: str = "soft",
    tile_batch: int = 512,
    bfloat16: bool = False,
    memory_limit: float | None = None,
    source: str | None = None,
    progress: Progress | None = None,
) -> ZoomResult:
    """A zoom sequence in colour: dream, zoom into the centre by ``zoom``, dream again, ….

    Frame 0 is the dream of the photo (as :func:`dream_photo` with the same
    settings); a gray model's frames keep the photo's colours, which zoom with them.
    Arguments as :func:`dream_photo`.
    """
    from convscope.dream import colour_zoom_frames
    from convscope.dream.octaves import check_dream_numbers
    from convscope.spec import spec_of

    progress = progress or silent()
    started = time.perf_counter()
    pixels = _as_photo_array(photo)
    _check_size(model, pixels)
    check_dream_numbers(frames=frames, zoom=zoom)
    device = next(model.parameters()).device
    options = _dream_options(tiling, octaves, octave_scale, steps, step_size, jitter, tile_batch, bfloat16,
                             memory_limit, device)
    target = resolve_objective(model, objective, "octaves", pixels)
    _check_memory(model, target, pixels, options)
    with _StepTask(progress, "zoom frames") as task, _out_of_memory_as_error():
        zoomed = colour_zoom_frames(model, target, torch.from_numpy(pixels.copy()), frames, zoom=zoom, color=color,
                                    tone=tone, seed=seed, progress=task, **options)
    parameters = {"objective": target.name, "zoom": zoom, "frames": frames, "seed": seed, "color": color, "tone": tone,
                  **{k: v for k, v in options.items() if k != "memory_budget"}}
    return ZoomResult(model_name=spec_of(model).name, photo=pixels, frames=[f.numpy() for f in zoomed],
                      parameters=parameters, source=source, seconds=time.perf_counter() - started)


__all__ = [
    "CarvePhotoResult", "DreamPhotoResult", "MODES", "ZoomResult", "carve_photo", "default_objective", "dream_photo",
    "resolve_objective", "strongest_map", "zoom_photo",
]
