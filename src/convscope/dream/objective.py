"""Dream objectives from text: :mod:`convscope.optvis.objective_text` (one strict parser
for every ``--objective``)."""

from convscope.optvis.objective_text import (  # noqa: F401 - re-exported
    MAX_OBJECTIVE_CHARACTERS, ObjectiveTextError, parse_dream_objective, parse_objective_text, short, split_terms,
    weighted_sum,
)

__all__ = [
    "MAX_OBJECTIVE_CHARACTERS", "ObjectiveTextError", "parse_dream_objective", "parse_objective_text", "short",
    "split_terms", "weighted_sum",
]
