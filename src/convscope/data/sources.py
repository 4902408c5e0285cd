"""Where the datasets live: file names, canonical content hashes and sizes, mirrors,
and the search order for a local copy.

Each split (``train`` / ``test``) is searched on its own; the first folder that holds
the split's two files wins:

1. the explicit ``data_dir`` argument / ``--data-dir`` (authoritative: searched alone);
2. the environment variable ``CONVSCOPE_DATA`` (a dataset folder, or a parent
   holding ``mnist/`` / ``fashion-mnist/``);
3. system copies (Debian's ``/usr/share/datasets/fashion-mnist``);
4. the user cache, ``$XDG_CACHE_HOME/convscope/<dataset>`` (``~/.cache/...``);
5. the copy that ships inside the package: the MNIST *test* set (10,000 images,
   CC BY-SA 3.0, checked against its canonical SHA-256 once per process);
6. otherwise download into the user cache from the public mirrors (or
   ``$CONVSCOPE_MIRRORS``), verified against the canonical SHA-256 of the
   decompressed content. The MNIST training set is always a download (or a folder).

MNIST and Fashion-MNIST share file names, so a folder found by name is also
identified by the hash of its small label files: a folder holding one dataset is
never used as the other.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from convscope.data.idx import IdxError, scan_idx_file

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
        sizes: size of each *decompressed* file in bytes, by base name (a download
            or a header declaring another size is refused at once).
        gz_sizes: size of each canonical ``.gz`` as the mirrors serve it; a
            download may be at most :func:`download_limit` bytes.
    """

    name: str
    sha256: dict[str, str]
    mirrors: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()
    class_names: tuple[str, ...] = field(default_factory=lambda: tuple(str(i) for i in range(10)))
    sizes: dict[str, int] = field(default_factory=dict)
    gz_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(name for pair in SPLIT_FILES.values() for name in pair)


# Decompressed sizes (IDX header + data): the same shapes for MNIST and Fashion-MNIST.
_IDX_SIZES = {
    "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10_000,
    "train-images-idx3-ubyte": 16 + 60_000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60_000,
}

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        sha256={
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        },
        # https only. yann.lecun.com (plain http) was dropped: it serves its .gz
        # files with 403 Forbidden over http and https alike since 2024.
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        sizes=_IDX_SIZES,
        gz_sizes={
            "t10k-images-idx3-ubyte": 1_648_877,
            "t10k-labels-idx1-ubyte": 4_542,
            "train-images-idx3-ubyte": 9_912_422,
            "train-labels-idx1-ubyte": 28_881,
        },
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        # SHA-256 of the decompressed files; the same bytes as Zalando's official
        # gzips (whose MD5s torchvision checks) and as Debian's dataset-fashion-mnist
        # package, which recompressed them (so hashing the .gz would not work).
        sha256={
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        },
        # https only: Zalando's S3 *website* endpoint (fashion-mnist.s3-website.eu-central-1
        # .amazonaws.com) speaks plain http only, so it was dropped; the same files are in
        # the official repository.
        mirrors=("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",),
        sizes=_IDX_SIZES,
        gz_sizes={
            "t10k-images-idx3-ubyte": 4_422_102,
            "t10k-labels-idx1-ubyte": 5_148,
            "train-images-idx3-ubyte": 26_421_880,
            "train-labels-idx1-ubyte": 29_515,
        },
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        class_names=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
    ),
}


MIRRORS_ENV = "CONVSCOPE_MIRRORS"
IDENTITY_FILE = "t10k-labels-idx1-ubyte"  # small; its hash tells MNIST from Fashion-MNIST
IDENTITY_FILES = (IDENTITY_FILE, "train-labels-idx1-ubyte")  # the training labels, for a train-only folder
SPLIT_NAMES = {"train": "training set", "test": "test set"}

#: Splits that ship inside the package (``convscope/datasets/<dataset>/``).
PACKAGED_SPLITS = {("mnist", "test")}


def download_limit(info: DatasetInfo, base_name: str) -> int | None:
    """Most bytes a mirror may serve for ``base_name``'s ``.gz``: the canonical size
    ×1.5 + 64 KiB (room for a mirror that recompressed it); ``None`` when unknown."""
    size = info.gz_sizes.get(base_name)
    return None if size is None else size + size // 2 + (64 << 10)


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


def mirrors_for(info: DatasetInfo) -> tuple[str, ...]:
    """Base URLs to download ``info`` from: ``$CONVSCOPE_MIRRORS`` (comma- or
    space-separated, e.g. a local proxy) when set, else the public mirrors."""
    env = os.environ.get(MIRRORS_ENV, "").replace(",", " ").split()
    mirrors = tuple(env) if env else info.mirrors
    return tuple(m if m.endswith("/") else m + "/" for m in mirrors)


def file_in(folder: Path, base_name: str) -> Path | None:
    """The file ``base_name`` (raw or ``.gz``) inside ``folder``, or ``None``."""
    for candidate in (folder / base_name, folder / f"{base_name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def identify_folder(folder: str | os.PathLike) -> str | None:
    """Which known dataset a folder holds, judged by the SHA-256 of its small
    test-label file, or of its training labels when it holds no test labels
    (MNIST and Fashion-MNIST use the same file names).

    Returns:
        ``"mnist"`` / ``"fashion-mnist"``; ``"unknown"`` for IDX files of neither
        (e.g. your own data in MNIST format, or a damaged file); ``None`` when
        neither label file is there.
    """
    for identity in IDENTITY_FILES:
        path = file_in(Path(folder), identity)
        if path is None:
            continue
        try:  # streamed and capped: a label file is 10-60 kB, a bomb in its place costs nothing
            digest = scan_idx_file(path, max_bytes=1 << 20)[0].sha256
        except (IdxError, OSError):
            return "unknown"
        for name, info in DATASETS.items():
            if info.sha256.get(identity) == digest:
                return name
        return "unknown"
    return None


def required_files(dataset: str, split: str | None = None) -> tuple[str, ...]:
    """The IDX base names needed for ``split`` (all four when ``split`` is ``None``)."""
    info = dataset_info(dataset)
    if split is None:
        return info.files
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
    return SPLIT_FILES[split]


def packaged_dir(dataset: str) -> Path:
    """The folder inside the package that holds ``dataset``'s shipped files."""
    return Path(str(resources.files("convscope") / "datasets" / dataset_info(dataset).name))


@functools.lru_cache(maxsize=None)
def _packaged_problem(folder: str, dataset: str, split: str) -> str | None:
    """What is wrong with the packaged copy of ``split`` in ``folder`` (``None``: verified).

    Hashes the decompressed files (7.8 MB for the MNIST test set) once per process.
    """
    info = dataset_info(dataset)
    for name in SPLIT_FILES[split]:
        path = file_in(Path(folder), name)
        if path is None:
            return f"{name} is missing"
        try:
            scan, _stream = scan_idx_file(path, expected_bytes=info.sizes.get(name))
        except (IdxError, OSError) as exc:
            return str(exc)
        if scan.sha256 != info.sha256.get(name):
            return f"{path}: SHA-256 {scan.sha256[:12]}… is not the canonical {info.sha256.get(name, '')[:12]}…"
    return None


@dataclass(frozen=True)
class FolderCheck:
    """One searched folder and why it was or was not used.

    Attributes:
        origin: ``"--data-dir"``, ``"CONVSCOPE_DATA"``, ``"system"``, ``"cache"``
            or ``"packaged"``.
        folder: the folder.
        missing: IDX files (base names) not found there, raw or ``.gz``.
        holds: what :func:`identify_folder` says the folder holds.
        dataset: the dataset searched for.
        split: the split searched for (``None``: all four files).
        problem: why a present copy cannot be used (a packaged copy failing its
            hash check), or ``None``.
        usable: all files present, not another known dataset, no problem.
    """

    origin: str
    folder: Path
    missing: tuple[str, ...]
    holds: str | None
    dataset: str = "mnist"
    split: str | None = None
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return not self.missing and self.holds in (None, "unknown", self.dataset) and self.problem is None

    @property
    def reason(self) -> str:
        """A few words on why the folder is (not) used."""
        if not self.folder.is_dir():
            return "no such folder"
        if len(self.missing) == len(required_files(self.dataset, self.split)):
            return "no IDX files" if self.split is None else f"no {SPLIT_NAMES[self.split]} files"
        if self.missing:
            return "missing " + ", ".join(self.missing)
        if self.holds not in (None, "unknown", self.dataset):
            return f"holds {self.holds}, not {self.dataset}"
        if self.problem is not None:
            return f"damaged: {self.problem}; reinstall convscope"
        if self.origin == "packaged":
            return f"the {self.dataset} {SPLIT_NAMES.get(self.split or '', 'files')} shipped with convscope (SHA-256 verified)"
        if self.holds == "unknown":
            return "all files present (content not one of the known datasets)"
        return "all files present"


def candidate_dirs(
    dataset: str, data_dir: str | os.PathLike | None = None, *, split: str | None = None
) -> list[tuple[str, Path]]:
    """The folders searched for ``dataset`` (or one ``split`` of it), in order, each
    with where it came from."""
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
    if split is not None and (info.name, split) in PACKAGED_SPLITS:
        found.append(("packaged", packaged_dir(info.name)))
    return found


def check_folder(origin: str, folder: Path, dataset: str, split: str | None = None) -> FolderCheck:
    """Inspect one folder for ``dataset`` / ``split`` (cheap: file names + a 10 kB
    label file; a packaged copy is hash-checked once per process)."""
    info = dataset_info(dataset)
    needed = required_files(info.name, split)
    missing = tuple(name for name in needed if file_in(folder, name) is None) if folder.is_dir() else needed
    if origin == "packaged":
        problem = None if missing else _packaged_problem(str(folder), info.name, split or "test")
        return FolderCheck(origin, folder, missing, None, info.name, split, problem)
    holds = identify_folder(folder) if not missing else None
    return FolderCheck(origin, folder, missing, holds, info.name, split)


def search(dataset: str = "mnist", data_dir: str | os.PathLike | None = None, *, split: str | None = None) -> list[FolderCheck]:
    """Every folder searched for ``dataset`` (or one ``split`` of it) in order, with
    what was found there (``convscope data where`` prints this)."""
    return [check_folder(origin, folder, dataset, split) for origin, folder in candidate_dirs(dataset, data_dir, split=split)]


