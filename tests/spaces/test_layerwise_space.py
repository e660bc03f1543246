"""Layer-wise (FBNet) space: every registered op has the right output shape
and analytic FLOPs/params; presets; genotypes round-trip."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nas_core.cost import genotype_cost, op_cost
from nas_core.spaces import (FBNET_PRESETS, OPS, SPACES, Genotype, GenotypeError, LayerSpec, LayerwiseSpace,
                             make_space)
from nas_core.supernet import build_child

# (in, out, stride, input size): keeps shape / halves / changes channels / both
LAYER_CASES = [(8, 8, 1, 6), (8, 16, 2, 7), (8, 12, 1, 5), (12, 8, 2, 4)]


def one_layer_space(cin: int, cout: int, stride: int, size: int) -> LayerwiseSpace:
    return LayerwiseSpace(name="fbnet", preset="test", input_shape=(cin, size, size), num_classes=2,
                          stem_channels=cin, layers=(LayerSpec(cin, cout, stride),), head_channels=8,
                          op_names=tuple(OPS.names()), stem_stride=1)


def counted_flops(module: torch.nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module.eval()(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: "in{}-out{}-s{}-hw{}".format(*c))
@pytest.mark.parametrize("name", OPS.names())
def test_op_shape_flops_and_params_match_counters(name: str, case: tuple[int, int, int, int]) -> None:
    cin, cout, stride, size = case
    space = one_layer_space(*case)
    op = OPS.get(name)(cin, cout, stride)
    out = op(torch.randn(2, cin, size, size))
    expected_hw = (size - 1) // stride + 1
    assert out.shape == (2, cout, expected_hw, expected_hw)
    cost = op_cost(space, 0, name)
    assert cost.params == sum(p.numel() for p in op.parameters())
    # FlopCounterMode counts 2 FLOPs per multiply-add; ours counts multiply-adds per image
    assert 2 * cost.flops == counted_flops(op, torch.randn(1, cin, size, size))


def test_ops_are_fbnets_nine_blocks() -> None:
    assert OPS.names() == ["k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip"]


def test_residual_only_when_shape_kept() -> None:
    block = OPS.get("k3_e3")(8, 8, 1)
    assert block.residual
    assert not OPS.get("k3_e3")(8, 8, 2).residual
    assert isinstance(OPS.get("skip")(8, 8, 1), torch.nn.Identity)
    assert not isinstance(OPS.get("skip")(8, 16, 1), torch.nn.Identity)


def test_odd_channels_with_groups_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="divisible by 2"):
        OPS.get("k3_e1_g2")(7, 8, 1)


def test_imagenet_preset_is_fbnets_22_layer_macro() -> None:
    space = make_space("fbnet", "imagenet", (3, 224, 224), 1000)
    assert space.num_layers == 22 and space.size == 9 ** 22
    assert [l.out_channels for l in space.layers] == [16] + [24] * 4 + [32] * 4 + [64] * 4 + [112] * 4 + [184] * 4 + [352]
    assert [i for i, l in enumerate(space.layers) if l.stride == 2] == [1, 5, 9, 17]
    assert space.final_hw() == (7, 7) and space.head_channels == 1984


@pytest.mark.parametrize("preset", list(FBNET_PRESETS))
def test_every_preset_builds_a_network_with_the_analytic_cost(preset: str) -> None:
    shape = {"imagenet": (3, 64, 64), "cifar": (3, 32, 32), "mnist": (1, 28, 28), "digits": (1, 8, 8)}[preset]
    space = make_space("fbnet", preset, shape, 10)
    genotype = Genotype("fbnet", preset, tuple(space.op_names[i % space.num_ops] for i in range(space.num_layers)))
    net = build_child(space, genotype)
    cost = genotype_cost(space, genotype)
    assert cost.params == sum(p.numel() for p in net.parameters())
    assert 2 * cost.flops == counted_flops(net, torch.randn(1, *shape))


def test_unknown_space_and_preset_name_the_allowed_values() -> None:
    with pytest.raises(KeyError, match="fbnet"):
        make_space("fbnett", "digits", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="allowed imagenet, cifar, mnist, digits; did you mean 'cifar'"):
        make_space("fbnet", "cifr", (3, 32, 32), 10)
    assert "fbnet" in SPACES


def test_genotype_json_round_trip_and_value_semantics() -> None:
    g = Genotype("fbnet", "digits", ("k3_e1", "skip", "k5_e6", "k3_e1_g2", "k5_e3", "k3_e6"))
    again = Genotype.from_json(g.to_json())
    assert again == g and hash(again) == hash(g) and len({g, again}) == 1
    assert json.loads(g.to_json())["ops"][1] == "skip"
    assert str(g) == "fbnet/digits: k3_e1 | skip | k5_e6 | k3_e1_g2 | k5_e3 | k3_e6"
    with pytest.raises(AttributeError):
        g.ops = ()  # frozen


@pytest.mark.parametrize("text, message", [
    ('{"space": "fbnet", "preset": "digits", "ops": ["k3_e9"]}', "unknown op 'k3_e9'"),
    ('{"space": "fbnet", "preset": "digits", "ops": ["__import__(\'os\')"]}', "unknown op"),
    ('{"space": "fbnet", "ops": ["skip"]}', "keys"),
    ('{"space": "fbnet", "preset": "digits", "ops": "skip"}', "list of op names"),
    ("not json", "not valid JSON"),
])
def test_bad_genotype_json_is_rejected_clearly(text: str, message: str) -> None:
    with pytest.raises(GenotypeError, match=message):
        Genotype.from_json(text)


def test_genotype_must_fit_the_space() -> None:
    space = make_space("fbnet", "digits", (1, 8, 8), 10)
    with pytest.raises(GenotypeError, match="has 2 layers"):
        build_child(space, Genotype("fbnet", "digits", ("skip", "skip")))
    with pytest.raises(GenotypeError, match="fbnet/mnist"):
        Genotype("fbnet", "mnist", ("skip",) * 7).check(space)
