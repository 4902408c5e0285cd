"""OIPs on the shipped model: activation gain, precursor coverage, CLI outputs,
bad input, determinism, strategy 1 and class patterns."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from convscope.address import AddressError
from convscope.cli import main
from convscope.layers import conv_layers
from convscope.optvis import objectives as obj
from convscope.optvis.oip import compute_oips
from convscope.optvis.precursor import precursor_starts, score_maps
from convscope.optvis.strategies import class_patterns, coarse_to_fine_ascent


def test_oip_raises_mean_activation_tenfold(shipped_model):
    # the reference's run: map 120 of Conv2D_3 from one random multi-scale start
    result = compute_oips(shipped_model, "Conv2D_3", [120, 0, 2, 3, 6], precursor=False, seed=0, steps=300)
    initial, final = result.ascent.initial_loss, result.ascent.final_loss
    started = initial > 0
    assert started.sum() >= 3
    gains = final[started] / initial[started]
    assert float(torch.quantile(gains, 0.5)) >= 10.0, gains
    # the OIP really is what the map sees: re-score the returned images
    rescored = obj.channels("Conv2D_3", result.map_indices)(shipped_model, result.images).detach().double()
    assert torch.allclose(rescored, final, atol=1e-4)


def test_precursor_reaches_95_percent_of_conv2d_3(shipped_model):
    starts = precursor_starts(shipped_model, "Conv2D_3", range(128), n_candidates=512,
                              generator=torch.Generator().manual_seed(0))
    assert starts.images.shape == (128, 1, 28, 28)
    alive = [s != "none" for s in starts.source]
    assert sum(alive) >= 0.95 * 128, starts.source
    # the recorded scores are the maps' activations on the chosen images
    scores = score_maps(shipped_model, "Conv2D_3", starts.images)
    assert torch.allclose(scores[torch.arange(128), torch.arange(128)], starts.scores, atol=1e-5)
    assert all((float(s) > 0) == a for s, a in zip(starts.scores, alive))


def test_cli_all_maps_manifest_matches_coverage(tmp_path):
    out = tmp_path / "oip"
    run = CliRunner().invoke(main, ["oip", "--layer", "Conv2D_3", "--all", "--steps", "12", "--early-stop",
                                    "--candidates", "256", "--out", str(out), "--json"])
    assert run.exit_code == 0, run.output
    printed = json.loads(run.stdout)
    manifest = json.loads((out / "manifest.json").read_text())
    info = manifest["layers"]["Conv2D_3"]
    assert printed["layers"]["Conv2D_3"]["non_zero"] == info["non_zero"]
    assert info["non_zero"] == sum(r["final_loss"] > 0 for r in info["per_map"])
    assert info["dead_maps"] == [r["map"] for r in info["per_map"] if not r["final_loss"] > 0]
    assert info["non_zero"] >= 0.95 * 128
    assert info["params"]["steps"] == 12 and manifest["seed"] == 0
    assert {r["status"] for r in info["per_map"]} <= {"converged", "max_steps", "dead"}
    assert (out / "Conv2D_3_gallery.png").stat().st_size > 10_000
    assert (out / "Conv2D_3_oips.npy").is_file()


def test_cli_single_map_writes_views_and_is_deterministic(tmp_path):
    args = ["oip", "--layer", "Conv2D_2", "--map", "7", "--steps", "20", "--candidates", "64", "--seed", "5", "--json"]
    first = CliRunner().invoke(main, args + ["--out", str(tmp_path / "a")])
    second = CliRunner().invoke(main, args + ["--out", str(tmp_path / "b")])
    assert first.exit_code == 0, first.output
    for name in ("Conv2D_2_map007_views.png", "Conv2D_2_map007_evolution.png", "Conv2D_2_map007_loss.png"):
        assert (tmp_path / "a" / name).stat().st_size > 5_000
    a = json.loads(first.stdout)["layers"]["Conv2D_2"]["per_map"][0]
    b = json.loads(second.stdout)["layers"]["Conv2D_2"]["per_map"][0]
    assert a == b
    assert a["final_loss"] > a["initial_loss"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--layer", "Conv2D_9", "--map", "1"], "valid layers"),
        (["--layer", "Conv2D_3", "--map", "128"], "0..127"),
        (["--layer", "Conv2D_3:500"], "0..127"),
        (["--layer", "Conv2D_3"], "--map N"),
        (["--layer", "Conv2D_3", "--map", "1", "--all"], "choose one"),
    ],
)
def test_cli_bad_layer_or_map_is_one_clear_line(args, needle, tmp_path):
    run = CliRunner().invoke(main, ["oip", *args, "--out", str(tmp_path)])
    assert run.exit_code != 0
    assert needle in run.output
    # A usage error / ClickException ends in SystemExit; any other exception would be a traceback.
    assert isinstance(run.exception, SystemExit), repr(run.exception)


def test_engine_rejects_bad_maps(shipped_model):
    with pytest.raises(AddressError, match="0..31"):
        compute_oips(shipped_model, "Conv2D_1", [32])
    assert conv_layers(shipped_model) == ["Conv2D_1", "Conv2D_2", "Conv2D_3"]


def test_strategy_1_stages_and_gain(shipped_model):
    gen = torch.Generator().manual_seed(0)
    result = coarse_to_fine_ascent(shipped_model, obj.channels("Conv2D_2", [0, 1, 2, 3]), 4,
                                   stage_steps=(10, 10, 20, 40), generator=gen)
    assert result.images.shape == (4, 1, 28, 28)
    assert result.stage_starts == [0, 10, 20, 40]
    assert result.losses.shape == (81, 4)
    assert bool((result.final_loss > result.losses[0]).all())


def test_class_patterns_are_classified_as_their_class(shipped_model):
    result = class_patterns(shipped_model, steps=60, passes=2, seed=0)
    assert result.images.shape == (10, 1, 28, 28)
    predicted = shipped_model(result.images).argmax(dim=1)
    assert int((predicted == torch.arange(10)).sum()) == 10
    assert float(result.probabilities.min()) > 0.9


def test_a_maps_start_and_oip_do_not_depend_on_the_other_maps(shipped_model):
    from convscope.optvis.init import unit_initial_images

    alone = unit_initial_images(0, "Conv2D_3", [120])
    batch = unit_initial_images(0, "Conv2D_3", [3, 120, 7, 56])
    assert torch.equal(alone[0], batch[1])
    assert not torch.equal(batch[0], batch[1])
    assert not torch.equal(alone[0], unit_initial_images(1, "Conv2D_3", [120])[0])
    one = compute_oips(shipped_model, "Conv2D_3", [120], precursor=False, seed=0, steps=40)
    four = compute_oips(shipped_model, "Conv2D_3", [3, 120, 7, 56], precursor=False, seed=0, steps=40)
    assert torch.equal(one.initial_images[0], four.initial_images[1])
    assert torch.allclose(one.images[0], four.images[1], atol=1e-5)
    assert float(one.ascent.final_loss[0]) == pytest.approx(float(four.ascent.final_loss[1]), rel=1e-5)
    with_precursor = [compute_oips(shipped_model, "Conv2D_3", maps, seed=0, steps=5, n_candidates=64) for maps in ([120], [9, 120])]
    assert torch.equal(with_precursor[0].initial_images[0], with_precursor[1].initial_images[1])
