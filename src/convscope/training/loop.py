"""The training engine: one epoch loop for every recipe, resumable at epoch
boundaries, deterministic for a seed on CPU.

Randomness is derived from ``(seed, epoch)`` alone — the shuffle order, the
augmentation shifts and dropout of epoch ``e`` do not depend on what ran before —
so a run resumed from the checkpoint of epoch ``e`` continues exactly like the
uninterrupted run. The LR schedule is a pure function of the step number.
This module never touches the disk: the caller persists state in ``on_epoch_end``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convscope.data.datasets import Split
from convscope.data.preprocess import standardize
from convscope.inference import accuracy, predict_logits
from convscope.training.recipes import Recipe


@dataclass
class EpochRecord:
    """Figures of one finished epoch (all floats are plain Python numbers)."""

    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    lr_start: float
    lr_end: float
    seconds: float
    images_per_second: float


@dataclass
class TrainState:
    """What a checkpoint holds: the epoch count done, optimizer state, history,
    and the per-step LR history."""

    epochs_done: int = 0
    optimizer_state: dict[str, Any] | None = None
    history: list[EpochRecord] = field(default_factory=list)
    lr_history: list[float] = field(default_factory=list)


def init_weights(model: nn.Module, scheme: str, seed: int) -> None:
    """Initialise weights: ``"keras"`` = Glorot-uniform kernels and zero biases,
    ``"torch"`` = PyTorch defaults re-drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if scheme == "keras":
                fan_out = module.weight.shape[0] * module.weight[0, 0].numel() if module.weight.ndim > 2 else module.weight.shape[0]
                fan_in = module.weight[0].numel()
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                with torch.no_grad():
                    module.weight.uniform_(-bound, bound, generator=generator)
                    if module.bias is not None:
                        module.bias.zero_()
            elif scheme == "torch":
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
                module.reset_parameters()
            else:
                raise ValueError(f"unknown init scheme {scheme!r}; use 'keras' or 'torch'")


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over all parameters."""
    if recipe.optimizer == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=recipe.lr, alpha=recipe.rho, eps=recipe.eps, momentum=recipe.momentum)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, eps=recipe.eps)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; use 'rmsprop' or 'adam'")


def learning_rate(step: int, total_steps: int, recipe: Recipe) -> float:
    """LR at global step ``step`` (0-based) of ``total_steps``."""
    if recipe.schedule == "inverse_time":
        return recipe.lr / (1.0 + recipe.decay * step)
    if recipe.schedule == "one_cycle":
        warm = max(1, int(recipe.warmup_fraction * total_steps))
        start, floor = recipe.lr / 25.0, recipe.lr / 1e4
        if step < warm:
            return start + (recipe.lr - start) * (1 - math.cos(math.pi * step / warm)) / 2
        progress = (step - warm) / max(1, total_steps - warm)
        return floor + (recipe.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress))) / 2
    if recipe.schedule == "constant":
        return recipe.lr
    raise ValueError(f"unknown schedule {recipe.schedule!r}")


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image ``(N, 1, H, W)`` by a random integer offset in
    ``[-max_shift, max_shift]`` in both axes, filling with zeros (background)."""
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :]).to(images.device)
    cols = (dx[:, None] + torch.arange(w)[None, :]).to(images.device)
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded[:, 0][batch, rows[:, :, None], cols[:, None, :]][:, None]


def l2_penalty(model: nn.Module, factor: float) -> torch.Tensor | float:
    """``factor · Σ w²`` over the dense kernels (Keras' ``l2`` regulariser)."""
    if factor == 0:
        return 0.0
    kernels = model.l2_parameters() if hasattr(model, "l2_parameters") else [
        m.weight for m in model.modules() if isinstance(m, nn.Linear)
    ]
    return factor * sum((w**2).sum() for w in kernels)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def to_model_input(raw: torch.Tensor, preprocessing: str) -> torch.Tensor:
    """Float 0..255 batch ``(N,1,H,W)`` → the recipe's preprocessing."""
    return standardize(raw) if preprocessing == "standardize" else raw / 255.0


def train(
    model: nn.Module,
    train_split: Split,
    test_split: Split,
    recipe: Recipe,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    state: TrainState | None = None,
    on_epoch_end: Callable[[TrainState, nn.Module, torch.optim.Optimizer], None] | None = None,
    on_batch: Callable[[int, int, float], None] | None = None,
    train_limit: int | None = None,
) -> TrainState:
    """Train ``model`` with ``recipe``; resume from ``state`` if given.

    Args:
        model: freshly initialised (or, when resuming, loaded) model.
        train_split / test_split: uint8 data; the test split is the validation set
            (as in the reference).
        recipe: hyper-parameters.
        seed: seeds shuffling, augmentation and dropout (per epoch).
        device: compute device.
        state: resume point (``epochs_done``, optimizer state, history).
        on_epoch_end: called after each epoch with the updated state (persist it there).
        on_batch: called after each step with ``(batch_index, batches, loss)``.
        train_limit: use only the first ``train_limit`` training images (quick runs).

    Returns:
        The final :class:`TrainState`.
    """
    device = torch.device(device)
    state = state or TrainState()
    model.to(device)
    images = torch.as_tensor(np.array(train_split.images[:train_limit]), dtype=torch.float32)[:, None]
    labels = torch.as_tensor(np.array(train_split.labels[:train_limit]), dtype=torch.long)
    n = len(labels)
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.epochs
    optimizer = make_optimizer(model, recipe)
    if state.optimizer_state is not None:
        optimizer.load_state_dict(state.optimizer_state)

    for epoch in range(state.epochs_done, recipe.epochs):
        generator = _epoch_generator(seed, epoch)
        torch.manual_seed(seed * 100_003 + epoch)  # dropout, if the model has any
        order = torch.randperm(n, generator=generator)
        model.train()
        started = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        lr_start = learning_rate(epoch * steps_per_epoch, total_steps, recipe)
        lr = lr_start
        for batch_index in range(steps_per_epoch):
            step = epoch * steps_per_epoch + batch_index
            lr = learning_rate(step, total_steps, recipe)
            for group in optimizer.param_groups:
                group["lr"] = lr
            state.lr_history.append(lr)
            idx = order[batch_index * recipe.batch_size : (batch_index + 1) * recipe.batch_size]
            batch = random_shift(images[idx], recipe.shift_pixels, generator)
            inputs = to_model_input(batch, recipe.preprocessing).to(device)
            targets = labels[idx].to(device)
            logits = model(inputs)
            data_loss = F.cross_entropy(logits, targets, label_smoothing=recipe.label_smoothing)
            loss = data_loss + l2_penalty(model, recipe.l2_dense)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(data_loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == targets).sum())
            seen += len(idx)
            if on_batch is not None:
                on_batch(batch_index, steps_per_epoch, float(data_loss.detach()))
        seconds = time.perf_counter() - started
        model.eval()
        test_logits = predict_logits(model, test_split.images)
        test_labels = torch.from_numpy(np.array(test_split.labels, dtype=np.int64))  # a copy: the split is read-only
        record = EpochRecord(
            epoch=epoch + 1,
            train_loss=loss_sum / seen,
            train_accuracy=correct / seen,
            test_loss=float(F.cross_entropy(test_logits, test_labels)),
            test_accuracy=accuracy(test_logits, test_labels),
            lr_start=lr_start,
            lr_end=lr,
            seconds=seconds,
            images_per_second=seen / seconds,
        )
        state.history.append(record)
        state.epochs_done = epoch + 1
        state.optimizer_state = optimizer.state_dict()
        if on_epoch_end is not None:
            on_epoch_end(state, model, optimizer)
    model.eval()
    return state
