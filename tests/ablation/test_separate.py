"""Separately trained architectures: Eq. 6/7 features per epoch, the
early-stopping score, determinism and resume (a rerun skips finished ones)."""
from __future__ import annotations

import numpy as np
import pytest

from nas_core.ablation import store
from nas_core.ablation.full import full_job
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


def test_resume_skips_finished_architectures_and_matches_uninterrupted(tiny_space, tiny_spec, tiny_data, tmp_path):
    indices = [10, 2000, 9000, 15000]
    jobs = make_jobs(indices, tiny_space, tiny_spec, tiny_data, "cpu", 0, tmp_path / "run", "separate")
    trained: list[int] = []

    def dies_after_two(job):
        if len(trained) == 2:
            raise Interrupt("killed")
        trained.append(job.index)
        return separate_job(job)

    with pytest.raises(Interrupt):
        store.run_cached(jobs, dies_after_two)
    assert trained == indices[:2]

    def counting(job):
        trained.append(job.index)
        return separate_job(job)

    resumed = store.run_cached(jobs, counting)
    assert trained == indices  # only the two unfinished ones were trained on the rerun
    clean = store.run_cached(make_jobs(indices, tiny_space, tiny_spec, tiny_data, "cpu", 0, tmp_path / "clean",
                                       "separate"), separate_job)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(resumed) == strip(clean)


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
