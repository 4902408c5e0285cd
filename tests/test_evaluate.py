"""Evaluation engine, confusion-matrix renderer and ``convscope evaluate`` on real MNIST."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from convscope.cli import main
from convscope.evaluation import confused_pairs, evaluate_model, evaluation_from_logits, most_confused_pair
from convscope.inference import to_input
from convscope.io import to_json


@pytest.fixture(scope="module")
def shipped_evaluation(shipped_model, test_split):
    return evaluate_model(shipped_model, test_split)


@pytest.fixture(scope="module")
def independent_predictions(shipped_model, test_split):
    """Arg-max predictions computed without convscope.inference.predict_logits."""
    predictions = []
    with torch.no_grad():
        for start in range(0, len(test_split), 2500):
            batch = to_input(shipped_model, test_split.images[start : start + 2500])
            predictions.append(shipped_model(batch).argmax(dim=1).numpy())
    return np.concatenate(predictions)


def test_shipped_model_scores_at_least_99_3_percent(shipped_evaluation):
    assert shipped_evaluation.num_images == 10_000
    assert shipped_evaluation.accuracy >= 0.993


def test_confusion_matrix_agrees_with_an_independent_count(shipped_evaluation, independent_predictions, test_split):
    result = shipped_evaluation
    labels = np.asarray(test_split.labels)
    assert result.confusion.dtype == np.int64 and result.confusion.shape == (10, 10)
    assert result.confusion.sum() == 10_000
    np.testing.assert_array_equal(result.confusion.sum(axis=1), np.bincount(labels, minlength=10))
    correct = independent_predictions == labels
    np.testing.assert_array_equal(np.diag(result.confusion), np.bincount(labels[correct], minlength=10))
    np.testing.assert_array_equal(result.predictions, independent_predictions)
    np.testing.assert_array_equal(result.misclassified, np.flatnonzero(~correct))
    assert result.accuracy == pytest.approx(correct.mean(), abs=0)
    np.testing.assert_allclose(result.per_class_accuracy, np.diag(result.confusion) / result.confusion.sum(axis=1))
    # Off-diagonal cells: each misclassified image counted once in [true, predicted].
    for index in result.misclassified[:20]:
        assert result.confusion[labels[index], result.predictions[index]] >= 1


def test_probabilities_are_a_softmax_consistent_with_predictions(shipped_evaluation):
    probabilities = shipped_evaluation.probabilities
    assert probabilities.dtype == np.float32 and probabilities.shape == (10_000, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), shipped_evaluation.predictions)


def test_hand_set_logits_give_exact_figures():
    # 6 images of 3 classes; rows = images, argmax marked.
    logits = torch.tensor(
        [[5.0, 0, 0], [0, 5, 0], [0, 0, 5], [5, 0, 0], [0, 0, 5], [0, 5, 0]]
    )
    labels = np.array([0, 1, 2, 1, 1, 2])
    result = evaluation_from_logits(logits, labels, ["cat", "dog", "eel"])
    np.testing.assert_array_equal(result.confusion, [[1, 0, 0], [1, 1, 1], [0, 1, 1]])
    assert result.accuracy == pytest.approx(3 / 6)
    np.testing.assert_allclose(result.per_class_accuracy, [1.0, 1 / 3, 0.5])
    np.testing.assert_array_equal(result.misclassified, [3, 4, 5])
    assert result.top_confusions(2) == [(2, 1, 1), (1, 2, 1)]
    data = json.loads(to_json(result.to_dict()))
    assert data["per_class_accuracy"] == {"cat": 1.0, "dog": pytest.approx(1 / 3), "eel": 0.5}
    assert data["misclassified"] == [3, 4, 5] and data["num_errors"] == 3
    assert "probabilities" not in data and "predictions" not in data
    assert data["per_class_count"] == {"cat": 1, "dog": 3, "eel": 2}


def test_class_without_images_is_nan_in_arrays_and_null_in_json():
    result = evaluation_from_logits(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), [0, 0])
    assert result.per_class_accuracy[0] == 1.0 and np.isnan(result.per_class_accuracy[1])
    assert json.loads(to_json(result.to_dict()))["per_class_accuracy"] == {"0": 1.0, "1": None}


def test_bad_logits_or_labels_are_refused():
    with pytest.raises(ValueError, match="3 logit rows but 2 labels"):
        evaluation_from_logits(torch.zeros(3, 10), [1, 2])
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        evaluation_from_logits(torch.zeros(2, 10), [1, 10])


def test_confusion_figure_shows_every_nonzero_count(shipped_evaluation):
    from convscope.render.confusion import confusion_figure

    figure = confusion_figure(shipped_evaluation)
    axis = figure.axes[0]
    cell_texts = sorted(text.get_text() for text in axis.texts)
    expected = sorted(f"{n:,}" for n in shipped_evaluation.confusion.ravel() if n > 0)
    assert cell_texts == expected
    assert [label.get_text() for label in axis.get_xticklabels()] == list(shipped_evaluation.class_names)
    assert f"{100 * shipped_evaluation.accuracy:.2f} %" in axis.get_title()
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_cli_json_matches_the_engine(shipped_evaluation, mnist_dir, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["evaluate", "--data-dir", str(mnist_dir), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["accuracy"] == pytest.approx(shipped_evaluation.accuracy, abs=0)
    assert data["confusion"] == shipped_evaluation.confusion.tolist()
    assert data["misclassified"] == shipped_evaluation.misclassified.tolist()
    assert data["parameters"]["split"] == "test" and data["num_images"] == 10_000
    assert (data["most_confused_pair"]["a_name"], data["most_confused_pair"]["b_name"]) == ("4", "9")
    # Files written atomically, and the JSON file equals what was printed.
    assert json.loads((out / "evaluation.json").read_text()) == data
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (out / "misclassified.csv").read_text().splitlines()
    assert rows[0].startswith("index,true,predicted") and len(rows) == 1 + shipped_evaluation.num_errors
    first = rows[1].split(",")
    assert int(first[0]) == shipped_evaluation.misclassified[0]
    assert not list(out.glob(".*.part"))


def test_cli_human_output_and_errors(tmp_path, mnist_dir):
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert "does not hold the mnist IDX files" in result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # a clean error, not a crash

    result = runner.invoke(main, ["evaluate", "--model", str(tmp_path / "nope.json")])
    assert result.exit_code == 1 and "model file" in result.output and "not found" in result.output

    result = runner.invoke(main, ["evaluate", "--dataset", "fashion-mnist", "--data-dir", str(mnist_dir)])
    assert result.exit_code == 1 and "holds the mnist files, not fashion-mnist" in result.output


def test_confusion_figure_scale_for_degenerate_results():
    import matplotlib.pyplot as plt

    from convscope.render.confusion import confusion_figure

    labels = np.arange(30) % 3
    all_wrong = evaluation_from_logits(torch.eye(3)[(labels + 1) % 3] * 5, labels, ["a", "b", "c"])
    figure = confusion_figure(all_wrong)
    norm = figure.axes[0].images[0].norm
    assert norm.vmax == 1.0 and norm.vmin == pytest.approx(0.1)  # 100 % errors at the top, one decade shown
    assert sorted(t.get_text() for t in figure.axes[0].texts) == ["0", "0", "0", "10", "10", "10"]
    plt.close(figure)
    perfect = evaluation_from_logits(torch.eye(3)[labels] * 5, labels, ["a", "b", "c"])
    figure = confusion_figure(perfect)
    assert sorted(t.get_text() for t in figure.axes[0].texts) == ["10", "10", "10"]
    assert "0 of 30 wrong" in figure.axes[0].get_title()
    plt.close(figure)


def test_most_confused_pair_of_the_shipped_model_is_4_vs_9(shipped_evaluation, independent_predictions, test_split):
    """Independent: count A→B plus B→A mistakes from the predictions; ties broken by the
    probability each class's images give the other class."""
    labels = np.asarray(test_split.labels)
    probabilities = shipped_evaluation.probabilities.astype(np.float64)
    counts = {}
    for a in range(10):
        for b in range(a + 1, 10):
            count = int(np.sum((labels == a) & (independent_predictions == b))
                        + np.sum((labels == b) & (independent_predictions == a)))
            soft = probabilities[labels == a, b].sum() + probabilities[labels == b, a].sum()
            counts[(a, b)] = (count, soft)
    expected = max(counts, key=lambda pair: (counts[pair][0], counts[pair][1], -pair[0], -pair[1]))
    pair = shipped_evaluation.most_confused_pair()
    assert (pair.a, pair.b) == expected == (4, 9)
    assert pair.count == counts[(4, 9)][0] and pair.soft == pytest.approx(counts[(4, 9)][1], rel=1e-6)
    assert (pair.a_as_b, pair.b_as_a) == (shipped_evaluation.confusion[4, 9], shipped_evaluation.confusion[9, 4])
    # 4-9 ties with 3-5 on the count: the soft confusion decides (the ranking shows both)
    ranking = shipped_evaluation.confused_pairs(2)
    assert [(p.a, p.b) for p in ranking] == [(4, 9), (3, 5)] and ranking[0].count == ranking[1].count


def test_confused_pairs_hand_set():
    confusion = np.array([[5, 2, 0], [1, 6, 3], [0, 0, 9]])
    ranked = confused_pairs(confusion)
    assert [(p.a, p.b, p.count, p.a_as_b, p.b_as_a) for p in ranked] == [(0, 1, 3, 2, 1), (1, 2, 3, 3, 0), (0, 2, 0, 0, 0)]
    # a tie on the count: the soft confusion decides
    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.1, 0.7], [0.0, 0.0, 1.0]])
    labels = np.array([0, 1, 2])
    assert (most_confused_pair(confusion, probabilities, labels).a, most_confused_pair(confusion, probabilities,
                                                                                      labels).b) == (1, 2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        confused_pairs(np.ones((1, 1)))


def test_confusion_figure_for_many_classes_and_a_highlighted_pair():
    import matplotlib.pyplot as plt

    from convscope.render.confusion import confusion_figure

    rng = np.random.default_rng(0)
    labels = np.arange(400) % 40
    logits = torch.as_tensor(rng.normal(size=(400, 40)), dtype=torch.float32)
    logits[np.arange(400), labels] += 2.5
    names = [f"class number {i}" for i in range(40)]
    evaluation = evaluation_from_logits(logits, labels, names)
    figure = confusion_figure(evaluation, highlight=(3, 17))
    axis = figure.axes[0]
    assert len(axis.texts) == 0 and "40 classes: counts are in the JSON" in axis.get_title()  # too small to write in
    assert [t.get_text() for t in axis.get_xticklabels()] == names
    outlined = sorted(tuple(p.get_xy()) for p in axis.patches)
    assert outlined == [(2.5, 16.5), (16.5, 2.5)]  # cells (true 3, predicted 17) and (17, 3)
    assert figure.get_size_inches()[0] <= 23.2
    plt.close(figure)
