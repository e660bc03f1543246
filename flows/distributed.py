"""Run one stage data-parallel under torchrun:

    torchrun --nproc_per_node 2 -m flows.distributed pretrain [--params params.yaml]
    torchrun --nproc_per_node 2 -m flows.distributed retrain  [--params params.yaml]

(on one machine with N GPUs: ``--nproc_per_node N``, one GPU per process,
backend nccl; on the CPU the backend is gloo). Rank 0 runs the stage exactly
as ``nasflow stage <name>`` does: its MLflow run, its outputs in
``artifacts/<name>``, metrics/<name>.json. Every other rank runs the same
stage function with the same params and seed, on its own device, against a
private copy of the stage's output directory (so a resumed run resumes on
every rank from the same checkpoint) that is thrown away at the end, and
logs nothing. The stage function itself decides what is data-parallel:
pretrain trains the supernet with the strategy's data-parallel variant
(``create_strategy`` picks it under torchrun) on per-rank loaders
(``shard_search_data``); evaluate and
retrain train their networks one after another, each on all ranks at once
(the fan-out runs the items in order, nas_core.train.fit wraps the network
in DDP); stages without training simply run on every rank. DVC records
the result like any other run (``dvc commit <stage>`` after a run outside
``dvc repro``).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from flows.exit_codes import exit_code
from flows.fanout import fan_out
from nas_core.config import load_params
from nas_core.runtime import resolve_device, seed_everything, set_threads
from nas_core.train import distributed as ddp
from tasks.context import ARTIFACTS, StageContext
from tasks.runner import load_stage_module, run_stage


class ReplicaLogger:
    """The RunLogger interface, logging nothing (ranks other than 0)."""

    run_id = experiment_id = "replica"

    def child(self, name: str, tags: Any = None) -> "ReplicaLogger":
        return self

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


def run_replica(name: str, params_path: str, root: Path, scratch: Path) -> None:
    """The stage function on a rank other than 0 (outputs go to ``scratch``)."""
    params = load_params(root / params_path)
    module = load_stage_module(name, root)
    seed_everything(params.runtime.seed, params.runtime.deterministic)
    set_threads(params.runtime.threads)
    device = ddp.init_from_env(resolve_device(params.runtime.device))
    module.run(params, StageContext(name, root, params, scratch, device, ReplicaLogger(), fan_out))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.distributed",
                                     description="run one stage data-parallel under torchrun")
    parser.add_argument("name", help="the dvc.yaml stage, e.g. pretrain")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    root = Path.cwd().resolve()
    params = load_params(root / args.params)
    ddp.init_from_env(resolve_device(params.runtime.device))
    try:
        if ddp.is_main():
            ddp.barrier()  # the other ranks have copied the previous outputs
            run_stage(args.name, args.params, root, fan_out=fan_out)
        else:
            with tempfile.TemporaryDirectory(prefix=f"nasflow-rank{ddp.rank()}-") as tmp:
                scratch = Path(tmp) / args.name
                previous = root / ARTIFACTS / args.name
                if previous.is_dir():
                    shutil.copytree(previous, scratch)
                else:
                    scratch.mkdir()
                ddp.barrier()
                run_replica(args.name, args.params, root, scratch)
    finally:
        ddp.cleanup()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # mapped to the CLI's exit codes (flows.exit_codes)
        code = exit_code(exc)
        if code is None:
            raise
        print(f"nasflow: error (rank {ddp.rank()}): {exc}", file=sys.stderr)
        sys.exit(code)
