"""The layer-address syntax: parsing, validation against a model, every bad case."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convscope.address import (
    AddressError, LayerAddress, find_module, layer_names, layer_output_shapes, parse_address, resolve_address,
)
from convscope.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("seed_cnn").eval()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Conv2D_3", LayerAddress("Conv2D_3")),
        ("Conv2D_3:120", LayerAddress("Conv2D_3", 120)),
        ("Conv2D_3:120@1,2", LayerAddress("Conv2D_3", 120, (1, 2))),
        (" Dense_1:42 ", LayerAddress("Dense_1", 42)),
        ("logits:4", LayerAddress("logits", 4)),
        ("Conv2D_3.conv:7", LayerAddress("Conv2D_3.conv", 7)),
    ],
)
def test_parse_valid(text, expected):
    parsed = parse_address(text)
    assert parsed == expected
    assert parse_address(str(parsed)) == parsed  # str() round-trips
    assert parse_address(parsed) is parsed


@pytest.mark.parametrize(
    "text",
    ["", "   ", ":3", "3Conv", "Conv2D_3:", "Conv2D_3:a", "Conv2D_3:1@1", "Conv2D_3:1@1,2,3", "Conv2D_3@1,2",
     "Conv2D_3:1:2", "Conv 2D", "Conv2D_3:1.5", "Conv2D_3..conv", "Conv2D_3.", "0x"],
)
def test_parse_malformed_names_the_syntax(text):
    with pytest.raises(AddressError, match="expected LAYER, LAYER:MAP or LAYER:MAP@ROW,COL"):
        parse_address(text)


def test_unknown_layer_lists_valid_layers(model):
    with pytest.raises(AddressError) as info:
        resolve_address(model, "Conv2D_4:1")
    message = str(info.value)
    assert "'Conv2D_4'" in message
    for name in ["Conv2D_1", "Max_Pool_1", "Conv2D_2", "Max_Pool_2", "Conv2D_3", "Flatten", "Dense_1", "Dense_2",
                 "logits", "probabilities"]:
        assert name in message
    with pytest.raises(AddressError, match="valid layers"):
        resolve_address(model, "Conv2D_3.nope")
    with pytest.raises(AddressError, match="valid layers"):
        resolve_address(model, "conv2d_3")  # names are case-sensitive


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("Conv2D_3:128", r"Conv2D_3 has 128 maps, so the map index must be 0\.\.127; got 128"),
        ("Conv2D_3:-1", r"0\.\.127; got -1"),
        ("Conv2D_1:32", r"0\.\.31"),
        ("Dense_1:100", r"Dense_1 has 100 maps, so the map index must be 0\.\.99"),
        ("logits:10", r"0\.\.9; got 10"),
        ("probabilities:-1", r"0\.\.9"),
        ("Flatten:1152", r"0\.\.1151"),
        ("Conv2D_3:1@3,0", r"maps are 3x3, so the unit must be @0\.\.2,0\.\.2; got @3,0"),
        ("Conv2D_3:1@0,-1", r"@0\.\.2,0\.\.2; got @0,-1"),
        ("Conv2D_1:0@26,26", r"26x26, so the unit must be @0\.\.25,0\.\.25"),
        ("Dense_1:3@0,0", r"Dense_1 has no spatial positions .*address a node as 'Dense_1:3'"),
    ],
)
def test_out_of_range_gives_the_valid_range(model, text, pattern):
    with pytest.raises(AddressError, match=pattern):
        resolve_address(model, text)


def test_address_error_is_a_value_error():
    assert issubclass(AddressError, ValueError)


@pytest.mark.parametrize("text", ["Conv2D_3", "Conv2D_3:127", "Conv2D_3:0@2,2", "Dense_1:99", "logits:9",
                                  "probabilities", "Conv2D_3.conv:5@1,1", "Max_Pool_2:63@4,4"])
def test_valid_addresses_resolve(model, text):
    assert resolve_address(model, text) == parse_address(text)


def test_layer_output_shapes_match_the_reference(model):
    shapes = layer_output_shapes(model)
    assert shapes["Conv2D_1"] == (32, 26, 26)
    assert shapes["Max_Pool_1"] == (32, 13, 13)
    assert shapes["Conv2D_2"] == (64, 11, 11)
    assert shapes["Max_Pool_2"] == (64, 5, 5)
    assert shapes["Conv2D_3"] == (128, 3, 3)
    assert shapes["Flatten"] == (1152,)
    assert shapes["Dense_1"] == (100,)
    assert shapes["Dense_2"] == shapes["logits"] == shapes["probabilities"] == (10,)
    assert layer_names(model)[:8] == ["Conv2D_1", "Max_Pool_1", "Conv2D_2", "Max_Pool_2", "Conv2D_3", "Flatten",
                                      "Dense_1", "Dense_2"]


def test_find_module_on_any_module_with_dotted_names():
    net = nn.Sequential()
    net.add_module("block", nn.Sequential(nn.Linear(2, 3), nn.ReLU()))
    assert isinstance(find_module(net, "block.0"), nn.Linear)
    with pytest.raises(AddressError, match="block"):
        find_module(net, "block.7")
    with pytest.raises(AddressError):
        find_module(net, "")  # the root is not a layer


def test_numeric_module_names_of_plain_sequentials():
    net = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Linear(3, 4)))
    assert parse_address("1.1:3") == LayerAddress("1.1", 3)
    assert resolve_address(net, "0:2", input_shape=(2,)) == LayerAddress("0", 2)
    with pytest.raises(AddressError, match="0..3"):
        resolve_address(net, "1.1:4", input_shape=(2,))
