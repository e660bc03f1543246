"""Hierarchical space (Liu et al. 2018; nas-survey.md Fig. 4): the paper's
levels and mutation, encodings, genotype files, networks on digits- and
CIFAR-shaped input, DC-NAS tables."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from nas_core.spaces import SPACES, GenotypeError, make_space
from nas_core.spaces.hierarchical import PRIMITIVES, HierarchicalSpace
from nas_core.spaces.hierarchical.genotype import dag_edges
from tests.train.one_thread import one_thread  # noqa: F401  (tiny models: one torch thread)

TINY = {"init_channels": 4, "init_mutations": 200}


@pytest.fixture(scope="module")
def space() -> HierarchicalSpace:
    return make_space("hierarchical", TINY, (1, 8, 8), 10)


def dag_of_token(space: HierarchicalSpace, token: int) -> int:
    """0..num_motifs-1 for a motif's edge, num_motifs for a cell edge."""
    return min(token // space.motif_edges, space.num_motifs)


def test_registered_with_the_paper_levels():
    space = make_space("hierarchical", None, (1, 8, 8), 10)
    assert SPACES.get("hierarchical") is HierarchicalSpace
    assert (space.num_motifs, space.motif_nodes, space.cell_nodes) == (6, 4, 5)
    assert set(PRIMITIVES) == {"none", "identity", "conv_1x1", "dw_conv_3x3", "sep_conv_3x3", "max_pool_3x3",
                               "avg_pool_3x3"}
    assert space.encoding_length == 6 * 6 + 10  # 6 motifs of 6 edges, a cell of 10 edges
    assert space.encoding_bounds().tolist() == [7] * 36 + [8] * 10  # primitives+none; motifs+identity+none


def test_mutation_changes_exactly_one_edge_at_one_level_and_keeps_every_node_fed(space):
    rng = np.random.default_rng(0)
    genotype, levels = space.random(rng), set()
    for _ in range(300):
        child = space.mutate(genotype, rng)
        changed = np.flatnonzero(space.encode(child) != space.encode(genotype))
        assert len(changed) == 1
        levels.add("cell" if dag_of_token(space, int(changed[0])) == space.num_motifs else "motif")
        space.genotype_from_dict(json.loads(child.to_json()))  # valid: every node keeps an input
        genotype = child
    assert levels == {"motif", "cell"}


def test_a_sole_input_edge_is_never_mutated_to_none(space):
    trivial = space.trivial()  # chains of identity: every edge is its node's only input
    rng = np.random.default_rng(1)
    for _ in range(200):
        child = space.mutate(trivial, rng)
        token = int(np.flatnonzero(space.encode(child) != space.encode(trivial))[0])
        assert space.encode(child)[token] != 0  # not none


def test_random_is_the_trivial_genotype_after_the_configured_mutations(space):
    none = make_space("hierarchical", {**TINY, "init_mutations": 0}, (1, 8, 8), 10)
    assert none.random(np.random.default_rng(0)) == none.trivial()
    a, b = space.random(np.random.default_rng(7)), space.random(np.random.default_rng(7))
    assert a == b and a != space.trivial() and a != space.random(np.random.default_rng(8))


def test_encode_decode_round_trip_and_an_input_less_node_is_refused(space):
    rng = np.random.default_rng(2)
    for _ in range(10):
        g = space.random(rng)
        assert space.decode(space.encode(g)) == g
    row = space.encode(space.trivial())
    row[0] = 0  # motif_1 edge 0->1 set to none: node 1 of motif_1 has no input left
    with pytest.raises(GenotypeError, match="motif_1: node 1 has no incoming edge"):
        space.decode(row)
    with pytest.raises(GenotypeError, match="expected 46 integers"):
        space.decode(row[:-1])


def test_genotype_round_trips_through_its_dict_and_lists_only_present_edges(space):
    g = space.random(np.random.default_rng(3))
    data = json.loads(g.to_json())
    assert data["space"] == "hierarchical" and (data["motif_nodes"], data["cell_nodes"]) == (4, 5)
    assert all(op != "none" for motif in data["motifs"] for _, _, op in motif)
    back = space.genotype_from_dict(data)
    assert back == g and hash(back) == hash(g) and str(back) == str(g)


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["motifs"][0].append([0, 2, "conv_5x5"]), "motif_1, edge 0->2: op 'conv_5x5' is not allowed"),
    (lambda d: d["motifs"][0].append([0, 1, "conv_1x1"]), "motif_1: edge 0->1 is listed twice"),
    (lambda d: d["cell"].append([3, 9, "motif_1"]), "edge 3->9 is outside the DAG"),
    (lambda d: d["cell"].append([0, 2, "motif_7"]), "cell, edge 0->2: op 'motif_7' is not allowed"),
    (lambda d: d.update(cell=[]), "cell: node 1 has no incoming edge"),
    (lambda d: d["motifs"].pop(), "must list 6 motifs"),
    (lambda d: d.update(cell_nodes=4), "cell_nodes = 4, this space has 5"),
    (lambda d: d.update(colour="red"), r"unknown keys \['colour'\]"),
])
def test_a_bad_genotype_dict_is_refused_with_what_is_wrong(space, edit, message):
    data = json.loads(space.trivial().to_json())
    edit(data)
    with pytest.raises(GenotypeError, match=message):
        space.genotype_from_dict(data)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_network_runs_forward_and_its_cost_counts_it(shape):
    space = make_space("hierarchical", TINY, shape, 10)
    g = space.random(np.random.default_rng(4))
    net = space.build_network(g, torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        out = net(torch.randn(2, *shape))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    cost = space.cost(g)
    assert cost["params"] == sum(p.numel() for p in net.parameters()) and cost["flops"] > 0
    assert cost["latency_ms"] is None


def test_identity_chains_build_no_cell_weights_and_unused_motifs_cost_nothing(space):
    trivial = space.trivial()
    skeleton = space.cost(trivial)["params"]  # stem, two reductions, classifier
    row = space.encode(trivial)
    row[space.motif_edges * space.num_motifs - 1] = PRIMITIVES.index("conv_1x1")  # motif_6, edge 2->3: unused
    assert space.cost(space.decode(row))["params"] == skeleton
    row[space.num_motifs * space.motif_edges] = 2 + 5  # cell edge 0->1 now uses motif_6
    assert space.cost(space.decode(row))["params"] > skeleton


def test_samples_from_tables_are_valid_even_when_none_dominates(space):
    tables = space.uniform_tables()
    heavy = tables["layers"].copy()
    heavy[:, 0] = 50.0  # "none" 50x more likely than any op on every edge
    result = space.sample({"layers": heavy}, 300, seed=0)
    assert result.num_drawn == 300
    for row in result.archs:
        space.decode(row)  # raises if a node lost all its inputs
    none_share = (result.archs == 0).mean()
    assert none_share > 0.5  # still mostly none, only conditioned on validity
    scores = space.score(result.archs, {"layers": heavy})
    assert scores.shape == (result.num_unique,)


def test_tables_with_mass_on_a_missing_op_are_refused(space):
    table = space.uniform_tables()["layers"].copy()
    table[0, 7] = 0.5  # motif tokens have 7 ops: column 7 exists only for cell tokens
    with pytest.raises(ValueError, match="row 0 puts probability on columns >= 7"):
        space.sample({"layers": table}, 10, seed=0)


def test_bad_config_names_the_key():
    with pytest.raises(ValidationError, match="cells_per_stage"):
        make_space("hierarchical", {"cells_per_stage": 0}, (1, 8, 8), 10)
    with pytest.raises(ValidationError, match="motif_nodes"):
        make_space("hierarchical", {"motif_nodes": 1}, (1, 8, 8), 10)


def test_table_plot_has_a_panel_per_level(space):
    fig = space.plot_tables(space.uniform_tables())  # the genotype picture is checked by the contract tests
    assert [ax.get_title() for ax in fig.axes[:2]] == ["motif edges", "cell edges"]
    import matplotlib.pyplot as plt  # after the space chose the Agg backend

    plt.close(fig)


def test_dag_edges_are_grouped_by_target():
    assert dag_edges(4) == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


def test_table_sampling_is_the_product_distribution_conditioned_on_validity():
    """Exact check on a space small enough to enumerate: one 3-node motif, a 2-node cell."""
    small = make_space("hierarchical", {"num_motifs": 1, "motif_nodes": 3, "cell_nodes": 2, **TINY}, (1, 8, 8), 10)
    bounds = small.encoding_bounds()
    exists = np.arange(bounds.max()) < bounds[:, None]
    table = np.random.default_rng(0).random((len(bounds), int(bounds.max()))) * exists
    table[:, 0] *= 4  # make "none" frequent, so validity matters
    probs = table / table.sum(1, keepdims=True)
    exact = {}
    for row in itertools.product(*(range(b) for b in bounds)):
        try:
            small.decode(np.array(row))
        except GenotypeError:
            continue
        exact[row] = np.prod([probs[k, v] for k, v in enumerate(row)])
    rows, weights = np.array(list(exact)), np.array(list(exact.values()))
    weights /= weights.sum()
    drawn = small.sample({"layers": table}, 20_000, seed=1)
    assert {tuple(r) for r in drawn.archs.tolist()} <= set(exact)
    share = drawn.counts / drawn.num_drawn
    for token, bound in enumerate(bounds):  # each token's marginal: exact vs drawn (noise ~0.004)
        want = np.bincount(rows[:, token], weights, minlength=bound)
        got = np.bincount(drawn.archs[:, token].astype(int), share, minlength=bound)
        assert np.abs(want - got).max() < 0.015, (token, want, got)
