"""``convscope train`` — train Model A (or B) with a named recipe, any of its
hyper-parameters overridden by a flag."""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import click

from convscope.cli.common import (
    FiniteFloatRange, data_dir_option, device_option, echo_err, emit_json, fail, json_option, out_option,
)

#: CLI parameter → recipe field, for the flags that override a recipe.
_RECIPE_FLAGS = {
    "epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "optimizer": "optimizer", "momentum": "momentum",
    "rho": "rho", "schedule": "schedule", "decay": "decay", "warmup": "warmup_fraction", "step_epochs": "step_epochs",
    "step_gamma": "step_gamma", "l2": "l2_dense", "preprocess": "preprocessing", "label_smoothing": "label_smoothing",
    "shift_pixels": "shift_pixels", "val_split": "val_split",
}
#: Flags that only mean something for some optimizers / schedules.
_OPTIMIZER_ONLY = {"momentum": ("rmsprop", "sgd"), "rho": ("rmsprop",)}
_SCHEDULE_ONLY = {"decay": ("inverse_time",), "warmup": ("one_cycle",), "step_epochs": ("step",), "step_gamma": ("step",)}


def _flag(ctx: click.Context, name: str) -> str:
    for param in ctx.command.params:
        if param.name == name:
            return max(param.opts, key=len)
    return name


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE


def _check_applicable(ctx: click.Context, recipe: Any) -> None:
    """Refuse a flag the chosen optimizer / schedule would silently ignore."""
    for name, optimizers in _OPTIMIZER_ONLY.items():
        if _given(ctx, name) and recipe.optimizer not in optimizers:
            raise click.UsageError(
                f"{_flag(ctx, name)} applies to the {' and '.join(optimizers)} optimizer(s), but this run uses "
                f"{recipe.optimizer}; leave it out or add --optimizer {optimizers[0]}", ctx=ctx,
            )
    for name, schedules in _SCHEDULE_ONLY.items():
        if _given(ctx, name) and recipe.schedule not in schedules:
            raise click.UsageError(
                f"{_flag(ctx, name)} applies to the {schedules[0]} schedule, but this run uses {recipe.schedule}; "
                f"leave it out or add --schedule {schedules[0]}", ctx=ctx,
            )


def _resume_conflicts(ctx: click.Context, options: dict[str, Any], recorded_recipe: Any, meta: dict[str, Any]) -> list[str]:
    """Options given with --resume that differ from the run's recorded settings
    (``--epochs`` larger than recorded is not a conflict: it extends the run)."""
    recorded = {
        "architecture": meta.get("architecture"), "recipe_name": recorded_recipe.name, "seed": meta.get("seed"),
        "dataset": meta.get("dataset", "mnist"), "train_limit": meta.get("train_limit"),
        **{name: getattr(recorded_recipe, field) for name, field in _RECIPE_FLAGS.items()},
    }
    conflicts = []
    for name, was in recorded.items():
        if not _given(ctx, name) or options[name] == was:
            continue
        if name == "epochs" and options[name] > was:
            continue
        note = " (a resumed run can be extended, not shortened)" if name == "epochs" else ""
        conflicts.append(f"{_flag(ctx, name)} {options[name]} (the run used {was}){note}")
    return conflicts


@click.command()
@click.option(
    "--architecture", "-a", default="seed_cnn", show_default=True,
    type=click.Choice(["seed_cnn", "model_b"]), help="seed_cnn = Model A (208,982 params), model_b = Model B.",
)
@click.option(
    "--recipe", "-r", "recipe_name", default=None, type=click.Choice(["fast", "reference", "model_b"]),
    help="fast (default for seed_cnn): Adam + one-cycle LR + ±2 px shifts + label smoothing 0.05, 12 epochs "
    "(≈99.5 %% in a few CPU minutes). reference: the seed workflow exactly (RMSprop momentum 0.8, inverse-time "
    "decay, L2 1e-3, batch 64, 80 epochs). model_b (default for model_b): the posts' Model B run (plain Adam "
    "lr 1e-3, inputs 0..1, batch 256, 20 epochs, 20 %% validation split). The flags below override single settings.",
)
@click.option("--epochs", type=click.IntRange(1, 100_000), default=None, help="Epochs (with --resume: a larger number extends the run).")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Images per step.")
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Learning rate: initial, or the peak of one_cycle.")
@click.option("--optimizer", type=click.Choice(["rmsprop", "adam", "sgd"]), default=None, help="Optimizer.")
@click.option("--momentum", type=FiniteFloatRange(0, 1, max_open=True), default=None, help="RMSprop / SGD momentum.")
@click.option("--rho", type=FiniteFloatRange(0, 1, max_open=True), default=None,
              help="RMSprop squared-gradient averaging factor (Keras' rho, PyTorch's alpha).")
@click.option(
    "--schedule", type=click.Choice(["constant", "inverse_time", "one_cycle", "step", "cosine"]), default=None,
    help="LR schedule: constant; inverse_time lr/(1+decay·step); one_cycle warm-up then cosine down; "
    "step ×gamma every N epochs; cosine from lr to 0.",
)
@click.option("--decay", type=FiniteFloatRange(min=0), default=None, help="inverse_time: decay per step (reference 1e-3).")
@click.option("--warmup", type=FiniteFloatRange(0, 1, max_open=True), default=None,
              help="one_cycle: fraction of the steps spent rising to the peak.")
@click.option("--step-epochs", type=click.IntRange(1), default=None, help="step schedule: epochs between LR drops.")
@click.option("--step-gamma", type=FiniteFloatRange(0, 1, min_open=True), default=None,
              help="step schedule: factor applied at each drop.")
@click.option("--l2", type=FiniteFloatRange(min=0), default=None,
              help="L2 factor on the dense kernels, added to the loss as l2·Σw² (Keras' l2).")
@click.option("--preprocess", type=click.Choice(["standardize", "unit"]), default=None,
              help="Input scaling: standardize (per image mean 0, std 1) or unit (0..1).")
@click.option("--label-smoothing", type=FiniteFloatRange(0, 1, max_open=True), default=None, help="Label smoothing.")
@click.option("--shift-pixels", type=click.IntRange(0, 13), default=None,
              help="Augmentation: random shifts of up to N pixels in each axis (0 = none).")
@click.option(
    "--val-split", type=FiniteFloatRange(0, 1, max_open=True), default=None,
    help="Hold out this fraction of the training images (a fixed, seed-derived split) and validate on it "
    "each epoch; the test set is then scored once, after training. 0 = validate on the test set.",
)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Seed for initialisation, shuffling, augmentation, dropout and the validation split.")
@click.option("--dataset", default="mnist", show_default=True, type=click.Choice(["mnist", "fashion-mnist"]))
@click.option(
    "--train-limit", type=click.IntRange(1), default=None, help="Train on only the first N training images (quick runs)."
)
@out_option("runs/train", help="Run folder: model files, history.json, training_curves.png (redrawn after every epoch) "
                               "and the checkpoint.")
@click.option("--resume", is_flag=True,
              help="Continue the interrupted run in --out from its last finished epoch (with its own settings).")
@data_dir_option
@device_option
@json_option
@click.pass_context
def train(
    ctx: click.Context, architecture: str, recipe_name: str | None, epochs: int | None, batch_size: int | None,
    lr: float | None, optimizer: str | None, momentum: float | None, rho: float | None, schedule: str | None,
    decay: float | None, warmup: float | None, step_epochs: int | None, step_gamma: float | None, l2: float | None,
    preprocess: str | None, label_smoothing: float | None, shift_pixels: int | None, val_split: float | None,
    seed: int, dataset: str, train_limit: int | None, out_dir: Path, resume: bool, data_dir: Path | None, device: str,
    as_json: bool,
) -> None:
    """Train a model and write it as NAME.safetensors + NAME.json.

    Prints one line per epoch (loss, accuracy, learning rate, images/s). After
    every epoch it first writes a checkpoint to OUT/checkpoint/, then redraws
    OUT/training_curves.png (open it in an image viewer to watch the run). At the
    end it writes OUT/history.json. Interrupt with Ctrl-C (or kill) at any time
    and continue with the same --out plus --resume: no finished epoch is lost, and
    the result is identical to an uninterrupted run with the same seed (on CPU).
    A run whose loss becomes inf/nan stops, keeping the last good checkpoint.

    \b
    Examples:
      convscope train                                   # fast recipe, Model A
      convscope train --recipe reference --out runs/ref # the seed workflow, 80 epochs
      convscope train --out runs/ref --resume           # continue after an interruption
      convscope train --out runs/ref --resume --epochs 100   # extend a finished run
      convscope train -a model_b --optimizer adam --preprocess unit --epochs 20 \\
          --batch-size 256 --val-split 0.2 --out runs/b # the posts' Model B run
      convscope train --optimizer sgd --momentum 0.9 --lr 0.05 --schedule cosine
    """
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from convscope import __version__
    from convscope.data import DataNotFoundError, DatasetError, IdxError, load_split
    from convscope.device import resolve_device
    from convscope.cli.output import PlainLines, writing
    from convscope.progress import ProgressEvent
    from convscope.io import read_json, save_figure, track_writes, write_json
    from convscope.models import build_model, default_config, save_model
    from convscope.render.training import training_curves_figure
    from convscope.training import init_weights, train as run_training
    from convscope.training.checkpoint import CheckpointError, CheckpointWriteError, load_checkpoint, save_checkpoint
    from convscope.training.loop import (
        TrainingDiverged, evaluate_split, learning_rate, validation_label, validation_split_indices,
    )
    from convscope.training.recipes import DEFAULT_RECIPE, RECIPES, Recipe, describe_recipe, recipe_changes

    options = dict(ctx.params)
    checkpoint_dir = out_dir / "checkpoint"
    state = None
    if resume:
        if not (checkpoint_dir / "checkpoint.json").is_file():
            fail(f"nothing to resume in {out_dir}: it holds no checkpoint/checkpoint.json; point --out at the folder of "
                 "an interrupted run, or leave out --resume to start a new run")
        try:
            meta = read_json(checkpoint_dir / "checkpoint.json")
            recorded = meta["recipe"]
            recipe = Recipe(**{**(RECIPES[recorded["name"]].to_dict() if recorded.get("name") in RECIPES else {}),
                               **recorded})
        except (OSError, KeyError, TypeError, ValueError) as exc:
            fail(f"cannot resume from {checkpoint_dir}: {exc}")
        conflicts = _resume_conflicts(ctx, options, recipe, meta)
        if conflicts:
            fail(
                f"cannot continue the run in {out_dir} with different settings: " + "; ".join(conflicts)
                + ". Leave these options out to continue the run as it was recorded, or start a new run in another --out."
            )
        try:
            architecture = meta["architecture"]
            model = build_model(architecture)
            state, meta = load_checkpoint(checkpoint_dir, model)
        except (OSError, KeyError, ValueError, CheckpointError) as exc:
            fail(f"cannot resume from {checkpoint_dir}: {exc}")
        seed, train_limit, dataset = meta["seed"], meta.get("train_limit"), meta.get("dataset", dataset)
        echo_err(f"Resuming {architecture} ({describe_recipe(recipe)}, seed {seed}) after epoch "
                 f"{state.epochs_done}/{recipe.epochs}.")
        if epochs is not None and epochs > recipe.epochs:
            old_total = recipe.epochs
            recipe = dataclasses.replace(recipe, epochs=epochs)
            echo_err(f"Extending the run from {old_total} to {epochs} epochs.")
            if recipe.schedule in ("one_cycle", "cosine") and state.lr_history:
                steps = len(state.lr_history) // max(1, state.epochs_done)
                echo_err(
                    f"Note: the {recipe.schedule} schedule depends on the run's length; it is now laid over "
                    f"{epochs} epochs, so the LR goes from {state.lr_history[-1]:.3g} (last step) to "
                    f"{learning_rate(len(state.lr_history), steps * epochs, recipe):.3g} (next step), and the result "
                    f"differs from a {epochs}-epoch run from scratch."
                )
        elif state.epochs_done >= recipe.epochs:
            echo_err("That run had already finished; writing its final outputs again.")
    else:
        if recipe_name is None:
            recipe_name = DEFAULT_RECIPE[architecture]
        overrides = {field: options[name] for name, field in _RECIPE_FLAGS.items()}
        recipe = RECIPES[recipe_name].with_overrides(**overrides)  # every value already range-checked by click
        _check_applicable(ctx, recipe)
        if (checkpoint_dir / "checkpoint.json").exists():
            fail(f"{out_dir} already holds a training run; continue it with --resume or choose another --out")

    try:
        dev = resolve_device(device)
        train_split = load_split("train", dataset, data_dir)
        test_split = load_split("test", dataset, data_dir)
    except (DataNotFoundError, DatasetError, IdxError, ValueError) as exc:
        fail(str(exc))
    n_images = min(len(train_split), train_limit or len(train_split))
    try:
        _, val_indices = validation_split_indices(n_images, recipe.val_split, seed)
    except ValueError as exc:
        raise click.BadParameter(f"{exc}; use a larger --train-limit or another fraction", ctx=ctx,
                                 param_hint="'--val-split'") from exc
    validation = validation_label(recipe)
    if not resume:
        model = build_model(architecture)
        init_weights(model, recipe.init, seed)

    extra = {"architecture": architecture, "dataset": dataset, "train_limit": train_limit, "validation": validation}
    title = f"{architecture} — {describe_recipe(recipe)}, seed {seed}"
    curves_path = out_dir / "training_curves.png"
    started = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), console=Console(stderr=True),
        transient=True, disable=as_json,
    )
    task = progress.add_task("train", total=None, epoch=0, epochs=recipe.epochs, loss=float("nan"))
    held = "test" if recipe.val_split == 0 else "val"

    # stderr not a terminal (a log, a pipe): a plain line every ~10 s within an epoch, besides the epoch lines
    plain = None if as_json or progress.console.is_terminal else PlainLines(tenths=False)
    epoch_started = [time.perf_counter()]

    def on_batch(index: int, total: int, loss: float) -> None:
        progress.update(task, completed=index + 1, total=total, loss=loss)
        if plain is not None:
            if index == 0:
                epoch_started[0] = time.perf_counter()
            epoch = progress.tasks[0].fields["epoch"]
            plain(ProgressEvent(0, f"epoch {epoch}/{recipe.epochs}, batches", index + 1, total,
                                elapsed=time.perf_counter() - epoch_started[0]))

    def on_epoch_end(current, net, _optimizer) -> None:
        # the checkpoint first: the epoch's outputs (curves, the printed line) only once it is safe
        save_checkpoint(checkpoint_dir, net, current, recipe=recipe, seed=seed, extra=extra)
        save_figure(curves_path, training_curves_figure(
            current.history, current.lr_history, title, label_smoothing=recipe.label_smoothing, validation=validation,
        ))
        r = current.history[-1]
        if not as_json:
            progress.console.print(
                f"epoch {r.epoch:>3}/{recipe.epochs}  loss {r.train_loss:.4f}  acc {100 * r.train_accuracy:6.2f} %  "
                f"{held} loss {r.held_out_loss:.4f}  {held} acc {100 * r.held_out_accuracy:6.2f} %  "
                f"lr {r.lr_end:.2e}  {r.images_per_second:,.0f} img/s  {r.seconds:.1f} s",
                soft_wrap=True,
            )
        progress.update(task, epoch=r.epoch + 1 if r.epoch < recipe.epochs else r.epoch, completed=0)

    if not as_json:
        held_text = "the test set" if recipe.val_split == 0 else f"the {validation} ({len(val_indices):,} images)"
        echo_err(
            f"Training {architecture} on {dataset} ({n_images - len(val_indices):,} images, validated on {held_text}) "
            f"with the {describe_recipe(recipe)}: {recipe.epochs} epochs, batch {recipe.batch_size}, "
            f"{recipe.optimizer}, lr {recipe.lr:g} ({recipe.schedule}), seed {seed}, device {dev}."
        )
    resume_hint = f"convscope train --out {shlex.quote(str(out_dir))} --resume"
    try:
        with progress, track_writes() as run_writes:
            progress.update(task, epoch=(state.epochs_done if state else 0) + 1)
            state = run_training(
                model, train_split, test_split, recipe, seed=seed, device=dev, state=state,
                on_epoch_end=on_epoch_end, on_batch=on_batch, train_limit=train_limit,
            )
    except KeyboardInterrupt:
        echo_err(f"\nInterrupted. Finished epochs are saved in {checkpoint_dir}; continue with:\n  {resume_hint}")
        sys.exit(130)
    except TrainingDiverged as exc:
        kept = (f"the checkpoint of epoch {exc.epoch - 1} in {checkpoint_dir} is kept" if exc.epoch > 1
                else "no checkpoint was written")
        fail(f"{exc}. Nothing of epoch {exc.epoch} was kept; {kept}. Start a new run (another --out) with a "
             f"lower --lr (this run used {recipe.lr:g}), or a gentler schedule / optimizer.")
    except CheckpointWriteError as exc:
        if not (checkpoint_dir / "checkpoint.json").is_file():  # not one epoch saved: leave nothing behind
            run_writes.undo()
            fail(f"{exc}. Training stopped; nothing was kept. Free space or fix the folder's permissions (or choose "
                 "another --out), then run the same command again.")
        fail(f"{exc}. Training stopped so that no epoch goes unsaved; free space or fix the folder's permissions, "
             f"then continue with: {resume_hint}")
    except OSError as exc:
        fail(f"cannot write the training outputs in {out_dir}: {exc}. The finished epochs' checkpoint is in "
             f"{checkpoint_dir}; continue with: {resume_hint}")

    model = model.to("cpu")
    final = state.history[-1]
    if recipe.val_split > 0:  # the test set's only look: once, after training
        test_loss, test_accuracy = evaluate_split(model, test_split.images, test_split.labels, recipe.preprocessing)
    else:
        test_loss, test_accuracy = final.test_loss, final.test_accuracy
    changes = recipe_changes(recipe)
    config = default_config(
        model,
        dataset=dataset,
        preprocessing=recipe.preprocessing,
        class_names=list(train_split.class_names),
        test_accuracy=test_accuracy,
        training={
            "recipe": recipe.to_dict(),
            "recipe_changes": changes,
            "seed": seed,
            "train_limit": train_limit,
            "validation": validation,
            "epochs_done": state.epochs_done,
            "train_seconds": round(sum(r.seconds for r in state.history), 2),
            "final_train_accuracy": final.train_accuracy,
            "final_validation_accuracy": final.held_out_accuracy,
            "torch_version": torch.__version__,
            "device": str(dev),
            "command": "convscope " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        },
    )
    name = "seed_cnn" if architecture == "seed_cnn" else architecture
    history = {
        "architecture": architecture,
        "recipe": recipe.to_dict(),
        "recipe_changes": changes,
        "seed": seed,
        "dataset": dataset,
        "library_version": __version__,
        "validation": validation,
        "validation_images": len(val_indices) if recipe.val_split > 0 else len(test_split),
        "train_images": n_images - len(val_indices),
        "epochs": [dataclasses.asdict(r) for r in state.history],
        "lr_history": state.lr_history,
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "train_seconds": sum(r.seconds for r in state.history),
        "wall_seconds_this_session": time.perf_counter() - started,
    }
    # all or nothing: a failure removes the model files written so far (never the checkpoint)
    with writing(out_dir, what="the trained model", keep_under=(checkpoint_dir,),
                 hint=f"The checkpoint in {checkpoint_dir} holds every epoch; after fixing the folder, write the "
                      f"outputs again with: {resume_hint}"):
        weights_path, config_path = save_model(model, out_dir / name, config)
        history["model_files"] = [str(weights_path), str(config_path)]
        write_json(out_dir / "history.json", history)
        save_figure(curves_path, training_curves_figure(
            state.history, state.lr_history, title, label_smoothing=recipe.label_smoothing, validation=validation,
            test_accuracy=test_accuracy if recipe.val_split > 0 else None,
        ))
    if as_json:
        emit_json({k: v for k, v in history.items() if k != "lr_history"})
    else:
        held_final = "" if recipe.val_split == 0 else f"{validation}: {100 * final.held_out_accuracy:.2f} %, "
        click.echo(
            f"Test accuracy {100 * test_accuracy:.2f} % ({held_final}after {state.epochs_done} epochs, "
            f"{history['train_seconds']:.0f} s of training). Model: {config_path}"
        )
