"""The fold-in kernel against the closed-form Gaussian conditional of a new row."""

import numpy as np

from bpmf.inference.fold_in import fold_in_rows


def _one_draw_repeated(n_samples, rng, correlated):
    D, n_items, n_users = 2, 5, 4
    Sigma = np.array([[0.8, 0.3], [0.3, 0.5]])
    draws = {
        "U": np.repeat(rng.normal(size=(1, n_users, D)), n_samples, axis=0),
        "V": np.repeat(rng.normal(size=(1, n_items, D)), n_samples, axis=0),
        "mu": np.full(n_samples, 3.0),
        "sigma": np.full(n_samples, 0.7),
        "Sigma_U": np.repeat(Sigma[None], n_samples, axis=0),
        "Sigma_V": np.repeat(Sigma[None], n_samples, axis=0),
        "user_bias": np.repeat(rng.normal(size=(1, n_users)), n_samples, axis=0),
        "item_bias": np.repeat(rng.normal(size=(1, n_items)), n_samples, axis=0),
        "user_bias_sd": np.full(n_samples, 0.6),
        "item_bias_sd": np.full(n_samples, 0.6),
    }
    cov = np.zeros((D + 1, D + 1))
    cov[:D, :D] = Sigma
    cov[D, D] = 0.36
    if correlated:
        cross = np.array([0.2, -0.1])  # correlations 0.37 and -0.24 of the bias with the factors
        cov[:D, D] = cov[D, :D] = cross
        draws["user_bias_factor_cov"] = np.repeat(cross[None], n_samples, axis=0)
        draws["item_bias_factor_cov"] = np.repeat(cross[None], n_samples, axis=0)
    return draws, cov


def test_new_row_has_the_closed_form_conditional_with_and_without_correlated_biases():
    rng = np.random.default_rng(3)
    n_samples = 20_000
    for correlated in (False, True):
        draws, cov = _one_draw_repeated(n_samples, rng, correlated)
        items = np.array([0, 3])  # a new user with two ratings: the prior matters
        ratings = np.array([4.0, 2.0])
        factors, biases = fold_in_rows(
            draws, "U", np.zeros(2, dtype=int), items, ratings, 1, np.random.default_rng(0)
        )
        rows = np.column_stack([factors[:, 0], biases[:, 0]])
        Y = np.column_stack([draws["V"][0, items], np.ones(2)])
        tau = 1.0 / 0.7**2
        precision = np.linalg.inv(cov) + tau * Y.T @ Y
        mean = np.linalg.solve(
            precision, tau * Y.T @ (ratings - 3.0 - draws["item_bias"][0, items])
        )
        covariance = np.linalg.inv(precision)
        se = np.sqrt(np.diag(covariance) / n_samples)
        np.testing.assert_array_less(np.abs(rows.mean(axis=0) - mean), 4 * se)
        np.testing.assert_allclose(np.cov(rows.T), covariance, rtol=0.05, atol=2e-3)


def test_per_row_prior_means_and_implicit_offsets_give_the_closed_form():
    """With a link mean per row (side features) and a known offset ``o`` that the ratings add
    to the row (implicit feedback), the effective row ``w = (U_u + o, b_u)`` has the Gaussian
    conditional with prior mean ``(mu_U + link + o, bias link)``; the kernel returns
    ``U_u = w - o``."""
    rng = np.random.default_rng(5)
    n_samples, D = 20_000, 2
    draws, cov = _one_draw_repeated(n_samples, rng, correlated=False)
    draws["mu_U"] = np.full((n_samples, D), 0.2)
    link = np.array([[0.5, -0.3], [-0.4, 0.1]])  # two new users
    link_bias = np.array([0.3, -0.6])
    offset = np.array([[0.2, 0.4], [-0.5, 0.0]])
    row_codes = np.array([0, 0, 1])
    items = np.array([0, 3, 2])
    ratings = np.array([4.0, 2.0, 3.5])
    factors, biases = fold_in_rows(
        draws, "U", row_codes, items, ratings, 2, np.random.default_rng(1),
        links=(np.broadcast_to(link, (n_samples, 2, D)),
               np.broadcast_to(link_bias, (n_samples, 2))),
        offsets=np.broadcast_to(offset, (n_samples, 2, D)),
    )
    tau = 1.0 / 0.7**2
    for r in range(2):
        mine = row_codes == r
        Y = np.column_stack([draws["V"][0, items[mine]], np.ones(mine.sum())])
        prior_mean = np.append(0.2 + link[r] + offset[r], link_bias[r])
        precision = np.linalg.inv(cov) + tau * Y.T @ Y
        targets = ratings[mine] - 3.0 - draws["item_bias"][0, items[mine]]
        mean = np.linalg.solve(precision, np.linalg.inv(cov) @ prior_mean + tau * Y.T @ targets)
        mean[:D] -= offset[r]  # the returned factors are the effective row less the offset
        rows = np.column_stack([factors[:, r], biases[:, r]])
        covariance = np.linalg.inv(precision)
        se = np.sqrt(np.diag(covariance) / n_samples)
        np.testing.assert_array_less(np.abs(rows.mean(axis=0) - mean), 4 * se)
        np.testing.assert_allclose(np.cov(rows.T), covariance, rtol=0.05, atol=2e-3)
