"""``convscope evaluate`` (accuracy, per-class accuracy, confusion matrix, misclassified
images) and ``convscope summary`` (Keras-style layer table)."""

from __future__ import annotations

from pathlib import Path

import click

from convscope.cli.common import (
    data_dir_option,
    dataset_option,
    device_option,
    emit_json,
    fail,
    json_option,
    load_model_or_fail,
    model_option,
    model_split_or_fail,
    out_option,
)
from convscope.cli.inside_cmd import check_length, model_label, prepare_out, run_use_case


def explicit_data_dir(data_dir: Path | None) -> Path | None:
    """``--data-dir`` only when typed on the command line (kept for callers; the
    option no longer reads ``$CONVSCOPE_DATA`` itself: the data search does)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.get_parameter_source("data_dir") == click.core.ParameterSource.ENVIRONMENT:
        return None
    return data_dir


def load_split_or_fail(split: str, dataset: str, data_dir: Path | None):
    """Load a dataset split or stop with one clear line naming the problem."""
    from convscope.data import DataNotFoundError, DatasetError, IdxError, load_split

    try:
        return load_split(split, dataset, explicit_data_dir(data_dir))
    except (DataNotFoundError, DatasetError, IdxError, ValueError, OSError) as exc:
        fail(str(exc))


@click.command("evaluate")
@model_option
@dataset_option
@data_dir_option
@click.option(
    "--split", type=click.Choice(["test", "train"]), default="test", show_default=True, help="Which split to score."
)
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Images per forward pass.")
@device_option
@out_option("convscope-out/evaluate")
@click.option("--no-plot", is_flag=True, help="Skip the confusion-matrix PNG (JSON and CSV are still written).")
@json_option
def evaluate(
    model_path: Path | None,
    dataset: str | None,
    data_dir: Path | None,
    split: str,
    batch_size: int,
    device: str,
    out_dir: Path,
    no_plot: bool,
    as_json: bool,
) -> None:
    """Score a model on a whole split: accuracy, per-class accuracy, confusion matrix
    (class names from the model, any class count), the most confused class pair and
    the indices of every misclassified image (in the dataset's order, so
    `convscope predict test:INDEX` shows one).

    Writes into --out: confusion.png (counts; colour = share of the true class),
    evaluation.json (all figures + misclassified indices) and misclassified.csv
    (index, true, predicted, confidence). With no options it scores the shipped
    Model A on the 10,000 MNIST test images; --dataset scores another dataset of
    the same image size and class count.

    \b
    Examples:
      convscope evaluate
      convscope evaluate --model runs/fast/model.json --out results/ --json
      convscope evaluate --data-dir ~/mnist --split train
    """
    from convscope.app import inside

    check_length(dataset, "--dataset")
    prepare_out(out_dir)  # fail before the long work, not after it
    model = load_model_or_fail(model_path, device)
    data = model_split_or_fail(model, split, dataset, data_dir)
    run_use_case(inside.evaluate, model, data, batch_size=batch_size, model_label=model_label(model_path),
                 out_dir=out_dir, as_json=as_json, figures=not no_plot)


@click.command("summary")
@model_option
@click.option(
    "--architecture",
    type=click.Choice(["seed_cnn", "model_b"]),
    default=None,
    help="Summarise a freshly built architecture instead of a model file (seed_cnn = Model A).",
)
@json_option
def summary_command(model_path: Path | None, architecture: str | None, as_json: bool) -> None:
    """Keras-style table of a model: layer name, type, output shape (per sample,
    channels first), parameter count, and totals (Model A: 208,982; Model B: 113,514).

    \b
    Examples:
      convscope summary                       # the shipped Model A
      convscope summary --architecture model_b
      convscope summary --model runs/fast/model.json --json
    """
    from convscope.models import build_model, summary, summary_table
    from convscope.spec import spec_of

    if model_path is not None and architecture is not None:
        fail("give either --model or --architecture, not both")
    if architecture is not None:
        model = build_model(architecture)
        source = f"architecture {architecture} (untrained)"
    else:
        model = load_model_or_fail(model_path, "cpu")
        source = model_label(model_path)
    spec = spec_of(model)
    config = getattr(model, "config", None)
    table = summary_table(model)
    if as_json:
        emit_json(
            {
                "source": source,
                "architecture": getattr(model, "architecture", None) or getattr(config, "architecture", None),
                "input_shape": list(spec.input_shape),
                "layers": [
                    {"name": r.name, "type": r.kind, "output_shape": list(r.output_shape), "params": r.params}
                    for r in table.rows
                ],
                "layer_table": "keras" if table.keras else "modules",
                "total_params": table.total,
                "trainable_params": table.trainable,
                "non_trainable_params": table.total - table.trainable,
                "config": config.to_dict() if config is not None else None,
            }
        )
        return
    click.echo(summary(model))
    if config is not None:
        accuracy = f"{100 * config.test_accuracy:.2f} %" if config.test_accuracy is not None else "not recorded"
        click.echo(
            f"Source: {source}; input {tuple(spec.input_shape)} {spec.preprocessing}; "
            f"trained on {spec.dataset or 'an unrecorded dataset'}; recorded test accuracy {accuracy}"
        )


__all__ = ["evaluate", "explicit_data_dir", "load_split_or_fail", "summary_command"]
