"""subset stage: stratified index splits of the dataset (DESIGN.md 1)."""
from __future__ import annotations

import csv

from nas_core.config import Params
from nas_core.data import load_source, make_splits, write_splits
from nas_core.io import atomic_path
from tasks.context import StageContext

SECTIONS = ("subset",)


def run(params: Params, ctx: StageContext) -> dict[str, float]:
    source = load_source(params.data, ctx.root)
    splits = make_splits(source.train_targets, source.test_targets, params.data, params.subset, params.runtime.seed)
    manifest = write_splits(splits, source, ctx.out, params.runtime.seed)
    write_class_plot(manifest, ctx)
    ctx.log.log_dict(manifest, "subset/manifest.json")
    return {f"{name}_count": info["count"] for name, info in manifest["splits"].items()}


def write_class_plot(manifest: dict, ctx: StageContext) -> None:
    """metrics/subset_classes.csv: images per class in D, D~ and the probe
    set (a DVC plot), also logged to MLflow."""
    path = ctx.root / "metrics" / "subset_classes.csv"
    splits = manifest["splits"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "full_train", "subset", "probe"])
        for c in range(manifest["num_classes"]):
            writer.writerow([c, *(splits[s]["class_histogram"][c] for s in ("full_train", "subset", "probe"))])
    ctx.log.log_artifact(path, "subset")
