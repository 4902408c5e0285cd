"""The reference CNNs, their Keras-style summary, and safe model files."""

from convscope.models.architectures import ARCHITECTURES, ConvscopeModel, ModelB, SeedCNN, build_model
from convscope.models.files import ModelConfig, ModelFileError, default_config, load_model, save_model, shipped_model_path
from convscope.models.summary import summary, summary_rows

__all__ = [
    "ARCHITECTURES", "ConvscopeModel", "ModelB", "ModelConfig", "ModelFileError", "SeedCNN", "build_model",
    "default_config", "load_model", "save_model", "shipped_model_path", "summary", "summary_rows",
]
