"""Training: recipes (reference and fast), the resumable loop, checkpoints."""

from convscope.training.loop import EpochRecord, TrainState, init_weights, learning_rate, train
from convscope.training.recipes import RECIPES, Recipe, get_recipe

__all__ = ["EpochRecord", "RECIPES", "Recipe", "TrainState", "get_recipe", "init_weights", "learning_rate", "train"]
