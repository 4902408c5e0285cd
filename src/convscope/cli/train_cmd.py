"""``convscope train`` — train Model A (or B) with the fast or the reference recipe."""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from pathlib import Path

import click

from convscope.cli.common import data_dir_option, device_option, echo_err, emit_json, fail, json_option


@click.command()
@click.option(
    "--architecture", "-a", default="seed_cnn", show_default=True,
    type=click.Choice(["seed_cnn", "model_b"]), help="seed_cnn = Model A (208,982 params), model_b = Model B.",
)
@click.option(
    "--recipe", "-r", "recipe_name", default="fast", show_default=True, type=click.Choice(["fast", "reference"]),
    help="fast: Adam + one-cycle LR + ±2 px shifts, 12 epochs (≈99.5 %% in a few CPU minutes). "
    "reference: the seed workflow exactly (RMSprop+momentum, inverse-time decay, batch 64, 80 epochs).",
)
@click.option("--epochs", type=click.IntRange(1), default=None, help="Override the recipe's epoch count.")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Override the recipe's batch size.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Override the (peak) learning rate.")
@click.option("--seed", default=0, show_default=True, help="Seed for initialisation, shuffling and augmentation.")
@click.option("--dataset", default="mnist", show_default=True, type=click.Choice(["mnist", "fashion-mnist"]))
@click.option(
    "--train-limit", type=click.IntRange(1), default=None, help="Train on only the first N training images (quick runs)."
)
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/train"), show_default=True,
    help="Run folder: model files, history.json, training_curves.png and the per-epoch checkpoint.",
)
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out from its last finished epoch.")
@data_dir_option
@device_option
@json_option
def train(
    architecture: str, recipe_name: str, epochs: int | None, batch_size: int | None, lr: float | None, seed: int,
    dataset: str, train_limit: int | None, out_dir: Path, resume: bool, data_dir: Path | None, device: str, as_json: bool,
) -> None:
    """Train a model and write it as NAME.safetensors + NAME.json.

    Prints one line per epoch (loss, accuracy, learning rate, images/s), keeps a
    checkpoint after every epoch in OUT/checkpoint/, and writes OUT/history.json
    and OUT/training_curves.png. Interrupt with Ctrl-C (or kill) at any time and
    continue with the same command plus --resume: no finished epoch is lost, and
    the result is identical to an uninterrupted run with the same seed (on CPU).

    \b
    Examples:
      convscope train                                   # fast recipe, Model A
      convscope train --recipe reference --out runs/ref # the seed workflow, 80 epochs
      convscope train --out runs/ref --resume           # continue after an interruption
    """
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from convscope import __version__
    from convscope.data import DataNotFoundError, DatasetError, IdxError, load_split
    from convscope.device import resolve_device
    from convscope.io import save_figure, write_json
    from convscope.models import build_model, default_config, save_model
    from convscope.render.training import training_curves_figure
    from convscope.training import get_recipe, init_weights, train as run_training
    from convscope.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    console = Console(stderr=True)
    try:
        dev = resolve_device(device)
        train_split = load_split("train", dataset, data_dir)
        test_split = load_split("test", dataset, data_dir)
    except (DataNotFoundError, DatasetError, IdxError, ValueError) as exc:
        fail(str(exc))

    checkpoint_dir = out_dir / "checkpoint"
    state = None
    if resume:
        try:
            import json as _json

            meta = _json.loads((checkpoint_dir / "checkpoint.json").read_text(encoding="utf-8"))
            architecture = meta["architecture"]
            model = build_model(architecture)
            state, meta = load_checkpoint(checkpoint_dir, model)
        except (OSError, KeyError, ValueError, CheckpointError) as exc:
            fail(f"cannot resume from {checkpoint_dir}: {exc}")
        recipe = dataclasses.replace(get_recipe(meta["recipe"]["name"]), **meta["recipe"])
        seed, train_limit, dataset = meta["seed"], meta.get("train_limit"), meta.get("dataset", dataset)
        echo_err(f"Resuming {architecture} ({recipe.name} recipe, seed {seed}) after epoch {state.epochs_done}/{recipe.epochs}.")
        if state.epochs_done >= recipe.epochs:
            echo_err("That run had already finished; writing its final outputs again.")
    else:
        recipe = get_recipe(recipe_name).with_overrides(epochs=epochs, batch_size=batch_size, lr=lr)
        model = build_model(architecture)
        init_weights(model, recipe.init, seed)
        if (checkpoint_dir / "checkpoint.json").exists():
            fail(f"{out_dir} already holds a training run; continue it with --resume or choose another --out")

    extra = {"architecture": architecture, "dataset": dataset, "train_limit": train_limit}
    started = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), console=console, transient=True,
        disable=as_json,
    )
    task = progress.add_task("train", total=None, epoch=0, epochs=recipe.epochs, loss=float("nan"))

    def on_batch(index: int, total: int, loss: float) -> None:
        progress.update(task, completed=index + 1, total=total, loss=loss)

    def on_epoch_end(current, net, _optimizer) -> None:
        save_checkpoint(checkpoint_dir, net, current, recipe=recipe, seed=seed, extra=extra)
        r = current.history[-1]
        if not as_json:
            progress.console.print(
                f"epoch {r.epoch:>3}/{recipe.epochs}  loss {r.train_loss:.4f}  acc {100 * r.train_accuracy:6.2f} %  "
                f"test loss {r.test_loss:.4f}  test acc {100 * r.test_accuracy:6.2f} %  "
                f"lr {r.lr_end:.2e}  {r.images_per_second:,.0f} img/s  {r.seconds:.1f} s",
                soft_wrap=True,
            )
        progress.update(task, epoch=r.epoch + 1 if r.epoch < recipe.epochs else r.epoch, completed=0)

    if not as_json:
        echo_err(
            f"Training {architecture} on {dataset} ({len(train_split) if train_limit is None else train_limit:,} images) "
            f"with the {recipe.name} recipe: {recipe.epochs} epochs, batch {recipe.batch_size}, {recipe.optimizer}, "
            f"lr {recipe.lr:g} ({recipe.schedule}), seed {seed}, device {dev}."
        )
    try:
        with progress:
            progress.update(task, epoch=(state.epochs_done if state else 0) + 1)
            state = run_training(
                model, train_split, test_split, recipe, seed=seed, device=dev, state=state,
                on_epoch_end=on_epoch_end, on_batch=on_batch, train_limit=train_limit,
            )
    except KeyboardInterrupt:
        echo_err(
            f"\nInterrupted. Finished epochs are saved in {checkpoint_dir}; continue with:\n"
            f"  convscope train --out {shlex.quote(str(out_dir))} --resume"
        )
        sys.exit(130)

    model = model.to("cpu")
    final = state.history[-1]
    config = default_config(
        model,
        dataset=dataset,
        preprocessing=recipe.preprocessing,
        class_names=list(train_split.class_names),
        test_accuracy=final.test_accuracy,
        training={
            "recipe": recipe.to_dict(),
            "seed": seed,
            "train_limit": train_limit,
            "epochs_done": state.epochs_done,
            "train_seconds": round(sum(r.seconds for r in state.history), 2),
            "final_train_accuracy": final.train_accuracy,
            "torch_version": torch.__version__,
            "device": str(dev),
            "command": "convscope " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        },
    )
    name = "seed_cnn" if architecture == "seed_cnn" else architecture
    weights_path, config_path = save_model(model, out_dir / name, config)
    history = {
        "architecture": architecture,
        "recipe": recipe.to_dict(),
        "seed": seed,
        "dataset": dataset,
        "library_version": __version__,
        "epochs": [dataclasses.asdict(r) for r in state.history],
        "lr_history": state.lr_history,
        "test_accuracy": final.test_accuracy,
        "train_seconds": sum(r.seconds for r in state.history),
        "wall_seconds_this_session": time.perf_counter() - started,
        "model_files": [str(weights_path), str(config_path)],
    }
    write_json(out_dir / "history.json", history)
    save_figure(
        out_dir / "training_curves.png",
        training_curves_figure(state.history, state.lr_history, f"{architecture} — {recipe.name} recipe, seed {seed}"),
    )
    if as_json:
        emit_json({k: v for k, v in history.items() if k != "lr_history"})
    else:
        click.echo(
            f"Test accuracy {100 * final.test_accuracy:.2f} % after {state.epochs_done} epochs "
            f"({history['train_seconds']:.0f} s of training). Model: {config_path}"
        )
