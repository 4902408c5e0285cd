"""Training: recipes (reference, fast, model_b), the resumable loop, checkpoints,
and a live plot for notebooks (:mod:`convscope.training.live`)."""

from convscope.training.loop import (
    EpochRecord,
    TrainingDiverged,
    TrainState,
    evaluate_split,
    init_weights,
    learning_rate,
    train,
    validation_label,
    validation_split_indices,
)
from convscope.training.recipes import DEFAULT_RECIPE, RECIPES, Recipe, describe_recipe, get_recipe, recipe_changes

__all__ = [
    "DEFAULT_RECIPE", "EpochRecord", "RECIPES", "Recipe", "TrainState", "TrainingDiverged", "describe_recipe",
    "evaluate_split", "get_recipe", "init_weights", "learning_rate", "recipe_changes", "train", "validation_label",
    "validation_split_indices",
]
