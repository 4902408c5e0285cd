"""DeepDream with any model: the reference's pattern carving, then octaves,
input-size tiles and fully-convolutional dreams of real photos.

* :func:`carve` — the reference's single-map pattern carving (OIP ascent on the
  model's input size, upscale, re-add detail).
* :func:`deep_dream` — octaves, jitter, whole-image gradient normalisation, with
  a tiling: ``"downscale"`` | ``"tiles"`` | ``"fullconv"``; its memory is
  estimated first (:mod:`convscope.dream.memory`).
* :func:`colour_dream` — a photo as the model sees it: a gray model dreams the
  luminance and keeps the chroma (:func:`dream_colour`), an RGB model dreams in colour.
* :func:`guided_objective` — dream toward the features of a guide image.
* :func:`zoom_frames` / :func:`colour_zoom_frames` — a zoom sequence.
* :func:`parse_dream_objective` — objective text read strictly against a model.

Gray and RGB models of any input size and preprocessing
(:mod:`convscope.dream.space`). Engines only: tensors in, tensors and dataclasses
out (no files, prints or plots); the use cases are :mod:`convscope.app.dream`.
"""

from convscope.dream.carve import CarveResult, carve, stretch
from convscope.dream.colour import (
    COLOR_MODES, TONES, ColourDream, colour_dream, colour_zoom_frames, dream_colour, merge_luminance, rgb_to_ycbcr,
    soft_clip, split_luminance, ycbcr_to_rgb,
)
from convscope.dream.guide import guided_objective
from convscope.dream.memory import DreamMemoryError, MemoryPlan, available_memory, plan_memory
from convscope.dream.objective import ObjectiveTextError, parse_dream_objective
from convscope.dream.octaves import DreamResult, check_dream_numbers, deep_dream, octave_sizes, plan_dream, zoom_frames
from convscope.dream.space import DreamInputError, DreamSpace, as_photo
from convscope.dream.tiling import TILINGS, TilingError, check_tiling, evaluate, objective_and_gradient, resize

__all__ = [
    "COLOR_MODES", "TILINGS", "TONES", "CarveResult", "ColourDream", "DreamInputError", "DreamMemoryError",
    "DreamResult", "DreamSpace", "MemoryPlan", "ObjectiveTextError", "TilingError", "as_photo", "available_memory",
    "carve", "check_dream_numbers", "check_tiling", "colour_dream", "colour_zoom_frames", "deep_dream",
    "dream_colour", "evaluate", "guided_objective", "merge_luminance", "objective_and_gradient", "octave_sizes",
    "parse_dream_objective", "plan_dream", "plan_memory", "resize", "rgb_to_ycbcr", "soft_clip", "split_luminance", "stretch",
    "ycbcr_to_rgb", "zoom_frames",
]
