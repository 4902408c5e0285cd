"""Hostile and broken data files, served by a real HTTP server on 127.0.0.1 or left in a
data folder: gzip bombs, wrong hashes, truncated, oversized and trickling transfers,
absurd IDX headers. Each is refused with one clear message after a bounded amount of
work and memory (the bombs run in a subprocess limited to 1.5 GiB of address space),
and no ``.part`` file or folder is left behind."""

from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from convscope.data import IdxError, load_split
from convscope.data.download import DownloadError, clean_stale_parts, download_dataset
from convscope.data.idx import IdxStream, read_idx, scan_idx_file
from convscope.data.sources import dataset_info, file_in

sys.path.insert(0, str(Path(__file__).parent))  # helpers beside this file, in any pytest import mode
from datatest_helpers import files_under, gzip_bomb, idx_header, run_limited, scripted_server  # noqa: E402

MNIST = dataset_info("mnist")
TRAIN_IMAGES = "train-images-idx3-ubyte"


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch):
    monkeypatch.setattr("convscope.data.download.time.sleep", lambda seconds: None)


@pytest.fixture(scope="module")
def train_bomb() -> bytes:
    """2.1 MB of gzip: the header of MNIST's training images (60000, 28, 28), then 2 GiB of zeros."""
    return gzip_bomb(idx_header((60000, 28, 28)), 2 << 30)


def _serve_files(files: dict[str, bytes], *, content_length: bool = True):
    """A responder serving ``files`` by name (404 otherwise)."""

    def respond(handler) -> None:
        body = files.get(handler.path.lstrip("/"))
        if body is None:
            handler.send_error(404)
            return
        handler.send_response(200)
        if content_length:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for start in range(0, len(body), 1 << 16):
            handler.wfile.write(body[start : start + (1 << 16)])

    return respond


def _fetch_one(tmp_path, url, base_name=TRAIN_IMAGES, **options) -> Path:
    """Download ``base_name`` alone (the other three present already) into tmp/cache."""
    target = tmp_path / "cache" / "mnist"
    target.mkdir(parents=True, exist_ok=True)
    for other in MNIST.files:
        if other != base_name:
            (target / f"{other}.gz").write_bytes(b"placeholder")  # present: not fetched
    options.setdefault("retries", 1)
    download_dataset(MNIST, target, mirrors=(url,), progress=False, **options)
    return target


def _parts(folder: Path) -> list[str]:
    return [name for name in files_under(folder) if name.endswith(".part")]


# --- downloads ----------------------------------------------------------------------------------


def test_a_served_gzip_bomb_is_refused_after_the_declared_size(tmp_path, train_bomb, monkeypatch):
    inflated = []
    original_feed = IdxStream.feed

    def counting_feed(self, data):
        try:
            original_feed(self, data)
        finally:
            inflated.append(self._produced)

    monkeypatch.setattr(IdxStream, "feed", counting_feed)
    with scripted_server(_serve_files({f"{TRAIN_IMAGES}.gz": train_bomb})) as (url, requested):
        with pytest.raises(DownloadError, match="inflates beyond the 47,040,000 data bytes") as info:
            _fetch_one(tmp_path, url)
    assert "decompression bomb" in str(info.value) and f"{url}{TRAIN_IMAGES}.gz" in str(info.value)
    assert max(inflated) == 16 + 47_040_000 + 1  # stopped one byte past the size the header declares
    assert requested == [f"/{TRAIN_IMAGES}.gz"]  # content errors are not retried
    assert _parts(tmp_path) == [] and not (tmp_path / "cache" / "mnist" / f"{TRAIN_IMAGES}.gz").exists()


def test_cli_fetch_of_a_bomb_in_bounded_memory(tmp_path, train_bomb):
    # In a subprocess whose address space is 1.5 GiB: inflating the bomb (2 GiB) would die there.
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "CONVSCOPE_DATA": ""}
    with scripted_server(_serve_files({f"{TRAIN_IMAGES}.gz": train_bomb})) as (url, _requested):
        run = run_limited(["data", "fetch", "--retries", "1"], {**env, "CONVSCOPE_MIRRORS": url})
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr and "MemoryError" not in run.stderr
    error = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(error) == 1 and error[0].startswith("Error: could not download train-images-idx3-ubyte")
    assert "inflates beyond" in error[0] and "Nothing was written" in error[0]
    assert files_under(tmp_path / "cache") == []


def test_a_header_declaring_another_size_is_refused_at_once(tmp_path):
    # A bomb whose header declares 2**31 images: refused from the header, before any data.
    bomb = gzip_bomb(idx_header((2**31, 28, 28)), 64 << 20)
    with scripted_server(_serve_files({f"{TRAIN_IMAGES}.gz": bomb})) as (url, _requested):
        with pytest.raises(DownloadError, match=r"declares shape \(2147483648, 28, 28\).*this file has 47,040,016 bytes"):
            _fetch_one(tmp_path, url)
    assert _parts(tmp_path) == []


def test_a_wrong_file_of_the_right_size_is_refused_by_its_hash(tmp_path):
    labels = np.random.default_rng(3).integers(0, 10, 10000, dtype=np.uint8)
    fake = gzip.compress(idx_header((10000,)) + labels.tobytes())
    name = "t10k-labels-idx1-ubyte"
    with scripted_server(_serve_files({f"{name}.gz": fake})) as (url, _requested):
        with pytest.raises(DownloadError, match=f"SHA-256 of the decompressed content is .*expected {MNIST.sha256[name]}"):
            _fetch_one(tmp_path, url, name)
    assert _parts(tmp_path) == [] and (tmp_path / "cache" / "mnist" / f"{name}.gz").exists() is False


def test_a_truncated_gzip_without_length_is_refused(tmp_path, mnist_dir):
    good = file_in(mnist_dir, "t10k-labels-idx1-ubyte").read_bytes()
    cut = good[: len(good) - 100]
    name = "t10k-labels-idx1-ubyte"
    with scripted_server(_serve_files({f"{name}.gz": cut}, content_length=False)) as (url, _requested):
        with pytest.raises(DownloadError, match="truncated gzip data"):
            _fetch_one(tmp_path, url, name)
    assert _parts(tmp_path) == []


def test_an_announced_oversized_body_is_refused_before_reading(tmp_path):
    sent = []

    def respond(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(100 << 20))  # 100 MB for a 4.5 kB file
        handler.end_headers()
        for _ in range(1600):  # would be 100 MB; the client hangs up at once
            handler.wfile.write(bytes(1 << 16))
            sent.append(1)

    with scripted_server(respond) as (url, _requested):
        with pytest.raises(DownloadError, match="announces 104,857,600 bytes, more than the 72,349"):
            _fetch_one(tmp_path, url, "t10k-labels-idx1-ubyte")
    assert len(sent) < 1600
    assert _parts(tmp_path) == []


def test_an_endless_body_is_cut_at_the_size_limit(tmp_path):
    # A valid gzip header with an endless comment field: bytes that inflate to nothing.
    received_limit = 4542 + 4542 // 2 + (64 << 10)

    def respond(handler) -> None:
        handler.send_response(200)
        handler.end_headers()  # no Content-Length
        handler.wfile.write(b"\x1f\x8b\x08\x10\x00\x00\x00\x00\x00\xff")  # FCOMMENT set
        while not handler.stop.is_set():
            handler.wfile.write(b"x" * (1 << 14))

    with scripted_server(respond) as (url, _requested):
        with pytest.raises(DownloadError, match=f"served more than {received_limit:,} bytes"):
            _fetch_one(tmp_path, url, "t10k-labels-idx1-ubyte")
    assert _parts(tmp_path) == []


def test_a_trickling_server_is_abandoned(tmp_path):
    def respond(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "4542")
        handler.end_headers()
        handler.wfile.write(b"\x1f\x8b\x08\x10\x00\x00\x00\x00\x00\xff")  # a gzip header with a comment
        while not handler.stop.is_set():  # 20 bytes every 50 ms: 400 B/s, each read within the timeout
            handler.wfile.write(b"x" * 20)
            handler.wfile.flush()
            handler.stop.wait(0.05)  # not time.sleep: the tests stub it out for the download's back-off

    with scripted_server(respond) as (url, requested):
        with pytest.raises(DownloadError, match=r"too slow: .* bytes in .* s \(less than 10 kB/s\)"):
            _fetch_one(tmp_path, url, "t10k-labels-idx1-ubyte", timeout=0.3, min_rate=10_000, retries=2)
    assert len(requested) == 2  # a stalled transfer is a network fault: retried
    assert _parts(tmp_path) == []


def test_an_interrupted_download_leaves_nothing(tmp_path, monkeypatch, mnist_dir):
    files = {f"{n}.gz": file_in(mnist_dir, n).read_bytes() for n in MNIST.files if "labels" in n}
    from convscope.data import download as download_module

    original = download_module._stream_into
    calls = []

    def interrupted(url, out, *args, **kwargs):
        calls.append(url)
        if len(calls) == 2:  # the first file is verified and staged; Ctrl-C during the second
            out.write(b"half a file")
            raise KeyboardInterrupt
        return original(url, out, *args, **kwargs)

    monkeypatch.setattr(download_module, "_stream_into", interrupted)
    target = tmp_path / "cache" / "convscope" / "mnist"
    target.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):  # present: only the labels are fetched
        (target / f"{name}.gz").write_bytes(b"x")
    with scripted_server(_serve_files(files)) as (url, _requested):
        with pytest.raises(KeyboardInterrupt):
            download_dataset(MNIST, target, mirrors=(url,), progress=False)
    assert len(calls) == 2
    assert files_under(target) == ["t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz"]


def test_folders_created_for_a_failed_download_are_removed(tmp_path):
    target = tmp_path / "cache" / "convscope" / "mnist"
    with pytest.raises(DownloadError):
        download_dataset(MNIST, target, mirrors=("http://127.0.0.1:9/",), retries=1, progress=False)
    assert not (tmp_path / "cache").exists()


def test_an_unwritable_target_is_a_local_error_not_a_download_failure(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(OSError) as info:
        download_dataset(MNIST, blocker / "mnist", mirrors=("http://127.0.0.1:9/",), retries=3, progress=False)
    assert not isinstance(info.value, DownloadError)


def test_stale_part_files_of_a_killed_run_are_cleaned(tmp_path):
    target = tmp_path / "mnist"
    target.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale_tagged = target / f".t10k-labels-idx1-ubyte.gz.{dead_pid}.part"
    live_tagged = target / f".t10k-labels-idx1-ubyte.gz.{os.getpid()}.part"
    old_untagged = target / ".train-images-idx3-ubyte.gz.k3j_x9ab.part"  # an atomic write's temporary
    fresh_untagged = target / ".train-labels-idx1-ubyte.gz.q8w2e0rt.part"
    unrelated = target / ".notes.txt.12.part"
    for path in (stale_tagged, live_tagged, old_untagged, fresh_untagged, unrelated):
        path.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(old_untagged, (two_hours_ago, two_hours_ago))
    removed = clean_stale_parts(target, MNIST)
    assert sorted(p.name for p in removed) == sorted([stale_tagged.name, old_untagged.name])
    assert sorted(p.name for p in target.iterdir()) == sorted([live_tagged.name, fresh_untagged.name, unrelated.name])


def test_download_cleans_stale_parts_before_it_starts(tmp_path, mnist_dir):
    target = tmp_path / "mnist"
    target.mkdir()
    for name in MNIST.files:
        shutil.copy(file_in(mnist_dir, name), target / f"{name}.gz")
    old = target / ".t10k-labels-idx1-ubyte.gz.abcdefgh.part"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    download_dataset(MNIST, target, mirrors=("http://127.0.0.1:9/",), progress=False)  # nothing to fetch
    assert not old.exists()


def test_https_is_never_redirected_to_plain_http():
    import urllib.error
    import urllib.request

    from convscope.data.download import _NoDowngradeRedirect

    handler = _NoDowngradeRedirect()
    request = urllib.request.Request("https://mirror.example/mnist/t10k-labels-idx1-ubyte.gz")
    with pytest.raises(urllib.error.HTTPError, match="refused a redirect from https to http://"):
        handler.redirect_request(request, None, 302, "Found", {}, "http://evil.example/x.gz")
    followed = handler.redirect_request(request, None, 302, "Found", {}, "https://other.example/x.gz")
    assert followed.full_url == "https://other.example/x.gz"


def test_built_in_mirrors_are_https_and_sizes_are_known():
    from convscope.data.sources import DATASETS

    for info in DATASETS.values():
        assert info.mirrors and all(m.startswith("https://") for m in info.mirrors), info.mirrors
        assert set(info.sizes) == set(info.files) == set(info.gz_sizes)


# --- data folders -------------------------------------------------------------------------------


def test_a_bomb_in_a_data_folder_is_refused_in_bounded_memory(tmp_path, mnist_dir):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in MNIST.files:
        shutil.copy(file_in(mnist_dir, name), folder / f"{name}.gz")
    bomb = folder / "t10k-images-idx3-ubyte.gz"
    bomb.write_bytes(gzip_bomb(idx_header((10000, 28, 28)), 2 << 30))
    run = run_limited(["evaluate", "--data-dir", str(folder)], {"CONVSCOPE_DATA": ""}, timeout=300)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr and "MemoryError" not in run.stderr
    error = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(error) == 1 and error[0].startswith(f"Error: {bomb}: inflates beyond the 7,840,000 data bytes")
    # The same in this process: refused, and nothing left half-read in the split cache.
    with pytest.raises(IdxError, match="decompression bomb"):
        load_split("test", data_dir=folder)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (idx_header((2**32 - 1, 2**32 - 1, 2**32 - 1)) + b"\x00" * 64, r"declares shape \(4294967295, 4294967295, 4294967295\) = 79,228,162,458,924,105,385,300,197,375 data bytes"),
        (idx_header((2**31, 28, 28), type_code=0x0E) + b"\x00" * 64, "more than the 1,073,741,824-byte limit"),
        (idx_header((100, 28, 28)) + b"\x00" * 500, r"truncated: header declares shape \(100, 28, 28\) \(78400 data bytes\) but the file holds 500"),
        (idx_header((3,)) + b"\x01\x02\x03" + b"\x00" * (1 << 20), "has trailing bytes"),
        (idx_header((5, 5))[:6], "truncated header"),
        (b"\x00\x00", "only 2 bytes"),
    ],
    ids=["product-overflows-int64", "float64-over-limit", "truncated", "trailing", "cut-header", "two-bytes"],
)
@pytest.mark.parametrize("gz", [False, True])
def test_absurd_or_inconsistent_idx_files_are_refused_naming_the_file(tmp_path, content, message, gz):
    path = tmp_path / ("damaged-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(content) if gz else content)
    if gz and "trailing" in message:
        message = "inflates beyond the 3 data bytes"
    with pytest.raises(IdxError, match=message) as info:
        read_idx(path)
    assert str(info.value).startswith(f"{path}: ")


def test_reading_stops_one_byte_past_the_declared_size(tmp_path):
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(gzip_bomb(idx_header((1000,)), 256 << 20))  # 1000 labels, then 256 MiB more
    stream = IdxStream(str(path))
    with pytest.raises(IdxError, match=r"refused after 1,009 bytes"):
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 16):
                stream.feed(chunk)
    assert stream._produced == 8 + 1000 + 1


def test_concatenated_gzip_members_and_zero_padding_are_read(tmp_path):
    labels = np.arange(300, dtype=np.uint8) % 10
    content = idx_header((300,)) + labels.tobytes()
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(content[:100]) + gzip.compress(content[100:]) + b"\x00" * 16)
    np.testing.assert_array_equal(read_idx(path), labels)
    scan, _ = scan_idx_file(path)
    assert scan.gzip and scan.shape == (300,) and scan.content_bytes == len(content)
