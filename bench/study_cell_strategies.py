"""DARTS vs StacNAS vs DNAS-CAM (and DNAS-CAM's IAM / full ablation) at
the same search budget: skip-connects of the derived genotype, test
accuracy of that genotype trained from scratch, search wall time; mean ±
std over seeds, per dataset (issue 14's closing comparison).

What is run, per dataset and seed, with the repo's own code:
- data: the source (``digits``: the embedded set; ``mnist``: the IDX files
  of ../shared/datasets/mnist-t10k, 10,000 28x28 images, so a test split is
  held out of them) split by the subset stage's code (nas_core.data:
  ``make_splits`` / ``write_splits`` / ``load_splits``, normalised with the
  training split's statistics) with seed 0 for every run: the seeds vary
  the searches and trainings, not the data;
- search: ``create_strategy`` with the strategy's params.yaml section
  (the digits scale) except what the budget fixes, ``strategy.run`` on D~
  (``subset_fraction`` of D) split by ``weight_fraction`` as the pretrain
  stage splits it (tasks.nas.search_data);
- the same budget for all: the same proxy (``cells`` cells,
  ``init_channels`` wide, batch ``batch_size``) and the same number of
  search epochs over the data, ``epochs`` in total: DARTS and DNAS-CAM run
  ``epochs`` epochs, StacNAS ``epochs / 3`` per phase (clustering, stage 1,
  stage 2, each on the same proxy; the paper's stage 2 is deeper); no
  warm-up;
- the final network: the space's (``cells`` cells, DNAS-CAM's global
  genotype being searched at its final depth, so the cell space's
  ``final_cells`` is set to the same ``cells``; ``final_channels`` wide;
  the space's training recipe from params.yaml: auxiliary head, drop path,
  gradient clip), trained from scratch by nas_core.train.fit with the
  retrain stage's optimiser settings for ``train_epochs`` epochs on D
  (MNIST: ``train_fraction`` of it, stratified; its per-epoch validation
  on ``val_fraction`` of the validation split), test accuracy on the whole
  test split;
- skip-connects: per normal cell and per reduction cell of the derived
  genotype (DNAS-CAM's global genotype: the mean over its cells of that
  kind).

One torch thread (``BENCH_THREADS``), device ``BENCH_DEVICE`` (default
cpu). The rows are means with their sample standard deviation (``_sd``;
0 for one seed); every run is in the JSON's ``runs``.

Usage: python bench/study_cell_strategies.py [--quick] [--datasets digits mnist] [--seeds 0 1 2]
       python bench/study_cell_strategies.py --merge A.json B.json ...
(--quick: one seed, digits only, a tiny budget; --datasets / --seeds run a
part, e.g. one dataset per process on two cores; --merge puts the runs of
such parts (same setting) back into one table, written under the first
file's name. ``BENCH_MNIST_ROOT`` overrides where the MNIST files are.)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MNIST_ROOT = Path(os.environ.get("BENCH_MNIST_ROOT", REPO.parent / "shared" / "datasets" / "mnist-t10k"))


@dataclass(frozen=True)
class Method:
    label: str
    strategy: str
    space: str
    overrides: dict = field(default_factory=dict)


METHODS = [Method("darts", "darts", "cell"), Method("stacnas", "stacnas", "cell"),
           Method("dnas_cam", "dnas_cam", "global_cell", {"parameterisation": "cam"}),
           Method("dnas_cam_iam", "dnas_cam", "global_cell", {"parameterisation": "iam"}),
           Method("dnas_cam_full", "dnas_cam", "global_cell", {"parameterisation": "full"})]
DATASETS = {"digits": {"source": "digits", "root": str(REPO / "data"), "subset_fraction": 0.5,
                       "train_fraction": 1.0, "val_fraction": 1.0},
            "mnist": {"source": "mnist", "root": str(MNIST_ROOT), "subset_fraction": 0.05,
                      "train_fraction": 0.1, "val_fraction": 0.25}}
FULL = {"seeds": [0, 1, 2], "datasets": ["digits", "mnist"], "epochs": 6, "cells": 5, "init_channels": 8,
        "batch_size": 32, "final_channels": 16, "train_epochs": 10}
QUICK = {"seeds": [0], "datasets": ["digits"], "epochs": 3, "cells": 3, "init_channels": 4, "batch_size": 32,
         "final_channels": 8, "train_epochs": 2, "subset_fraction": 0.25}
METRICS = ("skip_normal", "skip_reduce", "test_acc", "search_s", "train_s")


def strategy_section(params: Any, method: Method, setting: dict) -> dict:
    """``strategies.<name>`` of params.yaml with the budget's proxy and
    epochs (module docstring)."""
    section = getattr(params.strategies, method.strategy).model_dump()
    section.update(init_channels=setting["init_channels"], batch_size=setting["batch_size"], warmup_epochs=0,
                   **method.overrides)
    cells, epochs = setting["cells"], setting["epochs"]
    if epochs % 3:
        raise ValueError(f"epochs = {epochs}: must be a multiple of 3 (StacNAS runs epochs / 3 per phase)")
    if method.strategy == "stacnas":
        section.update(epochs=epochs // 3, cluster_cells=cells, stage1_cells=cells, stage2_cells=cells)
    else:
        section["epochs"] = epochs
        if "cells" in section:
            section["cells"] = cells
    return section


def space_section(params: Any, method: Method, setting: dict) -> dict:
    """``spaces.<space>`` of params.yaml, final network ``cells`` deep and
    ``final_channels`` wide."""
    section = getattr(params.spaces, method.space).model_dump()
    section["final_channels"] = setting["final_channels"]
    section["cells" if method.space == "global_cell" else "final_cells"] = setting["cells"]
    return section


def prepare(name: str, setting: dict, params: Any, workdir: Path) -> tuple[Any, dict]:
    """(source, splits) of dataset ``name``, split by the subset stage's code."""
    from nas_core.config import DataConfig, SubsetConfig
    from nas_core.data import load_source, load_splits, make_splits, write_splits

    spec = DATASETS[name]
    data = DataConfig(source=spec["source"], root=spec["root"])
    fraction = setting.get("subset_fraction", spec["subset_fraction"])
    subset = SubsetConfig(fraction=fraction, val_fraction=params.subset.val_fraction, probe_size=16)
    source = load_source(data, workdir)
    splits = make_splits(source.train_targets, source.test_targets, data, subset, seed=0)
    write_splits(splits, source, workdir / name, seed=0)
    return load_splits(data, workdir, workdir / name)


def search_data(strategy: Any, source: Any, splits: dict, seed: int) -> Any:
    """The strategy's loaders over D~ split by its ``weight_fraction``,
    without the validation pass after each epoch (it only reports, and on
    MNIST it would cost more than the search)."""
    import dataclasses

    from torch.utils.data import Subset

    from nas_core.data import weight_split

    train_w, train_a = weight_split(source.train_targets, splits["subset"].indices, strategy.config.weight_fraction,
                                    seed, f"strategies.{strategy.name}.weight_fraction")
    data = strategy.search_data(Subset(source.train, train_w.tolist()), Subset(source.train, train_a.tolist()),
                                splits["val"])
    return dataclasses.replace(data, val=None)


def skips(genotype: Any, cells: int) -> tuple[float, float]:
    """Skip-connects per normal and per reduction cell."""
    from nas_core.spaces.cell import SKIP

    if not hasattr(genotype, "cells"):
        return float(genotype.count(SKIP, "normal")), float(genotype.count(SKIP, "reduce"))
    kinds = [genotype.kind(k) for k in range(genotype.num_cells)]
    return tuple(genotype.count(SKIP, kind) / max(1, kinds.count(kind)) for kind in ("normal", "reduce"))


def part(source: Any, split: Any, fraction: float, key: str) -> Any:
    """A stratified ``fraction`` of a split of the training pool (seed 0)."""
    from torch.utils.data import Subset

    from nas_core.data.subset import stratified_fraction

    if fraction >= 1.0:
        return split
    kept = stratified_fraction(source.train_targets, np.asarray(split.indices), fraction, 0, key)
    return Subset(source.train, kept.tolist())


def one_run(method: Method, dataset: str, seed: int, setting: dict, params: Any, prepared: tuple[Any, dict],
            device: Any) -> dict:
    """Search, derive, train from scratch; one row of ``runs``."""
    from nas_core.runtime import seed_everything
    from nas_core.spaces import make_space
    from nas_core.strategies import create_strategy
    from nas_core.train.fit import FitSettings, fit, seeded

    source, splits = prepared
    space = make_space(method.space, space_section(params, method, setting), source.input_shape, source.num_classes)
    seed_everything(seed)
    strategy = create_strategy(method.strategy, space, strategy_section(params, method, setting), device, seed)
    start = time.perf_counter()
    result = strategy.run(search_data(strategy, source, splits, seed))
    search_s = time.perf_counter() - start
    r = params.retrain
    settings = FitSettings(epochs=setting["train_epochs"], batch_size=r.batch_size, lr=r.lr, momentum=r.momentum,
                           weight_decay=r.weight_decay, augment=r.augment, seed=seed, **space.training_recipe())
    with seeded(seed):
        network = space.build_network(result.genotype)
    spec = DATASETS[dataset]
    trained = fit(network, part(source, splits["full_train"], spec["train_fraction"], "train_fraction"),
                  part(source, splits["val"], spec["val_fraction"], "val_fraction"), settings, device,
                  test_set=splits["test"], dataset=source.name)
    normal, reduce = skips(result.genotype, setting["cells"])
    return {"dataset": dataset, "strategy": method.label, "seed": seed, "skip_normal": normal,
            "skip_reduce": reduce, "test_acc": trained.test_acc, "val_acc": trained.val_acc, "search_s": search_s,
            "train_s": trained.seconds, "genotype": space.label(result.genotype)}


def summarise(runs: list[dict]) -> list[dict]:
    """Mean and sample standard deviation per (dataset, strategy)."""
    rows = []
    for key in dict.fromkeys((r["dataset"], r["strategy"]) for r in runs):
        group = [r for r in runs if (r["dataset"], r["strategy"]) == key]
        row = {"dataset": key[0], "strategy": key[1], "seeds": len(group)}
        for metric in METRICS:
            values = np.array([r[metric] for r in group], dtype=float)
            row[metric] = float(values.mean())
            row[f"{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def run(quick: bool = False, datasets: list[str] | None = None, seeds: list[int] | None = None) -> dict:
    """The comparison (module docstring); ``datasets`` / ``seeds`` run a part
    of it (e.g. one dataset per process on two cores), written to
    ``cell_strategies_<datasets>.json``."""
    import torch

    from nas_core.config import load_params

    setting = dict(QUICK if quick else FULL)
    name = "cell_strategies" if datasets is None else "cell_strategies_" + "_".join(datasets)
    setting.update({k: v for k, v in (("datasets", datasets), ("seeds", seeds)) if v is not None})
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    device = torch.device(os.environ.get("BENCH_DEVICE", "cpu"))
    params = load_params(REPO / "params.yaml")
    runs, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in setting["datasets"]:
            prepared = prepare(dataset, setting, params, Path(tmp))
            for seed in setting["seeds"]:
                for method in METHODS:
                    runs.append(one_run(method, dataset, seed, setting, params, prepared, device))
                    print(f"[{dataset} seed {seed}] {method.label}: test_acc {runs[-1]['test_acc']:.4f} "
                          f"skips {runs[-1]['skip_normal']:.2g}/{runs[-1]['skip_reduce']:.2g} "
                          f"search {runs[-1]['search_s']:.1f} s", file=sys.stderr, flush=True)
    summary = {"setting": setting, "datasets": {d: DATASETS[d] for d in setting["datasets"]},
               "threads": torch.get_num_threads(), "device": str(device),
               "wall_s": time.perf_counter() - start}
    return {"name": name, "rows": summarise(runs), "runs": runs, "summary": summary}


def merge(paths: list[Path]) -> dict:
    """One result from the runs of several result files of the same
    setting (a run is kept once per dataset, strategy and seed)."""
    import json

    parts = [json.loads(Path(p).read_text()) for p in paths]
    first = parts[0]["summary"]
    for path, part in zip(paths[1:], parts[1:]):
        other = {k: v for k, v in part["summary"]["setting"].items() if k != "seeds"}
        if other != {k: v for k, v in first["setting"].items() if k != "seeds"}:
            raise ValueError(f"{path}: its setting differs from {paths[0]}'s; only parts of one study merge")
    runs = list({(r["dataset"], r["strategy"], r["seed"]): r for part in parts for r in part["runs"]}.values())
    seeds = sorted({r["seed"] for r in runs})
    summary = {**first, "setting": {**first["setting"], "seeds": seeds},
               "wall_s": sum(part["summary"]["wall_s"] for part in parts), "merged_from": [str(p) for p in paths]}
    return {"name": parts[0]["name"], "rows": summarise(runs), "runs": runs, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), help="default: the setting's")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: the setting's")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON", help="result files of parts of one study")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(REPO))
    from run import report

    report(merge(args.merge) if args.merge else run(args.quick, args.datasets, args.seeds))


if __name__ == "__main__":
    main()
