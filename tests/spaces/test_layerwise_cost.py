"""Layer-wise cost: analytic FLOPs/params per op and per network equal
torch's counters; the latency lookup table is measured per (layer, op),
versioned as JSON and refused for another space."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nas_core.cost import module_cost
from nas_core.spaces import make_space
from nas_core.spaces.layerwise import (
    OPS,
    LatencyTable,
    LayerSpec,
    LayerwiseGenotype,
    LayerwiseSpace,
    flops_latency_table,
    genotype_cost,
    measure_latency_table,
    op_cost,
)
from tests.train.one_thread import one_thread  # noqa: F401

SPACE = make_space("layerwise", {"preset": "digits"}, (1, 8, 8), 10)
# (in, out, stride, input size): keeps shape / halves / changes channels / both
LAYER_CASES = [(8, 8, 1, 6), (8, 16, 2, 7), (8, 12, 1, 5), (12, 8, 2, 4)]


def one_layer_space(cin: int, cout: int, stride: int, size: int) -> LayerwiseSpace:
    return LayerwiseSpace(preset="test", input_shape=(cin, size, size), num_classes=2, stem_channels=cin,
                          layers=(LayerSpec(cin, cout, stride),), head_channels=8)


def ops(name: str, n: int = 6) -> LayerwiseGenotype:
    return LayerwiseGenotype("layerwise", "digits", (name,) * n)


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: "in{}-out{}-s{}-hw{}".format(*c))
@pytest.mark.parametrize("name", OPS.names())
def test_op_flops_and_params_match_the_counters(name: str, case: tuple[int, int, int, int]) -> None:
    cin, cout, stride, size = case
    cost = op_cost(one_layer_space(*case), 0, name)
    # module_cost halves FlopCounterMode's 2 FLOPs per multiply-add
    assert {"flops": cost.flops, "params": cost.params} == module_cost(OPS.get(name)(cin, cout, stride),
                                                                         (cin, size, size))


@pytest.fixture(scope="module")
def table() -> LatencyTable:
    return measure_latency_table(SPACE, torch.device("cpu"), repeats=2, number=2)


def test_measured_table_covers_every_layer_and_op(table: LatencyTable) -> None:
    assert table.ms.shape == (SPACE.num_layers, SPACE.num_ops)
    assert np.isfinite(table.ms).all() and (table.ms > 0).all() and table.fixed_ms > 0
    assert table.device == "cpu" and table.op_names == SPACE.op_names and table.space == "layerwise"


def test_measuring_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    measure_latency_table(SPACE, "cpu", repeats=1, number=1)
    assert torch.equal(torch.rand(3), expected)


def test_json_round_trip_and_lookups(table: LatencyTable, tmp_path: Path) -> None:
    table.save(tmp_path / "latency.json")
    again = LatencyTable.load(tmp_path / "latency.json")
    assert np.array_equal(again.ms, table.ms) and again.fixed_ms == table.fixed_ms
    assert again == table and again.digest() == table.digest() and hash(again) == hash(table)
    skip = SPACE.op_names.index("skip")
    assert again.genotype_ms(ops("skip")) == pytest.approx(table.fixed_ms + table.ms[:, skip].sum())
    uniform = np.full(table.ms.shape, 1 / SPACE.num_ops)
    assert again.expected_ms(uniform) == pytest.approx(table.ms.sum() / SPACE.num_ops)


def test_a_table_for_another_space_is_refused(table: LatencyTable, tmp_path: Path) -> None:
    other = make_space("layerwise", {"preset": "mnist"}, (1, 28, 28), 10)
    with pytest.raises(ValueError, match="latency table is for"):
        table.check(other)
    with pytest.raises(ValueError, match="latency table is for"):
        other.with_latency(table)
    (tmp_path / "bad.json").write_text('{"ms": [[1, 2]]}')
    with pytest.raises(ValueError, match="bad.json: not a valid latency table"):
        LatencyTable.load(tmp_path / "bad.json")


def test_bigger_blocks_cost_more() -> None:
    assert op_cost(SPACE, 2, "k5_e6").flops > op_cost(SPACE, 2, "k3_e6").flops > op_cost(SPACE, 2, "k3_e1").flops
    assert op_cost(SPACE, 0, "skip").flops == 0 and op_cost(SPACE, 1, "skip").flops > 0  # layer 1 strides
    small, large = genotype_cost(SPACE, ops("k3_e1")), genotype_cost(SPACE, ops("k5_e6"))
    assert large.flops > small.flops and large.params > small.params
    analytic = flops_latency_table(SPACE)
    assert analytic.ms[2, SPACE.op_names.index("k5_e6")] > analytic.ms[2, SPACE.op_names.index("k3_e1")]
