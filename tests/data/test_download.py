"""Downloads from a local HTTP server on 127.0.0.1: good files, corrupt files (rejected,
nothing written), mirror fallback, the real MNIST files verified against the canonical
hashes, and the ``convscope data`` commands."""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convscope.cli import main
from convscope.data import load_split
from convscope.data.download import DownloadError, download_dataset, verify_folder
from convscope.data.sources import dataset_info, file_in

sys.path.insert(0, str(Path(__file__).parent))  # helpers beside this file, in any pytest import mode
from datatest_helpers import files_under, make_arrays, serve, write_dataset  # noqa: E402

@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch):
    monkeypatch.setattr("convscope.data.download.time.sleep", lambda seconds: None)


def test_download_verifies_and_fills_the_cache(tmp_path):
    arrays = make_arrays(seed=11)
    info = write_dataset(tmp_path / "server", arrays)
    target = tmp_path / "cache" / "mnist"
    with serve(tmp_path / "server") as url:
        download_dataset(info, target, mirrors=(url,), progress=False)
    assert files_under(target) == sorted(f"{name}.gz" for name in info.files)
    split = load_split("train", data_dir=target)
    np.testing.assert_array_equal(split.images, arrays["train-images-idx3-ubyte"])
    assert all(check.ok for check in verify_folder(target, info))


def test_corrupt_download_is_rejected_and_leaves_nothing(tmp_path):
    arrays = make_arrays(seed=12)
    info = write_dataset(tmp_path / "server", arrays)
    # The last file on the list is damaged: the three good ones must not be written either.
    bad = tmp_path / "server" / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    target = tmp_path / "cache" / "mnist"
    with serve(tmp_path / "server") as url, pytest.raises(DownloadError) as info_error:
        download_dataset(info, target, mirrors=(url,), progress=False)
    message = str(info_error.value)
    assert "t10k-labels-idx1-ubyte" in message and "rejected" in message
    assert files_under(tmp_path / "cache") == []  # no file, no .part temporary


def test_wrong_content_with_a_valid_gzip_is_rejected_by_hash(tmp_path):
    arrays = make_arrays(seed=13)
    info = write_dataset(tmp_path / "server", arrays)
    other = make_arrays(seed=14)["train-labels-idx1-ubyte"]
    from convscope.data.idx import encode_idx

    (tmp_path / "server" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(encode_idx(other)))
    with serve(tmp_path / "server") as url, pytest.raises(DownloadError, match="SHA-256 of the decompressed content"):
        download_dataset(info, tmp_path / "cache", mirrors=(url,), progress=False)
    assert files_under(tmp_path / "cache") == []


def test_falls_back_to_the_next_mirror(tmp_path):
    info = write_dataset(tmp_path / "good", make_arrays(seed=15))
    (tmp_path / "empty").mkdir()
    with serve(tmp_path / "empty") as missing, serve(tmp_path / "good") as good:
        download_dataset(info, tmp_path / "cache", mirrors=(missing, "http://127.0.0.1:9/", good), progress=False)
    assert len(files_under(tmp_path / "cache")) == 4


def test_only_missing_files_are_fetched(tmp_path):
    arrays = make_arrays(seed=16)
    info = write_dataset(tmp_path / "server", arrays)
    target = tmp_path / "cache"
    write_dataset(target, {k: v for k, v in arrays.items() if k.startswith("train")})
    (tmp_path / "server" / "train-images-idx3-ubyte.gz").unlink()  # would 404 if asked for
    with serve(tmp_path / "server") as url:
        download_dataset(info, target, mirrors=(url,), progress=False)
    assert len(files_under(target)) == 4


@pytest.fixture(scope="module")
def mnist_server_dir(mnist_dir, tmp_path_factory):
    """The real MNIST files as a mirror serves them (``FILE.gz``)."""
    server = tmp_path_factory.mktemp("mnist-mirror")
    for name in dataset_info("mnist").files:
        source = file_in(mnist_dir, name)
        if source.suffix == ".gz":
            shutil.copy(source, server / source.name)
        else:
            (server / f"{name}.gz").write_bytes(gzip.compress(source.read_bytes(), compresslevel=1))
    return server


def test_real_mnist_over_http_matches_the_canonical_hashes(tmp_path, mnist_server_dir, test_split):
    info = dataset_info("mnist")
    target = tmp_path / "cache" / "mnist"
    with serve(mnist_server_dir) as url:
        download_dataset(info, target, mirrors=(url,), progress=False)
    checks = verify_folder(target, info)
    assert [c.sha256 for c in checks] == [info.sha256[name] for name in info.files]
    assert checks[0].shape == (60000, 28, 28) and checks[3].shape == (10000,)
    np.testing.assert_array_equal(load_split("test", data_dir=target).images, test_split.images)


def _cli_env(tmp_path, url: str) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), "CONVSCOPE_MIRRORS": url, "CONVSCOPE_DATA": ""}


def test_cli_fetch_refuses_a_corrupt_server_with_one_line(tmp_path, monkeypatch):
    info = dataset_info("mnist")
    server = tmp_path / "server"
    server.mkdir()
    for name in info.files:  # right names, wrong content
        (server / f"{name}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02ab"))
    monkeypatch.delenv("CONVSCOPE_DATA", raising=False)
    with serve(server) as url:
        result = CliRunner().invoke(main, ["data", "fetch", "--retries", "1"], env=_cli_env(tmp_path, url))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # a clean error, not a crash
    assert "Error: could not download train-images-idx3-ubyte" in result.output
    assert "Nothing was written" in result.output
    assert files_under(tmp_path / "cache") == []


def test_cli_where_and_verify(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.delenv("CONVSCOPE_DATA", raising=False)
    runner = CliRunner()
    env = _cli_env(tmp_path, "http://127.0.0.1:9/")
    result = runner.invoke(main, ["data", "where", "--json"], env={**env, "CONVSCOPE_DATA": str(mnist_dir)})
    assert result.exit_code == 0, result.output
    where = json.loads(result.stdout)
    assert where["chosen"] == str(mnist_dir) and where["chosen_because"] == "CONVSCOPE_DATA"

    result = runner.invoke(main, ["data", "verify", "--data-dir", str(mnist_dir), "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and [f["sha256"] == f["expected_sha256"] for f in report["files"]] == [True] * 4

    # A tampered copy: verify names the bad file and exits 1.
    copy = tmp_path / "copy"
    arrays = make_arrays(seed=17)
    write_dataset(copy, arrays)
    result = runner.invoke(main, ["data", "verify", "--data-dir", str(copy)], env=env)
    assert result.exit_code == 1
    assert "FAIL  t10k-images-idx3-ubyte" in result.output and "expected 0fa7898d" in result.output

    result = runner.invoke(main, ["data", "verify"], env=env)  # nothing anywhere: one clear line
    assert result.exit_code == 1 and "Error: could not find the mnist files" in result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # a clean error, not a crash


# The start of a plausible train-images file: its IDX header (60000, 28, 28) and some pixels, gzipped.
_GOOD_GZIP_START = gzip.compress(
    b"\x00\x00\x08\x03" + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    + np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
)[:1000]


def test_transfer_cut_short_is_retried_then_reported(tmp_path):
    import http.server
    import threading

    calls = []

    class ShortHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server API
            calls.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "5000")
            self.end_headers()
            self.wfile.write(_GOOD_GZIP_START)  # a good start, then hang up early

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ShortHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        info = dataclasses.replace(dataset_info("mnist"), mirrors=())
        with pytest.raises(DownloadError, match="train-images-idx3-ubyte") as error:
            download_dataset(info, tmp_path / "cache", mirrors=(url,), retries=3, progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert len(calls) == 3  # network-level failures are retried; corrupt content is not
    assert "IncompleteRead" in str(error.value) or "transfer ended" in str(error.value)
    assert files_under(tmp_path / "cache") == []


def test_cli_fetch_downloads_then_only_repairs(tmp_path, mnist_server_dir, monkeypatch):
    monkeypatch.delenv("CONVSCOPE_DATA", raising=False)
    runner = CliRunner()
    with serve(mnist_server_dir) as url:
        env = _cli_env(tmp_path, url)
        first = runner.invoke(main, ["data", "fetch", "--json"], env=env)
        second = runner.invoke(main, ["data", "fetch", "--json"], env=env)
        damaged = tmp_path / "cache" / "convscope" / "mnist" / "t10k-labels-idx1-ubyte.gz"
        damaged.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07"))  # valid IDX, wrong content
        third = runner.invoke(main, ["data", "fetch", "--json"], env=env)
    assert first.exit_code == second.exit_code == third.exit_code == 0, first.output + third.output
    assert sorted(json.loads(first.stdout)["downloaded"]) == sorted(dataset_info("mnist").files)
    assert json.loads(second.stdout)["downloaded"] == []
    report = json.loads(third.stdout)
    assert report["downloaded"] == ["t10k-labels-idx1-ubyte"] and report["ok"]
