"""Training options: the new optimizers and schedules, the seeded validation split,
divergence, checkpoint failures, --resume conflicts and extension, flag validation,
the live curves (PNG per epoch, EpochPlot) and the curves figure's labels."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from convscope.cli.train_cmd import train as train_command
from convscope.models import build_model, load_model
from convscope.render.training import training_curves_figure
from convscope.training import (
    EpochRecord,
    TrainingDiverged,
    TrainState,
    evaluate_split,
    get_recipe,
    init_weights,
    learning_rate,
    train,
    validation_split_indices,
)
from convscope.training.checkpoint import Checkpointer
from convscope.training.live import EpochPlot

PNG = b"\x89PNG\r\n\x1a\n"


def _few(split, n: int = 300):
    return dataclasses.replace(split, images=split.images[:n], labels=split.labels[:n])


def _weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ----------------------------------------------------------------------------- recipes and schedules
def test_model_b_recipe_is_the_posts_plain_adam_run():
    r = get_recipe("model_b")
    assert (r.optimizer, r.lr, r.eps, r.schedule, r.batch_size, r.epochs) == ("adam", 1e-3, 1e-7, "constant", 256, 20)
    assert (r.l2_dense, r.label_smoothing, r.shift_pixels, r.preprocessing, r.val_split) == (0.0, 0.0, 0, "unit", 0.2)


def test_step_and_cosine_schedules():
    step = get_recipe("fast").with_overrides(schedule="step", lr=0.1, step_epochs=2, step_gamma=0.5, epochs=6)
    per_epoch, total = 10, 60
    assert [learning_rate(e * per_epoch, total, step) for e in range(6)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert learning_rate(19, total, step) == pytest.approx(0.1)  # last step of epoch 2 still before the drop
    cosine = get_recipe("fast").with_overrides(schedule="cosine", lr=0.2)
    assert learning_rate(0, 100, cosine) == pytest.approx(0.2)
    assert learning_rate(50, 100, cosine) == pytest.approx(0.1)
    assert learning_rate(100, 100, cosine) == pytest.approx(0.0, abs=1e-12)


def test_recipe_refuses_unusable_values():
    with pytest.raises(ValueError, match="lr must be a finite number") as info:
        get_recipe("fast").with_overrides(lr=float("nan"), momentum=1.5, optimizer="lbfgs")
    assert "momentum must be in [0, 1)" in str(info.value) and "optimizer must be one of" in str(info.value)
    with pytest.raises(ValueError, match="val_split"):
        get_recipe("fast").with_overrides(val_split=1.0)


def test_sgd_with_momentum_is_torch_sgd(train_split, test_split):
    recipe = get_recipe("fast").with_overrides(optimizer="sgd", momentum=0.9, lr=0.05, schedule="constant", epochs=1,
                                               shift_pixels=0, label_smoothing=0.0, l2_dense=0.0, batch_size=100)
    model = build_model("seed_cnn")
    init_weights(model, "keras", 0)
    twin = build_model("seed_cnn")
    twin.load_state_dict(model.state_dict())
    train(model, train_split, _few(test_split), recipe, seed=0, train_limit=300)
    # the same three steps by hand: plain torch SGD over the epoch's seeded order
    from convscope.data.preprocess import standardize

    optimizer = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9)
    order = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    images = torch.as_tensor(np.array(train_split.images[:300]), dtype=torch.float32)[:, None]
    labels = torch.as_tensor(np.array(train_split.labels[:300]))
    twin.train()
    for b in range(3):
        idx = order[b * 100 : (b + 1) * 100]
        loss = torch.nn.functional.cross_entropy(twin(standardize(images[idx])), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert _weights_equal(model, twin)


# ----------------------------------------------------------------------------- validation split
def test_validation_split_is_seeded_disjoint_and_complete():
    train_a, val_a = validation_split_indices(1000, 0.2, seed=3)
    train_b, val_b = validation_split_indices(1000, 0.2, seed=3)
    _, val_c = validation_split_indices(1000, 0.2, seed=4)
    assert len(val_a) == 200 and len(train_a) == 800
    assert np.array_equal(val_a, val_b) and np.array_equal(train_a, train_b)
    assert not np.array_equal(val_a, val_c)
    assert np.array_equal(np.sort(np.concatenate([train_a, val_a])), np.arange(1000))
    assert np.all(np.diff(train_a) > 0)  # kept in file order
    with pytest.raises(ValueError, match="both need at least one image"):
        validation_split_indices(3, 0.9, seed=0)


def test_validation_split_trains_on_the_rest_only_and_scores_the_held_out_part(train_split):
    """Training with val_split=0.25 on 400 images == training without a split on the
    300 kept images; the recorded validation accuracy is the model's on the 100 others."""
    recipe = get_recipe("fast").with_overrides(epochs=1, batch_size=100, val_split=0.25)
    keep, held = validation_split_indices(400, 0.25, seed=2)
    split = train_split
    model = build_model("seed_cnn")
    init_weights(model, "keras", 2)
    twin = build_model("seed_cnn")
    twin.load_state_dict(model.state_dict())
    state = train(model, split, None, recipe, seed=2, train_limit=400)
    kept = dataclasses.replace(split, images=split.images[:400][keep], labels=split.labels[:400][keep])
    held_out = dataclasses.replace(split, images=split.images[:400][held], labels=split.labels[:400][held])
    train(twin, kept, held_out, dataclasses.replace(recipe, val_split=0.0), seed=2)
    assert _weights_equal(model, twin)
    record = state.history[0]
    assert record.test_loss is None and record.test_accuracy is None
    loss, acc = evaluate_split(model, held_out.images, held_out.labels, "standardize")
    assert (record.val_loss, record.val_accuracy) == (loss, acc)
    assert record.held_out_accuracy == acc


def test_unit_preprocessing_is_used_for_scoring_too(train_split, test_split):
    """A recipe with inputs scaled to 0..1 is scored with the same scaling (the model
    in training has no config to say so)."""
    recipe = get_recipe("model_b").with_overrides(epochs=1, val_split=0.0)
    model = build_model("model_b")
    init_weights(model, "keras", 0)
    state = train(model, train_split, _few(test_split), recipe, seed=0, train_limit=512)
    unit = evaluate_split(model, _few(test_split).images, _few(test_split).labels, "unit")
    standardized = evaluate_split(model, _few(test_split).images, _few(test_split).labels, "standardize")
    assert state.history[0].test_loss == unit[0] != standardized[0]


# ----------------------------------------------------------------------------- divergence
def test_divergence_stops_before_the_bad_step_and_keeps_no_epoch_of_it(train_split, test_split):
    recipe = get_recipe("fast").with_overrides(epochs=3, batch_size=100)
    model = build_model("seed_cnn")
    init_weights(model, "keras", 0)
    seen_epochs = []

    def poison(batch_index: int, batches: int, loss: float) -> None:
        if len(seen_epochs) == 1 and batch_index == 1:  # epoch 2, after its 2nd step
            with torch.no_grad():
                model.Dense_2.weight[0, 0] = float("nan")

    def on_epoch_end(state, net, _opt) -> None:
        assert all(torch.isfinite(p).all() for p in net.parameters())
        seen_epochs.append(state.epochs_done)

    state = TrainState()
    with pytest.raises(TrainingDiverged) as info:
        train(model, train_split, _few(test_split), recipe, seed=0, state=state, on_epoch_end=on_epoch_end,
              on_batch=poison, train_limit=400)
    exc = info.value
    assert (exc.epoch, exc.batch, exc.batches, exc.step) == (2, 3, 4, 6) and math.isnan(exc.loss)
    assert "epoch 2 at step 3/4" in str(exc)
    assert seen_epochs == [1] and state.epochs_done == 1 and len(state.history) == 1
    assert len(state.lr_history) == 4  # epoch 2's entries were taken back


def test_weights_broken_by_the_last_step_are_caught_at_the_epoch_end(train_split, test_split):
    recipe = get_recipe("fast").with_overrides(epochs=2, batch_size=100)
    model = build_model("seed_cnn")
    init_weights(model, "keras", 0)
    called = []

    def poison_after_last_step(batch_index: int, batches: int, loss: float) -> None:
        if batch_index == batches - 1:  # no later step of this epoch would see a bad loss
            with torch.no_grad():
                model.Dense_1.linear.bias[3] = float("inf")

    with pytest.raises(TrainingDiverged, match="weights became non-finite") as info:
        train(model, train_split, _few(test_split), recipe, seed=0, on_batch=poison_after_last_step,
              on_epoch_end=lambda *args: called.append(1), train_limit=200)
    assert info.value.epoch == 1 and info.value.batch is None and called == []


def test_cli_divergence_keeps_the_last_good_checkpoint(tmp_path, small_mnist, monkeypatch):
    import convscope.training.loop as loop

    calls = {"n": 0}
    real = loop.l2_penalty

    def nan_from_epoch_2(model, factor):  # 4 steps per epoch: the 6th step's loss is nan
        calls["n"] += 1
        return float("nan") if calls["n"] == 6 else real(model, factor)

    monkeypatch.setattr(loop, "l2_penalty", nan_from_epoch_2)
    out = tmp_path / "run"
    result = CliRunner().invoke(train_command, [
        "--train-limit", "400", "--batch-size", "100", "--epochs", "3", "--out", str(out),
        "--data-dir", str(small_mnist), "--device", "cpu",
    ])
    assert result.exit_code == 1, result.output
    assert "training diverged" in result.output and "epoch 2 at step 2/4" in result.output
    assert "checkpoint of epoch 1" in result.output and "lower --lr" in result.output
    meta = json.loads((out / "checkpoint" / "checkpoint.json").read_text())
    assert meta["epochs_done"] == 1 and len(meta["history"]) == 1
    weights = load_file(out / "checkpoint" / meta["weights_file"])
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert not (out / "seed_cnn.safetensors").exists() and not (out / "history.json").exists()


def test_cli_real_divergence_is_one_clear_message(tmp_path, small_mnist):
    env = {**os.environ, "CONVSCOPE_DATA": str(small_mnist), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "convscope", "train", "--optimizer", "sgd", "--lr", "1e6", "--schedule", "constant",
         "--train-limit", "512", "--batch-size", "128", "--epochs", "2", "--out", str(out), "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 1
    assert "training diverged" in result.stderr and "in epoch 1" in result.stderr
    assert "no checkpoint was written" in result.stderr and "Traceback" not in result.stderr
    assert not (out / "checkpoint" / "checkpoint.json").exists()


# ----------------------------------------------------------------------------- checkpoint failures
def test_cli_stops_when_the_checkpoint_cannot_be_written(tmp_path, small_mnist, monkeypatch):
    import convscope.training.checkpoint as checkpoint

    real = checkpoint.atomic_write_bytes
    calls = {"n": 0}

    def disk_full_on_second_epoch(path, data):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", disk_full_on_second_epoch)
    out = tmp_path / "run"
    result = CliRunner().invoke(train_command, [
        "--train-limit", "200", "--batch-size", "100", "--epochs", "3", "--out", str(out),
        "--data-dir", str(small_mnist), "--device", "cpu",
    ])
    assert result.exit_code == 1, result.output
    assert "cannot write the checkpoint of epoch 2" in result.output and "No space left on device" in result.output
    assert "--resume" in result.output
    assert json.loads((out / "checkpoint" / "checkpoint.json").read_text())["epochs_done"] == 1
    assert "epoch   3/3" not in result.output  # it stopped instead of training on without a checkpoint
    assert not (out / "history.json").exists()


def test_cli_unwritable_checkpoint_folder_is_a_clear_error(tmp_path, small_mnist):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint").write_text("a file where the checkpoint folder should be")
    env = {**os.environ, "CONVSCOPE_DATA": str(small_mnist), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "convscope", "train", "--train-limit", "200", "--epochs", "2", "--out", str(out),
         "--device", "cpu"], env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 1
    assert "cannot write the checkpoint of epoch 1" in result.stderr and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- CLI flags
def _tiny(tmp_path: Path, data_dir: Path) -> list[str]:
    """Options that keep a run short should a refusal under test ever let it start."""
    return ["--epochs", "1", "--train-limit", "10", "--data-dir", str(data_dir), "--out", str(tmp_path / "run")]


@pytest.mark.parametrize("flag", ["--lr", "--momentum", "--rho", "--decay", "--warmup", "--step-gamma", "--l2",
                                  "--label-smoothing", "--val-split"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_float_flags_refuse_non_finite_and_negative(flag, value, tmp_path, small_mnist):
    result = CliRunner().invoke(train_command, [*_tiny(tmp_path, small_mnist), flag, value])
    assert result.exit_code == 2, result.output
    assert f"'{flag}'" in result.output


@pytest.mark.parametrize("flag", ["--epochs", "--batch-size", "--shift-pixels", "--step-epochs", "--seed",
                                  "--train-limit"])
def test_integer_flags_refuse_negative(flag, tmp_path, small_mnist):
    result = CliRunner().invoke(train_command, [*_tiny(tmp_path, small_mnist), flag, "-1"])
    assert result.exit_code == 2 and f"'{flag}'" in result.output


def test_flags_the_optimizer_or_schedule_would_ignore_are_refused(tmp_path, small_mnist):
    tiny = _tiny(tmp_path, small_mnist)
    result = CliRunner().invoke(train_command, [*tiny, "--momentum", "0.9", "--optimizer", "adam"])
    assert result.exit_code == 2 and "--momentum applies to the rmsprop and sgd" in result.output
    result = CliRunner().invoke(train_command, [*tiny, "--decay", "0.01"])  # fast recipe: one_cycle
    assert result.exit_code == 2 and "--decay applies to the inverse_time schedule" in result.output


def test_val_split_too_large_for_the_limit_names_the_flag(small_mnist, tmp_path):
    result = CliRunner().invoke(train_command, ["--val-split", "0.95", "--train-limit", "10", "--data-dir",
                                                str(small_mnist), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "'--val-split'" in result.output and "both need at least one image" in result.output


def test_model_b_command_runs_the_posts_recipe_with_a_validation_split(tmp_path, small_mnist):
    out = tmp_path / "b"
    result = CliRunner().invoke(train_command, [
        "-a", "model_b", "--optimizer", "adam", "--preprocess", "unit", "--epochs", "1", "--batch-size", "256",
        "--val-split", "0.2", "--train-limit", "1000", "--out", str(out), "--data-dir", str(small_mnist),
        "--device", "cpu", "--json",
    ])
    assert result.exit_code == 0, result.output
    history = json.loads((out / "history.json").read_text())
    recipe = history["recipe"]
    assert recipe["name"] == "model_b" and history["recipe_changes"] == {"epochs": 1}
    assert (recipe["optimizer"], recipe["lr"], recipe["schedule"], recipe["l2_dense"]) == ("adam", 0.001, "constant", 0.0)
    assert (recipe["label_smoothing"], recipe["shift_pixels"], recipe["preprocessing"]) == (0.0, 0, "unit")
    assert history["validation"] == "validation split 20 %"
    assert (history["validation_images"], history["train_images"]) == (200, 800)
    epoch = history["epochs"][0]
    assert epoch["test_accuracy"] is None and epoch["val_accuracy"] is not None
    # the test set was scored once, after training, with the saved model
    model = load_model(out / "model_b.json")
    assert model.config.preprocessing == "unit"
    from convscope.data import load_split

    test = load_split("test", data_dir=small_mnist)
    assert evaluate_split(model, test.images, test.labels, "unit")[1] == history["test_accuracy"]
    assert model.config.test_accuracy == history["test_accuracy"]


# ----------------------------------------------------------------------------- resume
def _small_run(out: Path, data_dir: Path, *extra: str):
    return CliRunner().invoke(train_command, [
        "--train-limit", "300", "--batch-size", "100", "--schedule", "constant", "--seed", "4", "--out", str(out),
        "--data-dir", str(data_dir), "--device", "cpu", *extra,
    ])


def test_resume_refuses_conflicting_options_and_extends_with_more_epochs(tmp_path, small_mnist):
    run = tmp_path / "run"
    assert _small_run(run, small_mnist, "--epochs", "1").exit_code == 0
    runner = CliRunner()
    common = ["--out", str(run), "--resume", "--data-dir", str(small_mnist), "--device", "cpu"]
    refused = runner.invoke(train_command, [*common, "--lr", "0.01", "--optimizer", "sgd", "--seed", "3",
                                            "-a", "model_b"])
    assert refused.exit_code == 1
    for part in ("--lr 0.01 (the run used 0.003)", "--optimizer sgd (the run used adam)", "--seed 3 (the run used 4)",
                 "--architecture model_b (the run used seed_cnn)"):
        assert part in refused.output
    assert refused.output.count("Error:") == 1
    # the same values as recorded are no conflict
    same = runner.invoke(train_command, [*common, "--lr", "0.003", "--seed", "4", "--epochs", "1"])
    assert same.exit_code == 0, same.output
    # more epochs extend the run, and (constant LR) the result is the uninterrupted 2-epoch run's
    extended = runner.invoke(train_command, [*common, "--epochs", "2"])
    assert extended.exit_code == 0, extended.output
    assert "Extending the run from 1 to 2 epochs" in extended.output
    straight = tmp_path / "straight"
    assert _small_run(straight, small_mnist, "--epochs", "2").exit_code == 0
    a, b = load_file(run / "seed_cnn.safetensors"), load_file(straight / "seed_cnn.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run / "history.json").read_text())["recipe"]["epochs"] == 2
    shorter = runner.invoke(train_command, [*common, "--epochs", "1"])
    assert shorter.exit_code == 1 and "--epochs 1 (the run used 2)" in shorter.output


# ----------------------------------------------------------------------------- live curves
def test_curves_png_is_redrawn_after_each_checkpoint(tmp_path, small_mnist, monkeypatch):
    import convscope.io

    real = convscope.io.save_figure
    drawn = []

    def spy(path, figure, **kwargs):
        if Path(path).name == "training_curves.png":
            meta = json.loads((Path(path).parent / "checkpoint" / "checkpoint.json").read_text())
            epochs_drawn = len(figure.axes[1].lines[0].get_xdata())
            drawn.append((meta["epochs_done"], epochs_drawn))
        return real(path, figure, **kwargs)

    monkeypatch.setattr(convscope.io, "save_figure", spy)
    out = tmp_path / "run"
    result = _small_run(out, small_mnist, "--epochs", "3")
    assert result.exit_code == 0, result.output
    assert drawn == [(1, 1), (2, 2), (3, 3), (3, 3)]  # after each epoch's checkpoint, then the final one
    assert (out / "training_curves.png").read_bytes()[:8] == PNG
    assert not list(out.rglob("*.part"))  # atomic writes: no temporary file left


def _records(accuracies, held="test"):
    out = []
    for epoch, (train_acc, held_acc) in enumerate(accuracies, start=1):
        values = {"test_loss": 0.1, "test_accuracy": held_acc} if held == "test" else {
            "test_loss": None, "test_accuracy": None, "val_loss": 0.1, "val_accuracy": held_acc}
        out.append(EpochRecord(epoch=epoch, train_loss=0.2, train_accuracy=train_acc, lr_start=1e-3, lr_end=1e-3,
                               seconds=1.0, images_per_second=10.0, **values))
    return out


def test_curves_figure_shows_epoch_1_labels_the_held_out_set_and_smoothing():
    history = _records([(0.43, 0.88), (0.96, 0.985), (0.99, 0.991)])
    fig = training_curves_figure(history, [1e-3] * 30, label_smoothing=0.05)
    loss_ax, acc_ax, _ = fig.axes[:3]
    low, high = acc_ax.get_ylim()
    assert low < 43 and high >= 99.1  # epoch 1 is inside the axis
    legend = [t.get_text() for t in acc_ax.get_legend().get_texts()]
    assert legend == ["train", "test (validation)", "best 99.10 % (epoch 3)"]
    assert len(acc_ax.texts) == 0  # no free-floating label that could cover the legend
    assert "label smoothing 0.05" in loss_ax.get_ylabel()
    plain = training_curves_figure(_records([(0.9, 0.95)], held="val"), [1e-3] * 10,
                                   validation="validation split 20 %", test_accuracy=0.97)
    assert "smoothing" not in plain.axes[0].get_ylabel()
    legend = [t.get_text() for t in plain.axes[1].get_legend().get_texts()]
    assert legend == ["train", "validation split 20 %", "best 95.00 % (epoch 1)", "test, after training: 97.00 %"]


def test_curves_options_read_from_old_and_new_history_files():
    from convscope.render.training import curves_options

    old = {"recipe": {"name": "fast", "label_smoothing": 0.05}, "test_accuracy": 0.99}  # before --val-split existed
    assert curves_options(old) == {"label_smoothing": 0.05, "validation": "test", "test_accuracy": None}
    new = {"recipe": {"label_smoothing": 0.0}, "validation": "validation split 20 %", "test_accuracy": 0.98}
    assert curves_options(new) == {"label_smoothing": 0.0, "validation": "validation split 20 %", "test_accuracy": 0.98}


def test_epoch_plot_draws_quietly_without_a_notebook(train_split, test_split, tmp_path, capsys):
    recipe = get_recipe("fast").with_overrides(epochs=2, batch_size=100)
    model = build_model("seed_cnn")
    init_weights(model, "keras", 0)
    plot = EpochPlot(recipe, title="t")
    checkpoints = tmp_path / "checkpoint"
    train(model, train_split, _few(test_split), recipe, seed=0, train_limit=200,
          on_epoch_end=[Checkpointer(checkpoints, recipe=recipe, seed=0), plot])
    assert plot.updates == 2 and plot.png[:8] == PNG
    assert json.loads((checkpoints / "checkpoint.json").read_text())["epochs_done"] == 2
    assert capsys.readouterr().out == ""


def test_epoch_plot_updates_one_display_in_ipython(tmp_path):
    pytest.importorskip("IPython")
    script = textwrap.dedent('''
        import json
        from IPython.core.interactiveshell import InteractiveShell
        from convscope.training.live import EpochPlot
        from convscope.training.loop import EpochRecord, TrainState

        shell = InteractiveShell.instance()
        published = []
        shell.display_pub.publish = lambda data, metadata=None, **kw: published.append(
            {"mimetypes": sorted(data), "update": kw.get("update", False),
             "display_id": (kw.get("transient") or {}).get("display_id")})
        plot = EpochPlot()
        state = TrainState()
        for epoch in (1, 2, 3):
            state.history.append(EpochRecord(epoch, 0.3, 0.9, 0.2, 0.95, 1e-3, 1e-3, 1.0, 10.0))
            state.lr_history += [1e-3] * 5
            plot(state)
        print(json.dumps(published))
    ''')
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    published = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(published) == 3
    assert all(p["mimetypes"] == ["image/png", "text/plain"] for p in published)
    assert [p["update"] for p in published] == [False, True, True]
    assert published[0]["display_id"] and len({p["display_id"] for p in published}) == 1
