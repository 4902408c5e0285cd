"""Options and helpers shared by the CLI commands (the only layer besides the
report that touches the disk)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
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


def model_option(func: F) -> F:
    """``--model FILE``: a convscope model file (default: the shipped Model A)."""
    return click.option(
        "--model",
        "model_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Model file (NAME.json or NAME.safetensors). Default: the shipped Model A.",
    )(func)


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


def device_option(func: F) -> F:
    """``--device``: cpu / cuda / auto."""
    return click.option(
        "--device", default="auto", show_default=True, help="Compute device: auto (CUDA if available), cpu, cuda, cuda:N."
    )(func)


def json_option(func: F) -> F:
    """``--json``: print the result as JSON on stdout instead of a human summary."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (for scripts).")(func)


def out_option(default: str) -> Callable[[F], F]:
    """``--out DIR``: output folder."""

    def decorate(func: F) -> F:
        return click.option(
            "--out",
            "out_dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path(default),
            show_default=True,
            help="Output folder (created if needed).",
        )(func)

    return decorate


def emit_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout."""
    click.echo(to_json(data), nl=False)


def fail(message: str) -> None:
    """Stop with one clear error message ('Error: ...') and exit status 1, no traceback.
    (click's own usage errors, e.g. a bad option value, exit with status 2.)"""
    raise click.ClickException(message)


def load_model_or_fail(model_path: Path | None, device: str = "cpu"):
    """Load a model file or stop with a clear message."""
    from convscope.device import resolve_device
    from convscope.models import ModelFileError, load_model

    try:
        return load_model(model_path, device=resolve_device(device))
    except (ModelFileError, ValueError) as exc:
        fail(str(exc))


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
    "FiniteFloatRange", "data_dir_option", "device_option", "echo_err", "emit_json", "fail", "json", "json_option",
    "load_model_or_fail", "model_option", "out_option", "sys",
]
