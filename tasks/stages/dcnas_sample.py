"""dcnas_sample: Algorithm 1, line 2 — s architectures drawn from the search
stage's architecture-probability tables by the space's ``sample`` (the
layer-wise space: each layer's op from its normalised probabilities; the
cell space: per node two inputs, then an op per kept edge). Outputs
archs.npy (unique encoded rows, ``space.encode`` format), counts.npy (how
often each was drawn), tables.npz (the tables drawn from) and summary.json."""
from __future__ import annotations

from nas_core.config import Params
from nas_core.io import save_npy, write_json
from tasks.context import StageContext
from tasks.nas import TABLES, build_space, load_tables, save_tables

SECTIONS = ("dcnas_sample", "search")


def run(params: Params, ctx: StageContext) -> dict[str, float]:
    space = build_space(params, ctx, "none")
    tables = load_tables(ctx.artifacts("search") / TABLES, "search")
    result = space.sample(tables, params.dcnas_sample.num_samples, params.runtime.seed, progress=ctx.progress)
    save_npy(ctx.out / "archs.npy", result.archs)
    save_npy(ctx.out / "counts.npy", result.counts)
    save_tables(ctx.out / TABLES, tables)
    scores = space.score(result.archs, tables)
    summary = {"space": space.name, "strategy": params.search.strategy, "num_drawn": result.num_drawn,
               "num_unique": result.num_unique, "max_count": int(result.counts.max()),
               "encoding_length": space.encoding_length}
    write_json(ctx.out / "summary.json", summary)
    ctx.log.log_dict(summary, "dcnas_sample/summary.json")
    return {"num_drawn": result.num_drawn, "num_unique": result.num_unique,
            "duplicate_fraction": 1.0 - result.num_unique / result.num_drawn,
            "max_count": int(result.counts.max()), "best_eq9_score": float(scores.max())}
