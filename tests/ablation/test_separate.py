"""Separately trained architectures: Eq. 6/7 features per epoch, the
early-stopping score, determinism and resume (a rerun skips finished ones)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from nas_core.ablation import store
from nas_core.ablation.full import full_job
from nas_core.ablation.replicates import by_replicate, replicate_jobs, replicate_seed
from nas_core.ablation.separate import make_jobs, separate_job, stack_records


def test_record_holds_features_and_accuracy_per_epoch(tiny_space, tiny_spec, tiny_data, tmp_path):
    job = make_jobs([123], tiny_space, tiny_spec, tiny_data, "cpu", 0, tmp_path, "separate")[0]
    record = separate_job(job)
    for name in ("feat_output", "feat_params"):
        feats = np.array(record[name])
        assert feats.shape == (6, tiny_spec.epochs)
        assert np.allclose(feats[:, 0], 1.0)  # F_{l,1} = cos(o^1, o^1)
        assert np.all(feats <= 1.0 + 1e-9) and np.all(feats >= -1.0 - 1e-9)
    assert len(record["val_acc"]) == tiny_spec.epochs
    assert record["val_acc"][-1] > 0.2  # well above chance (0.1) after 3 epochs on 240 digits
    assert store.load_record(job.path, job.key) == record


def test_training_is_deterministic_per_seed(tiny_space, tiny_spec, tiny_data, tmp_path):
    a = separate_job(make_jobs([5], tiny_space, tiny_spec, tiny_data, "cpu", 0, tmp_path / "a", "separate")[0])
    b = separate_job(make_jobs([5], tiny_space, tiny_spec, tiny_data, "cpu", 0, tmp_path / "b", "separate")[0])
    c = separate_job(make_jobs([5], tiny_space, tiny_spec, tiny_data, "cpu", 1, tmp_path / "c", "separate")[0])
    assert a["val_acc"] == b["val_acc"] and a["feat_output"] == b["feat_output"]
    assert a["feat_params"] != c["feat_params"]


class Interrupt(RuntimeError):
    pass


def study_jobs(space, spec, data, cache):
    """Two replicates of two architectures each (the same space indices,
    different replicate seeds), as the ablation_train stage builds them."""
    reps = [SimpleNamespace(index=r, seed=replicate_seed(0, r)) for r in range(2)]
    return replicate_jobs(reps, lambda rep: [10, 9000], lambda rep: data, space, spec, "cpu", cache, "separate")


def test_study_killed_mid_replicate_resumes_without_retraining(tiny_space, tiny_spec, tiny_data, tmp_path):
    jobs = study_jobs(tiny_space, tiny_spec, tiny_data, tmp_path / "run")
    trained: list[tuple[int, int]] = []

    def dies_after_three(job):
        if len(trained) == 3:
            raise Interrupt("killed")
        trained.append((job.replicate, job.index))
        return separate_job(job)

    with pytest.raises(Interrupt):  # replicate 0 finished, replicate 1 half done
        store.run_cached(jobs, dies_after_three)

    def counting(job):
        trained.append((job.replicate, job.index))
        return separate_job(job)

    resumed = store.run_cached(jobs, counting)
    assert trained == [(0, 10), (0, 9000), (1, 10), (1, 9000)]  # only the unfinished network on the rerun
    assert resumed[0]["val_acc"] != resumed[2]["val_acc"]  # same architecture, another replicate's seed
    clean = store.run_cached(study_jobs(tiny_space, tiny_spec, tiny_data, tmp_path / "clean"), separate_job)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(resumed) == strip(clean)
    assert [len(v) for v in by_replicate(jobs, resumed).values()] == [2, 2]


def test_changed_settings_or_truncated_file_retrain(tiny_space, tiny_spec, tiny_data, tmp_path):
    job = make_jobs([7], tiny_space, tiny_spec, tiny_data, "cpu", 0, tmp_path, "separate")[0]
    separate_job(job)
    assert store.pending([job]) == []
    other = make_jobs([7], tiny_space, tiny_spec, tiny_data, "cpu", 1, tmp_path, "separate")[0]
    assert store.pending([other]) == [other]  # another seed: the stored record is not reused
    job.path.write_text('{"key": "')  # a torn write
    assert store.pending([job]) == [job]


def test_stack_records_and_full_training(tiny_space, tiny_spec, tiny_data, tmp_path):
    jobs = make_jobs([1, 2], tiny_space, tiny_spec, tiny_data, "cpu", 0, tmp_path / "sep", "separate")
    arrays = stack_records(store.run_cached(jobs, separate_job))
    assert arrays["feat_output"].shape == (2, 6, 3) and arrays["es_acc"].shape == (2, 3)
    assert list(arrays["index"]) == [1, 2]
    full = store.run_cached(make_jobs([2], tiny_space, tiny_spec, tiny_data, "cpu", 0, tmp_path / "full", "full"),
                            full_job)
    assert 0.0 <= full[0]["test_acc"] <= 1.0 and 0.0 <= full[0]["val_acc"] <= 1.0
