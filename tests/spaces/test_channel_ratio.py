"""Channel-ratio space (dc-nas.md §4.1): 5^6 genotypes, round-trips, cost."""
from __future__ import annotations

import pytest
import torch

from nas_core.spaces.channel_ratio import ChannelRatioGenotype, ChannelRatioSpace


@pytest.fixture(scope="module")
def space() -> ChannelRatioSpace:
    return ChannelRatioSpace()


def test_enumerates_all_distinct_genotypes(space):
    genotypes = list(space.enumerate())
    assert len(genotypes) == space.size() == 5 ** 6 == 15625
    assert len(set(genotypes)) == 15625
    assert all(space.index_of(g) == i for i, g in enumerate(genotypes[:500]))
    assert space.genotype_at(15624) == genotypes[-1]


def test_genotype_round_trips_through_json(space):
    genotype = space.genotype_at(4321)
    assert ChannelRatioGenotype.from_json(genotype.to_json()) == genotype
    assert str(genotype).count(",") == 5
    with pytest.raises(ValueError, match="6 ratios"):
        ChannelRatioGenotype((1.0, 2.0))


def test_flops_and_params_grow_with_every_ratio(space):
    base = [1.0] * 6
    for layer in range(6):
        costs = []
        for ratio in space.ratios:
            ratios = list(base)
            ratios[layer] = ratio
            costs.append(space.cost(ChannelRatioGenotype(tuple(ratios)), (1, 8, 8), 10))
        flops = [c["flops"] for c in costs]
        params = [c["params"] for c in costs]
        assert flops == sorted(flops) and len(set(flops)) == len(flops), f"layer {layer}: {flops}"
        assert params == sorted(params) and len(set(params)) == len(params), f"layer {layer}: {params}"
    smallest = space.cost(ChannelRatioGenotype((0.25,) * 6), (1, 8, 8), 10)["flops"]
    largest = space.cost(ChannelRatioGenotype((4.0,) * 6), (1, 8, 8), 10)["flops"]
    assert largest > 100 * smallest


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_built_network_matches_analytic_params_and_runs(space, shape):
    genotype = space.genotype_at(777)
    model = space.build(genotype, shape[0], 10, torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in model.parameters()) == space.cost(genotype, shape, 10)["params"]
    outputs, logits = model.forward_layers(torch.randn(2, *shape))
    assert logits.shape == (2, 10) and len(outputs) == 6
    assert [o.shape[1] for o in outputs] == space.widths(genotype)


def test_seeded_build_is_reproducible(space):
    genotype = space.genotype_at(42)
    a = space.build(genotype, 1, 10, torch.Generator().manual_seed(3))
    b = space.build(genotype, 1, 10, torch.Generator().manual_seed(3))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_sample_is_distinct_and_seeded(space):
    draw = space.sample(100, seed=1)
    assert len(set(draw)) == 100 and draw == space.sample(100, seed=1) and draw != space.sample(100, seed=2)
    with pytest.raises(ValueError, match="cannot sample"):
        space.sample(20000, seed=0)


def test_bad_space_is_named():
    with pytest.raises(ValueError, match="distinct and positive"):
        ChannelRatioSpace(ratios=(1.0, 1.0))
    with pytest.raises(ValueError, match="outside"):
        ChannelRatioSpace().index_of(ChannelRatioGenotype((3.0,) * 6))


def test_registered_by_name():
    from nas_core.spaces import SPACES

    space = SPACES.get("channel_ratio")("mnist", (1, 28, 28), 10)
    assert isinstance(space, ChannelRatioSpace) and space.size() == 15625
    with pytest.raises(ValueError, match="allowed digits"):
        SPACES.get("channel_ratio")("imagenet", (3, 224, 224), 1000)
