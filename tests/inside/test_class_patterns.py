"""Class patterns: marks, Cohen's d, example picking, the whole comparison."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convscope.inside import class_separation, compare_classes, pattern_marks, pick_examples


def test_pattern_marks_hand_set():
    a = torch.tensor([[1.0, 2.0, 0.0, 0.5], [3.0, 0.1, 0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0, 4.0, 0.0], [0.0, 0.0, 2.0, 0.0]])
    a_only, b_only = pattern_marks(a, b)
    assert a_only.tolist() == [True, False, False, False]  # position 1 also fires in a B; 3 not in every A
    assert b_only.tolist() == [False, False, True, False]
    a_only, _ = pattern_marks(a, b, threshold=1.5)
    assert a_only.tolist() == [False, False, False, False]  # 1.0 is not > 1.5


def test_cohens_d_hand_set():
    acts = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0], [5.0, 0.0], [6.0, 0.0], [9.0, 7.0]])
    labels = np.array([4, 4, 4, 9, 9, 9, 1])
    sep = class_separation(acts, labels, 4, 9, layer="Dense_1")
    # Means 2 and 5, both sample variances 1 → pooled sd 1 → d = -3. Column 1 is constant: d = 0.
    assert sep.cohens_d.tolist() == pytest.approx([-3.0, 0.0])
    assert sep.mean_a.tolist() == pytest.approx([2.0, 0.0]) and sep.mean_b.tolist() == pytest.approx([5.0, 0.0])
    assert sep.count_a == 3 and sep.count_b == 3
    assert sep.class_means[1].tolist() == pytest.approx([9.0, 7.0])
    assert torch.isnan(sep.class_means[0]).all()  # no image of class 0
    ranking = sep.ranking(top=2)
    assert ranking[0] == {"rank": 1, "map": 0, "address": "Dense_1:0", "cohens_d": pytest.approx(-3.0),
                          "mean_a": pytest.approx(2.0), "mean_b": pytest.approx(5.0), "favours": 9}
    with pytest.raises(ValueError, match="different classes"):
        class_separation(acts, labels, 4, 4)
    with pytest.raises(ValueError, match="at least 2 images"):
        class_separation(acts, labels, 4, 1)


def test_pick_examples_hand_set():
    probs = np.array([
        [0.0, 0.0, 0.0, 0.0, 0.90, 0, 0, 0, 0, 0.10],  # 0: true 4, clear-ish
        [0.0, 0.0, 0.0, 0.0, 0.55, 0, 0, 0, 0, 0.45],  # 1: true 4, ambiguous
        [0.0, 0.0, 0.0, 0.0, 0.30, 0, 0, 0, 0, 0.70],  # 2: true 4, a mistake (not "ambiguous")
        [0.0, 0.0, 0.0, 0.0, 0.999, 0, 0, 0, 0, 0.001],  # 3: true 4, clearest
        [0.0, 0.0, 0.0, 0.0, 0.01, 0, 0, 0, 0, 0.99],  # 4: true 9
    ])
    labels = np.array([4, 4, 4, 4, 9])
    examples = pick_examples(probs, labels, 4, 9, n=2)
    assert examples.clear_a == [3, 0]
    assert examples.clear_b == [4]
    assert examples.ambiguous_a == [1, 0]


def test_compare_classes_on_real_images(shipped_model, test_split):
    images, labels = test_split.images[:1500], test_split.labels[:1500]
    result = compare_classes(shipped_model, images, labels, 4, 9, n_examples=3)
    ex = result.examples
    assert len(ex.clear_a) == len(ex.clear_b) == len(ex.ambiguous_a) == 3
    assert all(labels[i] == 4 for i in ex.clear_a + ex.ambiguous_a) and all(labels[i] == 9 for i in ex.clear_b)
    assert all(int(result.probabilities[i].argmax()) == 4 for i in ex.clear_a + ex.ambiguous_a)
    # Ambiguous 4s lean further towards 9 than any clear 4.
    assert min(float(result.probabilities[i][9]) for i in ex.ambiguous_a) >= max(
        float(result.probabilities[i][9]) for i in ex.clear_a)
    conv = result.layers["Conv2D_3"]
    assert conv.acts_a.shape == (3, 128, 3, 3) and conv.a_only.shape == (128, 3, 3)
    # The marks say what they claim about the shown activations.
    assert ((conv.acts_a > 0).all(0)[conv.a_only]).all() and not (conv.acts_b > 0).any(0)[conv.a_only].any()
    assert ((conv.acts_b > 0).all(0)[conv.b_only]).all() and not (conv.acts_a > 0).any(0)[conv.b_only].any()
    # The best separating position really differs between the classes (|d| large, sign matches the means).
    table = result.to_dict(top=5)["layers"]["Dense_1"]["separating"]
    best = table[0]
    assert abs(best["cohens_d"]) > 1.0
    assert (best["mean_a"] > best["mean_b"]) == (best["cohens_d"] > 0) == (best["favours"] == 4)
    assert [abs(r["cohens_d"]) for r in table] == sorted((abs(r["cohens_d"]) for r in table), reverse=True)
    assert result.to_dict()["clear_a"][0]["image"] == f"test:{ex.clear_a[0]}"
