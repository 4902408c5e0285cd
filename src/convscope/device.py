"""Device and dtype selection: always an argument, never an import-time global."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters (CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the platform tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_workers(device: torch.device, cap: int = 4) -> int:
    """Threads to split a computation on ``device`` over by default: one per usable
    core, at most ``cap``, on a CPU; 1 on an accelerator (one batch keeps it busy)."""
    return min(cap, usable_cores()) if device.type == "cpu" else 1


class DeviceError(ValueError):
    """A device name that is not a device, or one this machine does not have."""


#: Device types convscope computes on.
DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device(device: str | torch.device | None) -> torch.device:
    """The device named by ``device`` (``None`` / ``"auto"``: CUDA when available, else CPU).

    Raises:
        DeviceError: not a device name (``"foo"``, ``"cuda:x"``), a type convscope does
            not compute on, or a device this machine lacks (CUDA or its index, MPS).
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = str(device).strip()
    shown = text if len(text) <= 40 else text[:30] + "…"
    choices = "use auto, cpu, cuda or cuda:N"
    try:
        dev = torch.device(text.lower())
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"{shown!r} is not a device; {choices}") from None
    if dev.type not in DEVICE_TYPES:
        raise DeviceError(f"{shown!r}: convscope computes on cpu, cuda or mps, not {dev.type}; {choices}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {shown!r} was requested but CUDA is not available on this machine; "
                "use --device cpu (or leave it out to pick automatically)"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"{shown!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f"{shown!r}: MPS is not available on this machine; use --device cpu")
    return dev


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``, or ``None``
            / ``"auto"`` for CUDA when available, else CPU.

    Raises:
        DeviceError (a ValueError): not a device, or one this machine lacks (see :func:`check_device`).
    """
    if isinstance(device, torch.device):
        if device.type == "cuda" and not torch.cuda.is_available():
            return check_device(str(device))  # raises with the message
        return device
    return check_device(device)


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
