"""Sampling one choice per layer from an architecture-probability table
(DC-NAS Algorithm 1, line 2): frequencies follow the table, a seed fixes the
draw whatever the chunk size, duplicates are counted, memory stays compact."""
import numpy as np
import pytest

from nas_core.spaces.layer_tables import eq9_scores, sample_layers


def test_counts_add_up_rows_are_unique_and_frequencies_follow_the_table():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    res = sample_layers(probs, 5000, seed=0)
    assert res.num_drawn == 5000
    assert len({tuple(r) for r in res.archs.tolist()}) == res.num_unique == 9
    assert res.archs.dtype == np.int8
    freq = np.zeros((2, 3))
    for row, c in zip(res.archs, res.counts):
        freq[0, row[0]] += c
        freq[1, row[1]] += c
    np.testing.assert_allclose(freq / 5000, probs, atol=0.03)


def test_seeded_and_independent_of_chunk_size():
    probs = np.random.default_rng(0).random((6, 9))
    a = sample_layers(probs, 3000, seed=4, chunk_size=3000)
    b = sample_layers(probs, 3000, seed=4, chunk_size=77)
    c = sample_layers(probs, 3000, seed=5)
    assert np.array_equal(a.archs, b.archs) and np.array_equal(a.counts, b.counts)
    assert not (a.archs.shape == c.archs.shape and np.array_equal(a.archs, c.archs))


def test_zero_probability_choices_never_drawn_and_bad_rows_named():
    probs = np.array([[0.0, 1.0], [0.5, 0.5]])
    res = sample_layers(probs, 500, seed=1)
    assert (res.archs[:, 0] == 1).all()
    with pytest.raises(ValueError, match="layer 1"):
        sample_layers(np.array([[1.0, 0.0], [np.nan, 1.0]]), 10, seed=0)
    with pytest.raises(ValueError, match="num_samples"):
        sample_layers(probs, 0, seed=0)


def test_eq9_is_the_sum_of_the_chosen_probabilities():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    rows = np.array([[0, 2], [1, 0]])
    assert np.allclose(eq9_scores(rows, probs), [1.5, 0.3])
    assert np.allclose(eq9_scores(rows, probs, log=True), np.log([0.7 * 0.8, 0.2 * 0.1]))


@pytest.mark.slow
def test_million_samples_stay_compact():
    probs = np.full((8, 9), 1 / 9)
    res = sample_layers(probs, 1_000_000, seed=0, chunk_size=250_000)
    assert res.num_drawn == 1_000_000 and res.archs.nbytes <= 8 * 1_000_000
