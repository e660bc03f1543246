"""A trained network of any space as a directory anyone can reload:
``state_dict.pt`` (tensors only, loaded with ``weights_only=True``) and
``network.json`` (the space's name, its config, the data shape it was built
for, the genotype and any extra fields). :func:`load_network` rebuilds it
in one call::

    net, space, genotype = load_network("artifacts/retrain/model")
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from nas_core.io import atomic_dir, load_tensors
from nas_core.spaces.base import SearchSpace, make_space

WEIGHTS = "state_dict.pt"
META = "network.json"


def export_network(path: str | Path, space_name: str, space_config: Mapping[str, Any],
                   input_shape: tuple[int, ...], num_classes: int, genotype: Mapping[str, Any],
                   state_dict: Mapping[str, torch.Tensor], extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``path/`` atomically (see the module docstring)."""
    path = Path(path)
    meta = {"space": space_name, "config": dict(space_config), "input_shape": list(input_shape),
            "num_classes": int(num_classes), "genotype": dict(genotype), "extra": dict(extra or {})}
    with atomic_dir(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp / WEIGHTS)
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_network(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, SearchSpace, Any]:
    """(network in eval mode on ``device``, its space, its genotype)."""
    path = Path(path)
    for f in (path / META, path / WEIGHTS):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing; an exported network is a directory with {META} and {WEIGHTS} "
                                    "(written by export_network)")
    meta = json.loads((path / META).read_text())
    space = make_space(meta["space"], meta["config"], tuple(meta["input_shape"]), meta["num_classes"])
    genotype = space.genotype_from_dict(meta["genotype"])
    net = space.build_network(genotype)
    net.load_state_dict(load_tensors(path / WEIGHTS, map_location="cpu"))
    return net.to(device).eval(), space, genotype
