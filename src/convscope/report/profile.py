"""The atlas profiles: how much work each section gets.

``full`` is the default (the whole atlas of Model A in about a minute on a
2-core CPU); ``quick`` keeps every section but does less of everything (CI).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Profile:
    """Work parameters of one atlas build.

    Attributes:
        name: ``"full"`` or ``"quick"``.
        oip_steps: reference-ascent steps per OIP (the reference used 600 at ε 0.01;
            fewer, larger steps cover the same distance).
        oip_epsilon: ascent step size on the unit-RMS gradient.
        oip_criterion: relative loss change for convergence (early stop after 4 quiet steps).
        oip_report_steps: logarithmic snapshot steps (the evolution strip).
        precursor_candidates: random long-scale initial images scored per layer.
        precursor_dataset: test images tried for maps no random start triggers.
        precursor_preactivation_steps: pre-ReLU ascent for maps still silent.
        topk: dataset examples per map.
        class_steps: ascent steps for the class visualisations.
        class_epsilon: their step size.
        compare_examples: clear / ambiguous examples per class in the 4-vs-9 comparison.
        mistakes: misclassified examples explained.
        ig_steps: integrated-gradient quadrature points for the mistakes.
        dream_width: width (pixels) the default photo is resized to for the dreams.
        dream_octaves: octaves of the DeepDream.
        dream_steps: ascent steps per octave.
        carve_rounds: pattern-carving rounds.
        carve_epochs: ascent steps per carving round.
        oip_chunk: maps per OIP chunk (a unit of work an executor can hand out).
        topk_shard: test images per top-k shard.
        max_classes: class visualisations for at most this many classes.
        single_page_maps: above this many conv maps the atlas is one page per layer
            with its images as files beside it (below: one self-contained file).
    """

    name: str = "full"
    oip_steps: int = 160
    oip_epsilon: float = 0.04
    oip_criterion: float = 2e-4
    oip_report_steps: int = 6
    precursor_candidates: int = 256
    precursor_dataset: int = 1000
    precursor_preactivation_steps: int = 100
    topk: int = 9
    class_steps: int = 200
    class_epsilon: float = 0.04
    compare_examples: int = 3
    mistakes: int = 12
    ig_steps: int = 32
    dream_width: int = 320
    dream_octaves: int = 4
    dream_steps: int = 8
    carve_rounds: int = 4
    carve_epochs: int = 60
    oip_chunk: int = 128
    topk_shard: int = 10_000
    max_classes: int = 20
    single_page_maps: int = 1024

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a JSON-ready dict."""
        return dataclasses.asdict(self)


FULL = Profile()

QUICK = Profile(
    name="quick",
    oip_steps=30,
    oip_epsilon=0.12,
    oip_report_steps=5,
    precursor_candidates=64,
    precursor_dataset=300,
    precursor_preactivation_steps=40,
    topk=4,
    class_steps=40,
    class_epsilon=0.12,
    compare_examples=2,
    mistakes=6,
    ig_steps=16,
    dream_width=128,
    dream_octaves=3,
    dream_steps=4,
    carve_rounds=2,
    carve_epochs=20,
)

PROFILES: dict[str, Profile] = {"full": FULL, "quick": QUICK}
