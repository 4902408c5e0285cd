"""Options and helpers shared by the CLI commands (the only layer besides the
report that touches the disk)."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from convscope.io import to_json

F = TypeVar("F", bound=Callable[..., Any])


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` and ``±inf`` (which the plain
    range lets through: every comparison with nan is false)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


#: Largest --num-classes (the names 0..N-1 are made in memory; ImageNet-21k has 21,841).
MAX_CLASSES = 100_000

#: Seeds: whole numbers 0 .. 2**63 - 1 (a negative seed is refused, not silently hashed).
SEED = click.IntRange(0, 2**63 - 1)

MODEL_HELP = (
    "The model: a shipped name (seed_cnn = Model A, fast recipe; reference = the posts' recipe); convscope files NAME.json / NAME.safetensors; a Keras .h5 or "
    ".keras file; or FILE.py:FUNCTION, a Python function returning an nn.Module (weights: --weights). "
    "Default: the shipped Model A."
)
_MODEL_ARGS_KEY = "convscope.model_args"
_MODEL_ARGS_USED_KEY = "convscope.model_args_used"
# click parameter name -> spec field (the flags themselves are in _spec_flag_options)
_SPEC_PARAMS = {
    "spec_input_shape": "input_shape", "spec_class_names": "class_names", "spec_num_classes": "num_classes",
    "spec_preprocess": "preprocessing", "spec_mean": "mean", "spec_std": "std",
    "spec_image_conversion": "image_conversion", "spec_model_dataset": "dataset",
}
_MODEL_PARAMS = ("model_weights", "spec_class_names_file", *_SPEC_PARAMS)


class _IntTupleType(click.ParamType):
    """``C,H,W`` (``x`` also separates): three positive whole numbers."""

    name = "C,H,W"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int, int]:
        if isinstance(value, tuple):
            return value
        parts = [part.strip() for part in str(value).replace("x", ",").replace("×", ",").split(",")]
        try:
            numbers = tuple(int(part) for part in parts)
        except ValueError:
            self.fail(f"{value!r} is not three whole numbers C,H,W (e.g. 1,28,28 or 3,32,32)", param, ctx)
        if len(numbers) != 3 or any(n < 1 for n in numbers):
            self.fail(f"{value!r} is not three positive numbers C,H,W (e.g. 1,28,28 or 3,32,32)", param, ctx)
        return numbers  # type: ignore[return-value]


class _FloatListType(click.ParamType):
    """Comma-separated numbers, one per channel."""

    name = "V[,V,V]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(float(part) for part in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not comma-separated numbers (e.g. 0.485,0.456,0.406)", param, ctx)
        if not all(math.isfinite(n) for n in numbers):
            self.fail(f"{value!r}: the numbers must be finite", param, ctx)
        return numbers


class _NameListType(click.ParamType):
    """Comma-separated class names."""

    name = "NAME,NAME,..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        return _class_name_list([part.strip() for part in str(value).split(",")], f"{value!r}", lambda m: self.fail(m, param, ctx))


def _class_name_list(names: list[str], where: str, fail_with: Callable[[str], Any]) -> tuple[str, ...]:
    if not names or any(not name for name in names):
        fail_with(f"{where}: give one non-empty name per class, separated by commas")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        fail_with(f"{where}: class names must differ; repeated: {', '.join(repeated)}")
    return tuple(names)


@dataclass(frozen=True)
class ModelArgs:
    """The model flags of one command: ``--weights`` and the spec fields given on the
    command line (keys of :data:`convscope.models.loading.SPEC_FLAGS`; absent = not given)."""

    weights: Path | None = None
    spec_fields: dict[str, Any] = field(default_factory=dict)


def _model_args(values: dict[str, Any]) -> ModelArgs:
    """Check the flags against each other (usage errors name the flags) and collect them."""
    fields = {spec: values[param] for param, spec in _SPEC_PARAMS.items() if values.get(param) is not None}
    names_file = values.get("spec_class_names_file")
    if names_file is not None:
        if "class_names" in fields:
            raise click.UsageError("give --class-names or --class-names-file, not both")
        try:
            lines = names_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"cannot read {names_file}: {exc}", param_hint="--class-names-file") from None

        def bad(message: str) -> None:
            raise click.BadParameter(message, param_hint="--class-names-file")

        fields["class_names"] = _class_name_list([line.strip() for line in lines if line.strip()], str(names_file), bad)
    if "class_names" in fields and "num_classes" in fields and len(fields["class_names"]) != fields["num_classes"]:
        raise click.UsageError(
            f"--num-classes {fields['num_classes']} disagrees with the {len(fields['class_names'])} class names given"
        )
    has_stats = [flag for flag, key in (("--mean", "mean"), ("--std", "std")) if key in fields]
    if fields.get("preprocessing") == "meanstd":
        missing = [flag for flag, key in (("--mean", "mean"), ("--std", "std")) if key not in fields]
        if missing:
            raise click.UsageError(f"--preprocess meanstd needs {' and '.join(missing)} (one value per channel, 0..1 scale)")
        if len(fields["mean"]) != len(fields["std"]):
            raise click.UsageError(f"--mean has {len(fields['mean'])} values but --std has {len(fields['std'])}")
        if any(v <= 0 for v in fields["std"]):
            raise click.BadParameter("the values must be positive", param_hint="--std")
    elif has_stats:
        raise click.UsageError(f"{' and '.join(has_stats)} apply to --preprocess meanstd only")
    return ModelArgs(weights=values.get("model_weights"), spec_fields=fields)


def model_args() -> ModelArgs:
    """The model flags of the running command (empty outside one, or without :func:`spec_options`)."""
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if _MODEL_ARGS_KEY in ctx.meta:
            ctx.meta[_MODEL_ARGS_USED_KEY] = True
            return ctx.meta[_MODEL_ARGS_KEY]
        ctx = ctx.parent
    return ModelArgs()


def spec_options(func: F) -> F:
    """``--weights`` and the spec flags (``--input-shape``, ``--class-names``,
    ``--class-names-file``, ``--num-classes``, ``--preprocess``, ``--mean``, ``--std``,
    ``--image-conversion``, ``--model-dataset``).

    The command function does not receive them: they are checked (bad values and
    conflicting flags are click usage errors naming the flag) and kept for
    :func:`load_model_or_fail` / :func:`model_args`.
    """
    from convscope.models.loading import SPEC_FLAGS
    from convscope.spec import CONVERSIONS, PREPROCESSINGS

    @functools.wraps(func)
    def collect(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in _MODEL_PARAMS if name in kwargs}
        ctx = click.get_current_context()
        given = ctx.meta[_MODEL_ARGS_KEY] = _model_args(values)
        result = func(*args, **kwargs)
        if (given.weights is not None or given.spec_fields) and not ctx.meta.get(_MODEL_ARGS_USED_KEY):
            # a command that loads its model another way: never let the flags be ignored silently
            flags = (["--weights"] if given.weights is not None else []) + [
                "--class-names" if key == "class_names" else SPEC_FLAGS[key] for key in given.spec_fields]
            echo_err(f"warning: this command did not read {', '.join(flags)}; "
                     f"{'it was' if len(flags) == 1 else 'they were'} ignored")
        return result

    # applied last first: --help lists them in this order
    options = [
        click.option("--model-dataset", "spec_model_dataset", metavar="NAME|PATH", default=None,
                     help="[model spec] The dataset the model was trained on (a name such as mnist, "
                          "fashion-mnist, or a path)."),
        click.option("--image-conversion", "spec_image_conversion", type=click.Choice(CONVERSIONS), default=None,
                     help="[model spec] How image files become inputs: digit (MNIST-style), resize, crop, none."),
        click.option("--std", "spec_std", type=_FloatListType(), default=None,
                     help="[model spec] Per-channel std for --preprocess meanstd (0..1 scale)."),
        click.option("--mean", "spec_mean", type=_FloatListType(), default=None,
                     help="[model spec] Per-channel mean for --preprocess meanstd (0..1 scale)."),
        click.option("--preprocess", "spec_preprocess", type=click.Choice(PREPROCESSINGS), default=None,
                     help="[model spec] How pixels become inputs: standardize (per image), unit (x/255), "
                          "meanstd (x/255, then per channel), raw."),
        click.option("--num-classes", "spec_num_classes", type=click.IntRange(1, MAX_CLASSES), default=None, metavar="N",
                     help="[model spec] Number of classes (named 0..N-1)."),
        click.option("--class-names-file", "spec_class_names_file",
                     type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                     help="[model spec] Class names, one per line."),
        click.option("--class-names", "spec_class_names", type=_NameListType(), default=None,
                     help="[model spec] Class names, in output order."),
        click.option("--input-shape", "spec_input_shape", type=_IntTupleType(), default=None,
                     help="[model spec] Input of one image, channels first (e.g. 1,28,28 or 3,32,32)."),
        click.option("--weights", "model_weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Weights for a FILE.py:FUNCTION model: .safetensors or a state_dict .pt/.pth "
                          "(never unpickled)."),
    ]
    for option in options:
        collect = option(collect)
    return collect  # type: ignore[return-value]


def model_option(func: F) -> F:
    """``--model MODEL`` (any form :func:`convscope.models.loading.load_any` accepts; default:
    the shipped Model A; the command receives it as ``model_path``, a string or ``None``),
    plus ``--weights`` and the spec flags (:func:`spec_options`)."""
    decorated = spec_options(func)
    return click.option("--model", "model_path", metavar="MODEL", default=None, help=MODEL_HELP)(decorated)


def data_dir_option(func: F) -> F:
    """``--data-dir DIR``: where the dataset IDX files are."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        # Not envvar=CONVSCOPE_DATA: the data search reads that variable itself and, unlike
        # an explicit folder, lets it hold several datasets (mnist/, fashion-mnist/).
        help="Folder with the MNIST IDX files (raw or .gz). Default: $CONVSCOPE_DATA, system copies, "
        "the user cache, else download.",
    )(func)


def checked_device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback of ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` that this
    machine has; anything else is a usage error naming the choices."""
    if value is None or ctx.resilient_parsing:
        return value
    from convscope.device import DeviceError, check_device

    try:
        check_device(value)
    except DeviceError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


def device_option(func: F) -> F:
    """``--device``: auto / cpu / cuda / cuda:N, checked while the command line is read."""
    return click.option(
        "--device", default="auto", show_default=True, callback=checked_device,
        help="Compute device: auto (CUDA if available), cpu, cuda, cuda:N.",
    )(func)


def json_option(func: F) -> F:
    """``--json``: print the result as JSON on stdout instead of a human summary."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (for scripts).")(func)


def checked_folder(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Click callback of every output-folder option: the folder must be writable
    (:func:`convscope.cli.output.check_output_folder`), checked while the command
    line is read, so before any work; stale ``.part`` files there are removed."""
    if value is not None and not ctx.resilient_parsing:
        from convscope.cli.output import check_output_folder

        check_output_folder(Path(value), flag=max(param.opts, key=len) if param.opts else "--out")
    return value


def out_option(default: str | None, *, help: str = "Output folder (created if needed).",
               required: bool = False) -> Callable[[F], F]:
    """``--out DIR``: output folder, checked before any work (:func:`checked_folder`)."""

    def decorate(func: F) -> F:
        return click.option(
            "--out",
            "out_dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path(default) if default is not None else None,
            show_default=default is not None,
            required=required,
            callback=checked_folder,
            help=help,
        )(func)

    return decorate


def short(text: Any, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters for messages (the length is said)."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 20] + f"… ({len(text):,} characters)"


def emit_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout."""
    click.echo(to_json(data), nl=False)


def fail(message: str) -> None:
    """Stop with one clear error message ('Error: ...') and exit status 1, no traceback.
    (click's own usage errors, e.g. a bad option value, exit with status 2.)"""
    raise click.ClickException(message)


_FROM_COMMAND: Any = object()
_FIELD_LABELS = {
    "preprocessing": ("Preprocessing", "--preprocess"),
    "class_names": ("Class names", "--class-names or --class-names-file"),
    "dataset": ("Model dataset", "--model-dataset"),
    "image_conversion": ("Image conversion", "--image-conversion"),
}


def default_lines(loaded: Any) -> list[str]:
    """One line per spec field that took a default, e.g.
    ``"Preprocessing: unit (default; pass --preprocess to change)"``."""
    lines = []
    for key, (label, flag) in _FIELD_LABELS.items():
        if key not in loaded.defaults:
            continue
        value = loaded.defaults[key]
        if key == "class_names":
            value = ", ".join(value) if len(value) <= 4 else f"{value[0]}, {value[1]}, …, {value[-1]}"
        why, action = "default", "to change"
        if key == "dataset" and value == "mnist":
            why = "default for 1×28×28 inputs with 10 classes"
        elif key == "dataset" and value is None:
            value, action = "none", "to name it (commands then default to it)"
        lines.append(f"{label}: {value} ({why}; pass {flag} {action})")
    return lines


def open_model_or_fail(
    model_path: str | os.PathLike | None,
    device: str = "cpu",
    *,
    weights: Any = _FROM_COMMAND,
    spec_fields: Any = _FROM_COMMAND,
    quiet: bool = False,
):
    """Load any model (:func:`convscope.models.loading.open_model`) or stop with one clear line.

    ``weights`` and ``spec_fields`` default to the running command's flags
    (:func:`model_args`). Unless ``quiet``, prints to stderr which spec fields were
    defaults (and other notes). Returns the :class:`~convscope.models.loading.LoadedModel`.
    """
    from convscope.models import ModelFileError
    from convscope.models.loading import open_model

    given = model_args()
    try:
        loaded = open_model(
            model_path,
            weights=given.weights if weights is _FROM_COMMAND else weights,
            spec_fields=given.spec_fields if spec_fields is _FROM_COMMAND else spec_fields,
            device=device,
        )
    except (ModelFileError, ValueError) as exc:
        fail(str(exc))
    if not quiet:
        lines = default_lines(loaded)
        if lines:
            echo_err(f"{loaded.label}: using defaults for spec fields it does not record:")
            for line in lines:
                echo_err(f"  {line}")
        for note in loaded.notes:
            echo_err(f"note: {note}")
    return loaded


def load_model_or_fail(model_path: str | os.PathLike | None = None, device: str = "cpu", **options: Any):
    """Load any model or stop with a clear message; returns the model (spec attached).

    ``load_model_or_fail(model_path, device)`` takes ``--weights`` and the spec flags
    from the running command; pass ``weights=`` / ``spec_fields=`` / ``quiet=`` to
    override (see :func:`open_model_or_fail`).
    """
    return open_model_or_fail(model_path, device, **options).model


def dataset_option(func: F) -> F:
    """``--dataset NAME_OR_PATH``: the data a command reads (default: the model's own)."""
    return click.option(
        "--dataset",
        "dataset",
        default=None,
        metavar="NAME_OR_PATH",
        help="Dataset for test:N / train:N and dataset-wide work: mnist, fashion-mnist, an IDX folder, a folder with "
        "one sub-folder of images per class, or a .npz file. Default: the model's own dataset (its spec).",
    )(func)


def model_split_or_fail(model, split: str = "test", dataset: str | None = None, data_dir: Path | None = None):
    """Split ``split`` of ``dataset`` (default: the model's own) checked against the
    model's spec, or stop with one clear message."""
    from convscope.data import DataNotFoundError, DatasetError, IdxError
    from convscope.data.catalog import split_for_model
    from convscope.spec import SpecError, spec_of

    try:
        return split_for_model(spec_of(model), split, dataset, data_dir)
    except (DataNotFoundError, DatasetError, IdxError, SpecError, OSError) as exc:
        fail(str(exc))


def echo_err(message: str) -> None:
    """Print to stderr (keeps stdout clean for --json)."""
    click.echo(message, err=True)


__all__ = [
    "FiniteFloatRange", "MODEL_HELP", "SEED", "ModelArgs", "checked_folder", "data_dir_option", "dataset_option", "default_lines", "device_option",
    "echo_err", "emit_json", "fail", "json", "json_option", "load_model_or_fail", "model_args", "model_option",
    "model_split_or_fail", "open_model_or_fail", "out_option", "short", "spec_options", "sys",
]
