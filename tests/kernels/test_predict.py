"""Expected ratings per draw against numpy, on one thread and split over threads."""

import numpy as np
import pytest

from bpmf.kernels import predict


@pytest.mark.parametrize("threads", [1, 3])
def test_expected_ratings_match_numpy_on_any_number_of_threads(monkeypatch, threads):
    monkeypatch.setattr(predict, "THREADED_MIN_WORK", 1)  # split even this small request
    rng = np.random.default_rng(0)
    S, n_users, n_items, D, n_pairs = 7, 5, 6, 3, 40
    U, V = rng.normal(size=(S, n_users, D)), rng.normal(size=(S, n_items, D))
    mu = rng.normal(size=S)
    user_bias, item_bias = rng.normal(size=(S, n_users)), rng.normal(size=(S, n_items))
    users, items = rng.integers(n_users, size=n_pairs), rng.integers(n_items, size=n_pairs)
    expected = (mu[:, None] + user_bias[:, users] + item_bias[:, items]
                + np.einsum("spk,spk->sp", U[:, users], V[:, items]))
    out = predict.expected_ratings(U, V, mu, user_bias, item_bias, users, items, threads=threads)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    single = predict.expected_ratings(U, V, mu, user_bias, item_bias, users, items, threads=1)
    np.testing.assert_array_equal(out, single)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("biases", [True, False])
def test_expected_means_are_the_means_over_draws(monkeypatch, threads, biases):
    monkeypatch.setattr(predict, "THREADED_MIN_WORK", 1)
    rng = np.random.default_rng(1)
    S, n_users, n_items, D, n_pairs = 9, 4, 7, 2, 33
    U, V = rng.normal(size=(S, n_users, D)), rng.normal(size=(S, n_items, D))
    mu = rng.normal(size=S)
    user_bias = rng.normal(size=(S, n_users)) if biases else np.zeros((S, 1))
    item_bias = rng.normal(size=(S, n_items)) if biases else np.zeros((S, 1))
    users, items = rng.integers(n_users, size=n_pairs), rng.integers(n_items, size=n_pairs)
    draws = predict.expected_ratings(U, V, mu, user_bias, item_bias, users, items, threads=1)
    means = predict.expected_means(U, V, mu, user_bias, item_bias, users, items, threads=threads)
    np.testing.assert_allclose(means, draws.mean(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 3])
def test_mean_normal_cdf_matches_scipy_on_any_number_of_threads(monkeypatch, threads):
    from scipy import special

    monkeypatch.setattr(predict, "THREADED_MIN_WORK", 1)  # split even a small request
    rng = np.random.default_rng(4)
    expected = rng.normal(3.0, 1.5, (40, 25))
    cutpoints = np.sort(rng.normal(3.0, 1.0, (40, 4)), axis=1)
    got = predict.mean_normal_cdf(expected, cutpoints, threads=threads)
    want = np.stack([special.ndtr(cutpoints[:, [j]] - expected).mean(0) for j in range(4)],
                    axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(got, predict.mean_normal_cdf(expected, cutpoints, threads=1))


@pytest.mark.parametrize("threads", [1, 3])
def test_column_quantiles_are_numpys_bit_for_bit(monkeypatch, threads):
    monkeypatch.setattr(predict, "THREADED_MIN_WORK", 100)
    rng = np.random.default_rng(2)
    for n, pairs in ((1, 4), (2, 7), (1000, 50), (333, 17)):
        values = rng.standard_normal((n, pairs)) * 3 + 1
        values[:, 0] = 2.0  # ties
        qs = [0.005, 0.05, 0.25, 0.5, 0.75, 0.95, 0.995, *rng.random(4)]
        np.testing.assert_array_equal(predict.column_quantiles(values, qs, threads=threads),
                                      np.quantile(values, qs, axis=0))
