"""``convscope oip`` with the modern options (Fourier, Adam, transforms, L1/TV/blur,
diversity): the numbers in the manifest are what the saved images do to the
model, the options reach the engine, the default options still give the
reference path, and bad options are refused with one clear usage error."""

from __future__ import annotations

import json
from pathlib import Path
from itertools import combinations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from convscope.cli import main
from convscope.optvis import objectives as obj
from convscope.optvis.modern import diversity, modern_ascent
from convscope.probe import capture


def _oip(args: list[str]):
    run = CliRunner().invoke(main, ["oip", *args])
    assert run.exit_code == 0, run.output
    return run


def _map_means(model, layer: str, maps: list[int], images: np.ndarray) -> torch.Tensor:
    """Independent recomputation: mean activation of ``maps[i]`` on image ``i``."""
    x = torch.from_numpy(images).float().reshape(-1, 1, 28, 28)
    with torch.no_grad():
        out = capture(model, x, layer)[layer]
    return out[torch.arange(len(maps)), torch.as_tensor(maps)].mean(dim=(1, 2)).double()


def test_fourier_adam_transforms_raise_the_map_and_the_manifest_is_the_saved_image(tmp_path, shipped_model):
    out = tmp_path / "oip"
    run = _oip(["--layer", "Conv2D_3", "--map", "120", "--map", "7", "--param", "fourier", "--optimizer", "adam",
                "--transforms", "--steps", "40", "--candidates", "128", "--json", "--out", str(out)])
    printed = json.loads(run.stdout)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: v for k, v in printed.items() if k not in ("files", "seconds")} == {
        k: v for k, v in manifest.items() if k not in ("files", "seconds")}
    assert printed["files"] == manifest["files"] and all(Path(f).is_file() for f in printed["files"])
    info = manifest["layers"]["Conv2D_3"]
    params = info["params"]
    assert manifest["strategy"] == "modern" and params["algorithm"] == "modern"
    assert (params["parametrisation"], params["optimizer"], params["lr"], params["transforms"], params["steps"]) == (
        "fourier", "adam", 0.02, True, 40)
    assert params["precursor"] is True and params["diversity"] == 1 and params["seed"] == 0
    records = info["per_map"]
    assert [r["map"] for r in records] == [120, 7]
    for record in records:
        assert record["start"] == "random" and record["initial_loss"] > 0
        assert record["final_loss"] > 3.0 * record["initial_loss"], record
    # the recorded final activation is the clean objective of the saved image
    images = np.load(out / "Conv2D_3_oips.npy")
    assert images.shape == (2, 28, 28)
    recomputed = _map_means(shipped_model, "Conv2D_3", [120, 7], images)
    finals = torch.tensor([r["final_loss"] for r in records], dtype=torch.float64)
    assert torch.allclose(recomputed, finals, rtol=1e-4, atol=1e-6), (recomputed, finals)
    single = np.load(out / "Conv2D_3_map120.npy")
    assert np.array_equal(single, images[0])
    # standardised images, same files as the reference path except the evolution strip
    assert abs(float(images.mean())) < 1e-4 and abs(float(images[0].std()) - 1.0) < 1e-3
    for name in ("Conv2D_3_map120_views.png", "Conv2D_3_map120_loss.png", "Conv2D_3_gallery.png", "Conv2D_3_losses.png"):
        assert (out / name).stat().st_size > 5_000, name
    assert not (out / "Conv2D_3_map120_evolution.png").exists()


def test_options_reach_the_engine_unchanged(tmp_path, shipped_model):
    # --no-precursor: random starts from the seed, so the CLI must give exactly the API's images
    out = tmp_path / "oip"
    run = _oip(["--layer", "Conv2D_2", "--map", "3", "--map", "9", "--no-precursor", "--lr", "0.02", "--l1", "0.1",
                "--tv", "0.5", "--blur-every", "4", "--blur-sigma", "0.7", "--steps", "20", "--seed", "3",
                "--json", "--out", str(out)])
    info = json.loads(run.stdout)["layers"]["Conv2D_2"]
    params = info["params"]
    assert (params["lr"], params["l1"], params["tv"], params["blur_every"], params["blur_sigma"]) == (0.02, 0.1, 0.5, 4, 0.7)
    assert "L1" in params["objective"] and "TV" in params["objective"] and params["precursor"] is False
    from convscope.optvis.init import unit_generator, unit_initial_images

    direct = modern_ascent(shipped_model, obj.channels("Conv2D_2", [3, 9]), 2, steps=20, lr=0.02, l1=0.1, tv=0.5,
                           blur_every=4, blur_sigma=0.7, initial=unit_initial_images(3, "Conv2D_2", [3, 9]),
                           generator=unit_generator(3, "Conv2D_2", "transforms"))
    images = np.load(out / "Conv2D_2_oips.npy")
    assert np.allclose(images, direct.images[:, 0].numpy(), atol=1e-6)
    finals = [r["final_loss"] for r in info["per_map"]]
    assert np.allclose(finals, direct.final_loss.numpy(), rtol=1e-6)
    # penalties are optimised but the manifest reports the clean objective (the map's mean activation)
    assert torch.allclose(_map_means(shipped_model, "Conv2D_2", [3, 9], images), torch.tensor(finals, dtype=torch.float64),
                          rtol=1e-4, atol=1e-6)


def test_all_maps_of_a_layer_with_fourier_adam(tmp_path, shipped_model):
    out = tmp_path / "oip"
    run = _oip(["--layer", "Conv2D_1", "--all", "--param", "fourier", "--optimizer", "adam", "--steps", "20",
                "--candidates", "64", "--out", str(out)])
    assert "Conv2D_1:" in run.output and "fourier + adam" in run.output
    info = json.loads((out / "manifest.json").read_text())["layers"]["Conv2D_1"]
    images = np.load(out / "Conv2D_1_oips.npy")
    assert images.shape == (32, 28, 28) and info["maps"] == 32
    finals = torch.tensor([r["final_loss"] for r in info["per_map"]], dtype=torch.float64)
    assert info["non_zero"] == int((finals > 0).sum()) >= 30
    assert info["dead_maps"] == [r["map"] for r in info["per_map"] if not r["final_loss"] > 0]
    assert torch.allclose(_map_means(shipped_model, "Conv2D_1", list(range(32)), images), finals, rtol=1e-4, atol=1e-6)
    assert (out / "Conv2D_1_gallery.png").stat().st_size > 20_000
    assert not list(out.glob("*_views.png"))  # --all: no per-map files unless --per-map


def test_diversity_gives_k_distinct_oips_per_map(tmp_path, shipped_model):
    common = ["--layer", "Conv2D_2", "--map", "7", "--map", "12", "--diversity", "3", "--param", "fourier",
              "--optimizer", "adam", "--steps", "30", "--json"]
    run = _oip(common + ["--out", str(tmp_path / "div")])
    info = json.loads(run.stdout)["layers"]["Conv2D_2"]
    images = np.load(tmp_path / "div" / "Conv2D_2_oips.npy")
    assert images.shape == (2, 3, 28, 28) and info["members_per_map"] == 3
    params = info["params"]
    assert (params["diversity"], params["diversity_weight"], params["diversity_layer"]) == (3, 2.0, "Conv2D_1")
    for m, record in enumerate(info["per_map"]):
        assert [member["member"] for member in record["members"]] == [0, 1, 2]
        for a, b in combinations(range(3), 2):  # standardised images: identical ones would differ by 0
            assert float(np.abs(images[m, a] - images[m, b]).mean()) > 0.3, (m, a, b)
        # each member's recorded activation is its saved image's, and it reacted
        finals = torch.tensor([member["final_loss"] for member in record["members"]], dtype=torch.float64)
        assert torch.allclose(_map_means(shipped_model, "Conv2D_2", [record["map"]] * 3, images[m]), finals,
                              rtol=1e-4, atol=1e-6)
        assert float(finals.min()) > 0
        assert record["final_loss"] == pytest.approx(float(finals.mean()))
    # the recorded similarity is the diversity objective on the saved images
    x = torch.from_numpy(images).reshape(6, 1, 28, 28)
    with torch.no_grad():
        similarity = diversity("Conv2D_1", [0, 0, 0, 1, 1, 1])(shipped_model, x).double().reshape(2, 3)
    recorded = torch.tensor([r["mean_pairwise_similarity"] for r in info["per_map"]], dtype=torch.float64)
    assert torch.allclose(similarity.mean(dim=1), recorded, atol=1e-5)
    # and the penalty is what makes them distinct: without it the members' Gram matrices nearly coincide
    plain = json.loads(_oip(common + ["--diversity-weight", "0", "--out", str(tmp_path / "plain")]).stdout)
    plain_similarity = plain["layers"]["Conv2D_2"]["mean_pairwise_similarity"]
    assert info["mean_pairwise_similarity"] < plain_similarity - 0.2, (info["mean_pairwise_similarity"], plain_similarity)
    assert (tmp_path / "div" / "Conv2D_2_gallery.png").stat().st_size > 10_000


def test_default_modern_options_give_the_reference_path(tmp_path):
    base = ["--layer", "Conv2D_2", "--map", "7", "--steps", "20", "--candidates", "64", "--json"]
    explicit = ["--param", "pixel", "--optimizer", "normalized", "--no-transforms", "--l1", "0", "--tv", "0",
                "--blur-every", "0", "--diversity", "1"]
    plain = json.loads(_oip(base + ["--out", str(tmp_path / "a")]).stdout)
    spelled = json.loads(_oip(base + explicit + ["--out", str(tmp_path / "b")]).stdout)
    info = spelled["layers"]["Conv2D_2"]
    assert spelled["strategy"] == 0 and info["params"]["algorithm"] == "reference (strategy 0)"
    for summary in (plain, spelled):
        summary.pop("seconds")
        summary.pop("files")
    assert plain == spelled
    assert np.array_equal(np.load(tmp_path / "a" / "Conv2D_2_oips.npy"), np.load(tmp_path / "b" / "Conv2D_2_oips.npy"))
    assert (tmp_path / "b" / "Conv2D_2_map007_evolution.png").is_file()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--diversity", "0"], "--diversity"),
        (["--l1", "-1"], "--l1"),
        (["--tv", "-0.5"], "--tv"),
        (["--lr", "0"], "--lr"),
        (["--blur-every", "-2"], "--blur-every"),
        (["--param", "hsv"], "--param"),
        (["--strategy", "1", "--param", "fourier"], "--strategy 1"),
        (["--compare-strategies", "--optimizer", "adam"], "--compare-strategies"),
        (["--optimizer", "adam", "--early-stop"], "--early-stop"),
        (["--optimizer", "adam", "--epsilon", "0.02"], "--epsilon"),
        (["--param", "fourier", "--blur-every", "4"], "--blur-every"),
        (["--tv", "0.1", "--blur-sigma", "1"], "--blur-sigma"),
        (["--diversity-weight", "1"], "--diversity-weight"),
        (["--diversity", "3", "--candidates", "64"], "--candidates"),
    ],
)
def test_bad_modern_options_are_one_usage_error(args, needle, tmp_path):
    out = tmp_path / "out"
    run = CliRunner().invoke(main, ["oip", "--layer", "Conv2D_3", "--map", "7", *args, "--out", str(out)])
    assert run.exit_code == 2, run.output
    errors = [line for line in run.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and needle in errors[0], run.output
    assert isinstance(run.exception, SystemExit), repr(run.exception)  # a usage error, not a crash
    assert not out.exists()
