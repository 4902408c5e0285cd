"""Load datasets as uint8 arrays in the original file order, and address single
images as ``"test:1302"`` / ``"train:7"``.

This module holds :class:`Split` (what every dataset kind gives) and the IDX kind
(MNIST, Fashion-MNIST, or any IDX pair of any image size). Image folders and
``.npz`` files live in :mod:`convscope.data.catalog`, which also picks the kind for
a ``--dataset NAME_OR_PATH``."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convscope.data.idx import IdxError, read_idx
from convscope.data.download import locate
from convscope.data.sources import SPLIT_FILES, dataset_info, file_in


class DatasetError(ValueError):
    """Images and labels that do not fit together, or a bad image reference."""


@dataclass(frozen=True)
class Split:
    """One split of a dataset, in the original file order.

    Attributes:
        images: ``(N, H, W)`` (gray) or ``(N, H, W, 3)`` (RGB) uint8 — channels
            last, as image files store them.
        labels: ``(N,)`` int64 class indices.
        dataset: dataset name (or the path it was read from).
        split: ``"train"`` or ``"test"``.
        class_names: one human-readable name per class.
    """

    images: np.ndarray
    labels: np.ndarray
    dataset: str
    split: str
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """``(image, label)`` of item ``index``."""
        return self.images[index], int(self.labels[index])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image, the order a model spec uses."""
        if self.images.ndim == 3:
            return 1, int(self.images.shape[1]), int(self.images.shape[2])
        return int(self.images.shape[3]), int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _signature(folder: Path, split: str) -> tuple:
    """(path, size, mtime) of the split's two files: a changed file is read again."""
    parts = []
    for name in SPLIT_FILES[split]:
        path = file_in(folder, name)
        stat = path.stat() if path is not None else None
        parts.append((str(path), stat.st_size, stat.st_mtime_ns) if stat else (name, None, None))
    return tuple(parts)


@functools.lru_cache(maxsize=8)
def _load_split_cached(folder: str, dataset: str, split: str, signature: tuple = ()) -> Split:
    image_name, label_name = SPLIT_FILES[split]
    image_path = file_in(Path(folder), image_name)
    label_path = file_in(Path(folder), label_name)
    for base_name, path in ((image_name, image_path), (label_name, label_path)):
        if path is None:
            raise DatasetError(f"{Path(folder) / base_name} (or .gz) disappeared while loading; fetch the data again")
    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.ndim != 3:
        raise IdxError(f"{image_path}: expected a 3-d image array (N, H, W), found shape {images.shape}")
    from convscope.data.sources import DATASETS

    if dataset in DATASETS and images.shape[1:] != (28, 28):
        raise IdxError(f"{image_path}: expected 28×28 images, found {images.shape[1]}×{images.shape[2]} ({dataset} images are 28×28)")
    if images.dtype != np.uint8:
        raise IdxError(f"{image_path}: expected uint8 pixels (IDX type 0x08), found {images.dtype}")
    if labels.ndim != 1:
        raise IdxError(f"{label_path}: expected a 1-d label array, found shape {labels.shape}")
    if len(images) != len(labels):
        raise DatasetError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels; "
            "the two files do not belong together"
        )
    names = class_names_for(Path(folder), dataset, labels)
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        bad = int(labels.max()) if labels.max() >= len(names) else int(labels.min())
        raise DatasetError(f"{label_path}: label {bad} is outside 0..{len(names) - 1}")
    images.setflags(write=False)
    labels = labels.astype(np.int64)
    labels.setflags(write=False)
    return Split(images, labels, dataset, split, names)


CLASS_NAME_FILES = ("classes.txt", "class_names.txt")


def class_names_for(folder: Path, dataset: str, labels: np.ndarray) -> tuple[str, ...]:
    """Class names of an IDX dataset: the built-in ones for MNIST / Fashion-MNIST,
    else one name per line of ``classes.txt`` in the folder, else the numbers
    ``0 .. max label``."""
    from convscope.data.sources import DATASETS

    if dataset in DATASETS:
        return DATASETS[dataset].class_names
    for name in CLASS_NAME_FILES:
        path = folder / name
        if path.is_file():
            lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
            names = tuple(line for line in lines if line)
            if names:
                return names
    count = int(labels.max()) + 1 if labels.size else 1
    return tuple(str(i) for i in range(count))


def load_split(
    split: str = "test", dataset: str = "mnist", data_dir: str | os.PathLike | None = None, *, download: bool = True
) -> Split:
    """Load one split (read-only arrays, cached per process).

    Args:
        split: ``"train"`` or ``"test"``.
        dataset: ``"mnist"``, ``"fashion-mnist"``, or a path (IDX folder, image
            folder, ``.npz``; see :func:`convscope.data.catalog.open_dataset`).
        data_dir: explicit folder (see :mod:`convscope.data.sources` for the search order;
            the split is searched on its own, and the MNIST test set ships with the package).
        download: allow downloading when no local copy exists.
    """
    if split not in SPLIT_FILES:
        raise DatasetError(f"unknown split {split!r}; use 'train' or 'test'")
    from convscope.data.sources import DATASETS

    if dataset_key(dataset) not in DATASETS:
        from convscope.data.catalog import open_dataset

        return open_dataset(dataset, data_dir=data_dir, download=download).split(split)
    info = dataset_info(dataset)
    folder = locate(info.name, data_dir, download=download, split=split)
    folder = folder.resolve()
    return _load_split_cached(str(folder), info.name, split, _signature(folder, split))


def dataset_key(name: str | os.PathLike) -> str:
    """A built-in dataset's canonical name for ``name`` (``fashion`` → ``fashion-mnist``),
    or ``name`` unchanged."""
    key = str(name).lower().replace("_", "-")
    return "fashion-mnist" if key == "fashion" else key


_REF = re.compile(r"^(?P<split>train|test):(?P<index>\d+)$")


def is_dataset_ref(text: str) -> bool:
    """Whether ``text`` looks like ``test:1302`` / ``train:7``."""
    return _REF.match(text.strip()) is not None


def parse_image_ref(text: str) -> tuple[str, int]:
    """``"test:1302"`` → ``("test", 1302)``.

    Raises:
        DatasetError: not of the form ``train:N`` / ``test:N``.
    """
    match = _REF.match(text.strip())
    if match is None:
        raise DatasetError(f"cannot read image reference {text!r}: use test:INDEX or train:INDEX, e.g. test:1302")
    return match["split"], int(match["index"])


def dataset_image(
    ref: str, dataset: str = "mnist", data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, int]:
    """The uint8 image (``(H, W)`` or ``(H, W, 3)``) and label addressed by ``ref`` (e.g. ``"test:1302"``).

    Raises:
        DatasetError: bad reference or index out of range (gives the range).
    """
    split_name, index = parse_image_ref(ref)
    split = load_split(split_name, dataset, data_dir)
    if not 0 <= index < len(split):
        raise DatasetError(f"{ref}: the {split_name} set has {len(split)} images, so the index must be 0..{len(split) - 1}")
    return split.images[index], int(split.labels[index])
