"""Plain progress lines when stderr is not a terminal (issue 14: `oip --steps 1000000000`
showed nothing in a log): a line at the start, every tenth, every ~10 s while a slow
task advances, and at the end; an estimate of the time left; never one per step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import convscope
from convscope.cli import output
from convscope.cli.output import PLAIN_PROGRESS_SECONDS, PlainLines, terminal_progress
from convscope.progress import ProgressEvent


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _slow_task(lines: PlainLines, clock: FakeClock, *, steps: int, total: float, seconds_per_step: float) -> None:
    """``steps`` updates of a task with ``total`` units, ``seconds_per_step`` apart."""
    for step in range(1, steps + 1):
        clock.now += seconds_per_step
        lines(ProgressEvent(7, "OIPs Conv2D_3", step, total, elapsed=step * seconds_per_step))


def test_a_slow_task_prints_a_line_every_ten_seconds_with_an_estimate() -> None:
    clock, seen = FakeClock(), []
    lines = PlainLines(clock=clock, write=seen.append)
    lines(ProgressEvent(7, "OIPs Conv2D_3", 0, 1e9, elapsed=0.0))  # the start
    # 600 steps, 1 s each, of a billion: never a tenth, so only the clock prints
    _slow_task(lines, clock, steps=600, total=1e9, seconds_per_step=1.0)
    assert len(seen) == 1 + 600 // int(PLAIN_PROGRESS_SECONDS), seen[:5]
    assert seen[0] == "OIPs Conv2D_3: 0/1e+09 (0 s)"
    # 1e9 steps at 1 s each: the estimate is ~1e9 s, said in days
    assert seen[1] == f"OIPs Conv2D_3: 10/1e+09 (10 s, about {output._duration(1e9 - 10)} left)"
    assert "days left" in seen[1]
    assert seen[-1].startswith("OIPs Conv2D_3: 600/1e+09 (10 min, about ")


def test_a_fast_task_prints_each_tenth_not_each_step() -> None:
    clock, seen = FakeClock(), []
    lines = PlainLines(clock=clock, write=seen.append)
    _slow_task(lines, clock, steps=10_000, total=10_000, seconds_per_step=0.0001)
    lines(ProgressEvent(7, "OIPs Conv2D_3", 10_000, 10_000, finished=True, elapsed=1.0))
    # first event + tenths 1..10 + the finish
    assert len(seen) == 12, seen
    assert [line.split(": ")[1].split(" ")[0] for line in seen[:11]] == ["1/10000"] + [f"{k}000/10000" for k in range(1, 11)]
    assert seen[-1] == "OIPs Conv2D_3: 10000/10000 (1 s)"  # no estimate once finished


def test_without_tenths_or_total_only_the_clock_prints() -> None:
    clock, seen = FakeClock(), []
    lines = PlainLines(clock=clock, tenths=False, write=seen.append)
    for step in range(1, 101):  # 100 steps of 0.5 s: 50 s
        clock.now += 0.5
        lines(ProgressEvent(0, "epoch 1/3, batches", step, 100, elapsed=step * 0.5))
    # the first step, then one each 10 s after it (with tenths there would also be lines at 10, 20, … 100)
    assert [line.split(": ")[1].split(" ")[0] for line in seen] == ["1/100", "21/100", "41/100", "61/100", "81/100"]


def test_terminal_progress_prints_plain_lines_when_stderr_is_not_a_terminal(capsys, monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(output.time, "monotonic", clock)
    with terminal_progress() as progress:
        with progress.task("OIPs Conv2D_3", total=1e9) as task:
            for step in range(1, 301):
                clock.now += 1.0
                task.update(step)
    err = capsys.readouterr().err.splitlines()
    # start, one per 10 s of the 300, the end
    assert len(err) == 1 + 30 + 1, err
    assert all(line.startswith("OIPs Conv2D_3: ") for line in err)
    assert sum(" left)" in line for line in err) == 30


def test_oip_in_a_pipe_prints_progress_lines(tmp_path: Path, mnist_dir: Path) -> None:
    """The real command with stderr a pipe: progress lines, not silence."""
    src = Path(convscope.__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", MPLBACKEND="Agg", CONVSCOPE_DATA=str(mnist_dir))
    result = subprocess.run(
        [sys.executable, "-m", "convscope", "oip", "--map", "1", "--steps", "20", "--no-precursor",
         "--out", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "/20 (" in line or "/20" in line]
    assert lines, result.stderr[-2000:]
    assert len(result.stderr.splitlines()) < 40, result.stderr[-2000:]  # not a line per step
