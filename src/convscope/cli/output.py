"""How every command checks its output folder, shows progress and writes a use
case's result (one place).

::

    check_output_folder(out_dir)              # before any long work: one line if it cannot be written
    with terminal_progress(disable=as_json) as progress:
        result = app.run_oips(model, ..., progress=progress)
    with writing(out_dir):                    # all or nothing: a failure removes this run's files
        paths = write_result(result, out_dir)
    finish(result, paths, as_json)
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import click

from convscope.app.base import Result
from convscope.progress import Progress, ProgressEvent

#: With stderr not a terminal, a progress line at least this often (seconds), besides every 10 %.
PLAIN_PROGRESS_SECONDS = 10.0


def check_output_folder(out_dir: Path, *, flag: str = "--out") -> None:
    """Stop with one line, before any long work, when ``out_dir`` cannot be created
    or written (a file in the way, no permission, a read-only or full disk, a name
    too long); remove the ``.part`` files a killed run left there
    (:func:`convscope.io.clean_stale_parts`).

    Creates nothing that stays: an existing folder is probed with a temporary file
    that has no name, a missing one by creating and removing its first missing level.
    """
    import tempfile

    from convscope.cli.common import fail, short
    from convscope.io import clean_stale_parts

    where = short(out_dir)
    try:
        folder = Path(os.path.abspath(out_dir))
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    except OSError as exc:  # e.g. a name longer than the system allows
        fail(f"cannot use {flag} {where}: {exc.strerror or exc}; choose a shorter or other folder")
    if not existing.is_dir():
        what = "is" if existing == folder else f"needs the folder {short(existing)}, which is"
        fail(f"cannot write into {flag} {where}: it {what} a file, not a folder; choose another {flag}")
    try:
        if existing == folder:
            clean_stale_parts(folder)
            with tempfile.TemporaryFile(dir=folder):  # O_TMPFILE where available: never visible
                pass
        else:
            first_missing = folder
            while first_missing.parent != existing:
                first_missing = first_missing.parent
            os.mkdir(first_missing)
            os.rmdir(first_missing)
    except OSError as exc:
        fail(f"cannot write into {flag} {where}: {_write_problem(exc, flag)}")


#: Errors of a write that the user fixes on their side (space, permissions).
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})


def _write_problem(exc: OSError, flag: str = "--out") -> str:
    """What went wrong and what to do, for a failed write."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{reason} (free some space, or choose another {flag})"
    if exc.errno == errno.EROFS:
        return f"{reason} (choose another {flag})"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{reason} (choose another {flag}, or fix the folder's permissions)"
    if exc.errno == errno.ENAMETOOLONG:
        return f"{reason} (choose a shorter {flag})"
    return reason


@contextlib.contextmanager
def writing(out_dir: Path, *, what: str = "the results", keep_under: tuple[Path, ...] = (), hint: str = "") -> Iterator[None]:
    """The block that writes a command's files, all or nothing.

    Every file is written atomically (:mod:`convscope.io`); if the block fails part-way
    (disk full, permissions, out of memory, Ctrl-C) the files it wrote and the folders it
    created are removed again — except under ``keep_under`` (e.g. a training checkpoint,
    the atlas's stage cache) — and the command stops with one line naming ``out_dir``
    (then ``hint``). Any other error is re-raised after the same clean-up.
    """
    from convscope.cli.common import fail, short
    from convscope.io import track_writes

    tail = f". {hint}" if hint else ""
    with track_writes() as log:
        try:
            yield
        except OSError as exc:
            log.undo(keep_under=keep_under)
            fail(f"cannot write {what} into {short(out_dir)}: {_write_problem(exc)}; nothing of this run was kept{tail}")
        except MemoryError:
            log.undo(keep_under=keep_under)
            fail(f"out of memory while writing {what} into {short(out_dir)}; nothing of this run was kept{tail}")
        except KeyboardInterrupt:
            log.undo(keep_under=keep_under)
            fail(f"interrupted while writing {what} into {short(out_dir)}; nothing of this run was kept{tail}")
        except BaseException:
            log.undo(keep_under=keep_under)
            raise


class PlainLines:
    """Progress as plain lines, for a stderr that is not a terminal (CI logs, pipes).

    A task prints a line when it starts, at each tenth of its total (``tenths``), when it ends, and
    at least every ``every`` seconds while it advances (also when it has no total),
    with an estimate of the time left: long work is never silent, and never a flood.

    Args:
        every: seconds between lines of a task that advances slowly.
        clock: the time source (seconds; tests pass a fake one).
        write: where a line goes (default: stderr).
    """

    def __init__(self, *, every: float | None = None, tenths: bool = True, clock=None, write=None) -> None:
        self.every = PLAIN_PROGRESS_SECONDS if every is None else every
        self.tenths = tenths
        self.clock = clock or (lambda: time.monotonic())
        self.write = write or (lambda line: click.echo(line, err=True))
        self.printed: dict[int, tuple[int, float]] = {}  # task -> (last tenth printed, when)

    def __call__(self, event: ProgressEvent) -> None:
        now = self.clock()
        last_tenth, last_time = self.printed.get(event.task_id, (-1, now))
        tenth = int(10 * event.completed / event.total) if event.total and self.tenths else last_tenth
        due = now - last_time >= self.every and event.completed > 0
        if event.task_id in self.printed and not (event.finished or tenth > last_tenth or due):
            return
        self.printed[event.task_id] = (tenth, now)
        if event.total:
            left = event.elapsed / event.completed * (event.total - event.completed) if event.completed else None
            eta = f", about {_duration(left)} left" if left is not None and not event.finished else ""
            done = f"{event.completed:g}/{event.total:g}"
        else:
            eta, done = "", f"{event.completed:g}"
        self.write(f"{event.label}: {done} ({_duration(event.elapsed)}{eta})")


@contextlib.contextmanager
def terminal_progress(*, disable: bool = False, transient: bool = True) -> Iterator[Progress]:
    """A :class:`~convscope.progress.Progress` drawn as rich bars on stderr.

    When stderr is not a terminal (CI logs, pipes) each task prints a plain line
    at every 10 % and at least every :data:`PLAIN_PROGRESS_SECONDS` seconds while it
    advances, with an estimate of the time left, so long work is never silent.
    Ctrl-C cancels the work (the use case keeps what was finished).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    interactive = console.is_terminal and not disable
    bars = RichProgress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=transient, disable=not interactive,
    )
    rich_ids: dict[int, int] = {}
    plain = PlainLines()

    def sink(event: ProgressEvent) -> None:
        if disable:
            return
        if interactive:
            if event.task_id not in rich_ids:
                rich_ids[event.task_id] = bars.add_task(event.label, total=event.total)
            bars.update(rich_ids[event.task_id], completed=event.completed, total=event.total,
                        visible=not event.finished or not transient)
            return
        plain(event)

    progress = Progress(sink=sink)
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum, frame) -> None:  # first Ctrl-C: cancel cleanly; second: default
        progress.cancel()
        signal.signal(signal.SIGINT, previous if callable(previous) else signal.default_int_handler)

    with bars:
        installed = False
        try:
            signal.signal(signal.SIGINT, on_interrupt)
            installed = True
        except ValueError:  # not the main thread
            pass
        try:
            yield progress
        finally:
            if installed:
                signal.signal(signal.SIGINT, previous)


def _duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.5 h``, ``12 days``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:,.0f} days"


def write_result(result: Result, out_dir: Path, *, prefix: str = "", figures: bool = True, arrays: bool = True) -> list[Path]:
    """Write ``result``'s figures (``.png``), arrays (``.npy``) and JSON into ``out_dir``
    atomically; returns the written paths (the JSON last)."""
    from convscope.io import make_folders, save_figure, save_npy, write_json

    make_folders(out_dir)
    written: list[Path] = []
    if figures:
        for stem, draw in result.figures().items():
            path = out_dir / f"{prefix}{stem}.png"
            save_figure(path, draw())
            written.append(path)
    if arrays:
        for stem, array in result.arrays().items():
            path = out_dir / f"{prefix}{stem}.npy"
            save_npy(path, array)
            written.append(path)
    path = out_dir / f"{prefix}{result.kind}.json"
    written.append(path)
    data = result.to_json()
    data["files"] = [str(p) for p in written]
    write_json(path, data)
    return written


def finish(result: Result, written: list[Path], as_json: bool) -> None:
    """Print the result: its JSON on stdout (``--json``) or its summary lines."""
    from convscope.cli.common import emit_json

    if as_json:
        data = result.to_json()
        data["files"] = [str(p) for p in written]
        emit_json(data)
        return
    for line in result.summary():
        click.echo(line)
    if written:
        click.echo(f"Wrote {len(written)} files to {written[-1].parent}")


__all__ = ["PLAIN_PROGRESS_SECONDS", "PlainLines", "WRITE_ERRNOS", "check_output_folder", "finish", "terminal_progress", "write_result", "writing"]
