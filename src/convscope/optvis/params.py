"""Parametrisations for :func:`~convscope.optvis.core.optimize`: what is optimised,
and how it becomes images ``(n, C, H, W)``.

* :class:`PixelImage` — the pixels themselves (the reference), optionally
  re-standardised after every step and/or standardised when rendered.
* :class:`FourierImage` — a 1/f-scaled 2-D spectrum per channel (Lucid's "fft"
  image), any number of channels, any size.
* :class:`UpscaledImage` — pixels held at a lower resolution and upscaled
  (bicubic, antialiased) to the model's size: one stage of strategy 1.

Write your own by following the :class:`~convscope.optvis.core.Parametrisation`
protocol: ``n``, ``leaves(rows, persistent)``, ``render(leaves)``,
``commit(rows, leaves, new, moving)`` and ``images()``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from convscope.data.preprocess import standardize
from convscope.optvis.init import upscale


def _where(moving: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(moving.to(new.device).reshape((-1,) + (1,) * (new.ndim - 1)), new, old)


class _TensorState:
    """One ``(n, ...)`` tensor of member state, as fresh leaves per step (stateless
    rules) or as one persistent ``nn.Parameter`` of the members in the batch
    (stateful optimizers: the same object every step until the batch changes)."""

    #: persistent leaves follow ``rows``: a stateful optimizer may drop stopped members
    subsets_persistent = True

    def __init__(self, value: torch.Tensor, restandardize: bool) -> None:
        self.current = value.detach().clone()
        self.restandardize = restandardize
        self.parameter: nn.Parameter | None = None
        self._rows: torch.Tensor | None = None
        self.n = int(value.shape[0])

    def leaves(self, rows: torch.Tensor, persistent: bool) -> list[torch.Tensor]:
        if persistent:
            if self.parameter is None or self._rows is None or not torch.equal(self._rows, rows):
                whole = len(rows) == self.n and torch.equal(rows, torch.arange(self.n))
                self.parameter = nn.Parameter(self.current if whole else self.current[rows].clone())
                self._rows = rows.clone()
            return [self.parameter]
        return [self.current[rows].requires_grad_(True)]

    def commit(self, rows: torch.Tensor, leaves: list[torch.Tensor], new: list[torch.Tensor], moving: torch.Tensor) -> None:
        value = standardize(new[0]) if self.restandardize else new[0]
        if self.parameter is not None:
            with torch.no_grad():
                self.parameter.copy_(_where(moving, value, self.parameter.detach()))
            if self._rows is not None and len(self._rows) == self.n:
                self.current = self.parameter.detach()
            else:
                self.current[self._rows] = self.parameter.detach()
        else:
            self.current[rows] = _where(moving, value, leaves[0].detach())


class PixelImage(_TensorState):
    """Pixels as the parameters.

    Args:
        initial: ``(n, C, H, W)`` start images.
        restandardize: standardise each member after every step (the reference:
            without it there is no convergence).
        standardize_render: the image is ``standardize(pixels)`` (the modern path;
            the gradient then flows through the standardisation) instead of the
            pixels themselves (the reference).
    """

    def __init__(self, initial: torch.Tensor, *, restandardize: bool = True, standardize_render: bool = False) -> None:
        if initial.ndim != 4:
            raise ValueError(f"initial images must be (N, C, H, W); got shape {tuple(initial.shape)}")
        super().__init__(initial, restandardize)
        self.standardize_render = standardize_render

    def render(self, leaves: list[torch.Tensor]) -> torch.Tensor:
        return standardize(leaves[0]) if self.standardize_render else leaves[0]

    def images(self) -> torch.Tensor:
        return standardize(self.current) if self.standardize_render else self.current

    @property
    def pixels(self) -> torch.Tensor:
        """The current pixels of all members (a blur callback edits these)."""
        return self.current


class UpscaledImage(PixelImage):
    """Pixels at ``(h, w)`` upscaled to ``size`` for the forward pass (strategy 1's
    low-resolution stages); re-standardised at low resolution after every step."""

    def __init__(self, initial: torch.Tensor, size: tuple[int, int], *, restandardize: bool = True) -> None:
        super().__init__(initial, restandardize=restandardize)
        self.size = (int(size[0]), int(size[1]))

    def render(self, leaves: list[torch.Tensor]) -> torch.Tensor:
        low = leaves[0]
        return upscale(low, self.size) if tuple(low.shape[-2:]) != self.size else low

    def images(self) -> torch.Tensor:
        return self.render([self.current])


def fourier_scale(size: tuple[int, int], decay: float = 1.0) -> torch.Tensor:
    """``(H, W // 2 + 1)`` spectrum weights ``1 / f**decay``, normalised to 1 at the
    lowest resolved frequency (so all frequencies learn at a similar rate)."""
    height, width = size
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    lowest = 1.0 / max(height, width)
    frequency = torch.sqrt(fx**2 + fy**2).clamp_min(lowest)
    return (1.0 / frequency**decay) / (1.0 / lowest**decay)


class FourierImage(_TensorState):
    """Images parametrised by their 2-D real Fourier spectrum per channel, scaled by
    ``1 / f**decay`` (Lucid's "fft" image); the image is the standardised inverse FFT.

    Args:
        n: members (ignored when ``initial`` is given).
        size: ``H`` or ``(H, W)``.
        channels: image channels.
        decay: spectrum decay exponent.
        generator: randomness for a random start (all members from one generator).
        generators: one generator per member instead (a member's start then depends
            on its own generator only).
        initial: ``(n, C, H, W)`` images to start from (their spectrum, rescaled to
            ``init_std``: only its shape matters since the image is standardised).
        init_std: RMS of the random (or rescaled) start spectrum.
    """

    def __init__(
        self,
        n: int = 1,
        size: int | tuple[int, int] = 28,
        channels: int = 1,
        *,
        decay: float = 1.0,
        generator: torch.Generator | None = None,
        generators: Sequence[torch.Generator] | None = None,
        initial: torch.Tensor | None = None,
        init_std: float = 0.01,
    ) -> None:
        if initial is not None:
            size = (int(initial.shape[-2]), int(initial.shape[-1]))
            channels = int(initial.shape[1])
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.scale = fourier_scale(self.size, decay)
        freq_shape = (channels, self.size[0], self.size[1] // 2 + 1, 2)
        if initial is not None:
            spectrum = torch.fft.rfft2(initial.float()) / self.scale
            value = torch.view_as_real(spectrum).contiguous()
            # the image is standardised after the inverse FFT, so only the spectrum's
            # shape matters; give it the random init's size so a step means the same
            rms = value.pow(2).mean(dim=tuple(range(1, value.ndim)), keepdim=True).sqrt().clamp_min(1e-12)
            value = value / rms * init_std
        elif generators is not None:
            value = torch.stack([torch.randn(freq_shape, generator=g) for g in generators]) * init_std
        else:
            value = torch.randn((n, *freq_shape), generator=generator) * init_std
        super().__init__(value, restandardize=False)

    def to(self, device: torch.device | str) -> "FourierImage":
        self.current = self.current.to(device)
        self.scale = self.scale.to(device)
        return self

    def render(self, leaves: list[torch.Tensor]) -> torch.Tensor:
        spectrum = torch.view_as_complex(leaves[0]) * self.scale.to(leaves[0].device)
        return standardize(torch.fft.irfft2(spectrum, s=self.size))

    def images(self) -> torch.Tensor:
        with torch.no_grad():
            return self.render([self.current])


__all__ = ["FourierImage", "PixelImage", "UpscaledImage", "fourier_scale"]
