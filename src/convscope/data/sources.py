"""Where the datasets live: file names, canonical content hashes, mirrors, and the
search order for a local copy.

Search order (first directory that holds all four files wins):

1. the explicit ``data_dir`` argument / ``--data-dir``;
2. the environment variable ``CONVSCOPE_DATA`` (a dataset folder, or a parent
   holding ``mnist/`` / ``fashion-mnist/``);
3. system copies (Debian's ``/usr/share/datasets/fashion-mnist``);
4. the user cache, ``$XDG_CACHE_HOME/convscope/<dataset>`` (``~/.cache/...``);
5. otherwise download into the user cache from the public mirrors, verified
   against the canonical SHA-256 of the decompressed content.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one IDX dataset.

    Attributes:
        name: ``"mnist"`` or ``"fashion-mnist"``.
        sha256: canonical SHA-256 of each *decompressed* file, by base name.
        mirrors: base URLs tried in order; each serves ``<base><file>.gz``.
        system_dirs: folders an OS package may have installed the files into.
        class_names: human names of the 10 labels.
    """

    name: str
    sha256: dict[str, str]
    mirrors: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()
    class_names: tuple[str, ...] = field(default_factory=lambda: tuple(str(i) for i in range(10)))

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(name for pair in SPLIT_FILES.values() for name in pair)


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        sha256={
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        sha256={},  # filled in by the helper below when known; verified by size/format otherwise
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        class_names=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
    ),
}


class DataNotFoundError(FileNotFoundError):
    """No local copy of a dataset and it could not be downloaded."""


def dataset_info(name: str) -> DatasetInfo:
    """Look up a dataset by name (``mnist``, ``fashion-mnist``; ``fashion`` also accepted)."""
    key = name.lower().replace("_", "-")
    if key == "fashion":
        key = "fashion-mnist"
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[key]


def cache_dir(dataset: str) -> Path:
    """The user cache folder for ``dataset`` (``$XDG_CACHE_HOME/convscope/<name>``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "convscope" / dataset_info(dataset).name


def file_in(folder: Path, base_name: str) -> Path | None:
    """The file ``base_name`` (raw or ``.gz``) inside ``folder``, or ``None``."""
    for candidate in (folder / base_name, folder / f"{base_name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _has_all(folder: Path, info: DatasetInfo) -> bool:
    return folder.is_dir() and all(file_in(folder, name) is not None for name in info.files)


def candidate_dirs(dataset: str, data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The folders searched for ``dataset``, in order, each with where it came from."""
    info = dataset_info(dataset)
    found: list[tuple[str, Path]] = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        found += [("--data-dir", root), ("--data-dir", root / info.name)]
        return found  # an explicit folder is authoritative
    env = os.environ.get("CONVSCOPE_DATA")
    if env:
        root = Path(env).expanduser()
        found += [("CONVSCOPE_DATA", root / info.name), ("CONVSCOPE_DATA", root)]
    found += [("system", Path(d)) for d in info.system_dirs]
    found.append(("cache", cache_dir(info.name)))
    return found


def locate(dataset: str = "mnist", data_dir: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Return a folder holding all four IDX files of ``dataset``.

    Args:
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        data_dir: an explicit folder; when given, only it (or its ``<dataset>/``
            subfolder) is searched and nothing is downloaded.
        download: allow downloading into the user cache when nothing is found.

    Raises:
        DataNotFoundError: nothing found (and download failed or was not allowed);
            the message says where to put the files.
    """
    info = dataset_info(dataset)
    candidates = candidate_dirs(dataset, data_dir)
    for origin, folder in candidates:
        if _has_all(folder, info):
            return folder
    if data_dir is not None:
        raise DataNotFoundError(
            f"{data_dir} does not hold the {info.name} IDX files ({', '.join(info.files)}, raw or .gz); "
            "point --data-dir at the folder that holds them"
        )
    target = cache_dir(info.name)
    if download:
        from convscope.data.download import DownloadError, download_dataset

        try:
            download_dataset(info, target)
            return target
        except DownloadError as exc:
            reason = f" Download failed: {exc}"
    else:
        reason = ""
    searched = "; ".join(f"{folder} ({origin})" for origin, folder in candidates)
    raise DataNotFoundError(
        f"could not find the {info.name} files ({', '.join(f + '.gz' for f in info.files)}). Searched: {searched}.{reason} "
        f"Put the four files into {target}, or pass --data-dir FOLDER, or set CONVSCOPE_DATA=FOLDER."
    )
