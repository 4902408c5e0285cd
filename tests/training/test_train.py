"""Training: a short run learns, runs are deterministic for a seed, and a run
killed mid-way resumes from its last finished epoch to the identical result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from convscope.models import build_model
from convscope.training import get_recipe, init_weights, learning_rate, train


def _short_run(train_split, test_split, seed: int, epochs: int = 1, limit: int = 6000):
    recipe = get_recipe("fast").with_overrides(epochs=epochs)
    model = build_model("seed_cnn")
    init_weights(model, recipe.init, seed)
    state = train(model, train_split, test_split, recipe, seed=seed, train_limit=limit)
    return model, state


def test_short_training_run_reaches_95_percent(train_split, test_split):
    model, state = _short_run(train_split, test_split, seed=0, epochs=2, limit=8000)
    assert state.history[-1].test_accuracy > 0.95
    assert len(state.lr_history) == 2 * -(-8000 // 256)


def test_same_seed_same_weights_and_other_seed_differs(train_split, test_split):
    a, _ = _short_run(train_split, test_split, seed=3, limit=1024)
    b, _ = _short_run(train_split, test_split, seed=3, limit=1024)
    c, _ = _short_run(train_split, test_split, seed=4, limit=1024)
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.state_dict()["Conv2D_1.conv.weight"], c.state_dict()["Conv2D_1.conv.weight"])


def test_reference_schedule_is_keras_inverse_time_decay():
    recipe = get_recipe("reference")
    assert (recipe.batch_size, recipe.epochs, recipe.optimizer) == (64, 80, "rmsprop")
    assert learning_rate(0, 10_000, recipe) == pytest.approx(1e-3)
    assert learning_rate(1000, 10_000, recipe) == pytest.approx(1e-3 / 2)
    assert learning_rate(9000, 10_000, recipe) == pytest.approx(1e-3 / 10)


def test_one_cycle_rises_then_falls():
    recipe = get_recipe("fast")
    total = 1000
    lrs = [learning_rate(s, total, recipe) for s in range(total)]
    peak = max(range(total), key=lrs.__getitem__)
    assert lrs[peak] == pytest.approx(recipe.lr, rel=1e-3)
    assert lrs[0] < recipe.lr / 10 and lrs[-1] < recipe.lr / 100
    assert 0.15 * total < peak < 0.25 * total


def _cli(args: list[str], env: dict[str, str]) -> list[str]:
    return [sys.executable, "-m", "convscope.cli", *args]


def test_killed_run_resumes_to_identical_result(tmp_path: Path, mnist_dir: Path):
    env = {**os.environ, "CONVSCOPE_DATA": str(mnist_dir), "OMP_NUM_THREADS": "1"}
    common = ["train", "--train-limit", "3000", "--epochs", "4", "--batch-size", "128", "--seed", "7", "--device", "cpu"]
    # Uninterrupted run.
    full = tmp_path / "full"
    subprocess.run(_cli([*common, "--out", str(full)], env), env=env, check=True, capture_output=True, timeout=600)
    # Same run, killed with SIGKILL once epoch 2 is checkpointed, then resumed.
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli([*common, "--out", str(killed)], env), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoint = killed / "checkpoint" / "checkpoint.json"
    deadline = time.time() + 600
    while time.time() < deadline:
        if checkpoint.exists() and json.loads(checkpoint.read_text())["epochs_done"] >= 2:
            break
        if proc.poll() is not None:
            pytest.fail("training finished before it could be killed")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = json.loads(checkpoint.read_text())["epochs_done"]
    assert 2 <= done_at_kill < 4
    assert not (killed / "seed_cnn.safetensors").exists()
    result = subprocess.run(
        _cli(["train", "--out", str(killed), "--resume", "--json"], env), env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2, 3, 4]
    full_weights = load_file(full / "seed_cnn.safetensors")
    resumed_weights = load_file(killed / "seed_cnn.safetensors")
    for name, tensor in full_weights.items():
        assert torch.equal(tensor, resumed_weights[name]), name
    history = json.loads((killed / "history.json").read_text())
    assert history["test_accuracy"] == json.loads((full / "history.json").read_text())["test_accuracy"]


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path, mnist_dir: Path):
    env = {**os.environ, "CONVSCOPE_DATA": str(mnist_dir)}
    result = subprocess.run(
        _cli(["train", "--out", str(tmp_path / "nothing"), "--resume"], env), env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "nothing to resume in" in result.stderr and "leave out --resume" in result.stderr and "Traceback" not in result.stderr
