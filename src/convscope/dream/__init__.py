"""DeepDream with the MNIST CNN: the reference's pattern carving, then octaves,
28×28 tiles and fully-convolutional dreams of real photos.

* :func:`carve` — the reference's single-map pattern carving (28×28 OIP ascent,
  upscale, re-add detail).
* :func:`deep_dream` — octaves, jitter, whole-image gradient normalisation, with
  a tiling: ``"downscale"`` | ``"tiles"`` | ``"fullconv"``.
* :func:`dream_colour` — dream a colour photo's luminance and keep its chroma.
* :func:`guided_objective` — dream toward the features of a guide image.
* :func:`zoom_frames` — a zoom sequence.

Engines only: tensors in, tensors and dataclasses out (no files, prints or plots).
"""

from convscope.dream.carve import CarveResult, carve, stretch
from convscope.dream.colour import COLOR_MODES, TONES, ColourDream, soft_clip, dream_colour, merge_luminance, rgb_to_ycbcr, split_luminance, ycbcr_to_rgb
from convscope.dream.guide import guided_objective
from convscope.dream.octaves import DreamResult, deep_dream, octave_sizes, zoom_frames
from convscope.dream.tiling import TILINGS, TilingError, check_tiling, evaluate, objective_and_gradient, resize

__all__ = [
    "COLOR_MODES", "TILINGS", "TONES", "soft_clip", "CarveResult", "ColourDream", "DreamResult", "TilingError", "carve", "check_tiling",
    "deep_dream", "dream_colour", "evaluate", "guided_objective", "merge_luminance", "objective_and_gradient",
    "octave_sizes", "resize", "rgb_to_ycbcr", "split_luminance", "stretch", "ycbcr_to_rgb", "zoom_frames",
]
