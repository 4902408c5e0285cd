"""The reference CNNs, their Keras-style summary, and safe model files."""

from convscope.models.architectures import ARCHITECTURES, ConvscopeModel, ModelB, SeedCNN, build_model
from convscope.models.files import ModelConfig, ModelFileError, default_config, load_model, save_model, shipped_model_path
from convscope.models.loading import LoadedModel, ModelLoadError, load_any, open_model
from convscope.models.summary import keras_rows, summary, summary_rows, summary_table

__all__ = [
    "ARCHITECTURES", "ConvscopeModel", "ModelB", "ModelConfig", "ModelFileError", "SeedCNN", "build_model",
    "default_config", "load_model", "save_model", "shipped_model_path", "summary", "summary_rows",
    "LoadedModel", "ModelLoadError", "keras_rows", "load_any", "open_model", "summary_table",
]
