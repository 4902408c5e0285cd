"""Datasets: IDX reading, locating / downloading MNIST and Fashion-MNIST, loading
splits in the original order, image references (``test:1302``) and preprocessing."""

from convscope.data.datasets import DatasetError, Split, dataset_image, is_dataset_ref, load_split, parse_image_ref
from convscope.data.download import DownloadError, download_dataset, verify_folder
from convscope.data.idx import IdxError, read_idx, write_idx
from convscope.data.preprocess import PREPROCESSING, preprocess, standardize
from convscope.data.download import locate
from convscope.data.sources import DataNotFoundError, dataset_info, identify_folder, search

__all__ = [
    "DataNotFoundError", "DatasetError", "DownloadError", "IdxError", "PREPROCESSING", "Split", "dataset_image",
    "dataset_info", "download_dataset", "identify_folder", "is_dataset_ref", "load_split", "locate",
    "parse_image_ref", "preprocess", "read_idx", "search", "standardize", "verify_folder", "write_idx",
]
