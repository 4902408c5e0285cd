"""Every dataset kind behind one protocol, and the model/dataset fit check."""

from __future__ import annotations

import numpy as np
import pytest

from convscope.data import DatasetError, load_split
from convscope.data.catalog import (
    IdxFolderDataset, ImageFolderDataset, NpzDataset, check_fits, open_dataset, split_for_model,
)
from convscope.data.idx import write_idx
from convscope.spec import ModelSpec, digit_spec
from zoo import make_photo_folder


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    return make_photo_folder(tmp_path_factory.mktemp("photos"), per_class=10)


def test_image_folder_splits_every_fifth_image_and_resizes(photo_folder):
    dataset = open_dataset(photo_folder)
    assert isinstance(dataset, ImageFolderDataset)
    spec = ModelSpec((3, 32, 32), ("astronaut", "cat", "coffee", "rocket"), "unit", dataset=str(photo_folder))
    test = dataset.split("test", spec.input_shape)
    train = dataset.split("train", spec.input_shape)
    assert test.class_names == ("astronaut", "cat", "coffee", "rocket")
    assert len(test) == 4 * 2 and len(train) == 4 * 8
    assert test.images.shape == (8, 32, 32, 3) and test.images.dtype == np.uint8
    assert test.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # test:0 is the 5th file (004.png) of the first class, resized bicubically to 32×32
    from PIL import Image

    expected = np.asarray(Image.open(photo_folder / "astronaut" / "004.png").convert("RGB").resize((32, 32), Image.Resampling.BICUBIC))
    assert np.array_equal(test.images[0], expected)
    gray = dataset.split("test", (1, 16, 16))
    assert gray.images.shape == (8, 16, 16)
    check_fits(spec, test)
    with pytest.raises(DatasetError, match="different sizes"):
        dataset.split("test")  # mixed 40/48 px crops cannot be stacked without a model size


def test_image_folder_with_train_and_test_subfolders(tmp_path):
    from PIL import Image

    for which, count in (("train", 3), ("test", 2)):
        for name, value in (("dark", 20), ("light", 230)):
            (tmp_path / which / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((8, 8), value, np.uint8)).save(tmp_path / which / name / f"{i}.png")
    split = load_split("test", str(tmp_path))
    assert split.images.shape == (4, 8, 8) and split.class_names == ("dark", "light")
    assert split.labels.tolist() == [0, 0, 1, 1]
    assert len(load_split("train", str(tmp_path))) == 6


def test_npz_layouts(tmp_path):
    rng = np.random.default_rng(0)
    chw = rng.random((5, 3, 6, 7)).astype(np.float32)  # floats in 0..1, channels first
    onehot = np.eye(3)[[0, 2, 1, 1, 0]]
    np.savez(tmp_path / "both.npz", x_train=chw, y_train=onehot, x_test=chw[:2], y_test=onehot[:2],
             class_names=np.array(["a", "b", "c"]))
    dataset = open_dataset(tmp_path / "both.npz")
    assert isinstance(dataset, NpzDataset)
    train = dataset.split("train")
    assert train.images.shape == (5, 6, 7, 3) and train.labels.tolist() == [0, 2, 1, 1, 0]
    assert train.class_names == ("a", "b", "c")
    assert train.images[1, 2, 3, 0] == np.uint8(np.rint(chw[1, 0, 2, 3] * 255))
    np.savez(tmp_path / "one.npz", images=np.zeros((4, 5, 5), np.uint8), labels=np.array([0, 1, 2, 3]))
    assert len(load_split("test", str(tmp_path / "one.npz"))) == 4
    with pytest.raises(DatasetError, match="holds one split"):
        load_split("train", str(tmp_path / "one.npz"))
    np.savez(tmp_path / "standardised.npz", images=rng.normal(size=(3, 4, 4)), labels=np.array([0, 1, 0]))
    with pytest.raises(DatasetError, match="neither 0..255 nor 0..1"):
        load_split("test", str(tmp_path / "standardised.npz"))
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(DatasetError, match="needs images"):
        load_split("test", str(tmp_path / "other.npz"))


def test_idx_folder_of_any_size_with_class_names(tmp_path):
    images = np.arange(6 * 16 * 16, dtype=np.int64).reshape(6, 16, 16) % 256
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images.astype(np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 1, 2, 0, 1, 2], np.uint8))
    (tmp_path / "classes.txt").write_text("red\ngreen\nblue\n")
    dataset = open_dataset(tmp_path)
    assert isinstance(dataset, IdxFolderDataset)
    split = dataset.split("test")
    assert split.images.shape == (6, 16, 16) and split.class_names == ("red", "green", "blue")
    assert split.image_shape == (1, 16, 16)
    with pytest.raises(DatasetError, match="lacks the train split"):
        dataset.split("train")


def test_model_and_dataset_must_fit(test_split, photo_folder):
    rgb = ModelSpec((3, 32, 32), ("a", "b", "c", "d"), "unit", name="rgb")
    with pytest.raises(DatasetError, match=r"1×28×28 images but the model 'rgb' expects 3×32×32"):
        check_fits(rgb, test_split)
    five = digit_spec(class_names=tuple("abcde"), name="five")
    with pytest.raises(DatasetError, match="10 classes but the model 'five' has 5 outputs"):
        check_fits(five, test_split)
    with pytest.raises(DatasetError, match="does not name its dataset"):
        split_for_model(rgb.replace(dataset=None))
    split = split_for_model(rgb.replace(dataset=str(photo_folder)))
    assert split.images.shape[1:] == (32, 32, 3)


def test_bad_dataset_references(tmp_path):
    with pytest.raises(DatasetError, match="neither a built-in dataset"):
        open_dataset("cifar-10")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DatasetError, match="must be a .npz"):
        open_dataset(tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds neither IDX files"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match=r"characters\)"):
        open_dataset("x" * 5000)
