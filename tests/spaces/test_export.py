"""A trained network of any space reloads in one call from its exported
directory (nas_core.spaces.export), with the same outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nas_core.spaces import SPACES, make_space
from nas_core.spaces.export import export_network, load_network
from tests.train.one_thread import one_thread  # noqa: F401  (tiny models: one torch thread)


@pytest.mark.parametrize("name", SPACES.names())
def test_exported_network_reloads_with_the_same_outputs(name, tmp_path):
    config = SPACES.get(name).Config()
    space = make_space(name, config, (1, 8, 8), 10)
    genotype = space.random(np.random.default_rng(0))
    torch.manual_seed(0)
    net = space.build_network(genotype).eval()
    export_network(tmp_path / "model", name, config.model_dump(mode="json"), (1, 8, 8), 10, genotype.to_dict(),
                   net.state_dict(), extra={"val_acc": 0.5})
    loaded, loaded_space, loaded_genotype = load_network(tmp_path / "model")
    x = torch.randn(2, 1, 8, 8)
    assert loaded_genotype == genotype and loaded_space.name == name
    assert torch.equal(loaded(x), net(x))


def test_a_missing_export_names_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="network.json"):
        load_network(tmp_path / "missing")
