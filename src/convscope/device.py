"""Device and dtype selection: always an argument, never an import-time global."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters (CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``, or ``None``
            / ``"auto"`` for CUDA when available, else CPU.

    Raises:
        ValueError: a CUDA device was asked for on a machine without CUDA.
    """
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(device)!r} was requested but CUDA is not available on this machine; "
            "use --device cpu (or leave it out to pick automatically)"
        )
    return dev


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` PyTorch CPU threads, restoring the previous number.

    Small batches (a 28×28 ascent step) are too small to split across threads: on
    a busy 2-core machine two threads were measured many times slower than one
    (OpenMP spin-waiting)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
