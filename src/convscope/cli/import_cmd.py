"""``convscope import``: turn any model convscope can load (a Keras file, a Python
factory, native files) into native files NAME.safetensors + NAME.json."""

from __future__ import annotations

import re
from pathlib import Path

import click

from convscope.cli.common import (
    default_lines, echo_err, emit_json, fail, json_option, model_args, open_model_or_fail, out_option, spec_options,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def _default_name(source: str, kind: str) -> str:
    """The file stem to write: the Keras / native file's stem, a factory's function name."""
    from convscope.models.loading import DEFAULT_MODEL

    if kind == "python":
        return source.rsplit(":", 1)[1]
    stem = Path(source).name if source else DEFAULT_MODEL
    for suffix in (".json", ".safetensors", ".h5", ".hdf5", ".keras"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", stem).lstrip("_-")
    return stem or "model"


@click.command("import")
@click.argument("source", metavar="SRC")
@out_option(None, required=True, help="Folder for NAME.safetensors + NAME.json (created if needed).")
@click.option("--name", default=None,
              help="File name (letters, digits, _ and -) and display name. Default: SRC's stem (a factory: its "
                   "function's name).")
@click.option("--force", is_flag=True, help="Replace NAME.safetensors / NAME.json if they exist.")
@spec_options
@json_option
def import_command(source: str, out_dir: Path, name: str | None, force: bool, as_json: bool) -> None:
    """Save a model as convscope's native files (weights + JSON spec), so every command
    can load it fast, without TensorFlow or its Python code.

    SRC is a Keras .h5 / .keras file (Keras 2 or 3), a Python factory FILE.py:FUNCTION
    (with --weights), native files (to change their spec), or a shipped name. A Keras
    file records no preprocessing, class names or dataset: give them with --preprocess,
    --class-names, --model-dataset …; the fields left out take documented defaults and
    are listed. The JSON records where the model came from (file, SHA-256, Keras
    version or factory). A factory model can be saved only when it is a plain
    nn.Sequential of standard layers; otherwise keep using --model FILE.py:FUNCTION.

    \b
    Examples:
      convscope import cnn.h5 --out models/ --preprocess standardize
      convscope import net.py:build --weights net.pt --out models/ --input-shape 3,32,32 \\
          --class-names-file classes.txt --preprocess meanstd --mean 0.49,0.48,0.45 --std 0.25,0.24,0.26
      convscope summary --model models/cnn.json
    """
    import torch

    from convscope.cli.output import writing
    from convscope.models import ModelFileError, load_model
    from convscope.models.files import native_config, paths_for, save_model
    from convscope.spec import SPEC_ATTRIBUTE

    if name is not None and not _NAME.match(name):
        raise click.BadParameter(f"{name!r}: use letters, digits, _ and - only (no folder, no suffix)",
                                 param_hint="--name")
    spec_fields = dict(model_args().spec_fields)
    if name is not None:
        spec_fields["name"] = name
    loaded = open_model_or_fail(source, "cpu", spec_fields=spec_fields, quiet=True)
    model = loaded.model
    stem = name or _default_name(source, loaded.kind)
    weights_path, config_path = paths_for(out_dir / stem)
    try:
        config = native_config(model)
    except ModelFileError as exc:
        hint = f"; keep loading it with --model {source}" if loaded.kind == "python" else ""
        fail(f"{source}: {exc}{hint}")
    existing = [str(p) for p in (weights_path, config_path) if p.exists()]
    if existing and not force:
        fail(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; pass --force to replace, "
             "or choose another --name / --out")
    with writing(out_dir, what="the model files"):  # both files or neither
        save_model(model, out_dir / stem, config)

    # read the files back: the native model must compute exactly what was loaded
    try:
        again = load_model(config_path)
    except ModelFileError as exc:  # pragma: no cover - a save/load bug
        _remove(weights_path, config_path)
        fail(f"internal error: the written files do not load ({exc}); nothing was kept")
    spec = getattr(model, SPEC_ATTRIBUTE)
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn((4, *spec.input_shape), generator=generator)
    with torch.no_grad():
        from convscope.spec import model_output

        difference = float((model_output(again(probe)) - model_output(model(probe))).abs().max())
    if difference > 1e-5:  # pragma: no cover - a save/load bug
        _remove(weights_path, config_path)
        fail(f"internal error: the native files compute other numbers (max difference {difference:g}); nothing was kept")

    config = again.config
    parameters = sum(p.numel() for p in model.parameters())
    keras_parameters = None
    keras_layers = (config.source or {}).get("keras_layers")
    if isinstance(keras_layers, list):
        keras_parameters = sum(int(row.get("params", 0)) for row in keras_layers)
    if as_json:
        emit_json({
            "source": source,
            "kind": loaded.kind,
            "files": {"weights": str(weights_path), "config": str(config_path)},
            "parameters": parameters,
            "keras_parameters": keras_parameters,
            "defaults": loaded.defaults,
            "config": config.to_dict(),
        })
        return
    origin = config.source or {}
    if loaded.kind == "keras":
        version = f", Keras {origin.get('keras_version')}" if origin.get("keras_version") else ""
        click.echo(f"Imported {source} (Keras {origin.get('format')}{version}; SHA-256 {str(origin.get('sha256'))[:16]}…)")
    elif loaded.kind == "python":
        click.echo(f"Imported {source}" + (f" with weights {origin['weights']}" if origin.get("weights") else ""))
    else:
        click.echo(f"Imported {loaded.label}")
    click.echo(f"Wrote {weights_path} and {config_path} (architecture {config.architecture})")
    counted = f"{parameters:,}"
    if keras_parameters is not None and keras_parameters != parameters:
        counted += f" (Keras counts {keras_parameters:,}: BatchNormalization's moving statistics included)"
    click.echo(f"Parameters: {counted}")
    names = spec.class_names
    shown = ", ".join(names) if len(names) <= 10 else f"{', '.join(names[:8])}, …, {names[-1]}"
    stats = f" (mean {list(spec.mean)}, std {list(spec.std)})" if spec.preprocessing == "meanstd" else ""
    click.echo(
        f"Spec: input {'×'.join(map(str, spec.input_shape))}, {spec.num_classes} classes ({shown}), "
        f"preprocessing {spec.preprocessing}{stats}, dataset {spec.dataset or 'none'}, "
        f"image conversion {spec.image_conversion}"
    )
    for line in default_lines(loaded):
        click.echo(f"  {line}")
    for note in loaded.notes:
        echo_err(f"note: {note}")
    click.echo(f"Use it with: convscope summary --model {config_path}")


def _remove(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except OSError:
            pass


__all__ = ["import_command"]
