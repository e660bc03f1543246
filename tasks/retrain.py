"""retrain: Eq. 10. The K cluster picks of the evaluate stage (plus, with
``retrain.include_baseline``, the search stage's genotype: FBNet's argmax,
or the cell strategy's derived genotype) are
trained from scratch on D (``full_train``) with a cosine schedule and the
dataset's standard augmentation, in parallel through the fan-out; N* is the
cluster pick with the best validation accuracy (the baseline is reported for
comparison only, it is not a candidate for N*). Every finalist gets its
test accuracy, FLOPs, params and latency (layer-wise: the pretrain stage's
measured table; cell space: measured on the network, tasks/dcnas_cell.py).
N* is saved (state_dict + genotype + cost; for the cell space the folder of
``nas_core.supernet.cell.export_network``), logged to its nested run and
registered in the MLflow model registry (``tracking.registered_model``).
The space-specific parts are a :class:`~tasks.dcnas_train.RetrainSpace`
chosen once from ``search.strategy``.

Under torchrun (``torchrun -m flows.distributed retrain``) each finalist
trains data-parallel on all ranks, one after another; rank 0 logs, saves and
registers N*.

Outputs: finalists.csv, chosen.json, model/ (N*), accuracy_vs_cost.png."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Optional

from flows.fanout import fan_out_with_runs, threads_per_task
from nas_core.config import Params
from nas_core.cost import LatencyTable, genotype_cost
from nas_core.dcnas.plots import accuracy_vs_cost
from nas_core.dcnas.select import final_choice
from nas_core.io import atomic_path, save_tensors, write_json
from nas_core.spaces import Genotype
from nas_core.train.fit import FitSettings
from tasks.dcnas_cell import cell_retrain_space
from tasks.dcnas_io import LATENCY_FILE, layerwise_space, need
from tasks.dcnas_train import RetrainSpace, TrainJob, log_history, network_fields, train_candidate
from tasks.search_cell import is_cell_strategy
from tasks.tracking import log_figure_file

SECTIONS = ("retrain", "pretrain", "search")
_MODEL_DESCRIPTION = "DC-NAS N* (Eq. 10): state_dict + genotype + cost"
CSV_FIELDS = ("name", "kind", "cluster", "ops", "val_acc", "test_acc", "flops", "params", "latency_ms", "seconds")


def finalists(params: Params, ctx: Any, space: RetrainSpace) -> list[dict[str, Any]]:
    """(name, kind, cluster, genotype dict) of every network to retrain."""
    picks = json.loads(need(ctx.artifacts("evaluate") / "representatives.json", "evaluate").read_text())["clusters"]
    out = [{"name": f"cluster{p['cluster']}", "kind": "dcnas", "cluster": p["cluster"], "genotype": p["genotype"]}
           for p in picks]
    if params.retrain.include_baseline:
        out.append({"name": "baseline", "kind": "baseline", "cluster": None, "genotype": space.baseline()})
    return out


def job_for(params: Params, ctx: Any, finalist: dict[str, Any]) -> TrainJob:
    cfg = params.retrain
    settings = FitSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, augment=cfg.augment, seed=params.runtime.seed,
                           num_workers=params.data.num_workers)
    return TrainJob(name=finalist["name"], genotype=finalist["genotype"], **network_fields(params),
                    settings=settings, data=params.data,
                    project_root=str(ctx.root), subset_dir=str(ctx.artifacts("subset")),
                    train_split="full_train", test_split="test", device=params.runtime.device,
                    threads=threads_per_task(params.runtime), keep_state=True)


def latency_table(ctx: Any, space: Any) -> Optional[LatencyTable]:
    path = ctx.artifacts("pretrain") / LATENCY_FILE
    if not path.is_file():
        return None
    table = LatencyTable.load(path)
    table.check(space)
    return table


def cost_row(space: Any, table: Optional[LatencyTable], genotype: Genotype) -> dict[str, Any]:
    cost = genotype_cost(space, genotype)
    return {"flops": cost.flops, "params": cost.params,
            "latency_ms": table.genotype_ms(genotype) if table is not None else None}


def layerwise_retrain_space(params: Params, ctx: Any) -> RetrainSpace:
    """FBNet's space: argmax baseline, analytic cost + pretrain latency table,
    N* saved as state_dict.pt + genotype.json."""
    space = layerwise_space(params, ctx)
    table = latency_table(ctx, space)

    def baseline() -> dict[str, Any]:
        return Genotype.from_json(need(ctx.artifacts("search") / "genotype.json", "search").read_text()).to_dict()

    def save(model_dir: Path, result: dict[str, Any]) -> None:
        model_dir.mkdir(parents=True, exist_ok=True)
        save_tensors(model_dir / "state_dict.pt", result["state_dict"])

    return RetrainSpace(baseline=baseline, label=lambda g: " | ".join(Genotype.from_dict(g).ops),
                        cost=lambda g: cost_row(space, table, Genotype.from_dict(g)), save=save)


def retrain_space(params: Params, ctx: Any) -> RetrainSpace:
    if is_cell_strategy(params.search.strategy):
        return cell_retrain_space(params, ctx)
    return layerwise_retrain_space(params, ctx)


def run(params: Params, ctx: Any) -> dict[str, float]:
    space = retrain_space(params, ctx)
    entries = finalists(params, ctx, space)
    runs = [ctx.log.child(f"retrain:{f['name']}", tags={"nasflow.finalist": f["name"]}) for f in entries]
    results = fan_out_with_runs(train_candidate, [job_for(params, ctx, f) for f in entries], params.runtime,
                                runs, [f["name"] for f in entries], "retrain-finalists")
    rows = []
    for entry, result, log in zip(entries, results, runs):
        row = {"name": entry["name"], "kind": entry["kind"], "cluster": entry["cluster"],
               "ops": space.label(entry["genotype"]), "val_acc": result["val_acc"], "test_acc": result["test_acc"],
               "seconds": result["seconds"], **space.cost(entry["genotype"])}
        rows.append(row)
        log.log_params({"kind": entry["kind"], "ops": row["ops"]})
        log_history(log, result)
        log.log_metrics({k: row[k] for k in ("val_acc", "test_acc", "flops", "params", "latency_ms", "seconds")
                         if row[k] is not None})
        log.log_dict(entry["genotype"], "genotype.json")
    dcnas = [i for i, r in enumerate(rows) if r["kind"] == "dcnas"]
    best = dcnas[final_choice([rows[i]["val_acc"] for i in dcnas])]
    chosen = _save_chosen(params, ctx, space, rows[best], results[best], runs[best])
    for i, log in enumerate(runs):
        log.set_tags({"nasflow.chosen": str(i == best)})
        log.end("FINISHED")
    _write_outputs(ctx, rows, chosen)
    return _metrics(rows, rows[best])


def _save_chosen(params: Params, ctx: Any, space: RetrainSpace, row: dict[str, Any], result: dict[str, Any],
                 log: Any) -> dict[str, Any]:
    """N*: the space's weights file(s) + genotype + cost under model/,
    logged and registered."""
    model_dir = ctx.out / "model"
    space.save(model_dir, result)
    write_json(model_dir / "genotype.json", result["genotype"])
    cost = {k: row[k] for k in ("flops", "params", "latency_ms")}
    write_json(model_dir / "cost.json", cost)
    log.log_artifact(model_dir, "model")
    version = log.register_model(params.tracking.registered_model, "model", _MODEL_DESCRIPTION,
                                 {"ops": row["ops"], "test_acc": f"{row['test_acc']:.4f}"})
    return {**{k: row[k] for k in ("name", "cluster", "ops", "val_acc", "test_acc")}, "genotype": result["genotype"],
            **cost, "mlflow_run_id": log.run_id, "model_uri": f"runs:/{log.run_id}/model",
            "registered_model": params.tracking.registered_model, "registered_version": version}


def _write_outputs(ctx: Any, rows: list[dict[str, Any]], chosen: dict[str, Any]) -> None:
    baseline = next((r for r in rows if r["kind"] == "baseline"), None)
    if baseline is not None:
        chosen["baseline"] = {k: baseline[k] for k in ("ops", "val_acc", "test_acc", "flops", "params", "latency_ms")}
        chosen["test_acc_vs_baseline"] = chosen["test_acc"] - baseline["test_acc"]
    write_json(ctx.out / "chosen.json", chosen)
    with atomic_path(ctx.out / "finalists.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            writer.writeheader()
            writer.writerows({k: r[k] for k in CSV_FIELDS} for r in rows)
    ctx.log.log_artifact(ctx.out / "finalists.csv")
    ctx.log.log_dict(chosen, "chosen.json")
    ctx.log.set_tags({"nasflow.chosen_ops": chosen["ops"]})
    log_figure_file(ctx.log, accuracy_vs_cost(rows, chosen=chosen["name"]), ctx.out, "accuracy_vs_cost.png")


def _metrics(rows: list[dict[str, Any]], chosen: dict[str, Any]) -> dict[str, float]:
    metrics = {"chosen_val_acc": chosen["val_acc"], "chosen_test_acc": chosen["test_acc"],
               "chosen_flops": chosen["flops"], "chosen_params": chosen["params"]}
    for r in rows:
        metrics[f"{r['name']}_test_acc"] = r["test_acc"]
        metrics[f"{r['name']}_val_acc"] = r["val_acc"]
    baseline = next((r for r in rows if r["kind"] == "baseline"), None)
    if baseline is not None:
        metrics["baseline_test_acc"] = baseline["test_acc"]
        metrics["test_acc_vs_baseline"] = chosen["test_acc"] - baseline["test_acc"]
    if chosen["latency_ms"] is not None:
        metrics["chosen_latency_ms"] = chosen["latency_ms"]
    return metrics
