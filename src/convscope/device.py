"""Device and dtype selection: always an argument, never an import-time global."""

from __future__ import annotations

import torch


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
