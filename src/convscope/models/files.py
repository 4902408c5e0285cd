"""Model files: ``NAME.safetensors`` (weights) + ``NAME.json`` (config).

Loading never unpickles or executes anything: the JSON names a registered
architecture (``seed_cnn``, ``model_b``) or is a ``"graph"`` model whose JSON holds
a :func:`convscope.models.graph.describe` layer tree (any model made of standard
layers: Keras imports, plain ``nn.Sequential`` factories); the weights are plain
tensors checked key by key and shape by shape, and the JSON records the SHA-256 of
the weights file so a tampered or mismatched pair is refused with a clear error.
A config without a valid hash is refused too
(unless the caller opts in with ``allow_unverified=True``, which warns), and so
are non-finite numbers in the JSON and weights of absurd magnitude.

The same weights always give the same ``.safetensors`` bytes: the header is
written here with sorted keys (safetensors' own writer orders the metadata by a
per-process random hash).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import struct
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from convscope import __version__
from convscope.device import resolve_device
from convscope.io import JsonFileError, atomic_write_bytes, atomic_write_text, read_json, to_json
from convscope.models.architectures import ARCHITECTURES, ConvscopeModel, build_model
from convscope.spec import SPEC_ATTRIBUTE, ModelSpec, SpecError, check_model_fits, spec_of

FORMAT = "convscope-model/1"
SHIPPED_NAME = "seed_cnn"
#: ``architecture`` of a model saved as a layer-graph description (``ModelConfig.graph``).
GRAPH_ARCHITECTURE = "graph"


#: Largest model JSON read (bytes); a config with a long training history is ~100 kB.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: Weights whose magnitude exceeds this are refused as nonsense (trained CNN weights
#: are below ~10; 1e6 already overflows float32 activations after a few layers).
MAX_ABS_WEIGHT = 1e6

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ModelFileError(ValueError):
    """A model file that is missing, tampered with, or does not match its config."""


def conversion_for(dataset: str | None, input_shape: list[int] | tuple[int, ...]) -> str:
    """The default image-file conversion for a model trained on ``dataset``: MNIST-style
    digits for MNIST, a plain resize for everything else."""
    return "digit" if dataset == "mnist" and list(input_shape) == [1, 28, 28] else "resize"


class UnverifiedWeightsWarning(UserWarning):
    """Weights loaded without checking them against a recorded SHA-256."""


@dataclass
class ModelConfig:
    """Everything needed to rebuild and correctly feed a model: the saved form of its
    :class:`~convscope.spec.ModelSpec` plus its architecture and provenance.

    Attributes:
        architecture: registry name (``seed_cnn`` = Model A, ``model_b``), or
            ``"graph"`` for a model rebuilt from :attr:`graph`.
        layer_names: top-level layer names in forward order.
        input_shape: ``(C, H, W)``.
        preprocessing: ``"standardize"`` (per image), ``"unit"`` (0..1),
            ``"meanstd"`` (with ``mean``/``std``) or ``"raw"``.
        dataset: dataset the model was trained on (name or path), or ``None``.
        class_names: the labels' names.
        mean, std: per-channel values for ``"meanstd"``.
        image_conversion: how image files are converted (``digit``, ``resize``,
            ``crop``, ``none``); ``None`` = the default for ``dataset``.
        name: display name (default: the architecture).
        aliases: extra layer names.
        source: provenance of an imported model: ``kind`` (``keras``, ``python``),
            ``file`` and its ``sha256``, ``format``, ``keras_version``, ``factory``,
            ``keras_layers`` (the Keras summary table), ``spec_defaults`` (spec fields
            that were defaults, not given), … (free-form dict).
        graph: for ``architecture == "graph"``: the layer tree
            (:func:`convscope.models.graph.describe`); ``None`` otherwise (and then
            left out of the JSON, so files of registered architectures are unchanged).
        training: the training recipe and its measured figures (free-form dict).
        test_accuracy: measured accuracy on the full test set, or ``None``.
        library_version: convscope version that wrote the file.
        weights_sha256: SHA-256 of the ``.safetensors`` file.
        format: file format tag.
    """

    architecture: str
    layer_names: list[str]
    input_shape: list[int] = field(default_factory=lambda: [1, 28, 28])
    preprocessing: str = "standardize"
    dataset: str | None = "mnist"
    class_names: list[str] = field(default_factory=lambda: [str(i) for i in range(10)])
    mean: list[float] | None = None
    std: list[float] | None = None
    image_conversion: str | None = None
    name: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    graph: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    test_accuracy: float | None = None
    library_version: str = __version__
    weights_sha256: str = ""
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["graph"] is None:
            del data["graph"]
        return data

    def spec(self) -> ModelSpec:
        """The :class:`~convscope.spec.ModelSpec` this config describes.

        Raises:
            SpecError: inconsistent fields.
        """
        return ModelSpec(
            input_shape=tuple(self.input_shape),  # type: ignore[arg-type]
            class_names=tuple(self.class_names),
            preprocessing=self.preprocessing,
            mean=None if self.mean is None else tuple(self.mean),
            std=None if self.std is None else tuple(self.std),
            dataset=self.dataset,
            image_conversion=self.image_conversion or conversion_for(self.dataset, self.input_shape),
            name=self.name or self.architecture,
            aliases=dict(self.aliases or {}),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<config>") -> "ModelConfig":
        if not isinstance(data, dict):
            raise ModelFileError(f"{source}: expected a JSON object, found {type(data).__name__}; not a convscope model config")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [name for name in ("architecture", "layer_names") if name not in data]
        if missing:
            raise ModelFileError(f"{source}: config lacks {missing}; is this a convscope model config?")
        if data.get("format", FORMAT) != FORMAT:
            raise ModelFileError(f"{source}: unsupported model format {data.get('format')!r} (this version reads {FORMAT})")
        accuracy = data.get("test_accuracy")
        if accuracy is not None and (
            isinstance(accuracy, bool)
            or not isinstance(accuracy, (int, float))
            or not math.isfinite(accuracy)
            or not 0.0 <= accuracy <= 1.0
        ):
            raise ModelFileError(f"{source}: test_accuracy {accuracy!r} is not a fraction between 0 and 1 (or null)")
        if not isinstance(data.get("weights_sha256", ""), str):
            raise ModelFileError(f"{source}: weights_sha256 must be a string of 64 hex digits, not {data['weights_sha256']!r}")
        return cls(**{key: value for key, value in data.items() if key in known})


def default_config(model: nn.Module, **overrides: Any) -> ModelConfig:
    """A config describing ``model`` and its spec (fields can be overridden). When
    ``dataset`` is overridden without ``image_conversion``, the conversion becomes
    that dataset's default."""
    spec = spec_of(model)
    config = ModelConfig(
        architecture=getattr(model, "architecture", "") or type(model).__name__,
        layer_names=[name for name, _ in model.named_children()],
        input_shape=list(spec.input_shape),
        preprocessing=spec.preprocessing,
        dataset=spec.dataset,
        class_names=list(spec.class_names),
        mean=None if spec.mean is None else list(spec.mean),
        std=None if spec.std is None else list(spec.std),
        image_conversion=spec.image_conversion,
        name=spec.name,
        aliases=dict(spec.aliases),
    )
    if "dataset" in overrides and "image_conversion" not in overrides:
        overrides["image_conversion"] = conversion_for(overrides["dataset"], overrides.get("input_shape", config.input_shape))
    return dataclasses.replace(config, **overrides)


def paths_for(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights, config)`` paths for ``model``, ``model.json`` or ``model.safetensors``.

    Raises:
        ModelFileError: any other suffix (``.onnx``, ``.pt``, ``.h5`` …): nothing is
            ever loaded from a neighbouring file of another kind.
    """
    path = Path(path)
    if path.suffix in (".json", ".safetensors"):
        stem = path.with_suffix("")
    elif path.suffix == "" or not path.suffix[1:].isalpha():
        stem = path
    else:
        raise ModelFileError(
            f"{path}: a convscope model is NAME.json + NAME.safetensors; {path.suffix!r} files are not convscope model files"
        )
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


_ST_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise ``tensors`` in the safetensors format, deterministically.

    The same tensors and metadata always give the same bytes, in any process:
    the header's keys are sorted (``safetensors.torch.save`` orders the metadata
    by a per-process random hash) and the data follow in a fixed order (wider
    dtypes first, then by name, so every tensor stays aligned), as safetensors
    itself lays them out. Read back with ``safetensors.torch.load``.

    Args:
        tensors: name → tensor (any device; copied to CPU, little-endian).
        metadata: string → string, stored as ``__metadata__``.
    """
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("safetensors metadata must map strings to strings")
    entries = []
    for name, tensor in tensors.items():
        if tensor.dtype not in _ST_DTYPES:
            raise TypeError(f"cannot store {name} of dtype {tensor.dtype} in a safetensors file")
        entries.append((name, tensor.detach().to("cpu").contiguous()))
    entries.sort(key=lambda item: (-item[1].element_size(), item[0]))
    spans: dict[str, dict[str, object]] = {}
    chunks: list[bytes] = []
    offset = 0
    for name, tensor in entries:
        data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        spans[name] = {"dtype": _ST_DTYPES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    # Key order as safetensors writes it (metadata first, then the tensors in data
    # order, each dtype/shape/data_offsets) but with the metadata sorted: the
    # bytes equal safetensors.torch.save's whenever its hash order happens to be sorted.
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    header.update(spans)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    text += b" " * (-len(text) % 8)  # pad so the data start 8-byte aligned, as safetensors does
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def model_to_bytes(model: nn.Module, config: ModelConfig) -> tuple[bytes, ModelConfig]:
    """Serialise weights; returns the safetensors bytes and the config with its hash set.

    Deterministic: the same weights and config give the same bytes and hash.
    """
    # clone: tensors shared by two layers (a layer used twice) are stored once each
    state = {key: value.detach().cpu().contiguous().clone() for key, value in model.state_dict().items()}
    weights = safetensors_bytes(state, metadata={"format": FORMAT, "architecture": config.architecture})
    config = dataclasses.replace(config, weights_sha256=hashlib.sha256(weights).hexdigest(), library_version=__version__)
    return weights, config


def config_with_spec(config: ModelConfig, spec: ModelSpec) -> ModelConfig:
    """``config`` with its spec fields taken from ``spec`` (the spec attached to a model is authoritative)."""
    return dataclasses.replace(
        config,
        input_shape=list(spec.input_shape), preprocessing=spec.preprocessing, dataset=spec.dataset,
        class_names=list(spec.class_names), mean=None if spec.mean is None else list(spec.mean),
        std=None if spec.std is None else list(spec.std), image_conversion=spec.image_conversion,
        name=spec.name, aliases=dict(spec.aliases),
    )


def native_config(model: nn.Module, config: ModelConfig | None = None) -> ModelConfig:
    """The config under which ``model`` is saved as native files.

    A model of a registered architecture (exactly :class:`~convscope.models.SeedCNN`
    or :class:`~convscope.models.ModelB`) is saved under that name; any other
    model is saved as ``architecture="graph"`` with its layer tree
    (:func:`convscope.models.graph.describe`) in ``config.graph``.

    Args:
        model: the model (with a spec attached, unless ``config`` is given).
        config: the config to start from; default: ``model.config`` with the spec
            fields of the attached spec, else :func:`default_config`.

    Raises:
        ModelFileError: the model cannot be described (a module with its own
            ``forward``, an unknown layer class, extra tensors); the message names
            the module and its type.
    """
    if config is None:
        spec = getattr(model, SPEC_ATTRIBUTE, None)
        config = getattr(model, "config", None)
        if isinstance(config, ModelConfig):
            config = config_with_spec(config, spec) if isinstance(spec, ModelSpec) else config
        else:
            config = default_config(model)
    for name, architecture in ARCHITECTURES.items():
        if type(model) is architecture:
            return dataclasses.replace(config, architecture=name, graph=None,
                                       layer_names=[child for child, _ in model.named_children()])
    from convscope.models.graph import GraphError, describe

    try:
        description = describe(model)
    except GraphError as exc:
        raise ModelFileError(f"this model cannot be saved as native files: {exc}") from None
    return dataclasses.replace(
        config, architecture=GRAPH_ARCHITECTURE, graph=description,
        layer_names=[name for name, _ in model.named_children()],
    )


def save_model(model: nn.Module, path: str | os.PathLike, config: ModelConfig | None = None) -> tuple[Path, Path]:
    """Write ``path.safetensors`` and ``path.json`` atomically; returns both paths.

    Registered architectures are saved by name; any other model made of standard
    layers as a ``"graph"`` model (see :func:`native_config`).

    Raises:
        ModelFileError: the model cannot be described as a layer graph (nothing is written).
    """
    weights_path, config_path = paths_for(path)
    config = native_config(model, config)
    weights, config = model_to_bytes(model, config)
    atomic_write_bytes(weights_path, weights)
    atomic_write_text(config_path, to_json(config.to_dict()))
    model.config = config
    setattr(model, SPEC_ATTRIBUTE, config.spec())
    return weights_path, config_path


def shipped_model_path() -> Path:
    """Path stem of the pretrained Model A that ships inside the package."""
    return Path(str(resources.files("convscope") / "shipped" / SHIPPED_NAME))


def _build_for(config: ModelConfig, config_path: Path) -> nn.Module:
    """A freshly built model of ``config``'s architecture (registered name or layer graph)."""
    if config.architecture == GRAPH_ARCHITECTURE:
        from convscope.models.graph import GraphError, build

        if not isinstance(config.graph, dict):
            raise ModelFileError(f"{config_path}: architecture 'graph' needs a 'graph' entry holding the layer description")
        try:
            return build(config.graph)
        except GraphError as exc:
            raise ModelFileError(f"{config_path}: {exc}") from None
    try:
        if not isinstance(config.architecture, str):
            raise ValueError(f"architecture must be a name, not {config.architecture!r}")
        return build_model(config.architecture)
    except ValueError as exc:
        raise ModelFileError(f"{config_path}: {exc} (or 'graph' with a layer description)") from exc


def _check_config_fits(config: ModelConfig, model: nn.Module, config_path: Path) -> ModelSpec:
    """Refuse a config whose recorded facts contradict its architecture; return its spec.

    A graph model fixes no input shape or class count by name: those are checked by a
    forward pass once the weights are in (:func:`load_model`)."""
    from convscope.data.preprocess import PREPROCESSING

    problems = []
    layer_names = [name for name, _ in model.named_children()]
    if config.layer_names != layer_names:
        problems.append(f"layer_names {config.layer_names} ≠ {config.architecture}'s {layer_names}")
    if isinstance(model, ConvscopeModel):
        try:
            input_shape = [int(v) for v in config.input_shape]
        except (TypeError, ValueError):
            input_shape = config.input_shape
        if input_shape != list(model.input_shape):
            problems.append(f"input_shape {config.input_shape!r} ≠ {list(model.input_shape)}")
    if config.preprocessing not in PREPROCESSING:
        problems.append(f"preprocessing {config.preprocessing!r} is not one of {PREPROCESSING}")
    if not isinstance(config.class_names, list) or (
        isinstance(model, ConvscopeModel) and len(config.class_names) != model.num_classes
    ):
        count = f"{model.num_classes} " if isinstance(model, ConvscopeModel) else ""
        problems.append(f"class_names {config.class_names!r} do not name {count}outputs")
    if problems:
        raise ModelFileError(f"{config_path} does not match architecture {config.architecture!r}: " + "; ".join(problems))
    try:
        return config.spec()
    except (SpecError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{config_path}: {exc}") from None



def state_dict_mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], limit: int = 6) -> list[str]:
    """What keeps ``state`` from loading into a module whose state dict is ``expected``:
    missing, unexpected and wrongly shaped tensors, named (at most ``limit`` of each);
    empty when it fits."""

    def few(names: list[str]) -> str:
        shown = ", ".join(repr(name) for name in names[:limit])
        return f"[{shown}, …] ({len(names)})" if len(names) > limit else f"[{shown}]"

    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    details = []
    if missing:
        details.append(f"missing tensors {few(missing)}")
    if unexpected:
        details.append(f"unexpected tensors {few(unexpected)}")
    if wrong:
        details.append("wrong shapes " + ", ".join(
            f"{k} {tuple(state[k].shape)}≠{tuple(expected[k].shape)}" for k in wrong[:limit]))
    return details

def load_model(
    path: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = "cpu",
    verify_hash: bool = True,
    allow_unverified: bool = False,
    max_abs_weight: float | None = MAX_ABS_WEIGHT,
) -> nn.Module:
    """Load a model file pair; ``path=None`` loads the shipped Model A.

    A registered architecture comes back as its class (:class:`~convscope.models.SeedCNN`,
    …); a ``"graph"`` model as the ``nn.Sequential`` tree its description builds,
    checked with one forward pass against its spec. (To load every kind of model —
    Keras files, Python factories — use :func:`convscope.models.loading.load_any`.)

    Args:
        path: ``model``, ``model.json`` or ``model.safetensors`` (the other file
            is found beside it).
        device: where to put the weights (``None``/``"auto"``: CUDA if available).
        verify_hash: refuse weights whose SHA-256 differs from the config's.
            ``False`` skips the check (with an :class:`UnverifiedWeightsWarning`).
        allow_unverified: load a config whose ``weights_sha256`` is blank, missing
            or malformed, with an :class:`UnverifiedWeightsWarning`; without it such
            a pair is refused, since nothing proves the weights are the config's.
        max_abs_weight: refuse weights with any ``|w|`` above this (finite but
            nonsense); ``None`` disables the check.

    Returns:
        The model in eval mode with ``model.config`` set.

    Raises:
        ModelFileError: missing file, unreadable / too large / too deep JSON or one
            holding NaN / Infinity, a missing or mismatched hash, unknown
            architecture, weights that do not fit the architecture or are not
            finite or of absurd magnitude, or a graph model that does not fit its
            recorded input shape and classes.
    """
    weights_path, config_path = paths_for(path if path is not None else shipped_model_path())
    for needed in (config_path, weights_path):
        if not needed.is_file():
            hint = " (the shipped model is missing: reinstall convscope)" if path is None else ""
            raise ModelFileError(f"model file {needed} not found{hint}")
    try:
        raw = read_json(config_path, max_bytes=MAX_CONFIG_BYTES)
    except JsonFileError as exc:
        raise ModelFileError(f"{exc}; not a valid model config") from None
    except OSError as exc:
        raise ModelFileError(f"{config_path}: cannot read the model config ({exc.strerror or exc})") from None
    try:
        config = ModelConfig.from_dict(raw, str(config_path))
    except TypeError as exc:
        raise ModelFileError(f"{config_path}: not a valid model config ({exc})") from exc
    model = _build_for(config, config_path)
    spec = _check_config_fits(config, model, config_path)
    expected = model.state_dict()
    # Read no more than the architecture's weights can take (float64 at most, plus
    # a header): a huge file is refused before it fills the memory.
    size_limit = 2 * sum(t.numel() * t.element_size() for t in expected.values()) + (1 << 20)
    try:
        size = weights_path.stat().st_size
        if size > size_limit:
            raise ModelFileError(
                f"{weights_path} is {size:,} bytes, far more than {config.architecture!r}'s weights need "
                f"(at most {size_limit:,}); it is not this model's weights file"
            )
        weights = weights_path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{weights_path}: cannot read the weights ({exc.strerror or exc})") from None
    if verify_hash:
        recorded = raw.get("weights_sha256")
        if not isinstance(recorded, str) or not _SHA256_HEX.fullmatch(recorded.strip().lower()):
            what = (
                "has no weights_sha256" if recorded is None
                else "has a blank weights_sha256" if isinstance(recorded, str) and not recorded.strip()
                else f"has weights_sha256 {str(recorded)[:80]!r}, not 64 hex digits"
            )
            if not allow_unverified:
                raise ModelFileError(
                    f"{config_path} {what}, so nothing shows that {weights_path.name} holds the weights it describes; "
                    "refused. Fix: use the model's original .json (save_model writes the hash), or, only if you trust "
                    "the weights, load it in Python with load_model(..., allow_unverified=True)"
                )
            warnings.warn(
                f"UNVERIFIED WEIGHTS: {config_path} {what}; {weights_path} is loaded without any integrity check "
                "(allow_unverified=True). Its recorded accuracy and history may not describe these weights.",
                UnverifiedWeightsWarning,
                stacklevel=2,
            )
        else:
            actual = hashlib.sha256(weights).hexdigest()
            if actual != recorded.strip().lower():
                raise ModelFileError(
                    f"{weights_path}: SHA-256 {actual[:12]}… does not match {config_path.name}'s {recorded[:12]}…; "
                    "the weights were changed or belong to another config"
                )
    else:
        warnings.warn(
            f"UNVERIFIED WEIGHTS: {weights_path} is loaded without checking its SHA-256 (verify_hash=False)",
            UnverifiedWeightsWarning,
            stacklevel=2,
        )
    try:
        state = st_load(weights)
    except (SafetensorError, Exception) as exc:  # safetensors raises several types for corrupt headers
        raise ModelFileError(f"{weights_path}: not a readable safetensors file ({exc})") from exc
    details = state_dict_mismatch(expected, state)
    if details:
        raise ModelFileError(f"{weights_path} does not fit architecture {config.architecture!r}: " + "; ".join(details))
    # floating tensors where the model holds floats (integers only for counters such as BatchNorm's)
    bad_dtype = [k for k, v in state.items() if v.is_floating_point() != expected[k].is_floating_point()]
    if bad_dtype:
        raise ModelFileError(f"{weights_path}: tensors {bad_dtype} are not floating point where the model holds floats; not convscope weights")
    not_finite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not_finite:
        raise ModelFileError(f"{weights_path}: tensors {not_finite} hold NaN or infinite values")
    if max_abs_weight is not None:
        huge = {k: float(v.abs().max()) for k, v in state.items() if v.numel() and float(v.abs().max()) > max_abs_weight}
        if huge:
            worst = max(huge, key=huge.get)
            raise ModelFileError(
                f"{weights_path}: {len(huge)} tensor(s) hold values of absurd magnitude (largest |w| = {huge[worst]:.3g} "
                f"in {worst}; trained weights stay far below {max_abs_weight:g}); the file is damaged or was scaled by mistake"
            )
    model.load_state_dict(state)
    model.config = config
    model.eval()
    if not isinstance(model, ConvscopeModel):
        try:
            check_model_fits(model, spec)
        except SpecError as exc:
            raise ModelFileError(f"{config_path}: {exc}") from None
    setattr(model, SPEC_ATTRIBUTE, spec)
    return model.to(resolve_device(device))
