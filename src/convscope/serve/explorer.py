"""What the explorer knows and answers, without HTTP: one model (shared, read-only),
its dataset, an optional atlas, and the questions the page asks — each answered by
the application layer (:mod:`convscope.app`) or an engine it exposes; nothing here
computes a network quantity itself.

::

    explorer = Explorer(model, split=test_split, label="shipped Model A")
    picture = explorer.input_from_bytes(png_bytes)        # converted as `convscope predict` converts a file
    explorer.forward(picture, layers="all")               # probabilities + every layer's activations
    explorer.explain(picture, "saliency", target=None)    # an attribution map
    job = explorer.oip_job("Conv2D_3", 120)               # long work: a Job with progress, cancellable

Every method raises :class:`RequestError` (a ``ValueError`` with an HTTP status)
for a request that cannot be answered; the message says what is wrong and how to
fix it.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from convscope.app.inside import InputImage

#: Largest request body (bytes): an uploaded image or a JSON request.
DEFAULT_MAX_BODY = 10 * 1024 * 1024
#: The activation encodings of ``/api/forward`` (see :func:`encode_array`).
ENCODINGS = ("list", "base64", "u8")
#: Most long jobs (OIPs, top-k) kept in memory; older finished ones are forgotten.
MAX_JOBS = 64


class RequestError(ValueError):
    """A request the explorer cannot answer: ``status`` is the HTTP status (4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Base64Text(str):
    """Text known to be base64 (``A-Z a-z 0-9 + / =`` only): JSON needs no escaping
    in it, so :func:`convscope.serve.app.json_bytes` copies it without scanning."""

    __slots__ = ()


def b64(array: np.ndarray, dtype: str = "<f4") -> str:
    """``array`` as base64 of its little-endian bytes (``<f4`` float32, ``u1`` uint8)."""
    return Base64Text(base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii"))


def encode_array(values: Any, encoding: str) -> dict[str, Any]:
    """``{"shape", "data"}``: ``data`` a nested list (``encoding="list"``, 6 decimals),
    base64 float32 little-endian (``"base64"``), or base64 uint8 levels (``"u8"``, a
    quarter of the size): ``value ≈ offset + level * scale`` within ``scale / 2``, where
    ``offset = min(0, min)`` and ``scale = (max - offset) / 255`` — the levels the page's
    colour scale (``round((v - offset) / (max - offset) * 255)``) gives the float values."""
    array = values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, np.float32)
    if encoding == "base64":
        return {"shape": list(array.shape), "dtype": "float32", "data": b64(array)}
    if encoding == "u8":
        levels, offset, scale = quantize_u8(array)
        return {"shape": list(array.shape), "dtype": "uint8", "offset": offset, "scale": scale, "data": b64(levels, "u1")}
    return {"shape": list(array.shape), "data": np.round(array.astype(np.float64), 6).tolist()}


def quantize_u8(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(levels uint8, offset, scale)`` of a float array (see :func:`encode_array`);
    computed in float64 and rounded half up, as JavaScript's ``Math.round``."""
    values = np.asarray(array, dtype=np.float64)
    if values.size == 0:
        return np.zeros(values.shape, np.uint8), 0.0, 0.0
    offset = min(0.0, float(values.min()))
    top = float(values.max())
    if not np.isfinite(values).all():
        raise ValueError("u8 encoding needs finite values; use encoding=base64")
    if top <= offset:
        return np.zeros(values.shape, np.uint8), offset, 0.0
    levels = np.floor(np.clip((values - offset) / (top - offset), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return levels, offset, (top - offset) / 255.0


@dataclass
class Job:
    """Long work (an OIP, a layer's top-k) running in the background.

    Attributes:
        id: the job's id (``/api/jobs/<id>``).
        kind: ``"oip"`` / ``"topk"``.
        key: what it computes (same key → same job).
        status: ``"queued"``, ``"running"``, ``"done"``, ``"failed"``, ``"cancelled"``.
        progress: ``{"label", "completed", "total"}`` of the latest event.
        result: the JSON answer once done; ``error``: the message once failed.
    """

    id: str
    kind: str
    key: tuple
    status: str = "queued"
    progress: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    cancel: Callable[[], None] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"id": self.id, "kind": self.kind, "status": self.status, "progress": dict(self.progress),
               "seconds": round(time.time() - self.started, 2)}
        if self.result is not None:
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        return out


class Explorer:
    """One model and what the page may ask about it.

    Args:
        model: any model with a convscope spec (eval mode; never modified).
        split: the dataset's test split (``None``: no dataset — picking, top-k and
            misclassified images are then unavailable, with a message).
        label: the model's name for the page.
        atlas_dir: an atlas output folder whose stored stages (``.stages``) give
            OIPs and top-k examples instead of computing them.
        max_body: largest request body in bytes.
        max_pixels: largest uploaded image (pixels; ``None``: convscope's limit).
        oip_profile: the atlas profile whose OIP parameters on-demand OIPs use.
        split_note: why no dataset is loaded (shown by the page), when none is.
        max_batch: most forward requests computed in one batched pass (:attr:`batcher`).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        split: Any = None,
        label: str | None = None,
        atlas_dir: Path | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        max_pixels: int | None = None,
        oip_profile: str = "full",
        split_note: str | None = None,
        max_batch: int = 8,
    ) -> None:
        from convscope.layers import model_layers
        from convscope.models.twin import frozen_twin
        from convscope.spec import spec_of

        self.model = model.eval()
        self.spec = spec_of(model)
        self.label = label or self.spec.name
        self.split = split
        self.split_note = split_note
        self.max_body = int(max_body)
        self.max_pixels = max_pixels
        self.layers = model_layers(model)
        self.layer_names = [layer.name for layer in self.layers]
        self._twin: nn.Module | None = None
        self._twin_lock = threading.Lock()
        self._frozen_twin = frozen_twin
        self.oip_profile = oip_profile
        self.atlas = None
        if atlas_dir is not None:
            from convscope.serve.atlas_source import AtlasSource

            self.atlas = AtlasSource(Path(atlas_dir), model)
        self._evaluation: Any = None
        self._lock = threading.Lock()
        self._topk: dict[str, Any] = {}
        self._oips: dict[tuple[str, int], dict[str, Any]] = {}
        self._fields: dict[str, Any] | None = None
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._jobs_lock = threading.Lock()
        self.max_batch = int(max_batch)
        self._batcher: Any = None
        self._batcher_lock = threading.Lock()

    # ------------------------------------------------------------------ facts
    @property
    def drawable(self) -> bool:
        """Whether a drawing pad makes sense: a gray model whose files are converted MNIST-style."""
        return self.spec.is_gray and self.spec.image_conversion == "digit"

    @property
    def ascent_model(self) -> nn.Module:
        """A frozen copy for input-gradient work (explanations, OIPs); made once."""
        with self._twin_lock:
            if self._twin is None:
                self._twin = self._frozen_twin(self.model)
            return self._twin

    def fields(self) -> dict[str, Any]:
        """Receptive field of every position of every spatial layer:
        ``{layer: {"method", "table": (H', W', 4) nested list}}``."""
        if self._fields is None:
            from convscope.receptive_field import receptive_fields

            out: dict[str, Any] = {}
            for layer in self.layers:
                if not layer.spatial:
                    continue
                try:
                    rf = receptive_fields(self.model, layer.name)
                except (ValueError, RuntimeError):
                    continue
                if rf.table is not None:
                    out[layer.name] = {"method": rf.method, "table": np.asarray(rf.table, dtype=np.int64).tolist()}
            self._fields = out
        return self._fields

    def model_info(self) -> dict[str, Any]:
        """``GET /api/model``: the spec, the layers with shapes and receptive fields, what is available."""
        from convscope import __version__
        from convscope.explain import METHODS

        fields = self.fields()
        return {
            "name": self.spec.name,
            "label": self.label,
            "version": __version__,
            "spec": self.spec.to_dict(),
            "drawable": self.drawable,
            "layers": [{"name": layer.name, "kind": layer.kind, "shape": list(layer.shape),
                        "receptive_fields": fields.get(layer.name)} for layer in self.layers],
            "methods": list(explain_methods()),
            "method_titles": {name: getattr(cls, "title", name) for name, cls in METHODS.items()},
            "dataset": None if self.split is None else {
                "name": str(getattr(self.split, "dataset", "")), "split": str(getattr(self.split, "split", "test")),
                "size": int(len(self.split.labels))},
            "dataset_note": self.split_note,
            "atlas": None if self.atlas is None else self.atlas.describe(),
            "limits": {"max_body_bytes": self.max_body, "max_pixels": self._pixel_limit()},
        }

    def _pixel_limit(self) -> int:
        from convscope.data.image_files import max_pixels_limit

        return max_pixels_limit(self.max_pixels)

    # ------------------------------------------------------------------ inputs
    def input_from_bytes(self, data: bytes, name: str = "the upload") -> InputImage:
        """An uploaded image file, converted exactly as ``convscope predict`` converts a
        file (:func:`convscope.data.user_image.convert_image` with the model's spec)."""
        from convscope.data.image_files import ImageFileError, open_image_bytes
        from convscope.data.user_image import UserImageError, convert_image

        if len(data) > self.max_body:
            raise RequestError(f"{name} is {len(data):,} bytes, more than the {self.max_body:,}-byte limit", 413)
        try:
            image = open_image_bytes(data, max_pixels=self.max_pixels, name=name)
            prepared = convert_image(image, self.spec)
        except (ImageFileError, UserImageError) as exc:
            status = 413 if "megapixel" in str(exc) else 400
            raise RequestError(str(exc), status) from None
        return InputImage(prepared.image, None, name, None)

    def input_from_pixels(self, pixels: Any, name: str = "pixels") -> InputImage:
        """A JSON array of pixels 0..255: ``(H, W)`` gray or ``(H, W, 3)`` RGB. At the
        model's input size they are used as they are; other sizes are converted like
        an image file."""
        from convscope.data.user_image import UserImageError, convert_image

        try:
            array = np.asarray(pixels, dtype=np.float64)
        except (TypeError, ValueError):
            raise RequestError("pixels must be a rectangular array of numbers 0..255, e.g. [[0, 12, ...], ...] "
                               "(rows of the image)") from None
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3)) or 0 in array.shape:
            raise RequestError(f"pixels must have shape (H, W) or (H, W, 3); got {list(array.shape)}")
        if array.shape[0] * array.shape[1] > self._pixel_limit():
            raise RequestError(f"pixels hold {array.shape[0] * array.shape[1]:,} pixels, more than the limit", 413)
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
            raise RequestError("pixels must be finite numbers 0..255")
        array = np.rint(array).astype(np.uint8)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        c, h, w = self.spec.input_shape
        fits = array.shape[:2] == (h, w) and ((c == 1 and array.ndim == 2) or (c == 3 and array.ndim == 3))
        if fits:
            return InputImage(array, None, name, None)
        try:
            prepared = convert_image(array, self.spec)
        except UserImageError as exc:
            raise RequestError(str(exc)) from None
        return InputImage(prepared.image, None, name, None)

    def input_from_ref(self, text: str) -> InputImage:
        """``test:N`` (or ``train:N`` of the loaded split's name) of the dataset."""
        from convscope.data import parse_image_ref

        self._need_split()
        try:
            split_name, index = parse_image_ref(str(text))
        except ValueError:
            raise RequestError(f"cannot read image reference {str(text)[:60]!r}: use test:INDEX") from None
        own = str(getattr(self.split, "split", "test"))
        if split_name != own:
            raise RequestError(f"this explorer holds the {own} split only; use {own}:INDEX")
        if not 0 <= index < len(self.split.labels):
            raise RequestError(f"{text}: the {own} set has {len(self.split.labels):,} images, so the index must be "
                               f"0..{len(self.split.labels) - 1}")
        return InputImage(np.array(self.split.images[index], dtype=np.uint8), int(self.split.labels[index]), f"{own}:{index}")

    def input_from_json(self, body: dict[str, Any]) -> InputImage:
        """The input of a JSON request: ``"image": "test:12"``, ``"pixels": [[...]]`` or
        ``"png": BASE64`` (an image file's bytes)."""
        given = [key for key in ("image", "pixels", "png") if body.get(key) is not None]
        if len(given) != 1:
            raise RequestError('give exactly one input: "image": "test:12", "pixels": [[...]] (0..255) or '
                               '"png": "<base64 of an image file>"')
        key = given[0]
        if key == "image":
            if not isinstance(body["image"], str) or len(body["image"]) > 200:
                raise RequestError('"image" must be a dataset reference such as "test:12"')
            return self.input_from_ref(body["image"])
        if key == "pixels":
            return self.input_from_pixels(body["pixels"])
        if not isinstance(body["png"], str):
            raise RequestError('"png" must be base64 text of an image file')
        try:
            data = base64.b64decode(body["png"].split(",", 1)[-1], validate=True)
        except ValueError:
            raise RequestError('"png" is not valid base64') from None
        return self.input_from_bytes(data, "the image")

    def _need_split(self) -> None:
        if self.split is None:
            raise RequestError(self.split_note or "no dataset is loaded: start convscope serve with --dataset", 404)

    # ------------------------------------------------------------------ forward
    def resolve_layers(self, layers: Any) -> list[str]:
        """``"all"`` / ``None`` → every layer; ``"none"`` / ``[]`` → none; else the named ones (checked)."""
        if layers is None or layers == "all":
            return list(self.layer_names)
        if layers == "none":
            return []
        if isinstance(layers, str):
            layers = [part.strip() for part in layers.split(",") if part.strip()]
        if not isinstance(layers, list) or not all(isinstance(name, str) for name in layers) or len(layers) > 1000:
            raise RequestError('"layers" must be "all", "none" or a list of layer names')
        unknown = [name for name in layers if name not in self.layer_names]
        if unknown:
            raise RequestError(f"unknown layer {unknown[0][:60]!r}; the layers are: {', '.join(self.layer_names)}")
        return list(dict.fromkeys(layers))

    @property
    def batcher(self) -> Any:
        """The :class:`~convscope.serve.batcher.ForwardBatcher` running every forward pass
        (made, not started, on first use)."""
        with self._batcher_lock:
            if self._batcher is None:
                from convscope.serve.batcher import ForwardBatcher

                c, h, w = self.spec.input_shape
                self._batcher = ForwardBatcher(self.model, self.layer_names + ["probabilities"],
                                               (h, w) if c == 1 else (h, w, c), max_batch=self.max_batch)
            return self._batcher

    def warm(self, batcher: bool = True) -> None:
        """Get ready to serve: trace the receptive fields (:meth:`fields`; the geometry is
        cached on the model) and start the forward batcher (unless ``batcher`` is false:
        worker processes compute the forward passes; it then starts on first use).
        Tracing with ``torch.fx`` patches every module's call while it runs, so it must
        not overlap forward passes in other threads: a server calls this before it
        takes requests."""
        self.fields()
        if batcher:
            self.batcher.start()

    def close(self) -> None:
        """Stop the forward batcher's thread."""
        if self._batcher is not None:
            self._batcher.close()

    def check_forward(self, layers: Any = "all", encoding: str = "list") -> list[str]:
        """The layer names of a forward request, after checking its options."""
        if encoding not in ENCODINGS:
            raise RequestError(f'"encoding" must be one of: {", ".join(ENCODINGS)}')
        return self.resolve_layers(layers)

    def forward(self, item: InputImage, layers: Any = "all", encoding: str = "list") -> dict[str, Any]:
        """``POST /api/forward``: probabilities and the chosen layers' activations for one
        input — a row of a batched pass of the engine (:func:`convscope.inside.layer_activations`
        through :attr:`batcher`; the same bits whether the input came alone or with others)."""
        names = self.check_forward(layers, encoding)
        return self.forward_answer(item, names, encoding, self.batcher(item.image))

    def forward_answer(self, item: InputImage, names: list[str], encoding: str, values: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The JSON answer of a forward request from its row of activations ``values``
        (``{layer: (C, H', W') or (F,)}`` and ``"probabilities"``)."""
        probs = values["probabilities"].tolist()  # (iterating a tensor costs more than the whole forward pass)
        predicted = int(np.argmax(probs))
        picture = np.asarray(item.image, dtype=np.uint8)
        return {
            "input": {"source": item.source, "label": item.label, "shape": list(picture.shape),
                      "pixels": picture.tolist() if encoding == "list" else b64(picture, "u1")},
            "class_names": list(self.spec.class_names),
            "probabilities": [round(float(p), 7) for p in probs],
            "predicted": predicted,
            "predicted_name": self.spec.class_names[predicted],
            "layers": {name: self._layer_entry(values[name], encoding) for name in names},
        }

    @staticmethod
    def _layer_entry(values: torch.Tensor, encoding: str) -> dict[str, Any]:
        array = values.detach().float().cpu().numpy()
        return {**encode_array(array, encoding), "max": float(array.max()), "min": float(array.min())}

    # ------------------------------------------------------------------ explain
    def explain(self, item: InputImage, method: str, target: Any = None, options: dict[str, Any] | None = None,
                encoding: str = "list") -> dict[str, Any]:
        """``POST /api/explain``: one attribution map for the input (a method of
        :mod:`convscope.explain`; target a class (index or name), a map ``"L:m"`` or a
        unit ``"L:m@r,c"``, ``None`` = the predicted class)."""
        from convscope.address import AddressError

        methods = explain_methods()
        if method not in methods:
            raise RequestError(f"unknown method {str(method)[:40]!r}; choose one of: {', '.join(methods)}")
        options = dict(options or {})
        allowed = {"steps", "baseline", "window", "stride", "layer", "samples", "noise_level", "seed", "keep", "base"}
        bad = [key for key in options if key not in allowed]
        if bad:
            raise RequestError(f"unknown option {bad[0][:40]!r}; options: {', '.join(sorted(allowed))}")
        if "steps" in options and (not isinstance(options["steps"], int) or not 1 <= options["steps"] <= 256):
            raise RequestError('"steps" must be a whole number 1..256')
        if "samples" in options and (not isinstance(options["samples"], int) or not 1 <= options["samples"] <= 64):
            raise RequestError('"samples" must be a whole number 1..64')
        resolved = self._target(target)
        try:
            explanation = run_explanation(self.ascent_model, item, method, resolved, options)
        except (AddressError, ValueError, TypeError) as exc:
            raise RequestError(" ".join(str(exc).split())[:500]) from None
        values = explanation["attributions"]
        out = {"method": method, "target": explanation["target"], "signed": explanation["signed"],
               "title": explanation["title"], "attribution": encode_array(values, encoding),
               "max_abs": float(np.abs(values).max()) if values.size else 0.0,
               "limit_99": float(np.percentile(np.abs(values), 99)) if values.size else 0.0,
               "input": {"source": item.source, "shape": list(np.shape(item.image))}}
        if explanation.get("delta") is not None:
            out["convergence_delta"] = explanation["delta"]
        return out

    def _target(self, target: Any) -> Any:
        from convscope.app.inside import InsideError, class_index

        if target is None or target == "predicted":
            return None
        if isinstance(target, bool) or not isinstance(target, (int, str)):
            raise RequestError('"target" must be a class (index or name), "predicted", a map "Layer:map" or a unit '
                               '"Layer:map@row,col"')
        if isinstance(target, str) and (":" in target or "@" in target):
            if len(target) > 200:
                raise RequestError('"target" is too long')
            return target
        try:
            return class_index(self.model, target)
        except InsideError as exc:
            raise RequestError(str(exc)) from None

    # ------------------------------------------------------------------ the dataset
    def evaluation(self) -> Any:
        """The model's evaluation on the split (once; :func:`convscope.app.inside.evaluate`)."""
        from convscope.app import inside

        self._need_split()
        with self._lock:
            if self._evaluation is None:
                self._evaluation = inside.evaluate(self.model, self.split, model_label=self.label).evaluation
            return self._evaluation

    def pick(self, how: str, klass: Any = None, seed: int | None = None) -> dict[str, Any]:
        """``GET /api/pick``: a dataset image — ``how`` = ``random``, ``class`` (a random image
        of class ``klass``) or ``misclassified`` (a random mistake; of class ``klass`` when
        given). ``seed`` makes the choice reproducible."""
        from convscope.app.inside import InsideError, class_index

        self._need_split()
        labels = np.asarray(self.split.labels)
        rng = np.random.default_rng(seed)
        chosen_class = None
        if klass not in (None, ""):
            try:
                chosen_class = class_index(self.model, klass)
            except InsideError as exc:
                raise RequestError(str(exc)) from None
        if how == "random":
            pool = np.arange(len(labels))
        elif how == "class":
            if chosen_class is None:
                raise RequestError('how=class needs class=NAME_OR_INDEX')
            pool = np.flatnonzero(labels == chosen_class)
        elif how == "misclassified":
            evaluation = self.evaluation()
            pool = np.asarray(evaluation.misclassified, dtype=np.int64)
            if chosen_class is not None:
                pool = pool[labels[pool] == chosen_class]
        else:
            raise RequestError('"how" must be random, class or misclassified')
        if len(pool) == 0:
            raise RequestError("no image fits (no such images in this split)", 404)
        index = int(pool[rng.integers(len(pool))])
        split_name = str(getattr(self.split, "split", "test"))
        out = {"image": f"{split_name}:{index}", "label": int(labels[index]),
               "label_name": self.spec.class_name(int(labels[index])), "pool": int(len(pool))}
        if how == "misclassified":
            evaluation = self.evaluation()
            out["predicted"] = int(evaluation.predictions[index])
            out["predicted_name"] = self.spec.class_name(int(evaluation.predictions[index]))
        return out

    # ------------------------------------------------------------------ map cards
    def check_unit(self, layer: str, index: Any) -> tuple[str, int]:
        if layer not in self.layer_names:
            raise RequestError(f"unknown layer {str(layer)[:60]!r}; the layers are: {', '.join(self.layer_names)}", 404)
        try:
            index = int(index)
        except (TypeError, ValueError):
            raise RequestError("the map index must be a whole number") from None
        count = dict((layer_.name, layer_.shape[0]) for layer_ in self.layers)[layer]
        if not 0 <= index < count:
            raise RequestError(f"{layer} has {count} maps / nodes: use 0..{count - 1}", 404)
        return layer, index

    def card(self, layer: str, index: int) -> dict[str, Any]:
        """``GET /api/card``: what is known about one map / node now — its raw filters,
        its OIP (from the atlas, computed earlier, or not yet), its top-k dataset
        examples (from the atlas or computed earlier, or not yet)."""
        layer, index = self.check_unit(layer, index)
        info = next(layer_ for layer_ in self.layers if layer_.name == layer)
        out: dict[str, Any] = {"layer": layer, "map": index, "kind": info.kind, "shape": list(info.shape),
                               "anchor": f"{layer}-{index}".replace(".", "_")}
        out["filters"] = self.filters(layer, index)
        out["oip"] = self.known_oip(layer, index)
        out["topk"] = self.known_topk(layer, index)
        return out

    def filters(self, layer: str, index: int) -> dict[str, Any] | None:
        """The raw kernels of output map ``index`` of a conv layer (:func:`convscope.app.inside.filters`):
        ``{"shape": [in, kh, kw], "data": base64 float32, "limit", "bias"}``, else ``None``."""
        from convscope.address import AddressError
        from convscope.app import inside
        from convscope.inside import conv_layers

        if layer not in conv_layers(self.model):
            return None
        try:
            bank = inside.filters(self.model, layer).banks[layer]
        except (AddressError, ValueError):
            return None
        kernels = bank.weights[index]
        return {"shape": list(kernels.shape), "data": b64(kernels.numpy()), "limit": float(kernels.abs().max()),
                "layer_limit": float(bank.limit), "bias": None if bank.bias is None else float(bank.bias[index])}

    # OIPs -----------------------------------------------------------------------------------
    def known_oip(self, layer: str, index: int) -> dict[str, Any] | None:
        """The OIP of a map when one is at hand (atlas or computed before), else ``None``."""
        if (layer, index) in self._oips:
            return self._oips[(layer, index)]
        if self.atlas is not None:
            found = self.atlas.oip(layer, index)
            if found is not None:
                return found
        return None

    def oip_job(self, layer: str, index: int) -> Job:
        """Start (or find) the computation of one map's OIP (:func:`convscope.app.oip.run_oips`
        with the atlas profile's parameters)."""
        layer, index = self.check_unit(layer, index)
        from convscope.layers import conv_layers

        if layer not in conv_layers(self.model):
            raise RequestError(f"OIPs are computed for the conv layers ({', '.join(conv_layers(self.model))}); "
                               f"{layer} is not one")
        known = self.known_oip(layer, index)
        return self._job("oip", (layer, index), lambda progress: self._compute_oip(layer, index, progress), known)

    def _compute_oip(self, layer: str, index: int, progress: Any) -> dict[str, Any]:
        from convscope.app.oip import run_oips
        from convscope.report import images as img
        from convscope.report.profile import PROFILES
        from convscope.report.stages import OIP_CMAP, OIP_SCALE, oip_options

        p = PROFILES[self.oip_profile]  # the atlas' OIP parameters (report/plan.py), seed 0
        params = {"steps": p.oip_steps, "epsilon": p.oip_epsilon, "criterion": p.oip_criterion,
                  "report_steps": p.oip_report_steps, "candidates": p.precursor_candidates, "dataset": 0,
                  "preactivation_steps": p.precursor_preactivation_steps, "seed": 0}
        run = run_oips(self.ascent_model, [(layer, [index])], oip_options(params), progress=progress).layers[0]
        picture = run.images[0, 0].detach().float().cpu().numpy()
        result = {"source": "computed", "png": "data:image/png;base64," + base64.b64encode(
            img.input_png(picture, OIP_CMAP, *OIP_SCALE)).decode("ascii"),
            "final": float(run.final_loss[0, 0]), "initial": float(run.initial_loss[0, 0]),
            "status": run.status[0], "start": run.starts[0],
            "scale": list(OIP_SCALE), "params": {k: params[k] for k in ("steps", "epsilon", "candidates")}}
        self._oips[(layer, index)] = result
        return result

    # top-k ------------------------------------------------------------------------------------
    def known_topk(self, layer: str, index: int) -> dict[str, Any] | None:
        if layer in self._topk:
            return self._topk_entry(self._topk[layer], layer, index)
        if self.atlas is not None and self.split is not None:
            found = self.atlas.topk(layer)
            if found is not None:
                self._topk[layer] = found
                return self._topk_entry(found, layer, index)
        return None

    def _topk_entry(self, top: dict[str, np.ndarray], layer: str, index: int) -> dict[str, Any]:
        indices = [int(i) for i in top["indices"][index]]
        images = np.stack([self.split.images[i] for i in indices])
        split = str(getattr(self.split, "split", "test"))
        return {"source": top["source"], "images": [f"{split}:{i}" for i in indices],
                "labels": [int(self.split.labels[i]) for i in indices],
                "values": [round(float(v), 6) for v in top["values"][index]],
                "rects": None if top.get("rects") is None else top["rects"][index].tolist(),
                "pixels": b64(images, "u1"), "image_shape": list(images.shape[1:]), "num_images": top["num_images"]}

    def topk_job(self, layer: str, index: int = 0) -> Job:
        """Start (or find) the top-k search of a layer over the split (:func:`convscope.app.inside.topk`)."""
        layer, index = self.check_unit(layer, index)
        self._need_split()
        known = self.known_topk(layer, index)
        return self._job("topk", (layer,), lambda progress: self._compute_topk(layer, index, progress), known)

    def _compute_topk(self, layer: str, index: int, progress: Any) -> dict[str, Any]:
        from convscope.app import inside

        result = inside.topk(self.model, self.split, layer, k=9, model_label=self.label, progress=progress).topk
        found = {"source": "computed", "indices": result.indices.numpy(), "values": result.values.numpy(),
                 "rects": None if result.rectangles is None else result.rectangles.numpy(),
                 "num_images": int(result.num_images)}
        self._topk[layer] = found
        return self._topk_entry(found, layer, index)

    # jobs -------------------------------------------------------------------------------------
    def _job(self, kind: str, key: tuple, work: Callable[[Any], dict[str, Any]], known: dict[str, Any] | None) -> Job:
        with self._jobs_lock:
            for job in self.jobs.values():
                if job.kind == kind and job.key == key and job.status in ("queued", "running"):
                    return job
            job = Job(uuid.uuid4().hex[:12], kind, key)
            if known is not None:
                job.status, job.result = "done", known
            else:
                job.work = work  # type: ignore[attr-defined]
            self.jobs[job.id] = job
            while len(self.jobs) > MAX_JOBS:
                oldest = next((j for j in self.jobs.values() if j.status not in ("queued", "running")), None)
                if oldest is None:
                    break
                del self.jobs[oldest.id]
            return job

    def run_job(self, job: Job) -> None:
        """Run a queued job in the calling thread (the server's job worker), reporting progress."""
        from convscope.progress import Cancelled, Progress

        work = getattr(job, "work", None)
        if job.status != "queued" or work is None:
            return

        def sink(event: Any) -> None:
            job.progress = {"label": event.label, "completed": float(event.completed),
                            "total": None if event.total is None else float(event.total)}

        progress = Progress(sink=sink)
        job.cancel = progress.cancel
        if job.status == "cancelled":
            return
        job.status = "running"
        try:
            job.result = work(progress)
            job.status = "done"
        except Cancelled:
            job.status = "cancelled"
        except (ValueError, RuntimeError) as exc:
            job.status, job.error = "failed", " ".join(str(exc).split())[:500]
        finally:
            job.work = None  # type: ignore[attr-defined]

    def job(self, job_id: str) -> Job:
        job = self.jobs.get(str(job_id)[:40])
        if job is None:
            raise RequestError(f"no job {str(job_id)[:40]!r} (finished jobs are forgotten after {MAX_JOBS} newer ones)", 404)
        return job

    def cancel_job(self, job_id: str) -> Job:
        job = self.job(job_id)
        if job.status == "queued":
            job.status = "cancelled"
        elif job.status == "running" and job.cancel is not None:
            job.cancel()
        return job


# ---------------------------------------------------------------------- explanation methods
def explain_methods() -> list[str]:
    """The explanation methods by name (the registry of :mod:`convscope.explain`)."""
    from convscope.explain import METHODS

    return list(METHODS)


def run_explanation(model: nn.Module, item: InputImage, method: str, target: Any, options: dict[str, Any]) -> dict[str, Any]:
    """One explanation of one input through the application layer
    (:func:`convscope.app.explain.explain_image`; each method takes the options it
    understands): the attributions ``(C, H, W)`` float32, the resolved target, whether
    signs matter, the method's title and the integrated-gradients convergence delta
    (the largest absolute one, or ``None``)."""
    from convscope.app.explain import explain_image

    run = explain_image(model, np.asarray(item.image), [method], targets=[target], options=options,
                        source=item.source).runs[0]
    delta = run.delta
    return {"attributions": run.attributions[0].numpy(), "target": run.target, "signed": bool(run.signed),
            "title": str(run.title), "delta": None if delta is None else float(delta.abs().max())}


__all__ = ["DEFAULT_MAX_BODY", "ENCODINGS", "Base64Text", "Explorer", "Job", "RequestError", "b64", "encode_array", "explain_methods", "quantize_u8", "run_explanation"]
