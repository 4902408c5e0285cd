"""Every kind of dataset behind one protocol, and the check that a dataset fits a model.

``--dataset NAME_OR_PATH`` (and the spec's ``dataset`` field) may name:

* a built-in IDX dataset: ``mnist``, ``fashion-mnist`` (located or downloaded, see
  :mod:`convscope.data.sources`);
* a folder of IDX files of any image size (``train-images-idx3-ubyte[.gz]`` … as
  MNIST names them; class names from ``classes.txt``, one per line);
* a folder of images with one sub-folder per class (``DIR/<class>/*.png``), or
  with ``train/`` and ``test/`` sub-folders that each hold the class folders.
  Without them, every fifth image of each class (in sorted file order) is the test
  split and the rest the training split. Gray or RGB, any size: images are
  converted to the model's channels and resized to its input size (exactly ``H×W``,
  bicubic) when loaded for a model;
* a ``.npz`` file with ``images`` + ``labels`` (one split, used as the test split),
  or ``x_train, y_train, x_test, y_test`` / ``train_images, train_labels,
  test_images, test_labels`` (both splits); optional ``class_names``. Images uint8
  0..255 (or floats in 0..1), ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``;
  labels as indices or one-hot rows.

Every kind gives :class:`~convscope.data.datasets.Split` objects: uint8 images
``(N, H, W)`` or ``(N, H, W, 3)`` plus int64 labels and the class names.
"""

from __future__ import annotations

import functools
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from convscope.data.datasets import DatasetError, Split, _load_split_cached, _signature, dataset_key, load_split
from convscope.data.sources import DATASETS, SPLIT_FILES, file_in

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "test")


class Dataset(Protocol):
    """What every dataset kind offers."""

    name: str

    def split(self, which: str, shape: Sequence[int] | None = None) -> Split:
        """One split; ``shape`` = the model's ``(C, H, W)`` for kinds that convert
        images on loading (folders), ignored by the others."""
        ...


@dataclass(frozen=True)
class BuiltinDataset:
    """MNIST / Fashion-MNIST, found by the search of :mod:`convscope.data.sources`."""

    name: str
    data_dir: str | None = None
    download: bool = True

    def split(self, which: str, shape: Sequence[int] | None = None) -> Split:
        return load_split(which, self.name, self.data_dir, download=self.download)


@dataclass(frozen=True)
class IdxFolderDataset:
    """A folder of IDX files named like MNIST's, any image size."""

    path: Path

    @property
    def name(self) -> str:
        return str(self.path)

    def split(self, which: str, shape: Sequence[int] | None = None) -> Split:
        _check_split(which)
        for base in SPLIT_FILES[which]:
            if file_in(self.path, base) is None:
                raise DatasetError(f"{self.path} has no {base} (or {base}.gz): this IDX folder lacks the {which} split")
        folder = self.path.resolve()
        return _load_split_cached(str(folder), str(self.path), which, _signature(folder, which))


@dataclass(frozen=True)
class ImageFolderDataset:
    """A folder with one sub-folder of images per class (see the module docstring)."""

    path: Path

    @property
    def name(self) -> str:
        return str(self.path)

    def split(self, which: str, shape: Sequence[int] | None = None) -> Split:
        _check_split(which)
        files, labels, names = _folder_files(self.path, which)
        target = None if shape is None else tuple(int(v) for v in shape)
        stamp = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
        images = _read_folder_images(tuple(str(f) for f in files), target, hash(stamp))
        labels_array = np.asarray(labels, dtype=np.int64)
        labels_array.setflags(write=False)
        return Split(images, labels_array, str(self.path), which, names)


@dataclass(frozen=True)
class NpzDataset:
    """A ``.npz`` file of arrays (see the module docstring)."""

    path: Path

    @property
    def name(self) -> str:
        return str(self.path)

    def split(self, which: str, shape: Sequence[int] | None = None) -> Split:
        _check_split(which)
        stat = self.path.stat()
        return _read_npz_split(str(self.path), which, stat.st_mtime_ns, stat.st_size)


def _check_split(which: str) -> None:
    if which not in SPLITS:
        raise DatasetError(f"unknown split {which!r}; use 'train' or 'test'")


def open_dataset(ref: str | os.PathLike, *, data_dir: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """The dataset named by ``ref``: a built-in name or a path (see the module docstring).

    Raises:
        DatasetError: a path that does not exist or is none of the supported kinds;
            the message lists what is supported.
    """
    text = str(ref).strip()
    if not text:
        raise DatasetError("no dataset given: use mnist, fashion-mnist, or a path to an IDX folder, an image folder or a .npz file")
    key = dataset_key(text)
    path = Path(text).expanduser()
    if key in DATASETS and not _exists(path):
        return BuiltinDataset(key, None if data_dir is None else str(data_dir), download)
    if not _exists(path):
        known = ", ".join(DATASETS)
        raise DatasetError(
            f"dataset {_short(text)!r} is neither a built-in dataset ({known}) nor an existing path; give an IDX folder, "
            "a folder with one sub-folder of images per class, or a .npz file"
        )
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return NpzDataset(path)
        raise DatasetError(f"{path}: a dataset file must be a .npz (with images and labels arrays); got {path.suffix or 'no suffix'}")
    if any(file_in(path, base) is not None for pair in SPLIT_FILES.values() for base in pair):
        return IdxFolderDataset(path)
    if _class_folders(path) or any(_class_folders(path / which) for which in SPLITS):
        return ImageFolderDataset(path)
    raise DatasetError(
        f"{path} holds neither IDX files (train-images-idx3-ubyte …) nor one sub-folder of images per class "
        f"({', '.join(IMAGE_SUFFIXES)}); see `convscope data --help` for the dataset layouts"
    )


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


# -- image folders -------------------------------------------------------------
def _class_folders(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return sorted(
        child for child in path.iterdir()
        if child.is_dir() and not child.name.startswith(".") and child.name not in SPLITS
        and any(f.suffix.lower() in IMAGE_SUFFIXES for f in child.iterdir() if f.is_file())
    )


def _folder_files(path: Path, which: str) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """Image files, labels and class names of one split of an image folder."""
    split_root = path / which
    has_splits = any(_class_folders(path / s) for s in SPLITS)
    if has_splits:
        # class names from both splits, so labels agree between train and test
        names = tuple(sorted({c.name for s in SPLITS for c in _class_folders(path / s)}))
        if not _class_folders(split_root):
            raise DatasetError(f"{path} has no {which}/ folder of class sub-folders")
        folders = {c.name: c for c in _class_folders(split_root)}
    else:
        folders = {c.name: c for c in _class_folders(path)}
        names = tuple(sorted(folders))
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        folder = folders.get(name)
        if folder is None:
            continue
        members = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not has_splits:
            # every fifth image (sorted order) is the test split
            members = [f for i, f in enumerate(members) if (i % 5 == 4) == (which == "test")]
        files.extend(members)
        labels.extend([label] * len(members))
    if not files:
        raise DatasetError(f"{path}: the {which} split holds no images")
    return files, labels, names


@functools.lru_cache(maxsize=8)
def _read_folder_images(files: tuple[str, ...], shape: tuple[int, int, int] | None, _stamp: int) -> np.ndarray:
    """Decode image files into one uint8 array, converted to ``shape`` when given."""
    from PIL import Image

    from convscope.data.image_files import ImageFileError, open_image_file

    arrays = []
    for file in files:
        try:
            image = open_image_file(file)
        except ImageFileError as exc:
            raise DatasetError(str(exc)) from None
        if shape is not None:
            channels, height, width = shape
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BICUBIC)
        elif image.mode not in ("L", "RGB"):
            image = image.convert("RGB" if image.mode in ("RGBA", "P", "CMYK", "YCbCr", "LA") else "L")
        arrays.append(np.asarray(image, dtype=np.uint8))
    first = arrays[0].shape
    odd = next((i for i, a in enumerate(arrays) if a.shape != first), None)
    if odd is not None:
        raise DatasetError(
            f"{files[odd]} is {arrays[odd].shape} but {files[0]} is {first}: images of different sizes or colours "
            "can only be loaded for a model (which says the size to resize to); pass --model, or resize them"
        )
    images = np.stack(arrays)
    images.setflags(write=False)
    return images


# -- .npz -----------------------------------------------------------------------
_NPZ_KEYS = {
    "train": (("x_train", "y_train"), ("train_images", "train_labels")),
    "test": (("x_test", "y_test"), ("test_images", "test_labels"), ("images", "labels")),
}
#: Refuse arrays larger than this from a .npz (a hostile file must not fill the memory).
MAX_NPZ_BYTES = 4 * 1024**3


@functools.lru_cache(maxsize=4)
def _read_npz_split(path: str, which: str, _mtime: int, _size: int) -> Split:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{path} is not a readable .npz file ({exc})") from None
    with archive:
        keys = set(archive.files)
        pair = next((p for p in _NPZ_KEYS[which] if p[0] in keys and p[1] in keys), None)
        if pair is None:
            if which == "train" and {"images", "labels"} <= keys:
                raise DatasetError(
                    f"{path} holds one split (images, labels), used as the test split; for a training split store "
                    "x_train/y_train (or train_images/train_labels) too"
                )
            raise DatasetError(
                f"{path} has arrays {sorted(keys)}; a dataset .npz needs images + labels, or x_train, y_train, x_test, "
                "y_test (or train_images, train_labels, test_images, test_labels)"
            )
        try:
            for key in pair:
                info = archive.zip.getinfo(f"{key}.npy") if hasattr(archive, "zip") else None
                if info is not None and info.file_size > MAX_NPZ_BYTES:
                    raise DatasetError(f"{path}: array {key} is {info.file_size / 1e9:.1f} GB, more than convscope loads")
            images = _npz_images(archive[pair[0]], f"{path}:{pair[0]}")
            labels = _npz_labels(archive[pair[1]], f"{path}:{pair[1]}")
            names_array = archive["class_names"] if "class_names" in keys else None
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise DatasetError(f"{path}: cannot read its arrays ({exc})") from None
    if len(images) != len(labels):
        raise DatasetError(f"{path}: {len(images)} images but {len(labels)} labels in {pair}")
    if names_array is not None:
        names = tuple(str(n) for n in np.asarray(names_array).reshape(-1))
    else:
        names = tuple(str(i) for i in range(int(labels.max()) + 1 if labels.size else 1))
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise DatasetError(f"{path}: labels must be 0..{len(names) - 1} (one per class name); found {int(labels.min())}..{int(labels.max())}")
    images.setflags(write=False)
    labels.setflags(write=False)
    return Split(images, labels, path, which, names)


def _npz_images(array: np.ndarray, where: str) -> np.ndarray:
    """Images of any accepted layout/dtype → uint8 ``(N, H, W)`` or ``(N, H, W, 3)``."""
    if array.ndim == 4 and array.shape[1] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 1, -1)  # (N, C, H, W) → channels last
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 3 or (array.ndim == 4 and array.shape[-1] == 3)):
        raise DatasetError(f"{where}: images must be (N, H, W), (N, H, W, 1|3) or (N, 1|3, H, W); got {array.shape}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer):
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise DatasetError(f"{where}: images hold NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        if low >= 0 and high <= 1.0 and np.issubdtype(array.dtype, np.floating):
            values = values * 255.0
        elif low < 0 or high > 255:
            raise DatasetError(
                f"{where}: pixel values {low:g}..{high:g} are neither 0..255 nor 0..1 (preprocessed arrays cannot be "
                "turned back into pixels: store the raw images)"
            )
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    raise DatasetError(f"{where}: images of type {array.dtype} are not pixels")


def _npz_labels(array: np.ndarray, where: str) -> np.ndarray:
    if array.ndim == 2 and array.shape[1] > 1:
        array = array.argmax(axis=1)  # one-hot rows
    array = array.reshape(-1) if array.ndim == 2 and array.shape[1] == 1 else array
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DatasetError(f"{where}: labels must be (N,) class indices or (N, K) one-hot rows; got {array.shape} {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array) & (array == np.round(array))):
        raise DatasetError(f"{where}: labels must be whole numbers")
    return array.astype(np.int64)


# -- a dataset for a model -------------------------------------------------------
def split_for_model(spec, which: str = "test", dataset: str | os.PathLike | None = None,
                    data_dir: str | os.PathLike | None = None, *, download: bool = True) -> Split:
    """Split ``which`` of ``dataset`` (default: the model's own, from its spec), loaded
    for the model and checked against it.

    Raises:
        DatasetError: no dataset known (the spec names none and none was given), or
            images / classes that do not fit the model — one message naming both.
    """
    ref = dataset if dataset is not None else spec.dataset
    if ref is None:
        raise DatasetError(
            f"the model {spec.name!r} does not name its dataset; pass --dataset (mnist, fashion-mnist, or a path to an "
            "IDX folder, an image folder or a .npz file)"
        )
    split = open_dataset(ref, data_dir=data_dir, download=download).split(which, spec.input_shape)
    check_fits(spec, split)
    return split


def check_fits(spec, split: Split) -> None:
    """Refuse a split whose images or classes disagree with the model's spec.

    Raises:
        DatasetError: naming the dataset's and the model's shape / class count.
    """
    if split.image_shape != tuple(spec.input_shape):
        c, h, w = split.image_shape
        mc, mh, mw = spec.input_shape
        raise DatasetError(
            f"dataset {_short(split.dataset)} has {c}×{h}×{w} images but the model {spec.name!r} expects {mc}×{mh}×{mw}; "
            "choose the model's own dataset (--dataset), or a dataset of that size"
        )
    if split.num_classes != spec.num_classes or (len(split.labels) and int(split.labels.max()) >= spec.num_classes):
        raise DatasetError(
            f"dataset {_short(split.dataset)} has {split.num_classes} classes but the model {spec.name!r} has "
            f"{spec.num_classes} outputs; choose the model's own dataset (--dataset)"
        )


__all__ = [
    "BuiltinDataset", "Dataset", "IMAGE_SUFFIXES", "IdxFolderDataset", "ImageFolderDataset", "NpzDataset",
    "check_fits", "open_dataset", "split_for_model",
]
