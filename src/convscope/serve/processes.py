"""Forward passes in worker processes, past the GIL.

A forward request is mostly Python: decoding and converting the image, the network's
module calls, building the JSON answer. In one server process all of it queues on
the interpreter lock, so on a small machine eight clients drawing at once wait for
each other even though the cores are idle. :class:`ForwardProcesses` forks ``count``
worker processes when the server starts (each inherits the model, the dataset and
the explorer, copy-on-write, and uses one PyTorch thread); each answers whole
``/api/forward`` requests — input → forward pass of that one image → the JSON bytes —
and the server's event loop only passes bytes along (it reads the answers through
``loop.add_reader``, no thread in between).

Equality: every worker computes one image alone (a batch of one), as a sequential
request does, so an answer has the same bits whichever worker computed it and
whatever else was being computed.

Workers are started by fork, so only where fork is safe: on POSIX, for a model on
the CPU, before the server starts any thread (:meth:`ForwardProcesses.start` checks).
A worker that dies fails its request (500); when none is left the server computes
in its own process again (:attr:`ForwardProcesses.alive`).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import multiprocessing
import os
import pickle
import signal
import struct
import threading
from multiprocessing.connection import Connection
from typing import Any

from convscope.serve.explorer import RequestError

LOG = logging.getLogger("convscope.serve")
#: The answer (503) when every worker process has died.
NONE_LEFT = "no forward worker process is left; try again"


def fork_available(model: Any = None) -> str | None:
    """``None`` when forward worker processes can be forked here; otherwise why not
    (no ``fork`` start method, or a model with parameters off the CPU)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return "this platform cannot fork worker processes"
    if model is not None:
        devices = {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}
        if devices - {"cpu"}:
            return f"the model is on {', '.join(sorted(devices - {'cpu'}))} (worker processes are forked for CPU models only)"
    return None


class ForwardProcesses:
    """``count`` forked processes answering forward requests.

    Args:
        explorer: the :class:`~convscope.serve.explorer.Explorer` each worker answers
            with (its input methods and :meth:`~convscope.serve.explorer.Explorer.forward_answer`).
        count: worker processes (at least 1).
    """

    def __init__(self, explorer: Any, count: int) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.explorer = explorer
        self.count = int(count)
        self._workers: list[_Worker] = []
        self._idle: collections.deque[_Worker] = collections.deque()
        self._pending: collections.deque[tuple[asyncio.Future, tuple]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_id = 0

    # ------------------------------------------------------------------ life
    def start(self) -> None:
        """Fork the workers. Call it before the process starts other threads (a fork
        copies only the calling thread, so a lock another thread holds would stay
        locked in the worker forever)."""
        if self._workers:
            return
        why = fork_available(self.explorer.model)
        if why:
            raise RuntimeError(why)
        others = [t.name for t in threading.enumerate() if t is not threading.current_thread() and t.is_alive()]
        if others:
            raise RuntimeError(f"forward worker processes must be forked before other threads start (running: "
                               f"{', '.join(others[:4])})")
        context = multiprocessing.get_context("fork")
        # the objects that exist now are the workers' inheritance: frozen, their collector never walks them
        # (a full collection over the inherited heap would copy its pages and stall a request for ~0.3 s)
        gc.freeze()
        try:
            self._fork_all(context)
        finally:
            gc.unfreeze()  # the server's own collector goes on as before

    def _fork_all(self, context: Any) -> None:
        for index in range(self.count):
            # requests: a multiprocessing pipe (blocking on both ends); answers: a plain pipe of
            # length-prefixed pickles, which the event loop reads without blocking (add_reader)
            requests_in, requests_out = context.Pipe(duplex=False)
            answers_in, answers_out = os.pipe()
            os.set_blocking(answers_in, False)
            # the server's ends, of this worker and the ones before it: the child closes its copies
            # (a worker must see its request pipe close when the server closes it)
            theirs = [(w.requests, w.answers) for w in self._workers] + [(requests_out, answers_in)]
            process = context.Process(target=_serve_forever, args=(requests_in, answers_out, theirs, self.explorer),
                                      name=f"convscope-forward-{index}", daemon=True)
            process.start()
            requests_in.close()
            os.close(answers_out)
            worker = _Worker(process, requests_out, answers_in)
            self._workers.append(worker)
            self._idle.append(worker)

    @property
    def alive(self) -> int:
        """Workers still running."""
        return sum(1 for w in self._workers if not w.dead)

    def close(self) -> None:
        """Stop the workers (they exit when their pipe closes; terminated after 2 s)."""
        for worker in self._workers:
            if self._loop is not None and not worker.dead:
                try:
                    self._loop.remove_reader(worker.answers)
                except (ValueError, OSError, RuntimeError):
                    pass
            worker.close()
        for worker in self._workers:
            worker.process.join(2)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(2)
        for future, _ in self._pending:
            if not future.done():
                future.set_exception(RuntimeError("the server is stopping"))
        self._pending.clear()
        self._workers.clear()
        self._idle.clear()

    # ------------------------------------------------------------------ requests
    def submit(self, source: str, payload: Any, names: list[str], encoding: str) -> asyncio.Future:
        """Queue a forward request for the next free worker (call it in the server's
        event loop); the future's result is the answer's JSON bytes.

        Args:
            source: ``"bytes"`` (``payload`` an image file's bytes) or ``"json"``
                (``payload`` the request's JSON object).
            names: the layers to answer (checked by the caller).
            encoding: the activations' encoding (checked by the caller).

        The future fails with :class:`~convscope.serve.explorer.RequestError`: what the
        explorer says of a bad input (4xx), 500 when the worker died or failed.
        """
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            for worker in self._workers:
                if not worker.dead:
                    loop.add_reader(worker.answers, self._on_answer, worker)
        future: asyncio.Future = loop.create_future()
        if not self.alive:
            future.set_exception(RequestError(NONE_LEFT, 503))
            return future
        self._pending.append((future, (source, payload, names, encoding)))
        self._dispatch()
        return future

    def _dispatch(self) -> None:
        while self._idle and self._pending:
            future, request = self._pending.popleft()
            if future.done():  # cancelled (the client went away, or timed out)
                continue
            worker = self._idle.popleft()
            self._next_id += 1
            try:
                worker.requests.send((self._next_id, *request))
            except (OSError, ValueError) as exc:
                self._lost(worker, f"{type(exc).__name__}: {exc}")
                self._pending.appendleft((future, request))
                continue
            worker.busy = (self._next_id, future)

    def _on_answer(self, worker: _Worker) -> None:
        try:
            messages = worker.read_answers()
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            self._lost(worker, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return
        for request_id, outcome, *rest in messages:
            busy, worker.busy = worker.busy, None
            self._idle.append(worker)
            if busy is None or busy[0] != request_id or busy[1].done():
                continue
            future = busy[1]
            if outcome == "ok":
                future.set_result(rest[0])
            else:
                status, text = rest
                if outcome == "failed":
                    LOG.error("a forward worker failed: %s", text)
                    text = f"internal error ({text.split(':')[0]}); the server log has the details"
                future.set_exception(RequestError(text, status))
        if messages:
            self._dispatch()

    def _lost(self, worker: _Worker, why: str) -> None:
        if worker.dead:
            return
        worker.dead = True
        LOG.error("forward worker %s (pid %s) stopped: %s; %d left", worker.process.name, worker.process.pid, why,
                  self.alive)
        if self._loop is not None:
            try:
                self._loop.remove_reader(worker.answers)
            except (ValueError, OSError):
                pass
        if worker in self._idle:
            self._idle.remove(worker)
        busy, worker.busy = worker.busy, None
        if busy is not None and not busy[1].done():
            busy[1].set_exception(RequestError("the process computing this request stopped; try again", 500))
        if not self.alive:
            while self._pending:
                future, _ = self._pending.popleft()
                if not future.done():
                    future.set_exception(RequestError(NONE_LEFT, 503))


_HEADER = struct.Struct("!Q")


class _Worker:
    """The server's side of one worker: its process, the request pipe, the answer pipe's
    read end and the bytes of a partly read answer."""

    __slots__ = ("_buffer", "answers", "busy", "dead", "process", "requests")

    def __init__(self, process: Any, requests: Connection, answers: int) -> None:
        self.process = process
        self.requests = requests
        self.answers = answers
        self.busy: tuple[int, asyncio.Future] | None = None
        self.dead = False
        self._buffer = bytearray()

    def read_answers(self) -> list[tuple]:
        """The complete answers that arrived (the pipe's read end is non-blocking under
        the event loop: read what is there, keep a partial answer for the next call).
        Raises EOFError when the worker's end closed."""
        while True:
            try:
                chunk = os.read(self.answers, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                raise EOFError("the worker closed its pipe")
            self._buffer += chunk
            if len(chunk) < 1 << 20:
                break
        messages = []
        while len(self._buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer)
            if len(self._buffer) < _HEADER.size + size:
                break
            messages.append(pickle.loads(bytes(self._buffer[_HEADER.size:_HEADER.size + size])))
            del self._buffer[:_HEADER.size + size]
        return messages

    def close(self) -> None:
        self.requests.close()
        try:
            os.close(self.answers)
        except OSError:
            pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _serve_forever(requests: Connection, answers: int, servers_ends: list[tuple[Connection, int]], explorer: Any) -> None:
    """A worker's loop: ``(id, source, payload, names, encoding)`` in, ``(id, "ok",
    bytes)`` or ``(id, "error" | "failed", status, message)`` out (a length-prefixed
    pickle), until the request pipe closes."""
    import torch

    from convscope.serve.batcher import BatchedActivations

    for connection, fd in servers_ends:
        connection.close()
        os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's; the closed pipe ends this loop
    torch.set_num_threads(1)
    run = BatchedActivations(explorer.model, explorer.layer_names + ["probabilities"])
    while True:
        try:
            request_id, source, payload, names, encoding = requests.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            break
        try:
            reply: tuple = (request_id, "ok", forward_bytes(explorer, run, source, payload, names, encoding))
        except RequestError as exc:
            reply = (request_id, "error", exc.status, str(exc))
        except Exception as exc:  # noqa: BLE001 - reported to the server, which logs it and answers 500
            reply = (request_id, "failed", 500, f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}")
        blob = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            _write_all(answers, _HEADER.pack(len(blob)) + blob)
        except OSError:
            break
    os._exit(0)


def forward_bytes(explorer: Any, run: Any, source: str, payload: Any, names: list[str], encoding: str) -> bytes:
    """One forward request answered alone: its input (an image file's bytes or a JSON
    object), one forward pass of that image (``run``: a
    :class:`~convscope.serve.batcher.BatchedActivations`, batch of one), the JSON bytes."""
    from convscope.serve.app import _answer

    item = explorer.input_from_bytes(payload, "the uploaded image") if source == "bytes" else explorer.input_from_json(payload)
    return _answer(explorer, item, names, encoding, run([item.image], 1)[0])


__all__ = ["ForwardProcesses", "fork_available", "forward_bytes"]
