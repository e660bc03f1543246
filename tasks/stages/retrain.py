"""retrain: Eq. 10. The K cluster picks of the evaluate stage (plus, with
``retrain.include_baseline``, the search stage's own genotype: FBNet's
argmax, a DARTS-family strategy's derived cell, a multi-trial search's best
trial, ...) are trained from scratch on D (``full_train``) with a cosine
schedule and the dataset's standard augmentation (plus the space's training
recipe: DARTS's auxiliary head, drop path and cutout on cells), in parallel
through the fan-out; N* is the cluster pick with the best validation
accuracy (the baseline is reported for comparison only, it is not a
candidate for N*).

Random control (``retrain.random_control``): R random genotypes of the
space (``space.random``, seeded from ``runtime.seed``) are trained the same
way and the one with the best validation accuracy is reported, with R the
compute DC-NAS's selection spent in full trainings: the K retrained picks
plus the evaluate stage's early-stopped trainings (candidates × evaluate
epochs on D~), each worth (evaluate.epochs / retrain.epochs) × (|D~| / |D|)
of a full training (R = floor of the sum, at least 1). What DC-NAS and the
strategy share (supernet pre-training, feature extraction) is not charged
to either; a proxy evaluator's trainings cost 0. Every finalist gets its test
accuracy and the space's ``cost`` (FLOPs, params, latency from the space's
measured table; where the space has none, the latency is timed on the
stage's device: min over 5 repeats of 10 batch-1 forwards). Each finalist's
nested run receives its per-epoch metrics while it trains, and the stage log
a progress line per epoch (tasks/live.py). N* is exported
with nas_core.spaces.export (reload: ``load_network(model_dir)``), logged
to its nested run and registered in the MLflow model registry
(``tracking.registered_model``).

Under torchrun (``torchrun -m flows.distributed retrain``) each finalist
trains data-parallel on all ranks, one after another; rank 0 logs, saves and
registers N*.

Gradient confusion of the final networks (stacnas.md §3.4.2, appendix C):
each finalist's worker, once the network is trained, measures its zeta
(metric ``zeta`` of the finalist's run, ``<name>_zeta`` of the stage,
column of finalists.csv) with the procedure StacNAS applies to its search
proxy (nas_core.train.confusion.network_confusion): training
mode (batch statistics; running statistics restored), no drop path, the
cross-entropy of the main logits; the mean over
``retrain.zeta_iterations`` draws of ``retrain.zeta_batches``
mini-batches of the max over pairs of -<g_i, g_j>, divided by the number M
of parameters that loss reaches (an auxiliary head is in neither the
gradients nor M). Mini-batches: ``retrain.batch_size`` images of the
training split (``full_train``, not augmented, shuffled with
``runtime.seed``). params.yaml sets them as StacNAS's section does, so the
final network's zeta compares with its proxy's; the cost is iterations x batches gradients (the
digits params: 3 x 2, about 6 training steps per finalist).

Outputs: finalists.csv, chosen.json, model/ (N*), accuracy_vs_cost.png."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nas_core.config import Params
from nas_core.cost import time_module
from nas_core.dcnas.plots import accuracy_vs_cost
from nas_core.dcnas.select import final_choice
from nas_core.io import atomic_path, write_json
from nas_core.spaces import SearchSpace
from nas_core.spaces.export import export_network
from nas_core.train.confusion import confusion_draws, network_confusion
from nas_core.train.fit import FitSettings, seeded
from nas_core.train.loop import make_loader
from tasks.context import StageContext
from tasks.dcnas_train import TrainJob, log_history, train_candidate
from tasks.live import LiveRun
from tasks.nas import GENOTYPE, build_space, chosen_space_section, load_genotype, need
from tasks.placement import threads_per_task, worker_device
from tasks.tracking import log_figure_file
from tasks.worker_cache import subset_splits

SECTIONS = ("retrain", "search")
_MODEL_DESCRIPTION = "DC-NAS N* (Eq. 10): state_dict + network.json (space, genotype) + cost"
CSV_FIELDS = ("name", "kind", "cluster", "label", "val_acc", "test_acc", "zeta", "flops", "params", "latency_ms",
              "seconds")
RANDOM_CONTROL_STREAM = 0x52414E44  # the random control's own RNG stream beside runtime.seed


def finalists(params: Params, ctx: StageContext, space: SearchSpace) -> list[dict[str, Any]]:
    """(name, kind, cluster, genotype dict) of every network to retrain."""
    evaluated = json.loads(need(ctx.artifacts("evaluate") / "representatives.json", "evaluate").read_text())
    picks = evaluated["clusters"]
    out = [{"name": f"cluster{p['cluster']}", "kind": "dcnas", "cluster": p["cluster"], "genotype": p["genotype"]}
           for p in picks]
    if params.retrain.include_baseline:
        baseline = load_genotype(space, ctx.artifacts("search") / GENOTYPE, "search")
        out.append({"name": "baseline", "kind": "baseline", "cluster": None, "genotype": baseline.to_dict()})
    if params.retrain.random_control:
        rng = np.random.default_rng([params.runtime.seed, RANDOM_CONTROL_STREAM])
        out += [{"name": f"random{i}", "kind": "random", "cluster": None, "genotype": space.random(rng).to_dict()}
                for i in range(random_budget(params, ctx, evaluated))]
    return out


def dcnas_budget(params: Params, ctx: StageContext, evaluated: dict[str, Any]) -> float:
    """DC-NAS's selection compute in full trainings (module docstring)."""
    splits = ctx.splits()
    trained = sum(len(p["candidates"]) for p in evaluated["clusters"]) if evaluated.get("evaluator") == "train" else 0
    share = (params.evaluate.epochs / params.retrain.epochs) * (len(splits["subset"]) / len(splits["full_train"]))
    return len(evaluated["clusters"]) + trained * share


def random_budget(params: Params, ctx: StageContext, evaluated: dict[str, Any]) -> int:
    return max(1, int(dcnas_budget(params, ctx, evaluated)))


@dataclass(frozen=True)
class FinalistJob:
    """A finalist's training job and the draws of its gradient confusion
    (module docstring), one picklable fan-out item."""

    train: TrainJob
    zeta_iterations: int
    zeta_batches: int


def job_for(params: Params, ctx: StageContext, space: SearchSpace, finalist: dict[str, Any], log: Any) -> FinalistJob:
    """The finalist's job; it reports its epochs live to its run ``log``."""
    cfg = params.retrain
    settings = FitSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, augment=cfg.augment, seed=params.runtime.seed,
                           num_workers=params.data.num_workers, **space.training_recipe())
    train = TrainJob(name=finalist["name"], space=space, genotype=finalist["genotype"], settings=settings,
                     data=params.data, project_root=str(ctx.root), subset_dir=str(ctx.artifacts("subset")),
                     train_split="full_train", test_split="test", device=params.runtime.device,
                     threads=threads_per_task(params.runtime), keep_state=True,
                     live=LiveRun.for_run(log, finalist["name"], cfg.epochs, stage=ctx.name))
    return FinalistJob(train, cfg.zeta_iterations, cfg.zeta_batches)


def train_finalist(job: FinalistJob) -> dict[str, Any]:
    """Train the finalist from scratch (tasks.dcnas_train.train_candidate),
    then measure its gradient confusion ``zeta``."""
    result = train_candidate(job.train)
    return {**result, "zeta": final_confusion(job, result["state_dict"])}


def final_confusion(job: FinalistJob, state_dict: dict[str, torch.Tensor]) -> float:
    """Appendix C's normalised gradient confusion of the trained network
    (module docstring), in the worker that trained it."""
    train = job.train
    device = worker_device(train.device)
    with seeded(train.settings.seed):  # the initialisation, overwritten, must not draw from a shared RNG
        network = train.space.build_network(train.space.genotype_from_dict(train.genotype))
    network.load_state_dict(state_dict)
    network.to(device)
    _, splits = subset_splits(train.data, train.project_root, train.subset_dir)
    images = splits[train.train_split]
    size = train.settings.batch_size
    loader = make_loader(images, size, shuffle=True, seed=train.settings.seed, drop_last=len(images) >= size)
    draws = confusion_draws(loader, job.zeta_iterations, job.zeta_batches)
    return network_confusion(network, lambda x: _logits(network(x)), draws, device, reached_only=True)


def _logits(out: Any) -> torch.Tensor:
    """The main logits of a network that may also return auxiliary ones."""
    return out[0] if isinstance(out, tuple) else out


def cost_row(space: SearchSpace, genotype: Any, input_shape: tuple[int, ...], device: torch.device) -> dict[str, Any]:
    """The space's cost; a latency the space has no table for is timed."""
    cost = dict(space.cost(genotype))
    if cost.get("latency_ms") is None:
        net = space.build_network(genotype).to(device).eval()
        x = torch.zeros((1, *input_shape), device=device)
        cost["latency_ms"] = time_module(net, x, repeats=5)
    return {k: cost.get(k) for k in ("flops", "params", "latency_ms")}


def run(params: Params, ctx: StageContext) -> dict[str, float]:
    space = build_space(params, ctx)
    entries = finalists(params, ctx, space)
    runs = [ctx.log.child(f"retrain:{f['name']}", tags={"nasflow.finalist": f["name"]}) for f in entries]
    jobs = [job_for(params, ctx, space, f, log) for f, log in zip(entries, runs)]
    results = ctx.fan_out_with_runs(train_finalist, jobs, runs, [f["name"] for f in entries], "retrain-finalists")
    rows = []
    for entry, result, log in zip(entries, results, runs):
        genotype = space.genotype_from_dict(entry["genotype"])
        row = {"name": entry["name"], "kind": entry["kind"], "cluster": entry["cluster"],
               "label": space.label(genotype), "val_acc": result["val_acc"], "test_acc": result["test_acc"],
               "zeta": result["zeta"], "seconds": result["seconds"],
               **cost_row(space, genotype, ctx.data_info.input_shape, ctx.device)}
        rows.append(row)
        log.log_params({"kind": entry["kind"], "label": row["label"][:500]})
        log_history(log, result)
        log.log_metrics({k: row[k] for k in ("val_acc", "test_acc", "zeta", "flops", "params", "latency_ms",
                                             "seconds") if row[k] is not None})
        log.log_dict(entry["genotype"], "genotype.json")
    dcnas = [i for i, r in enumerate(rows) if r["kind"] == "dcnas"]
    best = dcnas[final_choice([rows[i]["val_acc"] for i in dcnas])]
    chosen = _save_chosen(params, ctx, space, rows[best], results[best], runs[best])
    for i, log in enumerate(runs):
        log.set_tags({"nasflow.chosen": str(i == best)})
        log.end("FINISHED")
    _write_outputs(ctx, rows, chosen)
    return _metrics(rows, rows[best])


def _save_chosen(params: Params, ctx: StageContext, space: SearchSpace, row: dict[str, Any], result: dict[str, Any],
                 log: Any) -> dict[str, Any]:
    """N*: the exported network (weights + network.json) + genotype + cost
    under model/, logged and registered."""
    model_dir = ctx.out / "model"
    info = ctx.data_info
    export_network(model_dir, params.search.space, chosen_space_section(params).model_dump(mode="json"),
                   info.input_shape, info.num_classes, result["genotype"], result["state_dict"],
                   extra={"strategy": params.search.strategy})
    write_json(model_dir / "genotype.json", result["genotype"])
    cost = {k: row[k] for k in ("flops", "params", "latency_ms")}
    write_json(model_dir / "cost.json", cost)
    log.log_artifact(model_dir, "model")
    version = log.register_model(params.tracking.registered_model, "model", _MODEL_DESCRIPTION,
                                 {"genotype": row["label"][:500], "test_acc": f"{row['test_acc']:.4f}"})
    return {**{k: row[k] for k in ("name", "cluster", "label", "val_acc", "test_acc", "zeta")},
            "genotype": result["genotype"],
            **cost, "mlflow_run_id": log.run_id, "model_uri": f"runs:/{log.run_id}/model",
            "registered_model": params.tracking.registered_model, "registered_version": version}


def random_pick(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The random control's pick: its best validation accuracy (first on ties)."""
    randoms = [r for r in rows if r["kind"] == "random"]
    return randoms[final_choice([r["val_acc"] for r in randoms])] if randoms else None


def _write_outputs(ctx: StageContext, rows: list[dict[str, Any]], chosen: dict[str, Any]) -> None:
    baseline = next((r for r in rows if r["kind"] == "baseline"), None)
    if baseline is not None:
        chosen["baseline"] = {k: baseline[k] for k in ("label", "val_acc", "test_acc", "flops", "params", "latency_ms")}
        chosen["test_acc_vs_baseline"] = chosen["test_acc"] - baseline["test_acc"]
    control = random_pick(rows)
    if control is not None:
        chosen["random_control"] = {**{k: control[k] for k in ("name", "label", "val_acc", "test_acc", "flops",
                                                                 "params", "latency_ms")},
                                    "networks": sum(r["kind"] == "random" for r in rows)}
        chosen["test_acc_vs_random"] = chosen["test_acc"] - control["test_acc"]
    write_json(ctx.out / "chosen.json", chosen)
    with atomic_path(ctx.out / "finalists.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            writer.writeheader()
            writer.writerows({k: r[k] for k in CSV_FIELDS} for r in rows)
    ctx.log.log_artifact(ctx.out / "finalists.csv")
    ctx.log.log_dict(chosen, "chosen.json")
    ctx.log.set_tags({"nasflow.chosen": chosen["label"][:5000]})
    log_figure_file(ctx.log, accuracy_vs_cost(rows, chosen=chosen["name"]), ctx.out, "accuracy_vs_cost.png")


def _metrics(rows: list[dict[str, Any]], chosen: dict[str, Any]) -> dict[str, float]:
    metrics = {"chosen_val_acc": chosen["val_acc"], "chosen_test_acc": chosen["test_acc"],
               "chosen_zeta": chosen["zeta"], "chosen_flops": chosen["flops"], "chosen_params": chosen["params"]}
    for r in rows:
        metrics[f"{r['name']}_test_acc"] = r["test_acc"]
        metrics[f"{r['name']}_val_acc"] = r["val_acc"]
        metrics[f"{r['name']}_zeta"] = r["zeta"]
    baseline = next((r for r in rows if r["kind"] == "baseline"), None)
    if baseline is not None:
        metrics["baseline_test_acc"] = baseline["test_acc"]
        metrics["test_acc_vs_baseline"] = chosen["test_acc"] - baseline["test_acc"]
    control = random_pick(rows)
    if control is not None:
        metrics["random_test_acc"] = control["test_acc"]
        metrics["random_networks"] = float(sum(r["kind"] == "random" for r in rows))
        metrics["test_acc_vs_random"] = chosen["test_acc"] - control["test_acc"]
    if chosen["latency_ms"] is not None:
        metrics["chosen_latency_ms"] = chosen["latency_ms"]
    return metrics
