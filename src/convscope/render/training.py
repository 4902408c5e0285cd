"""Training curves: loss and accuracy per epoch, and the learning-rate history."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from convscope.render.figure import new_subplots
from convscope.training.loop import EpochRecord


def training_curves_figure(
    history: Sequence[EpochRecord],
    lr_history: Sequence[float],
    title: str = "",
    *,
    label_smoothing: float = 0.0,
    validation: str = "test",
    test_accuracy: float | None = None,
) -> Figure:
    """Three panels: train / held-out loss, train / held-out accuracy (per epoch), LR per step.

    Args:
        history: one record per finished epoch; the held-out curve is the
            validation split's (``val_*``) when recorded, else the test set's.
        lr_history: learning rate of every step, in order.
        title: figure title.
        label_smoothing: the run's label smoothing; when > 0 the loss axis says the
            training loss includes it (the held-out loss never does).
        validation: which set validated the run, as :func:`convscope.training.loop.validation_label`
            says it: ``"test"`` or ``"validation split 20 %"`` (legend).
        test_accuracy: for a run validated on a split, the test accuracy scored once
            after training (0..1), drawn as a dashed line.

    Returns:
        The figure (13 × 3.6 in). Every epoch is inside the accuracy axis (epoch 1
        included); the best held-out accuracy is starred and given in the legend.
    """
    epochs = [record.epoch for record in history]
    held_label = "test (validation)" if validation == "test" else validation
    fig, axes = new_subplots(1, 3, figsize=(13, 3.6), layout="constrained")

    ax = axes[0]
    ax.plot(epochs, [r.train_loss for r in history], "o-", label="train")
    ax.plot(epochs, [r.held_out_loss for r in history], "s-", label=held_label)
    loss_label = "cross-entropy"
    if label_smoothing > 0:
        loss_label += f" (train incl. label smoothing {label_smoothing:g})"
    ax.set(xlabel="epoch", ylabel=loss_label, title="Loss")
    ax.legend(loc="best")

    ax = axes[1]
    train_acc = [100 * r.train_accuracy for r in history]
    held_acc = [100 * r.held_out_accuracy for r in history]
    ax.plot(epochs, train_acc, "o-", label="train")
    ax.plot(epochs, held_acc, "s-", label=held_label)
    if history:
        best = max(history, key=lambda r: r.held_out_accuracy)
        ax.plot([best.epoch], [100 * best.held_out_accuracy], "*", color="tab:red", markersize=13, zorder=3,
                label=f"best {100 * best.held_out_accuracy:.2f} % (epoch {best.epoch})")
        values = train_acc + held_acc
        if test_accuracy is not None:
            ax.axhline(100 * test_accuracy, color="black", linestyle="--", linewidth=1,
                       label=f"test, after training: {100 * test_accuracy:.2f} %")
            values.append(100 * test_accuracy)
        low, high = min(values), max(values)
        pad = max(0.1, 0.05 * (high - low))
        ax.set_ylim(low - pad, min(high + pad, 100 + pad / 2))
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    ax.legend(loc="best")

    ax = axes[2]
    steps_per_epoch = len(lr_history) / max(1, len(history))
    # step i ends at epoch (i + 1) / steps_per_epoch: epoch k's last step sits at x = k, as in the other panels
    ax.plot([(i + 1) / steps_per_epoch for i in range(len(lr_history))], lr_history, color="tab:purple")
    ax.set(xlabel="epoch", ylabel="learning rate", title="Learning-rate schedule")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return fig


def curves_options(history: dict) -> dict:
    """The keyword arguments of :func:`training_curves_figure` recorded in a
    ``history.json`` dict (label smoothing, which set validated, the test accuracy
    of a run validated on a split); defaults for what an older file lacks."""
    recipe = history.get("recipe") or {}
    validation = history.get("validation") or "test"
    return {
        "label_smoothing": float(recipe.get("label_smoothing") or 0.0),
        "validation": validation,
        "test_accuracy": history.get("test_accuracy") if validation != "test" else None,
    }
