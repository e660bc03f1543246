"""Full training on D (dc-nas.md Eq. 1 and Eq. 10): T(N, D).

A network picked by a selection rule (or every sampled network, in
ground-truth mode) is trained from its own seeded initialisation on the
whole training set D with a cosine learning-rate schedule; its validation
accuracy after the last epoch is the Eq. 10 score and its test accuracy is
what the ablation reports. One record per architecture is cached, so the
grid never trains the same network twice, however many cells pick it.
"""
from __future__ import annotations

import time
from typing import Any

from nas_core.ablation.separate import ArchJob, start_run
from nas_core.ablation.store import save_record


def train_full(job: ArchJob) -> dict[str, Any]:
    if job.data.test is None:
        raise ValueError("full training needs a test split (ArchData.test) to report accuracy")
    run = start_run(job)
    curve = [run.epoch(epoch)["acc"] for epoch in range(job.spec.epochs)]
    val, test = run.evaluate(job.data.val), run.evaluate(job.data.test)
    return {"index": job.index, "val_acc": val["acc"], "test_acc": test["acc"],
            "train_acc": curve, "seconds": time.perf_counter() - run.started}


def full_job(job: ArchJob) -> dict[str, Any]:
    """Fan-out item: train fully, then store the record atomically."""
    return save_record(job.path, job.key, train_full(job))
