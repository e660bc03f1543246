"""The DSO-NAS space and its supernet: connection count, analytic FLOPs /
params against torch's FlopCounterMode and MAC against a count of every
layer's maps and weights, the pruned network against the supernet with the
pruned λ at zero, the identity path when everything is pruned, the DC-NAS
path and tables."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nas_core.cost import module_cost
from nas_core.spaces import GenotypeError, make_space
from nas_core.spaces.dso import BlockGraph, DSOBlock
from nas_core.supernet.dso import DSOSupernet, export_network
from tests.train.one_thread import one_thread  # noqa: F401

SHAPE = (1, 8, 8)
TINY = {"levels": 2, "stages": 2, "blocks_per_stage": 2, "init_channels": 4}


def space(scope="share", **kw):
    return make_space("dso", {**TINY, "scope": scope, **kw}, SHAPE, 10)


def genotypes(sp, n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [sp.random(rng) for _ in range(n)] + [sp.complete(), sp.decode(np.zeros(sp.encoding_length, np.int64))]


def counted_mac(net: nn.Module) -> int:
    """Σ over conv, linear and pooling layers of input + output elements +
    parameters, counted by forward hooks on one image."""
    total = [0]
    kinds = (nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)

    def hook(module, inputs, output):
        total[0] += inputs[0][0].numel() + output[0].numel() + sum(p.numel() for p in module.parameters())

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, kinds)]
    with torch.no_grad():
        net.eval()(torch.zeros(1, *SHAPE))
    for h in handles:
        h.remove()
    return total[0]


def test_a_block_has_the_papers_connections():
    graph = BlockGraph(4, ("a", "b", "c", "d"))
    assert graph.num_edges == (16 - 4) * 16 // 2 + 2 * 4 * 4 == 128  # the paper's 124 + N (module docstring)
    assert len(graph.incoming(graph.num_nodes)) == 3 * 4 + 1  # a level-4 op reads (m - 1) N + 1 inputs
    assert graph.labels[0] == "in->1.a"


@pytest.mark.parametrize("scope", ["share", "full"])
def test_cost_matches_flop_counter_and_counted_mac(scope):
    sp = space(scope)
    for g in genotypes(sp):
        net = sp.build_network(g)
        cost, counted = sp.cost(g), module_cost(net, SHAPE)
        assert (cost["flops"], cost["params"]) == (counted["flops"], counted["params"])
        assert cost["mac"] == counted_mac(net)


def test_pruning_lowers_the_cost():
    sp = space("full")
    full, empty = sp.cost(sp.complete()), sp.cost(genotypes(sp)[-1])
    some = sp.cost(genotypes(sp)[0])
    for key in ("flops", "mac", "params"):
        assert empty[key] < some[key] < full[key]


def random_supernet(sp, seed=0) -> DSOSupernet:
    """A supernet with λ and BatchNorm statistics away from their initial values."""
    torch.manual_seed(seed)
    net = DSOSupernet(sp)
    with torch.no_grad():
        net.lam.uniform_(0.2, 2.0)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    return net.eval()


@pytest.mark.parametrize("scope", ["share", "full"])
def test_pruned_network_equals_supernet_with_pruned_lambda_zero(scope):
    sp = space(scope)
    x = torch.randn(3, *SHAPE)
    for g in genotypes(sp, 3, seed=4)[:3]:
        supernet = random_supernet(sp)
        with torch.no_grad():
            supernet.alive.copy_(torch.from_numpy(g.masks()))  # the search pruned these ...
            supernet.lam.mul_(supernet.alive)                   # ... and their λ are 0
            expected = supernet(x)
            got = export_network(supernet, g).eval()(x)
            assert sp.build_network(g).state_dict().keys() == export_network(supernet, g).state_dict().keys()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(expected, random_supernet(sp)(x))  # pruning changed the function


def test_everything_pruned_leaves_identity_blocks_and_a_valid_network():
    sp = space("full")
    empty = genotypes(sp)[-1]
    net = sp.build_network(empty).eval()
    blocks = [c for c in net.cells if isinstance(c, DSOBlock)]
    assert blocks and all(len(b.ops) == 0 and b.reduce is None for b in blocks)
    x = torch.randn(2, *SHAPE)
    h = net.stem(x)
    assert torch.equal(blocks[0](h, net.edge_scales[0], net.used[0]), h)
    assert net(x).shape == (2, 10) and torch.isfinite(net(x)).all()


def test_isolated_nodes_are_not_built_or_counted():
    sp = space("share")
    graph = sp.graph
    # node "1.sep_conv_3x3" reads the input but reaches nothing: isolated
    dangling = sp.genotype_from_masks(np.isin(graph.labels, ["in->1.sep_conv_3x3", "in->1.sep_conv_5x5",
                                                             "1.sep_conv_5x5->out"]))
    alone = sp.genotype_from_masks(np.isin(graph.labels, ["in->1.sep_conv_5x5", "1.sep_conv_5x5->out"]))
    assert dangling != alone and sp.cost(dangling) == sp.cost(alone)
    assert list(sp.build_network(dangling).cells[0].ops) == ["2"]  # node 2 = 1.sep_conv_5x5 only


def test_genotype_errors_name_the_problem():
    sp = space("share")
    data = sp.complete().to_dict()
    with pytest.raises(GenotypeError, match="in->9.max_pool"):
        sp.genotype_from_dict({**data, "kept": [["in->9.max_pool_3x3"]]})
    with pytest.raises(GenotypeError, match="scope"):
        space("full").genotype_from_dict(data)
    with pytest.raises(GenotypeError, match="0..1"):
        sp.decode(np.full(sp.encoding_length, 2))


def test_bad_config_names_the_key():
    with pytest.raises(ValueError, match="spaces.dso.ops"):
        space(ops=["sep_conv_3x3", "conv_9x9"])


@pytest.mark.parametrize("scope", ["share", "full"])
def test_path_steps_run_the_sub_network_of_a_row(scope):
    sp = space(scope)
    supernet = random_supernet(sp, seed=1)
    with torch.no_grad():
        supernet.alive[..., ::5] = False  # some connections already pruned by the search
    row = sp.encode(genotypes(sp, 1, seed=2)[0])
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        state = supernet.path_begin(x)
        for depth in range(supernet.path_depth()):
            state, _ = supernet.path_step(depth, state, row)
        expected = supernet.forward_kept(x, row.reshape(supernet.alive.shape).astype(bool) & supernet.kept())
        torch.testing.assert_close(supernet.head(state), expected)
    prefixes = [supernet.path_prefix(d) for d in range(supernet.path_depth())]
    assert prefixes == sorted(prefixes) and prefixes[-1] == sp.encoding_length
    names = supernet.path_parameter_names(0, row)
    assert set(names) <= set(supernet.state_dict()) and "lam" not in names
    with pytest.raises(ValueError, match="0 or 1"):
        supernet.check_rows(np.full((1, sp.encoding_length), 3))


def test_tables_from_lambda_never_draw_pruned_connections():
    sp = space("full")
    lam = np.random.default_rng(0).uniform(0, 2, sp.encoding_length)
    lam[::3] = 0.0
    tables = sp.tables_from_lambda(lam)
    keep = tables["connections"][:, 1]
    assert keep[::3].max() == 0.0 and np.isclose(keep.reshape(sp.num_structures, -1).max(1), 1.0).all()
    draws = sp.sample(tables, 50, seed=0)
    assert draws.archs[:, ::3].max() == 0
    assert np.isfinite(sp.score(draws.archs, tables)).all()


def test_width_for_budget_meets_the_budget_with_the_widest_network():
    sp = space("share")
    g = genotypes(sp)[0]
    budget = 0.5 * sp.cost(g)["flops"]
    width = sp.width_for_budget(g, "flops", budget)
    assert sp.cost(g, width)["flops"] <= budget < sp.cost(g, width + 1 / sp.init_channels)["flops"]


def test_a_final_budget_scales_every_network_to_it():
    """The paper's last step: the complete network and a pruned one (and a
    random one with as many connections) are widened or narrowed to the
    same FLOPs budget."""
    budget = 40_000
    sp = space("share", final_budget=budget)
    sparse = genotypes(sp, 1, seed=5)[0]
    rand = sp.random_like(sparse, np.random.default_rng(0))
    assert rand.num_kept == sparse.num_kept and rand != sparse
    for g in (sp.complete(), sparse, rand):
        flops, wider = sp.cost(g)["flops"], sp.cost(g, sp.final_width(g) + 1 / sp.init_channels)["flops"]
        assert flops <= budget < wider  # the widest network within the budget
        assert module_cost(sp.build_network(g), SHAPE)["flops"] == flops
    assert sp.final_width(sp.complete()) < sp.final_width(sparse)
    with pytest.raises(ValueError, match="spaces.dso.final_budget"):
        space("share", final_budget=10).build_network(sparse)
