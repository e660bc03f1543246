"""Latency lookup table: measured per (layer, op), versioned as JSON."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nas_core.cost import LatencyTable, flops_latency_table, genotype_cost, measure_latency_table, op_cost
from nas_core.spaces import Genotype, make_space

SPACE = make_space("fbnet", "digits", (1, 8, 8), 10)


@pytest.fixture(scope="module")
def table() -> LatencyTable:
    return measure_latency_table(SPACE, torch.device("cpu"), repeats=2, number=2)


def test_measured_table_covers_every_layer_and_op(table: LatencyTable) -> None:
    assert table.ms.shape == (SPACE.num_layers, SPACE.num_ops)
    assert np.isfinite(table.ms).all() and (table.ms > 0).all() and table.fixed_ms > 0
    assert table.device == "cpu" and table.op_names == SPACE.op_names


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
    genotype = Genotype("fbnet", "digits", ("skip",) * SPACE.num_layers)
    skip = SPACE.op_names.index("skip")
    assert again.genotype_ms(genotype) == pytest.approx(table.fixed_ms + table.ms[:, skip].sum())
    uniform = np.full(table.ms.shape, 1 / SPACE.num_ops)
    assert again.expected_ms(uniform) == pytest.approx(table.ms.sum() / SPACE.num_ops)


def test_a_table_for_another_space_is_refused(table: LatencyTable, tmp_path: Path) -> None:
    other = make_space("fbnet", "mnist", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="latency table is for"):
        table.check(other)
    (tmp_path / "bad.json").write_text('{"ms": [[1, 2]]}')
    with pytest.raises(ValueError, match="bad.json: not a valid latency table"):
        LatencyTable.load(tmp_path / "bad.json")


def test_bigger_blocks_cost_more() -> None:
    assert op_cost(SPACE, 2, "k5_e6").flops > op_cost(SPACE, 2, "k3_e6").flops > op_cost(SPACE, 2, "k3_e1").flops
    assert op_cost(SPACE, 0, "skip").flops == 0 and op_cost(SPACE, 1, "skip").flops > 0  # layer 1 strides
    small = genotype_cost(SPACE, Genotype("fbnet", "digits", ("k3_e1",) * 6))
    large = genotype_cost(SPACE, Genotype("fbnet", "digits", ("k5_e6",) * 6))
    assert large.flops > small.flops and large.params > small.params
    analytic = flops_latency_table(SPACE)
    assert analytic.ms[2, SPACE.op_names.index("k5_e6")] > analytic.ms[2, SPACE.op_names.index("k3_e1")]
