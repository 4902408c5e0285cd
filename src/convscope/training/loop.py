"""The training engine: one epoch loop for every recipe, resumable at epoch
boundaries, deterministic for a seed on CPU.

Randomness is derived from ``(seed, epoch)`` alone — the shuffle order, the
augmentation shifts and dropout of epoch ``e`` do not depend on what ran before —
so a run resumed from the checkpoint of epoch ``e`` continues exactly like the
uninterrupted run. The LR schedule is a pure function of the step number.
Dropout draws from PyTorch's global generator, so each epoch seeds it — inside
``torch.random.fork_rng``: the caller's global RNG state is the same after
:func:`train` as before. A non-finite loss stops the run with
:class:`TrainingDiverged` before the bad step is applied and before any
``on_epoch_end`` call for that epoch.
This module never touches the disk: the caller persists state in ``on_epoch_end``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convscope.data.datasets import Split
from convscope.data.preprocess import preprocess, standardize, to_channels_first
from convscope.spec import model_output
from convscope.inference import accuracy, model_device
from convscope.training.recipes import Recipe

EpochCallback = Callable[["TrainState", nn.Module, torch.optim.Optimizer], None]


@dataclass
class EpochRecord:
    """Figures of one finished epoch (all floats are plain Python numbers).

    The held-out set scored after each epoch is the test set (``test_loss``,
    ``test_accuracy``; ``val_*`` are ``None``) or, for a recipe with
    ``val_split > 0``, the validation split (``val_loss``, ``val_accuracy``;
    ``test_*`` are ``None`` — the test set is not looked at during training).
    ``train_loss`` is the mean cross-entropy of the training batches as trained
    (with label smoothing and augmentation, without the L2 term).
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float | None
    test_accuracy: float | None
    lr_start: float
    lr_end: float
    seconds: float
    images_per_second: float
    val_loss: float | None = None
    val_accuracy: float | None = None

    @property
    def held_out_loss(self) -> float:
        """Loss on the set that validated this run (validation split, else test)."""
        return self.val_loss if self.val_loss is not None else self.test_loss

    @property
    def held_out_accuracy(self) -> float:
        """Accuracy on the set that validated this run (validation split, else test)."""
        return self.val_accuracy if self.val_accuracy is not None else self.test_accuracy


class TrainingDiverged(RuntimeError):
    """The loss (or the weights) became non-finite; nothing of that epoch was kept.

    Attributes:
        epoch: 1-based epoch in which it happened.
        batch: 1-based batch within the epoch (``None``: found at the epoch's end).
        batches: batches per epoch.
        step: 0-based global step (``None`` with ``batch``).
        loss: the offending loss value (``None`` when the weights were non-finite).
    """

    def __init__(self, epoch: int, batch: int | None, batches: int, step: int | None, loss: float | None) -> None:
        self.epoch, self.batch, self.batches, self.step, self.loss = epoch, batch, batches, step, loss
        if batch is None:
            where = f"the weights became non-finite (inf/nan) during epoch {epoch}"
        else:
            where = f"the loss became {loss} in epoch {epoch} at step {batch}/{batches} (global step {step})"
        super().__init__(f"training diverged: {where}")


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
                with torch.random.fork_rng(devices=[]):  # reset_parameters draws from the global generator
                    torch.random.default_generator.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
                    module.reset_parameters()
            else:
                raise ValueError(f"unknown init scheme {scheme!r}; use 'keras' or 'torch'")


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over all parameters."""
    if recipe.optimizer == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=recipe.lr, alpha=recipe.rho, eps=recipe.eps, momentum=recipe.momentum)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, eps=recipe.eps)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; use 'rmsprop', 'adam' or 'sgd'")


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
    if recipe.schedule == "step":
        steps_per_epoch = max(1, total_steps // recipe.epochs)
        return recipe.lr * recipe.step_gamma ** (step // (recipe.step_epochs * steps_per_epoch))
    if recipe.schedule == "cosine":
        return recipe.lr * (1 + math.cos(math.pi * min(1.0, step / max(1, total_steps)))) / 2
    raise ValueError(f"unknown schedule {recipe.schedule!r}")


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image ``(N, C, H, W)`` by a random integer offset in
    ``[-max_shift, max_shift]`` in both axes (all channels alike), filling with zeros."""
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :]).to(images.device)
    cols = (dx[:, None] + torch.arange(w)[None, :]).to(images.device)
    batch = torch.arange(n, device=images.device)[:, None, None]
    # (N, H, W, C) after advanced indexing of the (N, C, H+2m, W+2m) padding
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


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


@contextlib.contextmanager
def _seeded_global_rng(seed_value: int, device: torch.device) -> Iterator[None]:
    """Seed the global generator that dropout on ``device`` draws from, and give the
    caller back its own global RNG state afterwards (``torch.random.fork_rng``)."""
    cuda_index = None
    if device.type == "cuda":
        cuda_index = device.index if device.index is not None else torch.cuda.current_device()
    with torch.random.fork_rng(devices=[] if cuda_index is None else [cuda_index]):
        torch.random.default_generator.manual_seed(seed_value)
        if cuda_index is not None:
            torch.cuda.default_generators[cuda_index].manual_seed(seed_value)
        yield


#: Stream id of the validation split's shuffle (kept apart from the epoch streams).
_VALIDATION_STREAM = 0x56A1_1D


def validation_split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``n`` training images into ``(train_indices, validation_indices)``.

    A seeded shuffle (numpy PCG64, the same on every platform) of ``range(n)``;
    the first ``round(fraction · n)`` go to validation. Both index arrays are
    sorted, so the kept training images stay in their original order. The split
    depends on ``(n, fraction, seed)`` only.

    Raises:
        ValueError: ``fraction`` outside ``[0, 1)`` or a split that leaves either part empty.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction!r}")
    n_val = int(fraction * n + 0.5)
    if fraction == 0:
        return np.arange(n), np.arange(0)
    if not 1 <= n_val < n:
        raise ValueError(
            f"a validation split of {fraction:g} of {n} training images leaves "
            f"{n_val} for validation and {n - n_val} for training; both need at least one image"
        )
    order = np.random.default_rng([_VALIDATION_STREAM, seed & (2**64 - 1)]).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def validation_label(recipe: Recipe) -> str:
    """Which set validates a run: ``"test"`` or ``"validation split 20 %"``."""
    return "test" if recipe.val_split == 0 else f"validation split {100 * recipe.val_split:g} %"


def training_spec(model: nn.Module, preprocessing: str):
    """The model's spec (its input shape, mean/std) with the recipe's preprocessing,
    or ``None`` for a model without a spec (gray images, any size)."""
    from convscope.spec import SpecError, spec_of

    try:
        spec = spec_of(model)
    except SpecError:
        return None
    if preprocessing == spec.preprocessing:
        return spec
    if preprocessing == "meanstd":
        raise ValueError("preprocessing 'meanstd' needs the model spec's mean and std; wrap the model with them")
    return spec.replace(preprocessing=preprocessing, mean=None, std=None)


@torch.no_grad()
def evaluate_split(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, preprocessing: str, *, batch_size: int = 1000
) -> tuple[float, float]:
    """Mean cross-entropy (no smoothing) and accuracy of ``model`` on uint8 ``images``
    (``(N, H, W)`` or ``(N, H, W, 3)``) with int ``labels`` ``(N,)``, preprocessed by
    ``preprocessing`` (the recipe's, not the model config's)."""
    spec = training_spec(model, preprocessing)
    method = spec if spec is not None else preprocessing
    was_training = model.training
    model.eval()
    try:
        device = model_device(model)
        chunks = [
            model_output(model(preprocess(images[start : start + batch_size], method, device=device))).float().cpu()
            for start in range(0, len(images), batch_size)
        ]
    finally:
        model.train(was_training)
    logits = torch.cat(chunks)
    targets = torch.from_numpy(np.array(labels, dtype=np.int64))  # a copy: splits are read-only
    return float(F.cross_entropy(logits, targets)), accuracy(logits, targets)


def _weights_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def to_model_input(raw: torch.Tensor, preprocessing: "str | Any") -> torch.Tensor:
    """Float 0..255 batch ``(N, C, H, W)`` → the recipe's preprocessing (a method name,
    or a :class:`~convscope.spec.ModelSpec` for per-channel mean/std)."""
    if not isinstance(preprocessing, str):
        return preprocess(raw, preprocessing)
    return standardize(raw) if preprocessing == "standardize" else raw if preprocessing == "raw" else raw / 255.0


def train(
    model: nn.Module,
    train_split: Split,
    test_split: Split | None,
    recipe: Recipe,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    state: TrainState | None = None,
    on_epoch_end: EpochCallback | Sequence[EpochCallback] | None = None,
    on_batch: Callable[[int, int, float], None] | None = None,
    train_limit: int | None = None,
) -> TrainState:
    """Train ``model`` with ``recipe``; resume from ``state`` if given.

    Args:
        model: freshly initialised (or, when resuming, loaded) model.
        train_split: uint8 training data. With ``recipe.val_split > 0`` a seeded
            part of it (see :func:`validation_split_indices`) is held out and scored
            after each epoch instead of the test set.
        test_split: uint8 test data, scored after each epoch when
            ``recipe.val_split == 0`` (the reference's way); unused (may be ``None``)
            otherwise.
        recipe: hyper-parameters.
        seed: seeds shuffling, augmentation and dropout (per epoch) and the
            validation split. The caller's global RNG state is left as it was.
        device: compute device.
        state: resume point (``epochs_done``, optimizer state, history).
        on_epoch_end: called after each epoch with ``(state, model, optimizer)``
            (persist or plot there); a list of callables is called in order.
        on_batch: called after each step with ``(batch_index, batches, loss)``.
        train_limit: use only the first ``train_limit`` training images (quick runs;
            a validation split is taken from these).

    Returns:
        The final :class:`TrainState`.

    Raises:
        TrainingDiverged: the loss or the weights became non-finite. The epoch it
            happened in is dropped from ``state`` and no callback sees it; the model
            and optimizer in memory are then unusable (resume from the last checkpoint).
        ValueError: no test split while validating on it, or an empty split.
    """
    device = torch.device(device)
    state = state or TrainState()
    callbacks = [] if on_epoch_end is None else [on_epoch_end] if callable(on_epoch_end) else list(on_epoch_end)
    model.to(device)
    raw_images = train_split.images[:train_limit]
    raw_labels = train_split.labels[:train_limit]
    if recipe.val_split > 0:
        train_indices, val_indices = validation_split_indices(len(raw_labels), recipe.val_split, seed)
        held_out_images, held_out_labels = raw_images[val_indices], raw_labels[val_indices]
        raw_images, raw_labels = raw_images[train_indices], raw_labels[train_indices]
    elif test_split is None:
        raise ValueError("no test split given: pass one, or hold out a validation split (recipe.val_split > 0)")
    else:
        held_out_images, held_out_labels = test_split.images, test_split.labels
    spec = training_spec(model, recipe.preprocessing)
    images = to_channels_first(np.array(raw_images), None if spec is None else spec.input_shape).to(torch.float32)
    labels = torch.as_tensor(np.array(raw_labels), dtype=torch.long)
    n = len(labels)
    if n == 0:
        raise ValueError(f"no training images (train_limit={train_limit})")
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.epochs
    optimizer = make_optimizer(model, recipe)
    if state.optimizer_state is not None:
        optimizer.load_state_dict(state.optimizer_state)

    for epoch in range(state.epochs_done, recipe.epochs):
        lr_entries = len(state.lr_history)
        try:
            # dropout, if the model has any, draws from the global generator: seeded per epoch, then restored
            with _seeded_global_rng(seed * 100_003 + epoch, device):
                record = _train_epoch(
                    model, optimizer, recipe, images, labels, epoch, steps_per_epoch, total_steps,
                    _epoch_generator(seed, epoch), state.lr_history, on_batch, device,
                )
                held_out_loss, held_out_accuracy = evaluate_split(model, held_out_images, held_out_labels, recipe.preprocessing)
                if not (math.isfinite(held_out_loss) and _weights_finite(model)):
                    raise TrainingDiverged(epoch + 1, None, steps_per_epoch, None, None)
        except TrainingDiverged:
            del state.lr_history[lr_entries:]
            raise
        if recipe.val_split > 0:
            record.val_loss, record.val_accuracy = held_out_loss, held_out_accuracy
        else:
            record.test_loss, record.test_accuracy = held_out_loss, held_out_accuracy
        state.history.append(record)
        state.epochs_done = epoch + 1
        state.optimizer_state = optimizer.state_dict()
        for callback in callbacks:
            callback(state, model, optimizer)
    model.eval()
    return state


def _train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe, images: torch.Tensor, labels: torch.Tensor,
    epoch: int, steps_per_epoch: int, total_steps: int, generator: torch.Generator, lr_history: list[float],
    on_batch: Callable[[int, int, float], None] | None, device: torch.device,
) -> EpochRecord:
    """One pass over the training images; the held-out figures are filled in by the caller."""
    spec = training_spec(model, recipe.preprocessing)
    input_method = spec if spec is not None and spec.preprocessing == "meanstd" else recipe.preprocessing
    n = len(labels)
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
        lr_history.append(lr)
        idx = order[batch_index * recipe.batch_size : (batch_index + 1) * recipe.batch_size]
        batch = random_shift(images[idx], recipe.shift_pixels, generator)
        inputs = to_model_input(batch, input_method).to(device)
        targets = labels[idx].to(device)
        logits = model_output(model(inputs))
        data_loss = F.cross_entropy(logits, targets, label_smoothing=recipe.label_smoothing)
        loss = data_loss + l2_penalty(model, recipe.l2_dense)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):  # stop before the step: the weights stay as they were
            raise TrainingDiverged(epoch + 1, batch_index + 1, steps_per_epoch, step, loss_value)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        batch_loss = float(data_loss.detach())
        loss_sum += batch_loss * len(idx)
        correct += int((logits.argmax(1) == targets).sum())
        seen += len(idx)
        if on_batch is not None:
            on_batch(batch_index, steps_per_epoch, batch_loss)
    seconds = time.perf_counter() - started
    return EpochRecord(
        epoch=epoch + 1,
        train_loss=loss_sum / seen,
        train_accuracy=correct / seen,
        test_loss=None,
        test_accuracy=None,
        lr_start=lr_start,
        lr_end=lr,
        seconds=seconds,
        images_per_second=seen / seconds,
    )
