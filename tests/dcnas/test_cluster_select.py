import numpy as np
import pytest

from nas_core.dcnas.cluster import cluster_features
from nas_core.dcnas.select import best_per_cluster, final_choice, top_per_cluster


def blobs(n_per: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([0.2, 0.6, 0.95])
    return np.concatenate([c + 0.02 * rng.standard_normal((n_per, 3, 4)) for c in centres]).astype(np.float32)


def test_clustering_reproducible_by_seed_and_finds_blobs():
    x = blobs()
    a = cluster_features(x, 3, seed=0)
    b = cluster_features(x, 3, seed=0)
    assert np.array_equal(a.labels, b.labels) and a.inertia == b.inertia
    assert sorted(a.sizes.tolist()) == [30, 30, 30]
    assert a.centers.shape == (3, 12)
    assert a.silhouette is not None and a.silhouette > 0.8
    for blob in range(3):
        assert np.unique(a.labels[blob * 30:(blob + 1) * 30]).size == 1


def test_minibatch_above_threshold_and_weights_count_duplicates():
    x = blobs()
    res = cluster_features(x, 3, seed=0, minibatch_threshold=10, weights=np.full(90, 2))
    assert res.sizes.sum() == 180
    assert np.array_equal(res.labels, cluster_features(x, 3, seed=0, minibatch_threshold=10,
                                                       weights=np.full(90, 2)).labels)


def test_k_above_s_rejected_with_clear_message():
    with pytest.raises(ValueError, match=r"dcnas_cluster.k = 5: more clusters than architectures \(4\)"):
        cluster_features(blobs()[:4], 5, seed=0)
    same = np.zeros((6, 2, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="only 1 distinct feature vectors"):
        cluster_features(same, 2, seed=0)


def test_k1_degenerates_to_global_selection():
    x = blobs()
    res = cluster_features(x, 1, seed=0)
    assert res.silhouette is None and (res.labels == 0).all()
    scores = np.random.default_rng(1).random(90)
    assert best_per_cluster(res.labels, scores).tolist() == [int(np.argmax(scores))]


def test_best_per_cluster_picks_the_highest_score_member():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([1.8, 0.45, 1.3, 1.25, 1.3, 1.55])  # e.g. Eq. 9 scores from the space's score()
    assert best_per_cluster(labels, scores).tolist() == [0, 5]
    assert best_per_cluster(labels, np.log(scores)).tolist() == [0, 5]
    assert top_per_cluster(labels, scores, 2).tolist() == [[0, 2], [5, 4]]


def test_ties_go_to_lowest_index_and_top_m_pads():
    labels = np.array([1, 0, 1, 0, 1])
    scores = np.array([2.0, 1.0, 2.0, 1.0, 0.5])
    assert best_per_cluster(labels, scores).tolist() == [1, 0]
    assert top_per_cluster(labels, scores, 3).tolist() == [[1, 3, -1], [0, 2, 4]]
    assert final_choice([0.5, 0.9, 0.9]) == 1
    with pytest.raises(ValueError, match="no members"):
        best_per_cluster(np.array([0, 2]), np.array([1.0, 1.0]))
