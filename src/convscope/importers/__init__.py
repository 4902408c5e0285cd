"""Importers: models saved by other tools, read into convscope without those tools.

``read_keras`` reads Keras ``.h5`` (Keras 2 and 3) and ``.keras`` files with h5py only.
"""

from convscope.importers.keras import KerasImport, KerasImportError, KerasLayer, read_keras

__all__ = ["KerasImport", "KerasImportError", "KerasLayer", "read_keras"]
