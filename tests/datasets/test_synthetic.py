import numpy as np
import pytest

from bpmf.datasets import make_synthetic_ratings


def test_shapes_density_and_reproducibility():
    ratings, truth = make_synthetic_ratings(50, 40, 3, density=0.2, random_state=1)
    assert ratings.n_ratings == 400
    assert truth.U.shape == (50, 3) and truth.V.shape == (40, 3)
    again, _ = make_synthetic_ratings(50, 40, 3, density=0.2, random_state=1)
    np.testing.assert_array_equal(ratings.values, again.values)
    pairs = set(zip(ratings.users, ratings.items, strict=True))
    assert len(pairs) == ratings.n_ratings  # distinct cells


def test_noise_matches_declared_sd():
    ratings, truth = make_synthetic_ratings(300, 200, 2, density=0.2, noise_sd=0.7, random_state=2)
    residual = ratings.values - truth.expected(ratings.users, ratings.items)
    assert residual.std() == pytest.approx(0.7, rel=0.03)
    assert abs(residual.mean()) < 0.02


def test_factor_moments_match_truth():
    _, truth = make_synthetic_ratings(20_000, 10, 3, density=0.01, random_state=3)
    np.testing.assert_allclose(np.cov(truth.U, rowvar=False), truth.Sigma_U, atol=0.03)
    np.testing.assert_allclose(truth.U.mean(axis=0), truth.mu_U, atol=0.02)
    np.testing.assert_allclose(np.diag(truth.Sigma_U), 3**-0.5)


def test_without_biases():
    _, truth = make_synthetic_ratings(10, 10, 2, density=0.5, biases=False, random_state=0)
    assert not truth.user_bias.any() and not truth.item_bias.any()


@pytest.mark.parametrize(
    "kwargs", [{"n_users": 0}, {"n_factors": 1.5}, {"density": 0.0}, {"noise_sd": -1.0}]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_synthetic_ratings(**kwargs)
