"""pretrain stage: trains the search's supernet on the subset's splits,
resumable after a kill: the chosen one-shot strategy's (``search.strategy``
on ``search.space``), or for a multi-trial strategy the supernet of its
``supernet`` key (used by the ``supernet`` evaluator and by DC-NAS). When
there is none the stage records that and ends.

The stage is persistent (``ctx.out`` is the real ``artifacts/pretrain``), so
every file is written atomically here. Outputs:

* ``checkpoints/epoch_XXX.pt`` (+ ``.sha256``): one per epoch, the full
  strategy state (``supernet`` = the supernet's weights); DC-NAS reads
  these. A rerun resumes from the newest good one made with the same
  settings (:func:`tasks.nas.fingerprint`) and removes ones made with
  other settings.
* the space's measured tables (FBNet: ``latency.json``), measured once and
  reused while the space and device stay the same, so a resumed run
  optimises against the same numbers;
* ``history.csv`` (per-epoch metrics) and the strategy's per-epoch arrays
  (FBNet: ``theta_history.npy``), rewritten after every epoch. At the end
  the history is also copied to ``metrics/pretrain_history.csv`` (a DVC
  plot cannot sit inside the persistent output directory).
"""
from __future__ import annotations

from typing import Any

from nas_core.config import Params
from nas_core.io import save_npy, write_history, write_json
from nas_core.strategies import OneShotStrategy
from nas_core.train import run_resumable
from tasks.context import StageContext
from tasks.nas import (
    CHECKPOINTS,
    build_space,
    build_strategy,
    build_trainer,
    fingerprint,
    keep_one_owner,
    last_epoch_metrics,
    search_data,
)

SECTIONS = ("search",)
PERSISTENT = True


class EpochOutputs:
    """After each epoch: metrics to MLflow, history.csv, the strategy's
    arrays, the epoch progress bar."""

    def __init__(self, ctx: StageContext, bar: Any) -> None:
        self.ctx, self.bar = ctx, bar
        self.logged: set[int] = set()

    def on_epoch_end(self, strategy: OneShotStrategy, epoch: int, metrics: dict[str, float]) -> None:
        self.ctx.log.log_metrics(metrics, step=epoch)
        self.logged.add(epoch)
        write_history(self.ctx.out / "history.csv", strategy.history)
        for name, array in strategy.arrays().items():
            save_npy(self.ctx.out / f"{name}.npy", array)
        self.bar.update(1)
        self.bar.set_postfix(strategy.progress_postfix(metrics))

    def log_earlier(self, history: list[dict[str, float]]) -> None:
        """Epochs finished by an earlier (killed) run: log them here too so
        this run shows whole curves."""
        for epoch, row in enumerate(history, start=1):
            if epoch not in self.logged:
                self.ctx.log.log_metrics(row, step=epoch)


def run(params: Params, ctx: StageContext) -> dict[str, float]:
    owner = build_strategy(params, ctx, build_space(params, ctx, "none")).supernet_name()
    keep_one_owner(ctx.out, f"{owner or 'no supernet'} on {params.search.space}")
    space = build_space(params, ctx, "measure")
    strategy = build_trainer(params, ctx, space, build_strategy(params, ctx, space))
    ctx.log.set_tags({"nasflow.strategy": params.search.strategy, "nasflow.space": space.name,
                      "nasflow.supernet": owner or "none"})
    if strategy is None:
        write_json(ctx.out / "summary.json", {"strategy": params.search.strategy, "supernet": None, "epochs": 0})
        return {"epochs": 0.0}
    with ctx.progress(total=strategy.num_epochs(), desc=f"{strategy.name} epochs") as bar:
        outputs = EpochOutputs(ctx, bar)
        result = run_resumable(strategy, search_data(params, ctx, strategy), ctx.out / CHECKPOINTS,
                               fingerprint(params, ctx, space, strategy.name), [outputs])
    outputs.log_earlier(result.history)
    write_history(ctx.out / "history.csv", result.history)
    write_history(ctx.root / "metrics" / "pretrain_history.csv", result.history)
    write_json(ctx.out / "summary.json", {"strategy": strategy.name, "kind": strategy.kind, "space": space.name,
                                          "epochs": len(result.history)})
    for path in sorted(ctx.out.glob("*.csv")) + sorted(ctx.out.glob("*.npy")) + sorted(ctx.out.glob("*.json")):
        ctx.log.log_artifact(path, "pretrain")
    last = last_epoch_metrics(result.history)
    return {"epochs": float(len(result.history)), **last}
