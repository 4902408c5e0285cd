"""The search order for local data, content identification, and the offline error."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import pytest

from convscope.data import DataNotFoundError, load_split, locate, sources
from convscope.data.sources import cache_dir, dataset_info, identify_folder, search

sys.path.insert(0, str(Path(__file__).parent))  # helpers beside this file, in any pytest import mode
from datatest_helpers import make_arrays, write_dataset  # noqa: E402

@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No CONVSCOPE_DATA, an empty private cache, no system folders, downloads to a closed port."""
    monkeypatch.delenv("CONVSCOPE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CONVSCOPE_MIRRORS", "http://127.0.0.1:9/")  # discard port: refused at once
    monkeypatch.setattr("convscope.data.download.time.sleep", lambda seconds: None)
    for name, info in list(sources.DATASETS.items()):
        monkeypatch.setitem(sources.DATASETS, name, dataclasses.replace(info, system_dirs=()))
    return tmp_path


def test_explicit_dir_wins_and_is_authoritative(clean_env, monkeypatch):
    explicit, env = clean_env / "explicit", clean_env / "env"
    write_dataset(explicit, make_arrays(seed=1))
    write_dataset(env, make_arrays(seed=2))
    monkeypatch.setenv("CONVSCOPE_DATA", str(env))
    assert locate("mnist", explicit) == explicit
    assert locate("mnist") == env
    # An explicit folder without the files is an error, never a silent fallback to $CONVSCOPE_DATA.
    with pytest.raises(DataNotFoundError, match="does not hold the mnist IDX files") as info:
        locate("mnist", clean_env / "empty")
    assert str(clean_env / "empty") in str(info.value)


def test_explicit_dir_may_be_a_parent_with_a_dataset_subfolder(clean_env):
    write_dataset(clean_env / "root" / "mnist", make_arrays())
    assert locate("mnist", clean_env / "root") == clean_env / "root" / "mnist"


def test_env_var_then_cache_order(clean_env, monkeypatch):
    cached = cache_dir("mnist")
    assert cached == clean_env / "cache" / "convscope" / "mnist"
    write_dataset(cached, make_arrays(seed=3))
    parent = clean_env / "env-parent"
    write_dataset(parent / "mnist", make_arrays(seed=4))
    monkeypatch.setenv("CONVSCOPE_DATA", str(parent))
    assert [c.origin for c in search("mnist")] == ["CONVSCOPE_DATA", "CONVSCOPE_DATA", "cache"]
    assert locate("mnist") == parent / "mnist"  # env (as a parent of mnist/) before the cache
    monkeypatch.setenv("CONVSCOPE_DATA", str(clean_env / "nothing-here"))
    assert locate("mnist") == cached  # an env folder without files falls through to the cache
    split = load_split("test", data_dir=None)
    assert len(split) == 20


def test_system_folder_is_auto_detected_before_the_cache(clean_env, monkeypatch):
    system = clean_env / "usr-share-datasets-fashion-mnist"
    write_dataset(system, make_arrays(seed=6))
    info = sources.DATASETS["fashion-mnist"]
    monkeypatch.setitem(sources.DATASETS, "fashion-mnist", dataclasses.replace(info, system_dirs=(str(system),)))
    assert locate("fashion-mnist", download=False) == system
    assert load_split("test", "fashion-mnist").class_names[9] == "Ankle boot"


def test_debian_fashion_mnist_package_is_recognised():
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not folder.is_dir():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    assert "/usr/share/datasets/fashion-mnist" in dataset_info("fashion-mnist").system_dirs
    assert identify_folder(folder) == "fashion-mnist"


def test_a_folder_of_one_dataset_is_never_used_as_the_other(clean_env, mnist_dir, monkeypatch):
    # MNIST and Fashion-MNIST share file names; the test-label hash tells them apart.
    assert identify_folder(mnist_dir) == "mnist"
    monkeypatch.setenv("CONVSCOPE_DATA", str(mnist_dir))
    checks = search("fashion-mnist")
    assert not any(c.usable for c in checks)
    assert any(c.reason == "holds mnist, not fashion-mnist" for c in checks)
    with pytest.raises(DataNotFoundError, match="holds the mnist files, not fashion-mnist"):
        locate("fashion-mnist", mnist_dir)


def test_folder_with_only_some_files_is_skipped_with_the_reason(clean_env, monkeypatch):
    partial = clean_env / "partial"
    write_dataset(partial, make_arrays())
    (partial / "train-images-idx3-ubyte.gz").unlink()
    monkeypatch.setenv("CONVSCOPE_DATA", str(partial))
    check = [c for c in search("mnist") if c.folder == partial][0]
    assert not check.usable and check.reason == "missing train-images-idx3-ubyte"


def test_offline_error_says_where_to_put_the_files(clean_env):
    with pytest.raises(DataNotFoundError) as info:
        locate("mnist")
    message = str(info.value)
    target = clean_env / "cache" / "convscope" / "mnist"
    assert f"put the four files (train-images-idx3-ubyte.gz" in message
    assert str(target) in message and "--data-dir" in message and "CONVSCOPE_DATA" in message
    assert "127.0.0.1:9" in message  # the failed download is explained
    assert not target.exists()  # nothing half-written


def test_unknown_dataset_name_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of: mnist, fashion-mnist"):
        dataset_info("cifar10")
    assert dataset_info("Fashion_MNIST").name == "fashion-mnist"


def test_copy_of_real_mnist_is_identified(tmp_path, mnist_dir):
    source = sources.file_in(mnist_dir, "t10k-labels-idx1-ubyte")
    shutil.copy(source, tmp_path / source.name)
    assert identify_folder(tmp_path) == "mnist"
    assert identify_folder(tmp_path / "missing") is None
