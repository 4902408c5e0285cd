"""Micro-batching of the explorer's forward passes.

Concurrent ``/api/forward`` requests each used to run their own forward pass in a
pool thread; on a small machine those passes (mostly Python overhead for a small
network, so mostly holding the GIL) queue behind one another. The
:class:`ForwardBatcher` runs every forward pass in one compute thread instead:
requests that arrive while a pass runs join the next pass, one batched forward
through the engine's :class:`~convscope.probe.Probe` (:class:`BatchedActivations`),
and each request gets its own row back.

Equality: PyTorch's CPU kernels may pick another algorithm for another batch size
(on this project's build a batch of 1 differs from a batch of 8 by a few float32
ulps; every batch of 4 or more is bit-identical row by row). So every pass is
padded (with zero images) to at least ``min_batch`` images, where ``min_batch`` is
measured when the batcher starts (:func:`consistent_min_batch`): the smallest size
from which every batch size up to ``max_batch`` gives the same bits for the same
image, whatever its position and its companions. Hence one input gets the same
answer whether it came alone or with seven others.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

LOG = logging.getLogger("convscope.serve")


class BatchedActivations:
    """Every name's output for a list of images, from one forward pass over the images
    padded with zero images to at least ``pad_to``: the engine's
    :class:`~convscope.probe.Probe` (its layers resolved once) over
    :func:`~convscope.inference.to_input` — what :func:`convscope.inside.layer_activations`
    does for one batch, without resolving the layers again for every pass.

    Args:
        model: the network (eval mode).
        names: layer names and pseudo-layers (``"probabilities"``).
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        from convscope.probe import Probe

        self.model = model
        self.names = list(names)
        self._probe = Probe(model, self.names, detach=True)
        self._lock = threading.Lock()  # one probe: one pass at a time

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray], pad_to: int = 1) -> list[dict[str, torch.Tensor]]:
        """``images``: uint8, each ``(H, W)`` or ``(H, W, 3)`` as the model takes them →
        one ``{name: (C, H', W') or (F,)}`` float32 CPU dict per image, in order."""
        from convscope.inference import to_input

        stack = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
        count = len(stack)
        if count < pad_to:
            stack = np.concatenate([stack, np.zeros((pad_to - count, *stack.shape[1:]), dtype=np.uint8)])
        with self._lock, self._probe as probe:
            outputs = {name: value.float().cpu() for name, value in probe.run(to_input(self.model, stack)).items()}
        return [{name: outputs[name][i] for name in self.names} for i in range(count)]


def consistent_min_batch(model: nn.Module, image_shape: tuple[int, ...], names: Sequence[str], max_batch: int,
                         seed: int = 0) -> int:
    """The smallest batch size ``m`` such that every batch of ``m`` .. ``max_batch``
    images gives bit-identical outputs for one image (placed in the middle, among
    random companions) — measured, since it depends on the PyTorch build and CPU."""
    rng = np.random.default_rng(seed)
    probe = rng.integers(0, 256, image_shape, dtype=np.uint8)
    companions = rng.integers(0, 256, (max_batch, *image_shape), dtype=np.uint8)
    answers = []
    run = BatchedActivations(model, names)
    for size in range(1, max_batch + 1):
        images = list(companions[:size])
        images[size // 2] = probe
        answers.append(run(images, size)[size // 2])
    reference = answers[-1]
    smallest = max_batch
    for size in range(max_batch, 0, -1):
        if all(torch.equal(answers[size - 1][name], reference[name]) for name in names):
            smallest = size
        else:
            break
    return smallest


class _Request:
    __slots__ = ("future", "image")

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.future: concurrent.futures.Future = concurrent.futures.Future()


class ForwardBatcher:
    """One compute thread running batched forward passes.

    A pass takes every request waiting (at most ``max_batch``). Requests that are
    *announced* (:meth:`expecting`: the server is still decoding their image) make
    the thread wait for them, at most ``linger`` seconds, so that a burst of
    requests becomes one pass instead of several; with nothing announced a request
    is computed at once.

    Args:
        model: the network (eval mode; never modified).
        names: what every pass captures (all layers and ``"probabilities"``).
        image_shape: one input's uint8 shape (``(H, W)`` or ``(H, W, 3)``).
        max_batch: most images in one pass.
        min_batch: pad every pass to this many images; ``None``: measured
            (:func:`consistent_min_batch`) by :meth:`start`.
        linger: longest wait (seconds) for announced requests before a pass.
    """

    def __init__(self, model: nn.Module, names: Sequence[str], image_shape: tuple[int, ...], *, max_batch: int = 8,
                 min_batch: int | None = None, linger: float = 0.02) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.model = model
        self.names = list(names)
        self.image_shape = tuple(image_shape)
        self.max_batch = int(max_batch)
        self.min_batch = None if min_batch is None else max(1, min(int(min_batch), self.max_batch))
        self.linger = float(linger)
        self.passes = 0
        self.batched = 0  # images computed (so batched / passes is the mean batch)
        self._waiting: collections.deque[_Request] = collections.deque()
        self._announced = 0
        self._changed = threading.Condition()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        """Measure ``min_batch`` (when not given) and start the compute thread (once;
        :meth:`submit` starts it too)."""
        with self._start_lock:
            if self._thread is not None:
                return
            if self._closed:
                raise RuntimeError("the forward batcher is closed")
            if self.min_batch is None:
                from convscope.tracing_gate import GATE

                try:
                    with GATE.shared():  # forward passes (it may start late: when the worker processes died)
                        self.min_batch = consistent_min_batch(self.model, self.image_shape, self.names, self.max_batch)
                except Exception as exc:  # noqa: BLE001 - the safe fallback: every pass the same size
                    LOG.warning("measuring the smallest consistent batch failed (%s: %s); every pass uses %d images",
                                type(exc).__name__, " ".join(str(exc).split())[:200], self.max_batch)
                    self.min_batch = self.max_batch
            self._thread = threading.Thread(target=self._loop, name="convscope-forward", daemon=True)
            self._thread.start()

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Announce a request that will be submitted inside this block (its image is
        being decoded); the next pass waits for it (at most ``linger`` seconds)."""
        with self._changed:
            self._announced += 1
        try:
            yield
        finally:
            with self._changed:
                self._announced -= 1
                self._changed.notify_all()

    def submit(self, image: np.ndarray) -> concurrent.futures.Future:
        """Queue one uint8 image; the future's result is ``{name: tensor}`` (its row)."""
        image = np.asarray(image, dtype=np.uint8)
        if image.shape != self.image_shape:
            raise ValueError(f"the batcher takes images of shape {self.image_shape}, not {image.shape}")
        request = _Request(image)
        self.start()
        with self._changed:
            if self._closed:
                raise RuntimeError("the forward batcher is closed")
            self._waiting.append(request)
            self._changed.notify_all()
        return request.future

    def __call__(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """:meth:`submit` and wait (blocking)."""
        return self.submit(image).result()

    def close(self) -> None:
        """Stop the thread after the passes queued so far."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _next_batch(self) -> list[_Request] | None:
        with self._changed:
            while not self._waiting:
                if self._closed:
                    return None
                self._changed.wait()
            deadline = time.monotonic() + self.linger
            # announced requests still decoding (a submitted one is no longer counted once its block ends,
            # but it is in the queue then): wait for them while the batch has room
            while len(self._waiting) < self.max_batch and self._announced > len(self._waiting):
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    break
                self._changed.wait(left)
            count = min(len(self._waiting), self.max_batch)
            return [self._waiting.popleft() for _ in range(count)]

    def _loop(self) -> None:
        from convscope.tracing_gate import GATE

        run = BatchedActivations(self.model, self.names)
        pad_to = int(self.min_batch or self.max_batch)
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            batch = [r for r in batch if r.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            try:
                with GATE.shared():  # a job tracing a receptive field waits for the pass (and vice versa)
                    rows = run([r.image for r in batch], pad_to)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
                for r in batch:
                    r.future.set_exception(exc)
                continue
            self.passes += 1
            self.batched += len(batch)
            for r, row in zip(batch, rows):
                r.future.set_result(row)


__all__ = ["BatchedActivations", "ForwardBatcher", "consistent_min_batch"]
