"""Training curves: loss and accuracy per epoch, and the learning-rate history."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from convscope.render.figure import new_subplots
from convscope.training.loop import EpochRecord


def training_curves_figure(history: Sequence[EpochRecord], lr_history: Sequence[float], title: str = "") -> Figure:
    """Three panels: train/test loss, train/test accuracy (per epoch), LR per step."""
    epochs = [record.epoch for record in history]
    fig, axes = new_subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    ax = axes[0]
    ax.plot(epochs, [r.train_loss for r in history], "o-", label="train")
    ax.plot(epochs, [r.test_loss for r in history], "s-", label="test (validation)")
    ax.set(xlabel="epoch", ylabel="cross-entropy (train: incl. label smoothing)", title="Loss")
    ax.legend()
    ax = axes[1]
    ax.plot(epochs, [100 * r.train_accuracy for r in history], "o-", label="train")
    ax.plot(epochs, [100 * r.test_accuracy for r in history], "s-", label="test (validation)")
    if history:
        best = max(history, key=lambda r: r.test_accuracy)
        ax.annotate(
            f"{100 * best.test_accuracy:.2f} %", (best.epoch, 100 * best.test_accuracy),
            textcoords="offset points", xytext=(0, -16), ha="center", fontsize=9,
        )
        low = min(min(r.train_accuracy, r.test_accuracy) for r in history[1:] or history)
        ax.set_ylim(max(90.0, 100 * low - 0.3), 100.05)
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    ax.legend(loc="lower right")
    ax = axes[2]
    steps_per_epoch = len(lr_history) / max(1, len(history))
    ax.plot([i / steps_per_epoch for i in range(len(lr_history))], lr_history, color="tab:purple")
    ax.set(xlabel="epoch", ylabel="learning rate", title="Learning-rate schedule")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for axis in axes:
        axis.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig
