"""Every bad input, fault and hostile file gives one clear error (issue 14).

A table of cases, each run as a real ``python -m convscope ...`` process (so a
traceback would show; forked from a server that imported torch once, see
``_SERVER``), in its own temporary folder (also the working folder, so
default output folders would show too). Each case asserts:

* the exit status: 1 for errors, 2 for usage errors (click's bad option values);
* exactly one ``Error:`` line on stderr, matching the case's pattern and of
  modest length (a 100,000-character input is never echoed whole);
* no ``Traceback`` on stdout or stderr;
* no leftovers: nothing new in the case's folder (no half-written file, no
  ``.part`` file, no empty folder the command created); for a full disk, nothing
  but the filler on that disk.

Unwritable and full output folders are real: a read-only tmpfs (or, without root,
a folder without write permission) and a 1 MB tmpfs filled up to a few KB. Where
the sandbox allows neither, those cases are skipped and say why.

Beside the table: the ``.part`` files a killed write left are removed by the next
run into that folder (and only those).
(Plain progress lines when stderr is not a terminal: tests/cli/test_progress_lines.py.)

Set CONVSCOPE_BAD_INPUT_TABLE=FILE to append each case's id, exit status, command and
Error line to FILE (the table for the notes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import convscope

sys.path.insert(0, str(Path(__file__).parent / "data"))  # helpers of the data tests, in any pytest import mode
from datatest_helpers import gzip_bomb, idx_header  # noqa: E402

SRC = Path(convscope.__file__).resolve().parents[1]
SHIPPED = SRC / "convscope" / "shipped"
LONG = "x" * 100_000  # a 100,000-character name
#: An error line longer than this is not "one clear line".
MAX_ERROR_LENGTH = 700


# -- the processes ------------------------------------------------------------------------------------


#: matplotlib's font cache, shared by every case (its own cache would follow XDG_CACHE_HOME).
_MPL_CONFIG = Path(os.environ.get("MPLCONFIGDIR") or Path.home() / ".config" / "matplotlib")


def _env(mnist_dir: Path, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MPLCONFIGDIR", str(_MPL_CONFIG))
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env.update(
        CONVSCOPE_DATA=str(mnist_dir), OMP_NUM_THREADS="1", MPLBACKEND="Agg", COLUMNS="200",
        # no download may reach the network or the user's cache
        XDG_CACHE_HOME=str(home / "cache"), CONVSCOPE_MIRRORS="http://127.0.0.1:9/",
    )
    return env


#: A fork server: imports torch and convscope once, then forks one child process per case that runs
#: ``python -m convscope ARGS`` as the interpreter would (its own working folder, environment, stdout and
#: stderr files; an uncaught exception prints its traceback and exits 1). Each case is still a real,
#: separate process, without paying the ~3 s import of torch 94 times. Nothing runs in the server before
#: a fork (no thread pools), so forking is safe.
_SERVER = r"""
import json, os, runpy, sys, time, traceback
import click, numpy, torch, convscope  # the expensive imports, once
for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(req["cwd"])
            os.environ.clear(); os.environ.update(req["env"])
            for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            sys.stdin = open(os.devnull)
            sys.argv = ["convscope", *req["args"]]
            try:
                runpy.run_module("convscope", run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr); code = 1
            except BaseException:
                traceback.print_exc(); code = 1
        finally:
            try:
                sys.stdout.flush(); sys.stderr.flush()
            finally:
                os._exit(code)
    deadline = time.monotonic() + req["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            answer = {"code": os.waitstatus_to_exitcode(status)}
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9); os.waitpid(pid, 0)
            answer = {"timeout": True}
            break
        time.sleep(0.01)
    print(json.dumps(answer), flush=True)
"""


class _ForkServer:
    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", _SERVER], env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)

    def run(self, args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        outputs = cwd.parent / f"{cwd.name}-output"
        outputs.mkdir(exist_ok=True)
        request = {"args": args, "env": env, "cwd": str(cwd), "timeout": timeout,
                   "stdout": str(outputs / "stdout"), "stderr": str(outputs / "stderr")}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        if answer.get("timeout"):
            raise subprocess.TimeoutExpired(["convscope", *args], timeout)
        read = lambda name: (outputs / name).read_text(encoding="utf-8", errors="replace")  # noqa: E731
        return subprocess.CompletedProcess(["convscope", *args], answer["code"], read("stdout"), read("stderr"))

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


_server: _ForkServer | None = None


@pytest.fixture(scope="module", autouse=True)
def _fork_server(mnist_dir, tmp_path_factory) -> Iterator[None]:
    global _server
    if hasattr(os, "fork"):
        _server = _ForkServer(_env(mnist_dir, tmp_path_factory.mktemp("server-home")))
    yield
    if _server is not None:
        _server.close()
        _server = None


def _convscope(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    if _server is not None:
        return _server.run(args, env, cwd, timeout)
    return subprocess.run([sys.executable, "-m", "convscope", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def _tree(folder: Path) -> set[str]:
    """Every file and folder under ``folder`` (relative names, folders end with /)."""
    found = set()
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        found.update(f"{rel / d}/" for d in dirs)
        found.update(str(rel / f) for f in files)
    return found


# -- hostile files ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory, mnist_dir) -> Path:
    """Hostile and broken inputs, made once."""
    import torch
    from PIL import Image

    from convscope.models import load_model, save_model

    folder = tmp_path_factory.mktemp("hostile")
    Image.fromarray(np.zeros((9000, 9000), np.uint8)).save(folder / "huge.png")  # 81 MP in ~80 KB
    pixels = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    pixels[3, 3] = np.nan
    Image.fromarray(pixels, mode="F").save(folder / "nan.tiff")
    (folder / "notimage.png").write_text("hello, I am no image")
    digit = np.zeros((40, 40), np.uint8)
    digit[8:32, 18:22] = 255
    Image.fromarray(digit).save(folder / "digit.png")

    raw = (SHIPPED / "seed_cnn.json").read_text()
    config = json.loads(raw)

    def model(name: str, text: str, weights: bytes | None = None) -> None:
        (folder / f"{name}.safetensors").write_bytes(weights or (SHIPPED / "seed_cnn.safetensors").read_bytes())
        (folder / f"{name}.json").write_text(text)

    model("nohash", json.dumps({k: v for k, v in config.items() if k != "weights_sha256"}))
    tampered = bytearray((SHIPPED / "seed_cnn.safetensors").read_bytes())
    tampered[-10] ^= 0xFF
    model("tampered", raw, bytes(tampered))
    model("nanacc", json.dumps(config).replace(f'"test_accuracy": {json.dumps(config["test_accuracy"])}',
                                               '"test_accuracy": NaN'))
    assert "NaN" in (folder / "nanacc.json").read_text()
    model("deep", raw.rstrip().rstrip("}") + ', "extra": ' + "[" * 5000 + "]" * 5000 + "}")
    huge = load_model(None)
    with torch.no_grad():
        for parameter in huge.parameters():
            parameter.mul_(1e30)
    save_model(huge, folder / "huge_weights", huge.config)

    for name in ("data_overflow", "data_bomb", "data_empty"):
        (folder / name).mkdir()
    for name in ("data_overflow", "data_bomb"):
        for labels in mnist_dir.glob("t10k-labels-idx1-ubyte*"):
            shutil.copy(labels, folder / name / labels.name)
    (folder / "data_overflow" / "t10k-images-idx3-ubyte").write_bytes(idx_header((2**32 - 1,) * 3) + bytes(100))
    (folder / "data_bomb" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip_bomb(idx_header((10000, 28, 28)), 1 << 30))
    assert len((folder / "data_bomb" / "t10k-images-idx3-ubyte.gz").read_bytes()) < 3 << 20
    (folder / "data_damaged").mkdir()
    for path in mnist_dir.glob("*-ubyte*"):
        shutil.copyfile(path, folder / "data_damaged" / path.name)
    labels = folder / "data_damaged" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:2000])  # cut short
    return folder


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist_dir) -> Path:
    """A finished one-epoch training run on 64 images (for --resume cases)."""
    folder = tmp_path_factory.mktemp("tiny-run")
    run = folder / "run"
    result = _convscope(["train", "--train-limit", "64", "--epochs", "1", "--batch-size", "32", "--out", str(run),
                         "--json"], _env(mnist_dir, folder), folder, 300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "checkpoint" / "checkpoint.json").is_file()
    return run


# -- unwritable and full disks ------------------------------------------------------------------------


def _mount_tmpfs(folder: Path, options: str) -> bool:
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    return result.returncode == 0


def _unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture(scope="module")
def readonly(tmp_path_factory) -> Iterator[Path]:
    """A folder nobody may write into: a read-only tmpfs (root), else a folder with mode 0555."""
    folder = tmp_path_factory.mktemp("readonly")
    if os.geteuid() == 0:
        if not _mount_tmpfs(folder, "ro,size=64k"):
            pytest.skip("running as root without the right to mount a read-only tmpfs, and root writes into any "
                        "folder whatever its permissions: the unwritable-folder cases cannot be set up here")
        yield folder
        _unmount(folder)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


@contextlib.contextmanager
def full_disk(folder: Path, free_kb: int) -> Iterator[Path]:
    """A real 1 MB file system (tmpfs) mounted on ``folder``, filled up to ``free_kb`` KB."""
    folder.mkdir(parents=True, exist_ok=True)
    if not _mount_tmpfs(folder, "size=1m,mode=0777"):
        pytest.skip("cannot mount a small file system here (needs root and mount rights): no full-disk cases")
    try:
        stats = os.statvfs(folder)
        room = stats.f_bavail * stats.f_frsize
        (folder / "filler").write_bytes(bytes(max(0, room - free_kb * 1024)))
        yield folder
    finally:
        _unmount(folder)


# -- the table ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input. ``args`` may hold ``{out}`` (a fresh, missing output folder), ``{tmp}``
    (the case's folder), ``{files}`` (hostile files), ``{ro}`` (an unwritable folder),
    ``{full}`` (a nearly full 1 MB disk with ``free_kb`` KB left), ``{run}`` (a copy of a
    finished tiny training run, in the case's folder)."""

    id: str
    args: tuple[str, ...]
    message: str  # regex searched in the one Error line
    code: int = 1
    free_kb: int = 8
    timeout: float = 180

    def needs(self, key: str) -> bool:
        return any("{" + key + "}" in arg for arg in self.args)


def case(id: str, command: str, message: str, code: int = 1, *extra: str, **options) -> Case:
    """``command`` split on spaces (``extra`` arguments may hold spaces)."""
    return Case(id, (*command.split(), *extra), message, code, **options)


OBJECTIVE_1500 = " + ".join(f"Conv2D_3:{i % 128}" for i in range(1499)) + " + Conv2D_3:999"
QUICK_OIP = "--steps 2 --no-precursor"
QUICK_DREAM = "--steps 1 --octaves 1"

CASES = [
    # --- integrity and resource limits --------------------------------------------------------------
    case("model-without-hash", "summary --model {files}/nohash.json", r"nohash\.json has no weights_sha256"),
    case("model-tampered-weights", "evaluate --model {files}/tampered.json --out {out}",
         r"tampered\.safetensors: SHA-256 .* does not match"),
    case("model-json-nan-accuracy", "summary --model {files}/nanacc.json", r"nanacc\.json: .*non-finite number NaN"),
    case("model-json-deeply-nested", "predict --model {files}/deep.json --out {out}",
         r"deep\.json: JSON nested 5001 levels deep"),
    case("model-weights-x1e30", "activations --model {files}/huge_weights.json --out {out}",
         r"huge_weights\.safetensors: .*absurd magnitude"),
    case("image-9000x9000-predict", "predict {files}/huge.png --out {out}", r"huge\.png is 9000x9000 = 81\.0 megapixels"),
    case("image-9000x9000-dream", "dream {files}/huge.png --out {out}", r"huge\.png is 9000x9000 = 81\.0 megapixels"),
    case("image-nan-pixel-predict", "predict {files}/nan.tiff --out {out}", r"nan\.tiff holds 1 NaN or infinite pixel"),
    case("image-nan-pixel-dream", f"dream {{files}}/nan.tiff {QUICK_DREAM} --out {{out}}",
         r"nan\.tiff holds 1 NaN or infinite pixel"),
    case("image-not-an-image", "explain --image {files}/notimage.png --out {out}", r"notimage\.png.*(not an image|cannot)"),
    case("idx-header-overflow", "evaluate --data-dir {files}/data_overflow --out {out}",
         r"t10k-images-idx3-ubyte: the IDX header declares shape \(4294967295, 4294967295, 4294967295\)"),
    case("idx-gzip-bomb", "mistakes --data-dir {files}/data_bomb --out {out}",
         r"t10k-images-idx3-ubyte\.gz: inflates beyond the 7,840,000 data bytes"),
    case("data-file-missing-named", "topk --data-dir {files}/data_empty --out {out}",
         r"data_empty does not hold .*t10k-images-idx3-ubyte"),
    case("data-verify-damaged", "data verify --data-dir {files}/data_damaged",
         r"1 of 4 mnist files failed verification in .*data_damaged \(t10k-labels-idx1-ubyte\)"),
    case("data-fetch-offline", "data fetch", r"Nothing was written to .*cache"),
    case("oip-candidates-1e8", f"oip --map 1 --candidates 100000000 --out {{out}}", r"'--candidates'.*65536", 2),
    case("oip-diversity-1e5", f"oip --map 1 --diversity 100000 --out {{out}}", r"'--diversity'.*64", 2),
    case("dream-zoom-frames-1e8", f"dream --zoom-frames 100000000 {QUICK_DREAM} --out {{out}}",
         r"100,000,000 zoom frames of 512×600 pixels need .* of memory"),
    case("dream-memory-limit-tiny", f"dream {QUICK_DREAM} --memory-limit 0.001 --out {{out}}", r"memory"),
    case("num-classes-1e9", "summary --num-classes 1000000000", r"'--num-classes'.*100000", 2),
    case("input-shape-huge", "import seed_cnn --input-shape 1,100000,100000 --out {out}",
         r"larger than convscope supports", 1),
    # --- NaN, infinity and nonsense numbers ----------------------------------------------------------
    case("train-lr-inf", "train --lr inf --out {out}", r"'--lr': 'inf' is not a finite number", 2),
    case("train-momentum-nan", "train --optimizer sgd --momentum nan --out {out}", r"'--momentum': 'nan' is not a finite", 2),
    case("train-epochs-0", "train --epochs 0 --out {out}", r"'--epochs'", 2),
    case("evaluate-batch-size-0", "evaluate --batch-size 0 --out {out}", r"'--batch-size'", 2),
    case("activations-per-row-0", "activations --per-row 0 --out {out}", r"'--per-row'", 2),
    case("filters-per-row-huge", "filters --per-row 100000000 --out {out}", r"'--per-row'", 2),
    case("predict-top-0", "predict --top 0 --out {out}", r"'--top'", 2),
    case("compare-threshold-nan", "compare --threshold nan --out {out}", r"'--threshold': 'nan' is not a finite", 2),
    case("mistakes-limit-negative", "mistakes --limit -1 --out {out}", r"'--limit'", 2),
    case("topk-k-0", "topk --k 0 --out {out}", r"'--k'", 2),
    case("oip-epsilon-nan", "oip --map 1 --epsilon nan --out {out}", r"'--epsilon': 'nan' is not a finite", 2),
    case("oip-lr-inf", "oip --map 1 --optimizer adam --lr inf --out {out}", r"'--lr': 'inf' is not a finite", 2),
    case("oip-scale-weights-nan", f"oip --map 1 {QUICK_OIP} --scales 3,7 --scale-weights nan,1 --out {{out}}",
         r"--scale-weights.*finite", 2),
    case("oip-steps-1e9", "oip --map 1 --steps 1000000000 --out {out}", r"'--steps'.*1000000", 2),
    case("oip-seed-negative", "oip --map 1 --seed -1 --out {out}", r"'--seed'", 2),
    case("classes-epsilon-inf", "classes --epsilon inf --out {out}", r"'--epsilon': 'inf' is not a finite", 2),
    case("dream-step-size-nan", "dream --step-size nan --out {out}", r"'--step-size': 'nan' is not a finite", 2),
    case("dream-octave-scale-inf", "dream --octave-scale inf --out {out}", r"'--octave-scale': 'inf' is not a finite", 2),
    case("dream-objective-nan-weight", f"dream {QUICK_DREAM} --out {{out}} --objective", r"weight.*nan", 1,
         "nan*Conv2D_3:56"),
    case("dream-objective-1e400-weight", f"dream {QUICK_DREAM} --out {{out}} --objective", r"1e400", 1,
         "1e400*Conv2D_3"),
    case("dream-objective-1500-terms", f"dream {QUICK_DREAM} --out {{out}} --objective", r"map index must be 0\.\.127",
         1, OBJECTIVE_1500),
    case("explain-noise-nan", "explain --method smoothgrad --noise nan --out {out}", r"'--noise': 'nan' is not a finite", 2),
    case("explain-baseline-inf", "explain --method ig --baseline inf --out {out}", r"'--baseline'.*not a finite", 2),
    case("report-seed-negative", "report --seed -1 --out {out}", r"'--seed'", 2),
    case("report-threads-0", "report --threads 0 --out {out}", r"'--threads'", 2),
    case("data-fetch-timeout-nan", "data fetch --timeout nan", r"'--timeout': 'nan' is not a finite", 2),
    case("spec-mean-nan", "summary --preprocess meanstd --mean nan --std 1", r"'--mean'.*finite", 2),
    # --- tracebacks that must be messages --------------------------------------------------------------
    case("device-foo-train", "train --device foo --out {out}", r"'--device': 'foo' is not a device", 2),
    case("device-foo-report", "report --device foo --out {out}", r"'--device': 'foo' is not a device", 2),
    case("device-foo-explain", "explain --device foo --out {out}", r"'--device': 'foo' is not a device", 2),
    case("device-meta", "predict --device meta --out {out}", r"'--device': 'meta': convscope computes on cpu", 2),
    case("out-is-a-file", "predict --out {files}/digit.png", r"'--out'.*is a file", 2),
    case("out-below-a-file", "predict --out {files}/digit.png/sub", r"needs the folder .*digit\.png, which is a file"),
    case("out-name-too-long", f"predict --out {{tmp}}/{'y' * 300}", r"(too long|shorter)"),
    *[case(f"readonly-{name}", f"{command} --out {{ro}}/out", r"cannot write into --out .*(Read-only|Permission denied)")
      for name, command in [
          ("train", "train"), ("evaluate", "evaluate"), ("activations", "activations"), ("filters", "filters"),
          ("predict", "predict"), ("compare", "compare"), ("mistakes", "mistakes"), ("topk", "topk"),
          ("oip", "oip --map 1"), ("classes", "classes"), ("dream", "dream"), ("explain", "explain"),
          ("report", "report"), ("import", "import seed_cnn"),
      ]],
    case("readonly-existing-folder", "predict --out {ro}", r"cannot write into --out .*(Read-only|Permission denied)"),
    case("readonly-report-cache", "report --out {out} --cache-dir {ro}/stages",
         r"cannot write into --cache-dir .*(Read-only|Permission denied)"),
    *[case(f"disk-full-{name}", f"{command} --out {{full}}/out",
           r"cannot write .* into .*full/out: No space left on device .*nothing of this run was kept", free_kb=free)
      for name, command, free in [
          ("predict", "predict test:0 test:1 test:2", 40), ("activations", "activations --layer all", 100),
          ("filters", "filters --layer all", 60), ("evaluate", "evaluate", 40), ("mistakes", "mistakes --limit 20", 40),
          ("topk", "topk --layer Conv2D_1 --k 2 --num-images 50", 40), ("oip", f"oip --map 1 --map 2 {QUICK_OIP}", 60),
          ("classes", "classes --steps 2 --passes 1", 40), ("dream", f"dream {QUICK_DREAM}", 200),
          ("explain", "explain --method saliency", 40), ("import", "import seed_cnn", 200),
      ]],
    # the run's checkpoint is written after each epoch, before anything else: a full disk stops it there
    case("disk-full-train", "train --train-limit 64 --epochs 1 --batch-size 32 --out {full}/out",
         r"cannot write the checkpoint of epoch 1 to .*full/out/checkpoint: .*No space left on device.*nothing was kept",
         free_kb=900),
    # --- poor messages ---------------------------------------------------------------------------------
    case("layer-100k-activations", "activations --out {out} --layer", r"is too long \(at most 4,096 characters\)", 1, LONG),
    case("layer-100k-topk", "topk --out {out} --layer", r"too long", 1, LONG),
    case("layer-100k-oip", "oip --out {out} --all --layer", r"no layer 'x+'… \(100,000 characters\)", 1, LONG),
    case("layer-100k-explain", "explain --method gradcam --out {out} --layer", r"100,000 characters", 1, LONG),
    case("layers-100k-report", "report --out {out} --layers", r"100,000 characters", 1, LONG),
    case("objective-100k-dream", f"dream {QUICK_DREAM} --out {{out}} --objective", r"100,000 characters", 1, LONG),
    case("class-100k-compare", "compare --out {out} --classes 4", r"too long", 1, LONG),
    case("layer-100k-digit-map-index", "activations --out {out} --layer", r"is too long", 1, "Conv2D_3:" + "9" * 5000),
    case("map-index-50-digits", "activations --out {out} --layer", r"too large for any layer", 1, "Conv2D_3:" + "9" * 50),
    case("resume-conflicting-options", "train --out {run} --resume --lr 0.5 --architecture model_b",
         r"cannot continue the run in .* with different settings: (?=.*--lr 0\.5)(?=.*--architecture model_b)"),
    case("resume-without-a-run", "train --out {out} --resume", r"nothing to resume in .*out: it holds no checkpoint/checkpoint\.json; .*leave out --resume"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_error_and_leaves_nothing(case: Case, tmp_path: Path, request, mnist_dir) -> None:
    values = {"tmp": str(tmp_path), "out": str(tmp_path / "out")}
    if case.needs("files"):
        values["files"] = str(request.getfixturevalue("files"))
    if case.needs("ro"):
        values["ro"] = str(request.getfixturevalue("readonly"))
    if case.needs("run"):
        shutil.copytree(request.getfixturevalue("tiny_run"), tmp_path / "run")
        values["run"] = str(tmp_path / "run")
    home = tmp_path.parent / f"{tmp_path.name}-home"  # the cache lives beside the case's folder
    env = _env(mnist_dir, home)
    args = [_fill(arg, values) for arg in case.args]
    with contextlib.ExitStack() as stack:
        full = None
        if case.needs("full"):
            full = stack.enter_context(full_disk(tmp_path.parent / f"{tmp_path.name}-full", case.free_kb))
            args = [arg.replace("{full}", str(full)) for arg in args]
            # the disk's own name, in the pattern, is the case folder's name + "-full"
        before = _tree(tmp_path)
        result = _convscope(args, env, tmp_path, case.timeout)
        after = _tree(tmp_path)
        on_disk = _tree(full) if full is not None else set()
    output = result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    if os.environ.get("CONVSCOPE_BAD_INPUT_TABLE"):  # record the table (case, command, message) for notes
        with open(os.environ["CONVSCOPE_BAD_INPUT_TABLE"], "a", encoding="utf-8") as table:
            shown = " ".join(arg if len(arg) <= 60 else f"<{len(arg):,} characters>" for arg in case.args)
            table.write(f"{case.id}\t{result.returncode}\t{shown}\t{(errors or ['(no Error line)'])[0]}\n")
    assert "Traceback" not in output, output[-3000:]
    assert result.returncode == case.code, f"exit {result.returncode}, expected {case.code}:\n{output[-2000:]}"
    assert len(errors) == 1, f"expected one Error: line, got {errors!r}:\n{output[-2000:]}"
    assert re.search(case.message, errors[0]), f"{errors[0]!r} does not match {case.message!r}"
    assert len(errors[0]) <= MAX_ERROR_LENGTH, f"{len(errors[0])} characters: {errors[0][:300]!r}…"
    assert after == before, f"left behind: {sorted(after - before)}"
    assert on_disk <= {"filler"}, f"left on the full disk: {sorted(on_disk)}"
    assert not (home / "cache" / "convscope").exists(), "wrote into the user cache"


def _fill(arg: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        arg = arg.replace("{" + key + "}", value)
    return arg


def test_the_next_run_removes_the_part_files_a_killed_run_left(tmp_path: Path) -> None:
    """A ``.part`` of a dead writer, or an old one of unknown writer, is removed when a
    command checks its output folder; a young one of unknown writer and a live
    writer's are kept (another run may be writing them)."""
    from click.testing import CliRunner

    from convscope.cli import main

    out = tmp_path / "out"
    (out / "frames").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has ended
    stale = [out / f".predict_test-0.png.{dead_pid}-abc123.part", out / "frames" / f".frame_001.png.{dead_pid}-x.part"]
    old = out / ".history.json.part"
    kept = [out / f".dream.png.{os.getpid()}-live.part", out / ".young.json.part", out / "result.png"]
    for path in [*stale, old, *kept]:
        path.write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    # a usage error after --out was read: the folder check ran, nothing else did
    result = CliRunner().invoke(main, ["predict", "--out", str(out), "--top", "0"])
    assert result.exit_code == 2, result.output
    assert [path.exists() for path in stale + [old]] == [False, False, False]
    assert all(path.exists() for path in kept)
