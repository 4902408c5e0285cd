"""Datasets: IDX reading, locating / downloading MNIST and Fashion-MNIST, loading
splits in the original order, image references (``test:1302``) and preprocessing."""

from convscope.data.datasets import DatasetError, Split, dataset_image, is_dataset_ref, load_split, parse_image_ref
from convscope.data.idx import IdxError, read_idx, write_idx
from convscope.data.preprocess import PREPROCESSING, preprocess, standardize
from convscope.data.sources import DataNotFoundError, dataset_info, locate

__all__ = [
    "DataNotFoundError", "DatasetError", "IdxError", "PREPROCESSING", "Split", "dataset_image", "dataset_info",
    "is_dataset_ref", "load_split", "locate", "parse_image_ref", "preprocess", "read_idx", "standardize", "write_idx",
]
