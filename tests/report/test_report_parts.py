"""The atlas's pieces without a browser: picture helpers and the stage store."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from convscope.report import images as img
from convscope.report.cache import StageCache, stage_key


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_grid_shares_one_scale_and_leaves_gaps():
    maps = np.zeros((32, 26, 26))
    maps[5] = 2.0  # the brightest map
    maps[6] = 1.0
    grid = _decode(img.grid_png(maps, "viridis", 0.0, 2.0, per_row=8))
    assert grid.shape == (4 * 27 - 1, 8 * 27 - 1, 3)
    from matplotlib import colormaps

    def colour(x: float) -> np.ndarray:
        return (np.asarray(colormaps["viridis"](x)[:3]) * 255 + 0.5).astype(np.uint8)

    assert (grid[0, 5 * 27] == colour(1.0)).all()  # map 5 at the top of the scale
    assert (grid[0, 6 * 27] == colour(0.5)).all()  # map 6 half way
    assert (grid[0, 0] == colour(0.0)).all()
    assert (grid[0, 26] == img.GAP_COLOUR).all()  # the 1-pixel gap after map 0
    nodes = _decode(img.grid_png(np.arange(100.0), "viridis", 0.0, 99.0))
    assert nodes.shape == (10, 10, 3)  # 100 dense nodes: one 10×10 block
    wide = _decode(img.grid_png(np.arange(128.0), "viridis", 0.0, 127.0, per_row=16))
    assert wide.shape == (8, 16, 3)


def test_receptive_field_is_outlined_in_orange():
    digit = np.zeros((28, 28), dtype=np.uint8)
    png = img.digits_with_fields_png([digit, digit], [(2, 4, 20, 22), (0, 0, 28, 28)], zoom=3, gap=3)
    strip = _decode(png)
    assert strip.shape == (84, 2 * 84 + 3, 3)
    assert tuple(strip[2 * 3, 4 * 3 + 5]) == img.FIELD_COLOUR  # top edge of the field
    assert tuple(strip[20 * 3 - 1, 22 * 3 - 1]) == img.FIELD_COLOUR  # bottom-right corner (exclusive bound)
    assert tuple(strip[30, 30]) == (0, 0, 0)  # inside stays the digit
    second = strip[:, 87:]
    assert not (second == np.array(img.FIELD_COLOUR)).all(axis=2).any()  # whole-image field: no outline


def test_signed_maps_are_symmetric_and_white_at_zero():
    values = np.array([[-1.0, 0.0, 1.0]])
    from matplotlib import colormaps

    rgb = _decode(img.signed_png(values))
    ends = [(np.asarray(colormaps["RdBu_r"](x)[:3]) * 255 + 0.5).astype(np.uint8) for x in (0.0, 1.0)]
    assert (rgb[0, 0] == ends[0]).all() and (rgb[0, 2] == ends[1]).all()
    assert rgb[0, 1].min() > 240  # 0 is (nearly) white


def test_stage_store_round_trip_and_key_checks(tmp_path):
    from convscope.report.stages import LayerOIPs

    cache = StageCache(tmp_path / ".stages")
    output = LayerOIPs(layer="Conv2D_3", maps=2, status=["dead", "converged"], source=["none", "random"],
                       dead=[True, False], fires_on_data=[True, False], snapshot_steps=[0, 9], alive=1,
                       params={"steps": 30}, arrays={"oips": np.arange(6, dtype=np.float16).reshape(2, 3)},
                       images={"oip/0": b"\x89PNG fake bytes", "photo": b"\xff\xd8 jpeg"})
    key = stage_key({"stage": "oip:Conv2D_3", "seed": 0})
    assert key == stage_key({"seed": 0, "stage": "oip:Conv2D_3"})  # order does not matter
    assert key != stage_key({"stage": "oip:Conv2D_3", "seed": 1})
    cache.save("oip:Conv2D_3", key, output, 12.5)
    loaded, seconds = cache.load("oip:Conv2D_3", key)
    assert seconds == 12.5 and isinstance(loaded, LayerOIPs)
    assert (loaded.status, loaded.dead, loaded.params, loaded.alive) == (output.status, output.dead, output.params, 1)
    assert loaded.images == output.images and loaded.state(0) == "silent" and loaded.state(1) == "converged"
    assert loaded.arrays["oips"].dtype == np.float16 and (loaded.arrays["oips"] == output.arrays["oips"]).all()
    assert cache.load("oip:Conv2D_3", "another key") is None
    # a second key of the same stage is stored beside the first (content-addressed)
    cache.save("oip:Conv2D_3", "another key", output, 1.0)
    assert cache.load("oip:Conv2D_3", key) is not None and cache.load("oip:Conv2D_3", "another key") is not None
    # a damaged array file means "not finished", not a crash
    json_path, npz_path = cache.paths("oip:Conv2D_3", key)
    npz_path.write_bytes(b"not a zip")
    assert cache.load("oip:Conv2D_3", key) is None
    assert cache.forget("oip:Conv2D_3") == 2
    assert not json_path.exists() and not npz_path.exists()


def test_codec_refuses_foreign_types():
    import pytest

    from convscope.report.codec import CodecError, decode, encode
    from convscope.report.stages import Mistakes

    meta, arrays, blobs = encode(Mistakes(total_errors=3, mistakes=[{"index": 1}], method="ig", images={"x": b"1"}))
    assert decode(meta, arrays, blobs) == Mistakes(3, [{"index": 1}], "ig", {"x": b"1"})
    meta["__type__"] = "os:system"
    with pytest.raises(CodecError, match="not a convscope type"):
        decode(meta, arrays, blobs)


def test_sharded_topk_merge_equals_one_pass():
    """Top-k over dataset shards merged equals one pass over all images (ties: lower index first)."""
    from convscope.report.stages import TopkShard, merge_topk

    rng = np.random.default_rng(0)
    values = np.round(rng.normal(size=(5, 40)), 1).astype(np.float32)  # many ties
    k = 6
    order = np.lexsort((np.broadcast_to(np.arange(40), values.shape), -values.astype(np.float64)), axis=1)[:, :k]
    shards = []
    for start, stop in ((0, 13), (13, 27), (27, 40)):
        part = values[:, start:stop]
        local = np.lexsort((np.broadcast_to(np.arange(stop - start), part.shape), -part.astype(np.float64)), axis=1)[:, :k]
        shard = TopkShard(start=start, stop=stop, k=k, layers=["L"])
        shard.arrays = {"indices/L": local + start, "values/L": np.take_along_axis(part, local, axis=1)}
        shards.append(shard)
    merged = merge_topk(shards)["L"]
    assert (merged["indices"] == order).all()
    assert (merged["values"] == np.take_along_axis(values, order, axis=1)).all()


def test_codec_pack_round_trip_without_pickle():
    """pack/unpack (the bytes a Ray Data column carries): the same result back,
    arrays with their dtypes, pictures byte for byte; junk is a CodecError."""
    import pytest

    from convscope.report.codec import CodecError, encode, pack, unpack
    from convscope.report.stages import LayerOIPs

    output = LayerOIPs(layer="Conv2D_3", maps=2, status=["dead", "converged"], source=["none", "random"],
                       dead=[True, False], fires_on_data=[True, False], snapshot_steps=[0, 9], alive=1,
                       params={"steps": 30}, arrays={"oips": np.arange(6, dtype=np.float16).reshape(2, 3)},
                       images={"oip/0": b"\x89PNG fake bytes", "empty": b""})
    back = unpack(pack(output))
    meta, arrays, blobs = encode(output)
    got_meta, got_arrays, got_blobs = encode(back)
    assert isinstance(back, LayerOIPs) and got_meta == meta and got_blobs == blobs
    assert got_arrays.keys() == arrays.keys()
    assert back.arrays["oips"].dtype == np.float16 and (back.arrays["oips"] == output.arrays["oips"]).all()
    with pytest.raises(CodecError, match="not a packed stage result"):
        unpack(b"not an archive")


def test_model_card_pass_feeds_the_comparison(shipped_model, test_split):
    """The model card's pass over the split keeps the compared layers' outputs for
    the comparison (one pass, not two): the model card and the comparison are the
    same, bit for bit, as computed apart; incomplete outputs are refused clearly."""
    import dataclasses

    import pytest

    from convscope.inside import compare_classes
    from convscope.report import stages as st
    from convscope.report.codec import encode
    from convscope.report.executor import Env, EnvSpec
    from convscope.report.profile import QUICK

    split = dataclasses.replace(test_split, images=test_split.images[:2500], labels=test_split.labels[:2500])
    layers = ["Conv2D_3", "Dense_1"]
    spec = EnvSpec(model=None, model_options={}, dataset=None, data_dir=None, device="cpu", profile=QUICK, seed=0,
                   layers=tuple(layers), conv_layers=())
    env = Env.open(spec, model=shipped_model, split=split)
    card = st.stage_model_card(env, {"compare_layers": layers}, {}, None)
    assert set(env.shared) == {"split_outputs:Conv2D_3,Dense_1"}
    alone = st.stage_model_card(Env.open(spec, model=shipped_model, split=split), {}, {}, None)
    assert encode(card)[0] == encode(alone)[0] and (card.probabilities == alone.probabilities).all()

    params = {"layers": layers, "dense": ["Dense_1"], "examples": 2}
    shared = st.stage_compare(env, params, {"model_card": card}, None)
    assert env.shared == {}  # taken, not kept
    own = st.stage_compare(env, params, {"model_card": card}, None)  # nothing shared: its own pass
    for got, expected in zip(encode(shared), encode(own)):
        if isinstance(expected, dict) and expected and isinstance(next(iter(expected.values())), np.ndarray):
            assert got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in expected)
        else:
            assert got == expected

    outputs = st.split_outputs(env, ["Dense_1"])
    with pytest.raises(ValueError, match="lack Conv2D_3"):
        compare_classes(env.ascent_model, split.images, split.labels, 4, 9, layers=layers, outputs=outputs)
    outputs = st.split_outputs(env, layers)
    outputs["Dense_1"] = outputs["Dense_1"][:10]
    with pytest.raises(ValueError, match="Dense_1 do not hold one row per image"):
        compare_classes(env.ascent_model, split.images, split.labels, 4, 9, layers=layers, outputs=outputs)
