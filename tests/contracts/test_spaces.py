"""The SearchSpace contract, run on every registered space (timm's
tests/test_models.py style): a space is tested the moment it is registered.
Each space is built from its default config for 8x8 grey images, 10
classes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nas_core.spaces import SPACES, GenotypeError, make_space
from tests.train.one_thread import one_thread  # noqa: F401  (tiny models: one torch thread)

SHAPE, CLASSES = (1, 8, 8), 10


@pytest.fixture(scope="module", params=SPACES.names())
def space(request):
    return make_space(request.param, None, SHAPE, CLASSES)


def genotypes(space, n=5, seed=0):
    rng = np.random.default_rng(seed)
    return [space.random(rng) for _ in range(n)]


def test_genotype_round_trips_through_json_and_carries_the_space_name(space):
    for g in genotypes(space):
        data = json.loads(json.dumps(g.to_dict()))
        assert data["space"] == space.name
        back = space.genotype_from_dict(data)
        assert back == g and hash(back) == hash(g)
        assert str(g) and space.label(g)


def test_a_genotype_of_another_space_is_refused(space):
    with pytest.raises(GenotypeError):
        space.genotype_from_dict({**genotypes(space, 1)[0].to_dict(), "space": "no-such-space"})
    with pytest.raises(GenotypeError):
        space.genotype_from_dict({"space": space.name})


def test_encode_is_fixed_length_within_bounds_and_decodes_back(space):
    bounds = space.encoding_bounds()
    assert bounds.shape == (space.encoding_length,) and (bounds >= 1).all()
    for g in genotypes(space, 20):
        row = space.encode(g)
        assert row.shape == (space.encoding_length,) and row.dtype == np.int64
        assert ((row >= 0) & (row < bounds)).all()
        assert space.decode(row) == g


def test_mutate_changes_one_decision_and_stays_valid(space):
    rng = np.random.default_rng(1)
    for g in genotypes(space, 20):
        child = space.mutate(g, rng)
        assert child != g
        space.genotype_from_dict(child.to_dict())
        changed = np.count_nonzero(space.encode(child) != space.encode(g))
        # one op, or one input: a cell node's (input, op) pairs are stored sorted by input, so a new
        # input can move its pair to the other slot (4 entries); a layer-wise op is 1 entry
        assert 1 <= changed <= 4


def test_random_is_reproducible_and_varied(space):
    first, again = genotypes(space, 10, seed=3), genotypes(space, 10, seed=3)
    assert first == again and len({space.encode(g).tobytes() for g in first}) > 1


def test_build_network_runs_forward_and_cost_matches_it(space):
    g = genotypes(space, 1)[0]
    torch.manual_seed(0)
    net = space.build_network(g).eval()
    with torch.no_grad():
        out = net(torch.randn(2, *SHAPE))
    assert out.shape == (2, CLASSES)
    cost = space.cost(g)  # an auxiliary head trains only: it is not part of the cost
    inference = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("auxiliary."))
    assert cost["flops"] > 0 and cost["params"] == inference
    assert cost["latency_ms"] is None or cost["latency_ms"] > 0


def test_render_writes_a_picture(space, tmp_path):
    path = space.render(genotypes(space, 1)[0], tmp_path / "g.png", title="contract")
    assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"


def test_sampling_from_tables_is_deterministic_and_scored(space):
    tables = space.uniform_tables()
    a = space.sample(tables, 60, seed=5)
    b = space.sample(tables, 60, seed=5)
    assert np.array_equal(a.archs, b.archs) and np.array_equal(a.counts, b.counts)
    assert a.num_drawn == 60 and a.archs.shape[1] == space.encoding_length
    assert len({r.tobytes() for r in a.archs}) == a.num_unique  # unique rows
    for row in a.archs[:5]:
        space.decode(row)
    scores = space.score(a.archs, tables)
    assert scores.shape == (a.num_unique,) and np.isfinite(scores).all()
    assert np.allclose(scores, scores[0])  # uniform tables: every architecture scores the same
