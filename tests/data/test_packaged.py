"""The MNIST test set ships inside the package (issue 13): the files are the canonical
ones, the split search finds them on its own after every local copy and before any
download, and ``convscope evaluate`` works on a fresh machine with no data and no
network; the training set stays a download, with one clear message when it cannot be had."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from convscope.data import DataNotFoundError, load_split, locate, sources
from convscope.data.idx import scan_idx_file
from convscope.data.sources import PACKAGED_SPLITS, SPLIT_FILES, dataset_info, file_in, packaged_dir, search

sys.path.insert(0, str(Path(__file__).parent))  # helpers beside this file, in any pytest import mode
from datatest_helpers import files_under, make_arrays, write_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MNIST = dataset_info("mnist")


@pytest.fixture
def fresh_machine(tmp_path, monkeypatch):
    """No CONVSCOPE_DATA, an empty HOME and cache, no system folders, no network."""
    monkeypatch.delenv("CONVSCOPE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CONVSCOPE_MIRRORS", "http://127.0.0.1:9/")  # the discard port: refused at once
    monkeypatch.setattr("convscope.data.download.time.sleep", lambda seconds: None)
    for name, info in list(sources.DATASETS.items()):
        monkeypatch.setitem(sources.DATASETS, name, dataclasses.replace(info, system_dirs=()))
    return tmp_path


def test_the_packaged_files_are_the_canonical_test_set():
    folder = packaged_dir("mnist")
    assert PACKAGED_SPLITS == {("mnist", "test")}
    assert sorted(p.name for p in folder.iterdir()) == [
        "LICENSE", "README.md", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
    ]
    for name in SPLIT_FILES["test"]:
        path = folder / f"{name}.gz"
        scan, _ = scan_idx_file(path)
        assert scan.gzip and scan.sha256 == MNIST.sha256[name] and scan.content_bytes == MNIST.sizes[name]
    assert (folder / "t10k-images-idx3-ubyte.gz").stat().st_size < 1_700_000
    readme = (folder / "README.md").read_text()
    licence = (folder / "LICENSE").read_text()
    assert "Yann LeCun and Corinna Cortes" in readme and "Attribution-Share Alike 3.0" in readme
    assert all(MNIST.sha256[name] in readme for name in SPLIT_FILES["test"])
    assert "CC BY-SA 3.0" in licence and "creativecommons.org/licenses/by-sa/3.0" in licence


def test_the_packaged_files_are_package_data():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["convscope"]
    shipped = {p.relative_to(REPO / "src" / "convscope").as_posix() for p in packaged_dir("mnist").iterdir()}
    import fnmatch

    assert all(any(fnmatch.fnmatch(name, pattern) for pattern in patterns) for name in shipped), (shipped, patterns)


def test_the_test_split_is_found_in_the_package_after_every_local_copy(fresh_machine, monkeypatch, test_split):
    assert locate("mnist", split="test") == packaged_dir("mnist")
    checks = search("mnist", split="test")
    assert [c.origin for c in checks] == ["cache", "packaged"] and checks[-1].usable
    assert "shipped with convscope (SHA-256 verified)" in checks[-1].reason
    split = load_split("test")
    np.testing.assert_array_equal(split.images, test_split.images)
    np.testing.assert_array_equal(split.labels, test_split.labels)
    # Any local copy comes first: the cache, then $CONVSCOPE_DATA before it.
    cached = sources.cache_dir("mnist")
    write_dataset(cached, {k: v for k, v in make_arrays(seed=8).items() if k.startswith("t10k")})
    assert locate("mnist", split="test") == cached
    env = fresh_machine / "env"
    write_dataset(env, make_arrays(seed=9))
    monkeypatch.setenv("CONVSCOPE_DATA", str(env))
    assert locate("mnist", split="test") == env
    # An explicit folder is authoritative: never the packaged copy behind the user's back.
    with pytest.raises(DataNotFoundError, match="does not hold the mnist IDX files of the test split"):
        locate("mnist", fresh_machine / "empty", split="test")


def test_the_training_set_is_not_shipped_and_gives_one_clear_message(fresh_machine):
    assert [c.origin for c in search("mnist", split="train")] == ["cache"]
    with pytest.raises(DataNotFoundError) as info:
        load_split("train")
    message = str(info.value)
    assert message.startswith("could not find the mnist training set and could not download it.")
    assert "Only the test set ships with convscope" in message and "127.0.0.1:9" in message
    assert "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in message and "\n" not in message
    assert files_under(fresh_machine / "cache") == []


def test_fashion_mnist_has_no_packaged_copy(fresh_machine):
    assert [c.origin for c in search("fashion-mnist", split="test")] == ["cache"]


def test_a_damaged_packaged_copy_is_not_used(fresh_machine, monkeypatch):
    copy = fresh_machine / "site-packages-copy" / "mnist"
    copy.mkdir(parents=True)
    for name in SPLIT_FILES["test"]:
        shutil.copy(file_in(packaged_dir("mnist"), name), copy)
    from convscope.data.idx import encode_idx

    labels = np.zeros(10000, dtype=np.uint8)
    (copy / "t10k-labels-idx1-ubyte.gz").unlink()
    (copy / "t10k-labels-idx1-ubyte").write_bytes(encode_idx(labels))  # right shape, wrong labels
    monkeypatch.setattr(sources, "packaged_dir", lambda dataset: copy)
    check = search("mnist", split="test")[-1]
    assert check.origin == "packaged" and not check.usable
    assert check.reason.startswith("damaged: ") and "is not the canonical ff7bcfd416de" in check.reason
    assert check.reason.endswith("reinstall convscope")
    with pytest.raises(DataNotFoundError, match="could not find the mnist test set"):
        locate("mnist", split="test")


def _fresh_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CONVSCOPE_DATA"}
    (tmp_path / "home").mkdir(exist_ok=True)
    env.update(
        HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"), CONVSCOPE_MIRRORS="http://127.0.0.1:9/",
        OMP_NUM_THREADS="1", MPLCONFIGDIR=str(tmp_path / "mpl"),
    )
    return env


def test_evaluate_works_on_a_fresh_machine_without_data_or_network(tmp_path):
    env = _fresh_env(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "convscope", "evaluate", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Data:     mnist test, 10,000 images" in run.stdout
    assert "Accuracy: 99.60 %  (40 misclassified)" in run.stdout
    assert not (tmp_path / "cache" / "convscope").exists()  # nothing downloaded, nothing cached

    run = subprocess.run(
        [sys.executable, "-m", "convscope", "evaluate", "--split", "train", "--out", str(tmp_path / "out2")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: could not find the mnist training set")
    assert "Only the test set ships with convscope" in lines[0]
    assert not (tmp_path / "cache" / "convscope").exists() and files_under(tmp_path / "out2") == []


def test_data_where_says_where_each_split_comes_from(tmp_path, mnist_dir):
    env = _fresh_env(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "convscope", "data", "where", "--json"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert run.returncode == 0, run.stderr
    where = json.loads(run.stdout)
    assert where["splits"]["test"]["chosen_because"] == "packaged"
    assert where["splits"]["test"]["chosen"] == str(packaged_dir("mnist"))
    assert where["splits"]["train"]["chosen"] is None
    assert where["splits"]["train"]["download_into"] == str(tmp_path / "cache" / "convscope" / "mnist")
    assert where["chosen"] is None  # no folder holds all four files
    run = subprocess.run(
        [sys.executable, "-m", "convscope", "data", "where"],
        capture_output=True, text=True, timeout=120, env={**env, "CONVSCOPE_DATA": str(mnist_dir)},
    )
    assert run.returncode == 0, run.stderr
    text = run.stdout
    assert "mnist test set (t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte):" in text
    assert f"Uses {mnist_dir} (found via CONVSCOPE_DATA)." in text
    assert "packaged" in text and "shipped with convscope (SHA-256 verified)" in text
