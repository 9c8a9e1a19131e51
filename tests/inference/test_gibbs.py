"""The conjugate Gibbs sampler: exact conditionals, recovery of known truth, contract, seeds."""

import numpy as np
import pandas as pd
import pytest

from bpmf.datasets import make_synthetic_ratings
from bpmf.inference.wishart_gibbs import (
    DEFAULT_GIBBS_CONFIG,
    sample_gibbs,
    sample_normal_wishart,
)
from bpmf.kernels.rows import CHUNK, csr_pair, sample_rows

N_FACTORS = 2


@pytest.fixture(scope="module")
def synthetic():
    """~6,000 noisy ratings of a rank-2 biased model, plus held-out cells with their truth."""
    ratings, truth = make_synthetic_ratings(
        n_users=150, n_items=100, n_factors=N_FACTORS, density=0.4, noise_sd=0.5, random_state=3
    )
    rng = np.random.default_rng(4)
    users = rng.integers(0, 150, 2000)
    items = rng.integers(0, 100, 2000)
    return ratings, truth, users, items


def _fit(ratings, **overrides):
    kwargs = dict(
        n_factors=N_FACTORS,
        draws=150,
        tune=100,
        chains=2,
        biases=True,
        model_config=None,
        init=None,
        random_state=0,
        progressbar=False,
    )
    kwargs.update(overrides)
    return sample_gibbs(
        ratings.user_codes,
        ratings.item_codes,
        ratings.values,
        ratings.n_users,
        ratings.n_items,
        **kwargs,
    )


@pytest.fixture(scope="module")
def fitted(synthetic):
    return _fit(synthetic[0])


def _posterior_mean_prediction(draws, user_codes, item_codes, biases=True):
    U, V = draws["U"], draws["V"]
    pred = draws["mu"][..., None] + np.einsum(
        "cdnk,cdnk->cdn", U[:, :, user_codes], V[:, :, item_codes]
    )
    if biases:
        pred = pred + draws["user_bias"][:, :, user_codes] + draws["item_bias"][:, :, item_codes]
    return pred.mean(axis=(0, 1))


@pytest.mark.parametrize("n_ratings", [9, 2 * CHUNK + 37])
def test_row_update_is_the_exact_gaussian_conditional(n_ratings):
    """Draws are P^-1 h + L^-T z with P = L L^T: check mean and covariance in closed form.

    The kernel works on chunks of ``CHUNK`` ratings; the longer row spans three of them.
    """
    rng = np.random.default_rng(0)
    dim, n_other = 3, 6
    X = rng.normal(size=(n_other, dim))
    offsets = rng.normal(size=n_other)  # the other side's biases, last column of the kernel's X
    other = rng.integers(0, n_other, n_ratings).astype(np.int64)
    targets = rng.normal(size=n_ratings)
    shift = 0.8
    ratings = targets + shift + offsets[other]
    A = rng.normal(size=(dim, dim))
    prior_prec = A @ A.T + dim * np.eye(dim)
    prior_h = rng.normal(size=dim)
    tau = 1.7 / max(1, n_ratings // 9)
    indptr = np.array([0, n_ratings], dtype=np.int64)  # one row holding every rating
    X_offsets = np.column_stack([X, offsets])

    def draw(z):
        out = np.empty((1, dim))
        sums = sample_rows(
            indptr, other, ratings, X_offsets, shift, prior_prec, prior_h, tau, z[None, :], out,
            True,
        )
        return out[0], sums

    Xn = X[other]
    P = prior_prec + tau * Xn.T @ Xn
    h = prior_h + tau * Xn.T @ targets
    mean = np.linalg.solve(P, h)
    np.testing.assert_allclose(draw(np.zeros(dim))[0], mean, rtol=1e-12, atol=1e-12)
    # the map z -> draw - mean is linear, M; then cov = M M^T must equal P^-1
    M = np.column_stack([draw(e)[0] - mean for e in np.eye(dim)])
    np.testing.assert_allclose(M @ M.T, np.linalg.inv(P), rtol=1e-10, atol=1e-12)
    # the residual sums under the drawn row, which the intercept and noise updates use
    row, (sum_errors, sum_squares) = draw(rng.normal(size=dim))
    errors = targets - Xn @ row
    np.testing.assert_allclose([sum_errors, sum_squares], [errors.sum(), errors @ errors])


def test_csr_matches_lexsort_and_keeps_ties_in_input_order():
    """The radix sort groups ratings exactly as np.lexsort, duplicates and empty rows included."""
    rng = np.random.default_rng(2)
    n_users, n_items, n_ratings = 37, 1100, 3000  # item codes need 11 bits: two radix passes
    users = rng.integers(0, n_users - 2, n_ratings)  # the last two users have no ratings
    items = rng.integers(0, n_items, n_ratings)
    users[:40], items[:40] = 5, 7  # a pair rated 40 times: ties must keep the input order
    ratings = rng.normal(size=n_ratings)
    by_user, by_item = csr_pair(users, items, ratings, n_users, n_items)
    for (indptr, partners, values), rows, others, n_rows in (
        (by_user, users, items, n_users),
        (by_item, items, users, n_items),
    ):
        order = np.lexsort((others, rows))
        np.testing.assert_array_equal(partners, others[order])
        np.testing.assert_array_equal(values, ratings[order])
        counts = np.bincount(rows, minlength=n_rows)
        np.testing.assert_array_equal(indptr, np.concatenate([[0], np.cumsum(counts)]))


def test_normal_wishart_conditional_moments():
    """E[Lambda] = nu_n W_n and E[mu] = mu_n for the Normal-Wishart posterior."""
    rng = np.random.default_rng(1)
    factors = rng.normal(size=(30, 2)) @ np.array([[1.0, 0.0], [0.5, 0.7]]) + [0.3, -0.2]
    beta0, nu0, mu0, W0_inv = 2.0, 2.0, np.zeros(2), np.eye(2)
    n = len(factors)
    mean = factors.mean(0)
    scatter = (factors - mean).T @ (factors - mean)
    W_n = np.linalg.inv(W0_inv + scatter + beta0 * n / (beta0 + n) * np.outer(mean, mean))
    draws = [sample_normal_wishart(factors, beta0, nu0, W0_inv, mu0, rng) for _ in range(4000)]
    Lambda_mean = np.mean([d[1] for d in draws], axis=0)
    mu_mean = np.mean([d[0] for d in draws], axis=0)
    np.testing.assert_allclose(Lambda_mean, (nu0 + n) * W_n, rtol=0.05, atol=0.03)
    np.testing.assert_allclose(mu_mean, n * mean / (beta0 + n), atol=0.02)


def test_output_names_and_shapes(synthetic, fitted):
    ratings = synthetic[0]
    D = N_FACTORS
    expected = {
        "U": (2, 150, ratings.n_users, D),
        "V": (2, 150, ratings.n_items, D),
        "mu_U": (2, 150, D),
        "mu_V": (2, 150, D),
        "Sigma_U": (2, 150, D, D),
        "Sigma_V": (2, 150, D, D),
        "mu": (2, 150),
        "sigma": (2, 150),
        "user_bias": (2, 150, ratings.n_users),
        "item_bias": (2, 150, ratings.n_items),
        "user_bias_sd": (2, 150),
        "item_bias_sd": (2, 150),
    }
    assert {name: value.shape for name, value in fitted.items()} == expected
    assert all(np.all(np.isfinite(value)) for value in fitted.values())
    # covariances are symmetric positive definite
    eig = np.linalg.eigvalsh(fitted["Sigma_U"])
    assert eig.min() > 0


def test_recovers_noise_and_predicts_close_to_the_oracle(synthetic, fitted):
    ratings, truth, users, items = synthetic
    # sigma: the central 95% posterior interval covers the true noise sd
    low, high = np.quantile(fitted["sigma"], [0.025, 0.975])
    assert low < truth.noise_sd < high
    # predictions vs the noise-free truth on random cells (observed or not)
    pred = _posterior_mean_prediction(
        fitted, ratings.encode_users(users), ratings.encode_items(items)
    )
    expected = truth.expected(users, items)
    error = np.sqrt(np.mean((pred - expected) ** 2))
    # the signal has sd ~1; a good fit leaves an error well under the noise sd
    assert error < 0.4 * truth.noise_sd, error
    # the oracle (truth) scores noise_sd on fresh noisy ratings; the fit is within 10% of it
    noisy = expected + np.random.default_rng(5).normal(0, truth.noise_sd, len(expected))
    rmse_fit = np.sqrt(np.mean((pred - noisy) ** 2))
    rmse_oracle = np.sqrt(np.mean((expected - noisy) ** 2))
    assert rmse_fit < 1.10 * rmse_oracle


def test_seeds_reproduce(synthetic):
    ratings = synthetic[0]
    first = _fit(ratings, draws=5, tune=2, random_state=11)
    second = _fit(ratings, draws=5, tune=2, random_state=11)
    other = _fit(ratings, draws=5, tune=2, random_state=12)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    assert not np.allclose(first["U"], other["U"])
    # chains use different streams
    assert not np.allclose(first["U"][0], first["U"][1])


def test_without_biases_and_fixed_noise(synthetic):
    ratings, truth, users, items = synthetic
    config = {"noise_sd": 0.7, "some_nuts_only_key": "ignored"}
    draws = _fit(ratings, biases=False, model_config=config, draws=20, tune=20, chains=1)
    assert "user_bias" not in draws and "item_bias_sd" not in draws
    np.testing.assert_allclose(draws["sigma"], 0.7)


def test_init_from_a_point_starts_there(synthetic):
    ratings, truth, users, items = synthetic
    user_ids = ratings.user_ids.to_numpy()
    item_ids = ratings.item_ids.to_numpy()
    init = {
        "U": truth.U[user_ids],
        "V": truth.V[item_ids],
        "mu": truth.global_mean,
        "sigma": truth.noise_sd,
        "user_bias": truth.user_bias[user_ids],
        "item_bias": truth.item_bias[item_ids],
    }
    draws = _fit(ratings, init=init, draws=3, tune=0, chains=2)
    pred = _posterior_mean_prediction(
        draws, ratings.encode_users(users), ratings.encode_items(items)
    )
    error = np.sqrt(np.mean((pred - truth.expected(users, items)) ** 2))
    assert error < 0.4 * truth.noise_sd
    with pytest.raises(ValueError, match="missing"):
        _fit(ratings, init={"U": init["U"]}, draws=1, tune=0)


def test_bad_input_is_rejected(synthetic):
    ratings = synthetic[0]
    u, i, r = ratings.user_codes, ratings.item_codes, ratings.values
    common = dict(
        n_factors=2,
        draws=2,
        tune=0,
        chains=1,
        biases=True,
        model_config=None,
        init=None,
        random_state=0,
        progressbar=False,
    )
    with pytest.raises(ValueError, match="differ in length"):
        sample_gibbs(u[:-1], i, r, ratings.n_users, ratings.n_items, **common)
    with pytest.raises(ValueError, match="user_codes must lie"):
        sample_gibbs(u, i, r, ratings.n_users - 1, ratings.n_items, **common)
    with pytest.raises(ValueError, match="NaN"):
        sample_gibbs(
            u,
            i,
            np.where(np.arange(len(r)) == 0, np.nan, r),
            ratings.n_users,
            ratings.n_items,
            **common,
        )
    with pytest.raises(ValueError, match="draws"):
        sample_gibbs(u, i, r, ratings.n_users, ratings.n_items, **{**common, "draws": 0})
    with pytest.raises(ValueError, match="nu0"):
        sample_gibbs(
            u, i, r, ratings.n_users, ratings.n_items, **{**common, "model_config": {"nu0": 0.5}}
        )
    assert set(DEFAULT_GIBBS_CONFIG) >= {"beta0", "nu0", "W0", "mu0", "noise_sd"}


def test_nuts_model_keys_are_understood(synthetic):
    ratings = synthetic[0]
    draws = _fit(ratings, model_config={"sigma": 0.6, "lkj_eta": 2.0}, draws=3, tune=0, chains=1)
    np.testing.assert_allclose(draws["sigma"], 0.6)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS:UserWarning")
def test_gibbs_and_nuts_predictive_means_agree(synthetic):
    """Wishart (Gibbs) and LKJ (NUTS) priors give the same predictions on informative data."""
    pytest.importorskip("nutpie")
    from bpmf.models import BPMF

    ratings, truth, users, items = synthetic
    sampler = {"draws": 300, "tune": 300, "chains": 2}
    scores, predictions = {}, {}
    for method in ("gibbs", "nuts"):
        model = BPMF(
            n_factors=N_FACTORS,
            method=method,
            sampler_config=sampler,
            random_state=1,
            progressbar=False,
        ).fit(ratings)
        pairs = pd.DataFrame({"user": users, "item": items})
        predictions[method] = model.predict(pairs, on_unseen="ignore")
        expected = truth.expected(users, items)
        scores[method] = np.sqrt(np.mean((predictions[method] - expected) ** 2))
    assert abs(scores["gibbs"] - scores["nuts"]) < 0.01, scores
    between = np.sqrt(np.mean((predictions["gibbs"] - predictions["nuts"]) ** 2))
    assert between < 0.5 * truth.noise_sd, between
