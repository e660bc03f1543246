"""Layer-wise (FBNet) space: every registered op has the right output shape;
presets; genotypes round-trip and are validated against the space;
encode/decode, random, mutate; the stand-alone network; cost; render;
sampling from the probability table and Eq. 9."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_core.spaces import SPACES, GenotypeError, make_space
from nas_core.spaces.layerwise import FBNET_PRESETS, OPS, LayerwiseGenotype, LayerwiseSpace, flops_latency_table
from tests.train.one_thread import one_thread  # noqa: F401

SPACE = make_space("layerwise", {"preset": "digits"}, (1, 8, 8), 10)
OPS_6 = ("k3_e1", "skip", "k5_e6", "k3_e1_g2", "k5_e3", "k3_e6")


def genotype(ops=OPS_6, preset: str = "digits") -> LayerwiseGenotype:
    return LayerwiseGenotype("layerwise", preset, tuple(ops))


# ---------------------------------------------------------------- ops and presets
@pytest.mark.parametrize("case", [(8, 8, 1, 6), (8, 16, 2, 7), (8, 12, 1, 5), (12, 8, 2, 4)],
                         ids=lambda c: "in{}-out{}-s{}-hw{}".format(*c))
@pytest.mark.parametrize("name", OPS.names())
def test_op_output_shape(name: str, case: tuple[int, int, int, int]) -> None:
    cin, cout, stride, size = case
    out = OPS.get(name)(cin, cout, stride)(torch.randn(2, cin, size, size))
    expected_hw = (size - 1) // stride + 1
    assert out.shape == (2, cout, expected_hw, expected_hw)


def test_ops_are_fbnets_nine_blocks() -> None:
    assert OPS.names() == ["k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip"]
    assert SPACE.op_names == tuple(OPS.names())


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
    space = make_space("layerwise", {"preset": "imagenet"}, (3, 224, 224), 1000)
    assert space.num_layers == 22 and space.size == 9 ** 22
    widths = [16] + [24] * 4 + [32] * 4 + [64] * 4 + [112] * 4 + [184] * 4 + [352]
    assert [layer.out_channels for layer in space.layers] == widths
    assert [i for i, l in enumerate(space.layers) if l.stride == 2] == [1, 5, 9, 17]
    assert space.final_hw() == (7, 7) and space.head_channels == 1984


def test_registered_and_unknown_preset_names_the_allowed_values() -> None:
    assert SPACES.get("layerwise") is LayerwiseSpace and SPACE.name == "layerwise"
    with pytest.raises(ValueError, match="allowed imagenet, cifar, mnist, digits; did you mean 'cifar'"):
        make_space("layerwise", {"preset": "cifr"}, (3, 32, 32), 10)
    with pytest.raises(ValueError, match="latency_repeats"):
        make_space("layerwise", {"latency_repeats": 0}, (1, 8, 8), 10)


# ---------------------------------------------------------------- genotypes
def test_genotype_round_trip_and_value_semantics() -> None:
    g = genotype()
    again = SPACE.genotype_from_dict(json.loads(g.to_json()))
    assert again == g and hash(again) == hash(g) and len({g, again}) == 1
    assert g.to_dict() == {"space": "layerwise", "preset": "digits", "ops": list(OPS_6)}
    assert str(g) == "layerwise/digits: k3_e1 | skip | k5_e6 | k3_e1_g2 | k5_e3 | k3_e6"
    assert LayerwiseGenotype.from_json(g.to_json()) == g
    with pytest.raises(AttributeError):
        g.ops = ()  # frozen


@pytest.mark.parametrize("data, message", [
    ({"space": "layerwise", "preset": "digits", "ops": ["k3_e9"] * 6}, "unknown op 'k3_e9'.*did you mean"),
    ({"space": "layerwise", "preset": "digits", "ops": ["__import__('os')"] * 6}, "unknown op"),
    ({"space": "layerwise", "ops": ["skip"]}, "keys"),
    ({"space": "layerwise", "preset": "digits", "ops": "skip"}, "list of op names"),
    ({"space": "cell", "preset": "digits", "ops": ["skip"] * 6}, "space 'layerwise'"),
    ({"space": "layerwise", "preset": "digits", "ops": ["skip"] * 2}, "has 2 layers"),
    ({"space": "layerwise", "preset": "mnist", "ops": ["skip"] * 6}, "layerwise/mnist"),
])
def test_bad_genotypes_are_rejected_clearly(data: dict, message: str) -> None:
    with pytest.raises(GenotypeError, match=message):
        SPACE.genotype_from_dict(data)


def test_encode_decode_and_bounds() -> None:
    g = genotype()
    row = SPACE.encode(g)
    assert row.dtype == np.int64 and row.tolist() == [0, 8, 7, 1, 6, 3]
    assert SPACE.encoding_length == 6 and SPACE.encoding_bounds().tolist() == [9] * 6
    assert SPACE.decode(row) == g and SPACE.decode(row.astype(np.int8)) == g
    with pytest.raises(GenotypeError, match="layer 2: op index 9 out of range 0..8"):
        SPACE.decode(np.array([0, 0, 9, 0, 0, 0]))
    with pytest.raises(GenotypeError, match="expected 6 integer op indices"):
        SPACE.decode(np.array([0, 0]))


def test_random_and_mutate_give_valid_genotypes() -> None:
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        g = SPACE.random(rng)
        SPACE.genotype_from_dict(g.to_dict())
        child = SPACE.mutate(g, rng)
        SPACE.genotype_from_dict(child.to_dict())
        assert int((SPACE.encode(child) != SPACE.encode(g)).sum()) == 1  # exactly one layer's op changes
        seen.add(g)
    assert len(seen) > 40
    again = np.random.default_rng(0)
    assert SPACE.random(again) == SPACE.random(np.random.default_rng(0))


# ---------------------------------------------------------------- networks, cost, pictures
@pytest.mark.parametrize("preset", list(FBNET_PRESETS))
def test_every_preset_builds_a_network_whose_cost_matches_the_counters(preset: str) -> None:
    from nas_core.cost import module_cost

    shape = {"imagenet": (3, 64, 64), "cifar": (3, 32, 32), "mnist": (1, 28, 28), "digits": (1, 8, 8)}[preset]
    space = make_space("layerwise", {"preset": preset}, shape, 10)
    g = space.decode(np.arange(space.num_layers) % space.num_ops)
    net = space.build_network(g)
    assert net(torch.randn(2, *shape)).shape == (2, 10)
    cost = space.cost(g)
    assert cost["flops"] > 0 and cost["params"] > 0 and cost["latency_ms"] is None
    assert {"flops": cost["flops"], "params": cost["params"]} == module_cost(net, shape)


def test_cost_has_latency_once_the_space_has_a_table() -> None:
    table = flops_latency_table(SPACE)
    space = SPACE.with_latency(table)
    g = genotype()
    assert space.cost(g)["latency_ms"] == pytest.approx(table.genotype_ms(g)) and space.cost(g)["latency_ms"] > 0
    assert space.fingerprint() != SPACE.fingerprint()
    assert space.fingerprint() == SPACE.with_latency(flops_latency_table(SPACE)).fingerprint()
    assert space.fingerprint() != SPACE.with_latency(flops_latency_table(SPACE, gflops_per_s=1.0)).fingerprint()


def test_with_measurements_loads_a_fitting_table_measures_a_missing_one_or_keeps_none(tmp_path: Path) -> None:
    small = dataclasses.replace(SPACE, latency_repeats=1)
    assert small.with_measurements(tmp_path, torch.device("cpu"), measure=False).latency is None
    assert not (tmp_path / "latency.json").exists()
    measured = small.with_measurements(tmp_path, torch.device("cpu"), measure=True)
    assert measured.latency is not None and measured.latency.device == "cpu"
    assert (tmp_path / "latency.json").is_file()
    again = small.with_measurements(tmp_path, torch.device("cpu"), measure=True)  # reused, not re-measured
    assert again.latency == measured.latency and again.fingerprint() == measured.fingerprint()
    other = make_space("layerwise", {"preset": "mnist", "latency_repeats": 1}, (1, 28, 28), 10)
    assert other.with_measurements(tmp_path, torch.device("cpu"), measure=False).latency is None  # does not fit


def test_render_writes_a_png(tmp_path: Path) -> None:
    path = SPACE.render(genotype(), tmp_path / "sub" / "genotype.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["genotype.png"]  # no temporary left behind


# ---------------------------------------------------------------- probability tables
def test_uniform_tables_and_plot() -> None:
    tables = SPACE.uniform_tables()
    assert tables["layers"].shape == (6, 9) and np.allclose(tables["layers"], 1 / 9)
    fig = SPACE.plot_tables(tables, title="uniform")
    assert fig is not None
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_sampling_is_deterministic_and_follows_the_table() -> None:
    probs = np.tile([0.7, 0.3] + [0.0] * 7, (6, 1))
    result = SPACE.sample({"layers": probs}, 20, seed=0)
    # inverse-CDF draws, one uniform per layer: fixed for a seed (the numbers of the pre-protocol sampler)
    assert result.archs.tolist()[:4] == [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 0, 0],
                                         [0, 0, 1, 1, 0, 0]]
    assert result.counts.tolist() == [2, 1, 3, 1, 2, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1]
    assert result.num_drawn == 20 and result.archs.dtype == np.int8
    big = SPACE.sample({"layers": probs * 3}, 20_000, seed=1)  # rows are renormalised
    assert set(np.unique(big.archs)) == {0, 1}
    freq = (big.archs == 1).astype(float).T @ big.counts / big.num_drawn
    assert np.allclose(freq, 0.3, atol=0.02)
    assert np.array_equal(SPACE.sample({"layers": probs}, 20, seed=0).archs, result.archs)


@pytest.mark.parametrize("tables, message", [
    ({"normal": np.ones((6, 9))}, "needs 'layers'"),
    ({"layers": np.ones((5, 9))}, r"shape \(5, 9\)"),
    ({"layers": np.vstack([np.ones((5, 9)), np.zeros((1, 9))])}, "layer 5"),
])
def test_bad_tables_are_clear_errors(tables: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SPACE.sample(tables, 10, seed=0)


def test_eq9_score_is_the_sum_of_chosen_op_probabilities() -> None:
    probs = np.full((6, 9), 0.05)
    probs[:, 2] = 0.6
    rows = np.array([[2] * 6, [0] * 6, [2, 2, 2, 0, 0, 0]])
    assert SPACE.score(rows, {"layers": probs}) == pytest.approx([3.6, 0.3, 1.95])
    assert SPACE.score(rows, {"layers": probs}, log=True) == pytest.approx(
        [6 * np.log(0.6), 6 * np.log(0.05), 3 * np.log(0.6) + 3 * np.log(0.05)])
    with pytest.raises(ValueError, match="op indices must be in 0..8"):
        SPACE.score(np.array([[9] * 6]), {"layers": probs})
