"""Model files: ``NAME.safetensors`` (weights) + ``NAME.json`` (config).

Loading never unpickles or executes anything: the JSON names a registered
architecture, the weights are plain tensors checked key by key and shape by shape,
and the JSON records the SHA-256 of the weights file so a tampered or mismatched
pair is refused with a clear error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from convscope import __version__
from convscope.device import resolve_device
from convscope.io import atomic_write_bytes, to_json, atomic_write_text
from convscope.models.architectures import ConvscopeModel, build_model
from convscope.spec import SPEC_ATTRIBUTE, ModelSpec, SpecError, spec_of

FORMAT = "convscope-model/1"
SHIPPED_NAME = "seed_cnn"


class ModelFileError(ValueError):
    """A model file that is missing, tampered with, or does not match its config."""


def conversion_for(dataset: str | None, input_shape: list[int] | tuple[int, ...]) -> str:
    """The default image-file conversion for a model trained on ``dataset``: MNIST-style
    digits for MNIST, a plain resize for everything else."""
    return "digit" if dataset == "mnist" and list(input_shape) == [1, 28, 28] else "resize"


@dataclass
class ModelConfig:
    """Everything needed to rebuild and correctly feed a model: the saved form of its
    :class:`~convscope.spec.ModelSpec` plus its architecture and provenance.

    Attributes:
        architecture: registry name (``seed_cnn`` = Model A, ``model_b``).
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
        source: provenance of an imported model (file, SHA-256, format).
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
    training: dict[str, Any] = field(default_factory=dict)
    test_accuracy: float | None = None
    library_version: str = __version__
    weights_sha256: str = ""
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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


def model_to_bytes(model: ConvscopeModel, config: ModelConfig) -> tuple[bytes, ModelConfig]:
    """Serialise weights; returns the safetensors bytes and the config with its hash set."""
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    weights = st_save(state, metadata={"format": FORMAT, "architecture": config.architecture})
    config = dataclasses.replace(config, weights_sha256=hashlib.sha256(weights).hexdigest(), library_version=__version__)
    return weights, config


def save_model(model: ConvscopeModel, path: str | os.PathLike, config: ModelConfig | None = None) -> tuple[Path, Path]:
    """Write ``path.safetensors`` and ``path.json`` atomically; returns both paths."""
    config = config or getattr(model, "config", None) or default_config(model)
    weights, config = model_to_bytes(model, config)
    weights_path, config_path = paths_for(path)
    atomic_write_bytes(weights_path, weights)
    atomic_write_text(config_path, to_json(config.to_dict()))
    model.config = config
    setattr(model, SPEC_ATTRIBUTE, config.spec())
    return weights_path, config_path


def shipped_model_path() -> Path:
    """Path stem of the pretrained Model A that ships inside the package."""
    return Path(str(resources.files("convscope") / "shipped" / SHIPPED_NAME))


def _check_config_fits(config: ModelConfig, model: ConvscopeModel, config_path: Path) -> ModelSpec:
    """Refuse a config whose recorded facts contradict its architecture; return its spec."""
    from convscope.data.preprocess import PREPROCESSING

    problems = []
    if config.layer_names != model.layer_names:
        problems.append(f"layer_names {config.layer_names} ≠ {config.architecture}'s {model.layer_names}")
    try:
        input_shape = [int(v) for v in config.input_shape]
    except (TypeError, ValueError):
        input_shape = config.input_shape
    if input_shape != list(model.input_shape):
        problems.append(f"input_shape {config.input_shape!r} ≠ {list(model.input_shape)}")
    if config.preprocessing not in PREPROCESSING:
        problems.append(f"preprocessing {config.preprocessing!r} is not one of {PREPROCESSING}")
    if not isinstance(config.class_names, list) or len(config.class_names) != model.num_classes:
        problems.append(f"class_names {config.class_names!r} do not name {model.num_classes} outputs")
    if problems:
        raise ModelFileError(f"{config_path} does not match architecture {config.architecture!r}: " + "; ".join(problems))
    try:
        return config.spec()
    except (SpecError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{config_path}: {exc}") from None


def load_model(
    path: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = "cpu",
    verify_hash: bool = True,
) -> ConvscopeModel:
    """Load a model file pair; ``path=None`` loads the shipped Model A.

    Args:
        path: ``model``, ``model.json`` or ``model.safetensors`` (the other file
            is found beside it).
        device: where to put the weights (``None``/``"auto"``: CUDA if available).
        verify_hash: refuse weights whose SHA-256 differs from the config's.

    Returns:
        The model in eval mode with ``model.config`` set.

    Raises:
        ModelFileError: missing file, unreadable JSON/safetensors, hash mismatch,
            unknown architecture, or weights that do not fit the architecture.
    """
    weights_path, config_path = paths_for(path if path is not None else shipped_model_path())
    for needed in (config_path, weights_path):
        if not needed.is_file():
            hint = " (the shipped model is missing: reinstall convscope)" if path is None else ""
            raise ModelFileError(f"model file {needed} not found{hint}")
    try:
        config = ModelConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")), str(config_path))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        raise ModelFileError(f"{config_path}: not a valid model config ({exc})") from exc
    weights = weights_path.read_bytes()
    if verify_hash and config.weights_sha256:
        actual = hashlib.sha256(weights).hexdigest()
        if actual != config.weights_sha256:
            raise ModelFileError(
                f"{weights_path}: SHA-256 {actual[:12]}… does not match {config_path.name}'s {config.weights_sha256[:12]}…; "
                "the weights were changed or belong to another config"
            )
    try:
        state = st_load(weights)
    except (SafetensorError, Exception) as exc:  # safetensors raises several types for corrupt headers
        raise ModelFileError(f"{weights_path}: not a readable safetensors file ({exc})") from exc
    try:
        if not isinstance(config.architecture, str):
            raise ValueError(f"architecture must be a name, not {config.architecture!r}")
        model = build_model(config.architecture)
    except ValueError as exc:
        raise ModelFileError(f"{config_path}: {exc}") from exc
    spec = _check_config_fits(config, model, config_path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing tensors {missing}")
        if unexpected:
            details.append(f"unexpected tensors {unexpected}")
        if wrong:
            details.append("wrong shapes " + ", ".join(f"{k} {tuple(state[k].shape)}≠{tuple(expected[k].shape)}" for k in wrong))
        raise ModelFileError(f"{weights_path} does not fit architecture {config.architecture!r}: " + "; ".join(details))
    bad_dtype = [k for k, v in state.items() if not v.is_floating_point()]
    if bad_dtype:
        raise ModelFileError(f"{weights_path}: tensors {bad_dtype} are not floating point; not convscope weights")
    not_finite = [k for k, v in state.items() if not bool(torch.isfinite(v).all())]
    if not_finite:
        raise ModelFileError(f"{weights_path}: tensors {not_finite} hold NaN or infinite values")
    model.load_state_dict(state)
    model.config = config
    setattr(model, SPEC_ATTRIBUTE, spec)
    model.eval()
    return model.to(resolve_device(device))
