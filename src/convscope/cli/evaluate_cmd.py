"""``convscope evaluate`` (accuracy, per-class accuracy, confusion matrix, misclassified
images) and ``convscope summary`` (Keras-style layer table)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from convscope.cli.common import (
    data_dir_option,
    device_option,
    echo_err,
    emit_json,
    fail,
    json_option,
    load_model_or_fail,
    model_option,
    out_option,
)


def explicit_data_dir(data_dir: Path | None) -> Path | None:
    """``--data-dir`` only when typed on the command line.

    The shared option also reads ``$CONVSCOPE_DATA``; the data search itself
    treats that variable more gently (a folder *or* a parent with ``mnist/`` /
    ``fashion-mnist/``, falling through to the cache), so leave it to the search.
    """
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


@contextlib.contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar on stderr; yields a ``progress(done, total)`` callback."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    ) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def _model_label(model_path: Path | None) -> str:
    return str(model_path) if model_path is not None else "shipped Model A (seed_cnn)"


@click.command("evaluate")
@model_option
@data_dir_option
@click.option(
    "--dataset",
    type=click.Choice(["mnist", "fashion-mnist"]),
    default=None,
    help="Dataset to evaluate on. Default: the dataset recorded in the model file (mnist for the shipped model).",
)
@click.option(
    "--split", type=click.Choice(["test", "train"]), default="test", show_default=True, help="Which split to score."
)
@click.option("--batch-size", type=click.IntRange(1), default=1000, show_default=True, help="Images per forward pass.")
@device_option
@out_option("convscope-out/evaluate")
@click.option("--no-plot", is_flag=True, help="Skip the confusion-matrix PNG (JSON and CSV are still written).")
@json_option
def evaluate(
    model_path: Path | None,
    data_dir: Path | None,
    dataset: str | None,
    split: str,
    batch_size: int,
    device: str,
    out_dir: Path,
    no_plot: bool,
    as_json: bool,
) -> None:
    """Score a model on a whole split: accuracy, per-class accuracy, confusion matrix
    and the indices of every misclassified image (in the original test-set order, so
    `convscope predict test:INDEX` shows one).

    Writes into --out: confusion.png (counts; colour = share of the true class),
    evaluation.json (all figures + misclassified indices) and misclassified.csv
    (index, true, predicted, confidence). With no options it scores the shipped
    Model A on the 10,000 MNIST test images.

    \b
    Examples:
      convscope evaluate
      convscope evaluate --model runs/fast/model.json --out results/ --json
      convscope evaluate --data-dir ~/mnist --split train
    """
    from convscope.evaluation import evaluate_model
    from convscope.inference import model_device
    from convscope.io import atomic_write_text, save_figure, write_json

    try:  # fail before the long work, not after it
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create the output folder {out_dir}: {exc.strerror or exc}")
    model = load_model_or_fail(model_path, device)
    config = model.config
    dataset = dataset or (config.dataset if config is not None else "mnist")
    data = load_split_or_fail(split, dataset, data_dir)
    trained_on = getattr(config, "dataset", None)
    if trained_on and trained_on != data.dataset:
        echo_err(f"note: this model was trained on {trained_on}; scoring it on {data.dataset} measures transfer, not skill")

    with progress_bar(f"evaluating on {data.dataset} {split}", enabled=True) as callback:
        result = evaluate_model(model, data, batch_size=batch_size, progress=callback)

    files: dict[str, str] = {}
    try:
        rows = ["index,true,predicted,confidence,true_class_probability"]
        for index in result.misclassified:
            probs = result.probabilities[index]
            rows.append(
                f"{index},{result.class_names[result.labels[index]]},{result.class_names[result.predictions[index]]},"
                f"{probs.max():.6f},{probs[result.labels[index]]:.6f}"
            )
        files["misclassified_csv"] = str(atomic_write_text(out_dir / "misclassified.csv", "\n".join(rows) + "\n"))
        if not no_plot:
            from convscope.render.confusion import confusion_figure

            files["confusion_png"] = str(save_figure(out_dir / "confusion.png", confusion_figure(result)))
        report = {
            "model": _model_label(model_path),
            "architecture": getattr(config, "architecture", None),
            "preprocessing": getattr(config, "preprocessing", None),
            "recorded_test_accuracy": getattr(config, "test_accuracy", None),
            "weights_sha256": getattr(config, "weights_sha256", None),
            "parameters": {
                "dataset": data.dataset, "split": split, "batch_size": batch_size, "device": str(model_device(model)),
            },
            **result.to_dict(),
        }
        json_path = out_dir / "evaluation.json"
        files["evaluation_json"] = str(json_path)
        report["files"] = files
        write_json(json_path, report)
    except OSError as exc:
        fail(f"cannot write into {out_dir}: {exc.strerror or exc}")

    if as_json:
        emit_json(report)
        return
    click.echo(f"Model:    {_model_label(model_path)} ({report['architecture']}, {report['preprocessing']} inputs)")
    click.echo(f"Data:     {data.dataset} {split}, {result.num_images:,} images")
    click.echo(f"Accuracy: {100 * result.accuracy:.2f} %  ({result.num_errors:,} misclassified)")
    click.echo("Per-class accuracy:")
    counts = result.confusion.sum(axis=1)
    width = max(len(name) for name in result.class_names)
    for name, accuracy, count, correct in zip(result.class_names, result.per_class_accuracy, counts, result.confusion.diagonal()):
        shown = "   n/a" if count == 0 else f"{100 * accuracy:6.2f} %"
        click.echo(f"  {name:>{width}}  {shown}  ({correct:,} of {count:,})")
    top = result.top_confusions(3)
    if top:
        click.echo(
            "Most frequent mistakes: "
            + ", ".join(f"{result.class_names[t]}→{result.class_names[p]} ×{n}" for t, p, n in top)
        )
    for path in files.values():
        echo_err(f"wrote {path}")


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
        source = _model_label(model_path)
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


__all__ = ["evaluate", "explicit_data_dir", "load_split_or_fail", "progress_bar", "summary_command"]
