"""Channel-ratio space (dc-nas.md §4.1): 5^6 genotypes, the SearchSpace
protocol (round-trips, validation, encodings, networks, cost, tables)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from nas_core.spaces import SPACES, GenotypeError, SearchSpace, make_space
from nas_core.spaces.channel_ratio import ChannelRatioGenotype, ChannelRatioSpace


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return make_space("channel_ratio", None, (1, 8, 8), 10)


def test_registered_with_the_paper_defaults(space):
    assert SPACES.get("channel_ratio") is ChannelRatioSpace and isinstance(space, ChannelRatioSpace)
    assert space.ratios == (0.25, 0.5, 1.0, 2.0, 4.0) and space.base_widths == (8, 8, 16, 16, 32, 32)
    assert space.strides == (1, 1, 2, 1, 2, 1) and space.size() == 5 ** 6


def test_enumerates_all_distinct_genotypes(space):
    genotypes = list(space.enumerate())
    assert len(genotypes) == space.size() == 15625
    assert len(set(genotypes)) == 15625
    assert all(space.index_of(g) == i for i, g in enumerate(genotypes[:500]))
    assert space.genotype_at(15624) == genotypes[-1]
    with pytest.raises(IndexError, match="outside 0..15624"):
        space.genotype_at(15625)


def test_genotype_round_trips_through_dict_and_json(space):
    genotype = space.genotype_at(4321)
    data = json.loads(genotype.to_json())
    assert data == genotype.to_dict() == {"space": "channel_ratio", "ratios": list(genotype.ratios)}
    assert space.genotype_from_dict(data) == genotype
    assert str(genotype).count(",") == 5 and space.label(genotype) == str(genotype)


@pytest.mark.parametrize("data, message", [
    ({"space": "layerwise", "ratios": [1] * 6}, "expected 'channel_ratio'"),
    ({"space": "channel_ratio", "ratios": [1] * 5}, "list of 6 numbers"),
    ({"space": "channel_ratio", "ratios": [1, 1, 1, 1, 1, 3]}, r"layer 5: ratio 3 .*did you mean 2\?"),
    ({"space": "channel_ratio", "ratios": [1, "1", 1, 1, 1, 1]}, "layer 1: ratio '1'"),
    ({"space": "channel_ratio", "ratios": [1] * 6, "widths": [8] * 6}, r"unknown keys \['widths'\]"),
    ([1] * 6, "is a mapping"),
])
def test_bad_genotypes_are_named(space, data, message):
    with pytest.raises(GenotypeError, match=message):
        space.genotype_from_dict(data)


def test_genotype_needs_six_ratios():
    with pytest.raises(GenotypeError, match="6 ratios"):
        ChannelRatioGenotype((1.0, 2.0))


@pytest.mark.parametrize("section, key", [
    ({"ratios": [1.0, 1.0]}, "ratios"),
    ({"ratios": [0.5, -1.0]}, "ratios"),
    ({"base_widths": [8, 8, 0, 8, 8, 8]}, "base_widths"),
    ({"base_widths": [8, 8]}, "base_widths"),
    ({"strides": [1, 1, 3, 1, 1, 1]}, "strides"),
])
def test_bad_config_names_the_key(section, key):
    with pytest.raises(ValidationError, match=f"spaces.channel_ratio.{key}"):
        make_space("channel_ratio", section, (1, 8, 8), 10)


def test_unknown_config_key_is_rejected():
    with pytest.raises(ValidationError, match="base_width\n.*Extra inputs"):
        make_space("channel_ratio", {"base_width": [8] * 6}, (1, 8, 8), 10)


def test_bad_params_file_names_the_key():
    from nas_core.config import ParamsError, validate_params

    with pytest.raises(ParamsError, match=r"spaces\.channel_ratio\.ratios = \[1\.0, 1\.0\]"):
        validate_params({"spaces": {"channel_ratio": {"ratios": [1, 1]}}})


def test_encode_decode_round_trip_and_bounds(space):
    assert space.encoding_length == 6 and space.encoding_bounds().tolist() == [5] * 6
    rng = np.random.default_rng(0)
    for _ in range(200):
        genotype = space.random(rng)
        row = space.encode(genotype)
        assert row.dtype == np.int64 and row.shape == (6,)
        assert ((row >= 0) & (row < 5)).all() and space.decode(row) == genotype
    assert space.encode(space.genotype_at(0)).tolist() == [0] * 6
    assert space.encode(space.genotype_at(15624)).tolist() == [4] * 6
    for bad in (np.array([0, 0, 0, 0, 0, 5]), np.array([0] * 5), np.array([0.0] * 6)):
        with pytest.raises(GenotypeError, match="expected 6 integers in 0..4"):
            space.decode(bad)
    with pytest.raises(GenotypeError, match="not in the space"):
        space.index_of(ChannelRatioGenotype((3.0,) * 6))


def test_random_and_mutate_stay_in_the_space(space):
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(100):
        genotype = space.random(rng)
        child = space.mutate(genotype, rng)
        assert space.genotype_from_dict(child.to_dict()) == child
        assert int((space.encode(child) != space.encode(genotype)).sum()) == 1
        seen.add(genotype)
    assert len(seen) > 90
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    assert space.mutate(space.random(a), a) == space.mutate(space.random(b), b)


def test_flops_and_params_grow_with_every_ratio(space):
    for layer in range(6):
        costs = []
        for ratio in space.ratios:
            ratios = [1.0] * 6
            ratios[layer] = ratio
            costs.append(space.cost(ChannelRatioGenotype(tuple(ratios))))
        flops = [c["flops"] for c in costs]
        params = [c["params"] for c in costs]
        assert flops == sorted(flops) and len(set(flops)) == len(flops), f"layer {layer}: {flops}"
        assert params == sorted(params) and len(set(params)) == len(params), f"layer {layer}: {params}"
    smallest = space.cost(ChannelRatioGenotype((0.25,) * 6))["flops"]
    largest = space.cost(ChannelRatioGenotype((4.0,) * 6))["flops"]
    assert largest > 100 * smallest


# Analytic cost of the channel-ratio networks before the SearchSpace redesign (same numbers kept).
KNOWN_COSTS = {
    (1, 8, 8): {0: (1280, 10448), 777: (4288, 31424), 15624: (288170, 2379008)},
    (1, 28, 28): {777: (4288, 381344), 4321: (49198, 4205536)},
    (3, 32, 32): {0: (1316, 202832), 15624: (288746, 38634752)},
}


@pytest.mark.parametrize("shape", list(KNOWN_COSTS))
def test_cost_is_unchanged_and_matches_the_built_network(shape):
    space = make_space("channel_ratio", None, shape, 10)
    for index, (params, flops) in KNOWN_COSTS[shape].items():
        genotype = space.genotype_at(index)
        assert space.cost(genotype) == {"params": params, "flops": flops, "latency_ms": None}
        model = space.build_network(genotype)
        assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_built_network_is_sized_to_the_data_and_runs(shape):
    space = make_space("channel_ratio", None, shape, 7)
    genotype = space.genotype_at(777)
    model = space.build_network(genotype, torch.Generator().manual_seed(0))
    outputs, logits = model.forward_layers(torch.randn(2, *shape))
    assert logits.shape == (2, 7) and len(outputs) == 6
    assert [o.shape[1] for o in outputs] == space.widths(genotype)
    assert torch.equal(model(torch.zeros(1, *shape)), model.forward_layers(torch.zeros(1, *shape))[1])


def test_seeded_build_is_reproducible_without_the_global_rng(space):
    genotype = space.genotype_at(42)
    a = space.build_network(genotype, torch.Generator().manual_seed(3))
    torch.manual_seed(123)
    b = space.build_network(genotype, torch.Generator().manual_seed(3))
    c = space.build_network(genotype, torch.Generator().manual_seed(4))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.blocks[0][0].weight, c.blocks[0][0].weight)


def test_sample_distinct_is_distinct_and_seeded(space):
    draw = space.sample_distinct(100, seed=1)
    assert len(set(draw)) == 100 and draw == sorted(draw)
    assert draw == space.sample_distinct(100, seed=1) and draw != space.sample_distinct(100, seed=2)
    assert space.sample_distinct(10, seed=3) == [615, 1337, 1470, 2802, 2832, 3698, 9095, 12516, 12672, 13579]
    with pytest.raises(ValueError, match="cannot sample"):
        space.sample_distinct(20000, seed=0)


def test_sampling_from_tables_is_seeded_and_follows_them(space):
    tables = space.uniform_tables()
    assert tables["layers"].shape == (6, 5) and np.allclose(tables["layers"], 0.2)
    a = space.sample(tables, 3000, seed=0)
    b = space.sample(tables, 3000, seed=0, progress=lambda it, **kw: it)
    assert np.array_equal(a.archs, b.archs) and np.array_equal(a.counts, b.counts)
    assert a.num_drawn == 3000 and a.archs.shape[1] == 6
    assert not np.array_equal(a.archs, space.sample(tables, 3000, seed=1).archs)
    assert (np.lexsort(a.archs.T[::-1]) == np.arange(a.num_unique)).all()  # sorted, unique
    peaked = np.full((6, 5), 1e-12)
    peaked[np.arange(6), [0, 1, 2, 3, 4, 0]] = 3.0  # unnormalised rows are renormalised
    only = space.sample({"layers": peaked}, 500, seed=0)
    assert only.archs.tolist() == [[0, 1, 2, 3, 4, 0]] and only.counts.tolist() == [500]


def test_score_is_eq9_on_the_layer_table(space):
    table = np.tile(np.array([0.1, 0.2, 0.3, 0.25, 0.15]), (6, 1))
    rows = np.array([[0] * 6, [2] * 6, [0, 1, 2, 3, 4, 2]])
    assert np.allclose(space.score(rows, {"layers": table}), [0.6, 1.8, 0.1 + 0.2 + 0.3 + 0.25 + 0.15 + 0.3])
    assert np.allclose(space.score(rows[:1], {"layers": table}, log=True), [6 * np.log(0.1)])
    with pytest.raises(ValueError, match=r"has shape \(6, 4\): the space has 6 layers x 5 choices"):
        space.score(rows, {"layers": table[:, :4]})
    with pytest.raises(ValueError, match="needs 'layers'"):
        space.sample({"probs": table}, 10, seed=0)
    with pytest.raises(ValueError, match="layer 2"):
        space.sample({"layers": np.where(np.arange(6)[:, None] == 2, -1.0, table)}, 10, seed=0)


def test_render_and_plot_tables(space, tmp_path):
    path = space.render(space.genotype_at(4321), tmp_path / "g" / "arch.png", title="N*")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(path.parent.iterdir()) == [path]  # written atomically, no temp file left
    fig = space.plot_tables(space.uniform_tables(), title="uniform")
    assert fig is not None and len(fig.axes) >= 1
    import matplotlib.pyplot as plt

    plt.close(fig)
