"""Population-level rows of unseen users and items: draws from the prior of each draw."""

import numpy as np
import pytest

from bpmf.models._posterior import side_rows


@pytest.mark.parametrize("correlated", [False, True])
def test_unseen_rows_are_drawn_from_the_joint_prior(correlated):
    D, n = 2, 60_000
    Sigma = np.array([[0.8, 0.3], [0.3, 0.5]])
    cross = np.array([0.2, -0.1])
    post = {
        "U": np.zeros((1, 3, D)),
        "mu_U": np.array([[0.4, -0.2]]),
        "Sigma_U": Sigma[None],
        "user_bias": np.zeros((1, 3)),
        "user_bias_sd": np.array([0.6]),
    }
    joint = np.zeros((D + 1, D + 1))
    joint[:D, :D] = Sigma
    joint[D, D] = 0.36
    if correlated:
        post["user_bias_factor_cov"] = cross[None]
        joint[:D, D] = joint[D, :D] = cross
    codes = np.full(n, -1)
    factors, biases = side_rows(post, "U", codes, np.random.default_rng(0))
    rows = np.column_stack([factors[0], biases[0]])
    np.testing.assert_allclose(rows.mean(axis=0), [0.4, -0.2, 0.0], atol=4 * 0.9 / np.sqrt(n))
    np.testing.assert_allclose(np.cov(rows.T), joint, atol=0.012)
    # without a generator: the prior means
    means, bias_means = side_rows(post, "U", codes[:5], None)
    np.testing.assert_array_equal(means[0], np.tile([0.4, -0.2], (5, 1)))
    np.testing.assert_array_equal(bias_means[0], np.zeros(5))


def test_unseen_rows_of_an_implicit_side_take_a_fitted_rows_offset():
    """With implicit feedback an unseen user's implicit set is unknown: its offset is a fitted
    user's, drawn at random (with a generator), or the fitted users' mean offset."""
    D, n_fitted, n = 2, 4, 4_000
    offsets = np.array([[[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0], [3.0, 1.0]]])
    post = {
        "U": np.zeros((1, n_fitted, D)) + offsets,  # the effective rows U + offset_U
        "offset_U": offsets,
        "Sigma_U": np.full((1, D, D), 1e-30) + 1e-30 * np.eye(D),
    }
    codes = np.full(n, -1)
    factors, _ = side_rows(post, "U", codes, np.random.default_rng(0))
    matches = (np.abs(factors[0][:, None, :] - offsets[0][None]) < 1e-4).all(-1)
    assert matches.sum(1).tolist() == [1] * n  # every unseen row took one fitted offset
    shares = matches.mean(0)
    np.testing.assert_allclose(shares, 0.25, atol=4 * np.sqrt(0.25 * 0.75 / n))
    means, _ = side_rows(post, "U", codes[:3], None)
    np.testing.assert_allclose(means[0], np.tile(offsets[0].mean(0), (3, 1)))
