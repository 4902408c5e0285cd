"""How every command shows progress and writes a use case's result (one place).

::

    with terminal_progress(disable=as_json) as progress:
        result = app.run_oips(model, ..., progress=progress)
    paths = write_result(result, out_dir)
    finish(result, paths, as_json)
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import click

from convscope.app.base import Result
from convscope.progress import Progress, ProgressEvent


@contextlib.contextmanager
def terminal_progress(*, disable: bool = False, transient: bool = True) -> Iterator[Progress]:
    """A :class:`~convscope.progress.Progress` drawn as rich bars on stderr.

    When stderr is not a terminal (CI logs, pipes) each task prints a plain line
    at most every 10 % with an estimate of the time left, so long work is never
    silent. Ctrl-C cancels the work (the use case keeps what was finished).
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
    printed: dict[int, int] = {}

    def sink(event: ProgressEvent) -> None:
        if disable:
            return
        if interactive:
            if event.task_id not in rich_ids:
                rich_ids[event.task_id] = bars.add_task(event.label, total=event.total)
            bars.update(rich_ids[event.task_id], completed=event.completed, total=event.total,
                        visible=not event.finished or not transient)
            return
        if event.total:
            tenth = int(10 * event.completed / event.total)
            if event.finished or tenth > printed.get(event.task_id, -1):
                printed[event.task_id] = tenth
                left = event.elapsed / event.completed * (event.total - event.completed) if event.completed else None
                eta = f", about {left:.0f} s left" if left is not None and not event.finished else ""
                click.echo(f"{event.label}: {event.completed:g}/{event.total:g} ({event.elapsed:.0f} s{eta})", err=True)

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


def write_result(result: Result, out_dir: Path, *, prefix: str = "", figures: bool = True, arrays: bool = True) -> list[Path]:
    """Write ``result``'s figures (``.png``), arrays (``.npy``) and JSON into ``out_dir``
    atomically; returns the written paths (the JSON last)."""
    from convscope.io import save_figure, save_npy, write_json

    out_dir.mkdir(parents=True, exist_ok=True)
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


__all__ = ["finish", "terminal_progress", "write_result"]
