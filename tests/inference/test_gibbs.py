"""The blocked Gibbs sampler: exact conditionals (rows, Normal-Wishart, half-normal scales),
recovery of known truth under both covariance priors, reproducibility, degenerate data."""

import numpy as np
import pytest
from scipy import integrate, stats

from bpmf.datasets import make_synthetic_ratings
from bpmf.inference.gibbs import sample_gibbs
from bpmf.inference.hyperpriors import draw_halfnormal_scale, sample_normal_wishart
from bpmf.kernels.rows import CHUNK, csr_pair, sample_rows
from bpmf.models import BPMF

N_FACTORS = 2
PRIORS = ("lkj", "wishart")


def model_config(covariance_prior="lkj", **overrides):
    """The resolved model_config of BPMF (public defaults) for one covariance prior."""
    given = {"covariance_prior": covariance_prior, **overrides}
    return BPMF(N_FACTORS, model_config=given)._model_config()


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


def _fit(ratings, covariance_prior="lkj", config=None, **overrides):
    kwargs = dict(
        n_factors=N_FACTORS,
        draws=150,
        tune=100,
        chains=2,
        biases=True,
        covariance_prior=covariance_prior,
        model_config=model_config(covariance_prior) if config is None else config,
        init=None,
        random_state=0,
        progressbar=False,
        cores=1,
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


@pytest.fixture(scope="module", params=PRIORS)
def fitted(request, synthetic):
    return request.param, _fit(synthetic[0], request.param)


def _posterior_mean_prediction(draws, user_codes, item_codes, biases=True):
    U, V = draws["U"], draws["V"]
    pred = draws["mu"][..., None] + np.einsum(
        "cdnk,cdnk->cdn", U[:, :, user_codes], V[:, :, item_codes]
    )
    if biases:
        pred = pred + draws["user_bias"][:, :, user_codes] + draws["item_bias"][:, :, item_codes]
    return pred.mean(axis=(0, 1))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n_ratings", [9, 2 * CHUNK + 37])
def test_row_update_is_the_exact_gaussian_conditional(n_ratings, weighted):
    """Draws are P^-1 h + L^-T z with P = L L^T: check mean and covariance in closed form.

    The kernel works on chunks of ``CHUNK`` ratings; the longer row spans three of them.
    With per-rating weights ``w_n`` (``sqrt_weights``, the noise weights), ``P = prior +
    tau sum w x x^T``, ``h = prior_h + tau sum w x t`` and the sums are ``sum w e`` and
    ``sum w e^2``.
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
    # weights spread over two orders of magnitude, so that an unweighted sum would be far off
    weights = rng.gamma(0.7, 1 / 0.7, n_ratings) + 0.01 if weighted else np.ones(n_ratings)

    def draw(z):
        out = np.empty((1, dim))
        sums = sample_rows(
            indptr, other, ratings, X_offsets, shift, prior_prec, prior_h[None, :], tau,
            z[None, :], out, True, None, 0.0, None, 0,
            np.sqrt(weights) if weighted else None,
        )
        return out[0], sums

    Xn = X[other]
    P = prior_prec + tau * (Xn * weights[:, None]).T @ Xn
    h = prior_h + tau * Xn.T @ (weights * targets)
    mean = np.linalg.solve(P, h)
    np.testing.assert_allclose(draw(np.zeros(dim))[0], mean, rtol=1e-11, atol=1e-12)
    # the map z -> draw - mean is linear, M; then cov = M M^T must equal P^-1
    M = np.column_stack([draw(e)[0] - mean for e in np.eye(dim)])
    np.testing.assert_allclose(M @ M.T, np.linalg.inv(P), rtol=1e-10, atol=1e-12)
    if weighted:  # the unweighted conditional is far from it: the test tells the two apart
        plain = np.linalg.solve(prior_prec + tau * Xn.T @ Xn, prior_h + tau * Xn.T @ targets)
        assert np.abs(plain - mean).max() > 1e-3
    # the residual sums under the drawn row, which the intercept and noise updates use
    row, (sum_errors, sum_squares) = draw(rng.normal(size=dim))
    errors = targets - Xn @ row
    np.testing.assert_allclose([sum_errors, sum_squares],
                               [weights @ errors, weights @ errors**2], rtol=1e-10)


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
    prior, draws = fitted
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
    if prior == "lkj":  # the NUTS statistics of the Cholesky blocks
        expected.update({"diverging": (2, 150), "n_steps_U": (2, 150), "n_steps_V": (2, 150)})
        # the default LKJ model correlates each bias with its row's factors
        expected.update({"user_bias_factor_cov": (2, 150, D), "item_bias_factor_cov": (2, 150, D)})
    assert {name: value.shape for name, value in draws.items()} == expected
    assert all(np.all(np.isfinite(value)) for value in draws.values())
    # covariances are symmetric positive definite
    for name in ("Sigma_U", "Sigma_V"):
        np.testing.assert_allclose(draws[name], np.swapaxes(draws[name], -1, -2), atol=1e-12)
        assert np.linalg.eigvalsh(draws[name]).min() > 0
    if prior == "lkj":
        assert draws["diverging"].sum() <= 2
        assert draws["n_steps_U"].min() >= 1 and draws["n_steps_V"].min() >= 1


def test_fixed_factor_means_stay_at_zero(synthetic):
    """With biases, factor_means="auto" fixes mu_U = mu_V = 0: every draw must keep them there
    and the rows must be centred by the prior, not by a drifting mean."""
    ratings = synthetic[0]
    config = model_config("lkj")
    assert config["factor_means"] is False
    draws = _fit(ratings, "lkj", config, draws=100, tune=30, chains=1)
    np.testing.assert_array_equal(draws["mu_U"], 0.0)
    np.testing.assert_array_equal(draws["mu_V"], 0.0)


def test_recovers_noise_and_predicts_close_to_the_oracle(synthetic, fitted):
    prior, draws = fitted
    ratings, truth, users, items = synthetic
    # sigma: the central 95% posterior interval covers the true noise sd
    low, high = np.quantile(draws["sigma"], [0.025, 0.975])
    assert low < truth.noise_sd < high, (prior, low, high)
    # predictions vs the noise-free truth on random cells (observed or not)
    pred = _posterior_mean_prediction(
        draws, ratings.encode_users(users), ratings.encode_items(items)
    )
    expected = truth.expected(users, items)
    error = np.sqrt(np.mean((pred - expected) ** 2))
    # the signal has sd ~1; a good fit leaves an error well under the noise sd
    assert error < 0.4 * truth.noise_sd, (prior, error)
    # the oracle (truth) scores noise_sd on fresh noisy ratings; the fit is within 10% of it
    noisy = expected + np.random.default_rng(5).normal(0, truth.noise_sd, len(expected))
    rmse_fit = np.sqrt(np.mean((pred - noisy) ** 2))
    rmse_oracle = np.sqrt(np.mean((expected - noisy) ** 2))
    assert rmse_fit < 1.10 * rmse_oracle, prior


def test_lkj_recovers_sigma_and_the_bias_scales(synthetic):
    """LKJ-Gibbs: the 99% intervals of sigma and of each bias scale cover the truth (the bias
    scale given the realised biases: their root mean square), the means are close. The
    independent-bias prior: with biases correlated to the factors, a bias scale is the
    marginal sd of a bias that also carries ``gamma . V_i``, not the truth's bias sd."""
    ratings, truth, _, _ = synthetic
    config = model_config("lkj", correlated_biases=False)
    draws = _fit(ratings, "lkj", config, draws=300, tune=150, random_state=1)
    user_ids, item_ids = ratings.user_ids.to_numpy(), ratings.item_ids.to_numpy()
    targets = {
        "sigma": truth.noise_sd,
        "user_bias_sd": float(np.sqrt(np.mean(truth.user_bias[user_ids] ** 2))),
        "item_bias_sd": float(np.sqrt(np.mean(truth.item_bias[item_ids] ** 2))),
    }
    for name, target in targets.items():
        low, high = np.quantile(draws[name], [0.005, 0.995])
        assert low < target < high, (name, low, target, high)
        assert abs(draws[name].mean() - target) < 0.2 * target, (name, draws[name].mean())


def test_lkj_seeds_reproduce_whatever_the_threads(synthetic):
    """LKJ-Gibbs: equal seeds give equal draws, with one thread or one per chain, and with
    the rows of each chain drawn on one or two numba threads."""
    ratings = synthetic[0]
    first = _fit(ratings, draws=5, tune=6, random_state=11, cores=1)
    second = _fit(ratings, draws=5, tune=6, random_state=11, cores=1)
    threaded = _fit(ratings, draws=5, tune=6, random_state=11, cores=2)
    row_threads = _fit(ratings, draws=5, tune=6, random_state=11, cores=1, threads=2)
    serial = _fit(ratings, draws=5, tune=6, random_state=11, cores=1, threads=1)
    other = _fit(ratings, draws=5, tune=6, random_state=12, cores=1)
    assert set(first) == set(threaded)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
        np.testing.assert_array_equal(first[name], threaded[name], err_msg=name)
        np.testing.assert_array_equal(first[name], row_threads[name], err_msg=name)
        np.testing.assert_array_equal(first[name], serial[name], err_msg=name)
    assert not np.allclose(first["U"], other["U"])
    assert not np.allclose(first["sigma"], other["sigma"])
    # chains use different streams
    assert not np.allclose(first["U"][0], first["U"][1])
    # a Generator seed is accepted and reproducible too
    gen = [_fit(ratings, draws=2, tune=3, random_state=np.random.default_rng(3)) for _ in "ab"]
    np.testing.assert_array_equal(gen[0]["sigma"], gen[1]["sigma"])


def test_wishart_seeds_reproduce(synthetic):
    ratings = synthetic[0]
    first = _fit(ratings, "wishart", draws=5, tune=2, random_state=11)
    second = _fit(ratings, "wishart", draws=5, tune=2, random_state=11, cores=2)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


@pytest.mark.parametrize("prior", PRIORS)
def test_without_biases_and_fixed_noise(synthetic, prior):
    ratings = synthetic[0]
    config = model_config(prior, biases=False, sigma=0.7)
    draws = _fit(ratings, prior, config, biases=False, draws=20, tune=20, chains=1)
    assert "user_bias" not in draws and "item_bias_sd" not in draws
    np.testing.assert_allclose(draws["sigma"], 0.7)
    assert all(np.all(np.isfinite(value)) for value in draws.values())
    if prior == "lkj":  # without biases the factor means are free ("auto")
        assert np.ptp(draws["mu_U"]) > 0


@pytest.mark.parametrize("prior", PRIORS)
def test_init_from_a_point_starts_there(synthetic, prior):
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
    # 10 draws: with 3, the mean of the draws' predictions scattered about 0.195 (seeds 0-2,
    # 0.192-0.201), too close to the bound for a test of where the chains start
    draws = _fit(ratings, prior, init=init, draws=10, tune=0, chains=2)
    pred = _posterior_mean_prediction(
        draws, ratings.encode_users(users), ratings.encode_items(items)
    )
    error = np.sqrt(np.mean((pred - truth.expected(users, items)) ** 2))
    assert error < 0.4 * truth.noise_sd
    with pytest.raises(ValueError, match="missing"):
        _fit(ratings, prior, init={"U": init["U"]}, draws=1, tune=0)
    with pytest.raises(ValueError, match="shape"):
        _fit(ratings, prior, init={**init, "U": init["U"][:-1]}, draws=1, tune=0)


@pytest.mark.parametrize(
    "users, items, n_users, n_items",
    [
        ([0] * 8, list(range(8)), 1, 8),  # a single user
        (list(range(8)), [0] * 8, 8, 1),  # a single item
        ([0], [0], 1, 1),  # a single rating
        ([0, 2], [1, 1], 4, 3),  # users and items without ratings
    ],
    ids=["one-user", "one-item", "one-rating", "empty-rows"],
)
@pytest.mark.parametrize("prior", PRIORS)
def test_degenerate_data_do_not_crash(users, items, n_users, n_items, prior):
    ratings = np.linspace(1.0, 5.0, len(users))
    draws = sample_gibbs(
        np.array(users),
        np.array(items),
        ratings,
        n_users,
        n_items,
        n_factors=N_FACTORS,
        draws=20,
        tune=12,
        chains=2,
        biases=True,
        covariance_prior=prior,
        model_config=model_config(prior),
        random_state=0,
        progressbar=False,
        cores=1,
    )
    assert draws["U"].shape == (2, 20, n_users, N_FACTORS)
    assert draws["V"].shape == (2, 20, n_items, N_FACTORS)
    for name, value in draws.items():
        assert np.all(np.isfinite(value)), name
    assert (draws["sigma"] > 0).all() and (draws["user_bias_sd"] > 0).all()


def test_bad_input_is_rejected(synthetic):
    ratings = synthetic[0]
    u, i, r = ratings.user_codes, ratings.item_codes, ratings.values
    common = dict(
        n_factors=2,
        draws=2,
        tune=0,
        chains=1,
        biases=True,
        covariance_prior="lkj",
        model_config=model_config("lkj"),
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
    with pytest.raises(ValueError, match="covariance_prior"):
        sample_gibbs(
            u, i, r, ratings.n_users, ratings.n_items, **{**common, "covariance_prior": "gamma"}
        )
    with pytest.raises(TypeError):  # the prior and its settings are required
        sample_gibbs(
            u, i, r, ratings.n_users, ratings.n_items,
            **{k: v for k, v in common.items() if k != "covariance_prior"},
        )


# ---------------------------------------------------------------------- half-normal scales
def _halfnormal_scale_cdf(n, sum_squares, prior_sd):
    """CDF of s with density s^-n exp(-Q / 2 s^2) exp(-s^2 / 2 sd^2) by quadrature."""

    def log_density(s):
        return -n * np.log(s) - 0.5 * sum_squares / s**2 - 0.5 * s**2 / prior_sd**2

    low = min(1e-4, 1e-2 * np.sqrt(sum_squares / (n + 1)))
    grid = np.geomspace(low, 50.0 * prior_sd, 20001)
    top = log_density(grid).max()
    cumulative = integrate.cumulative_trapezoid(np.exp(log_density(grid) - top), grid, initial=0)
    return lambda s: np.interp(s, grid, cumulative / cumulative[-1])


@pytest.mark.parametrize(
    "n, sum_squares, prior_sd",
    [
        (0, 0.5, 1.0),  # no observations: the GIG path with lambda < 0
        (1, 0.2, 1.0),  # lambda = 0
        (3, 0.4, 0.3),  # rejection sampler, prior and data in conflict
        (40, 10.0, 1.0),  # rejection sampler, informative data
        (2000, 500.0, 1.0),  # the noise scale of a real fit
        (5, 1e-6, 1.0),  # almost no spread: the scale shrinks towards zero
    ],
)
def test_halfnormal_scale_draws_are_gig(n, sum_squares, prior_sd):
    """The precision 1 / s^2 of draw_halfnormal_scale is GIG((n - 1) / 2, chi=1 / sd^2,
    psi=Q): KS test against scipy's geninvgauss, and the scale against the CDF of its density
    integrated numerically (which checks the GIG parameters themselves)."""
    rng = np.random.default_rng(n)
    scales = np.array([draw_halfnormal_scale(n, sum_squares, prior_sd, rng) for _ in range(3000)])
    chi, psi, lam = 1.0 / prior_sd**2, sum_squares, 0.5 * (n - 1)
    if n <= 100:  # scipy's GIG CDF integrates numerically and loses accuracy for large lambda
        gig = stats.geninvgauss(lam, np.sqrt(chi * psi), scale=np.sqrt(chi / psi))
        assert stats.kstest(1.0 / scales**2, gig.cdf).pvalue > 0.01
    assert stats.kstest(scales, _halfnormal_scale_cdf(n, sum_squares, prior_sd)).pvalue > 0.01


def test_overrelaxed_row_draw_has_the_closed_form_mean_and_covariance():
    """With ``alpha``, the kernel maps the previous row ``x`` to ``m + alpha (x - m) +
    sqrt(1 - alpha^2) P^-1/2 z``: mean ``m + alpha (x - m)``, covariance ``(1 - alpha^2)
    P^-1``; so N(m, P^-1) stays invariant (mean m, covariance alpha^2 P^-1 + (1 - alpha^2)
    P^-1 = P^-1)."""
    rng = np.random.default_rng(3)
    dim, n_other, n_ratings, alpha = 4, 30, 60, -0.7
    X = np.column_stack([rng.normal(size=(n_other, dim)), rng.normal(size=n_other)])
    other = rng.integers(0, n_other, n_ratings).astype(np.int64)
    ratings = rng.normal(size=n_ratings) + 1.0
    A = rng.normal(size=(dim, dim))
    prior_prec = A @ A.T + dim * np.eye(dim)
    prior_h = rng.normal(size=(1, dim))
    indptr = np.array([0, n_ratings], dtype=np.int64)
    previous = rng.normal(size=dim)

    def draw(z, a):
        out = previous[None, :].copy()
        sample_rows(indptr, other, ratings, X, 0.5, prior_prec, prior_h, 1.3, z[None, :], out,
                    False, None, a)
        return out[0]

    mean = draw(np.zeros(dim), 0.0)  # the plain kernel with z = 0: the conditional mean m
    Xn = X[other, :dim]
    P = prior_prec + 1.3 * Xn.T @ Xn
    np.testing.assert_allclose(
        mean, np.linalg.solve(P, prior_h[0] + 1.3 * Xn.T @ (ratings - 0.5 - X[other, dim])),
        rtol=1e-10,
    )
    shifted = draw(np.zeros(dim), alpha)
    np.testing.assert_allclose(shifted, mean + alpha * (previous - mean), rtol=1e-10, atol=1e-12)
    M = np.column_stack([draw(e, alpha) - shifted for e in np.eye(dim)])
    np.testing.assert_allclose(M @ M.T, (1 - alpha**2) * np.linalg.inv(P), rtol=1e-9, atol=1e-12)


def test_row_residual_sums_are_each_rows_sum_of_residuals():
    rng = np.random.default_rng(8)
    n_rows, n_other, dim = 40, 25, 3
    users = rng.integers(0, n_rows, 600).astype(np.int64)
    items = rng.integers(0, n_other, 600).astype(np.int64)
    values = rng.normal(size=600)
    (indptr, partners, sorted_values), _ = csr_pair(users, items, values, n_rows, n_other)
    X = np.column_stack([rng.normal(size=(n_other, dim)), rng.normal(size=n_other)])
    out = np.empty((n_rows, dim))
    row_sums = np.full(n_rows, np.nan)
    total, _ = sample_rows(indptr, partners, sorted_values, X, 0.3, np.eye(dim),
                           np.zeros((1, dim)), 2.0, rng.normal(size=(n_rows, dim)), out, True,
                           None, 0.0, row_sums)
    errors = sorted_values - 0.3 - X[partners, dim] - np.einsum(
        "na,na->n", X[partners, :dim], out[np.repeat(np.arange(n_rows), np.diff(indptr))])
    expected = np.bincount(np.repeat(np.arange(n_rows), np.diff(indptr)), errors, n_rows)
    np.testing.assert_allclose(row_sums, expected, atol=1e-10)
    np.testing.assert_allclose(total, errors.sum(), atol=1e-10)


def test_correlated_prior_terms_match_the_dense_formulas():
    """The correlated prior's precisions, bias regression and shift terms, computed from the
    Cholesky factor, against inverses and solves of the dense covariance."""
    from bpmf.inference.hyperpriors import CorrelatedLKJHyperpriors

    D = 3
    hyper = CorrelatedLKJHyperpriors(model_config("lkj", correlated_biases=True), D, 10)
    rng = np.random.default_rng(4)
    chol = np.tril(rng.normal(size=(D + 1, D + 1)))
    chol[np.diag_indices(D + 1)] = rng.uniform(0.5, 1.5, D + 1)
    state = {"U": rng.normal(size=(50, D)), "user_bias": rng.normal(size=50)}
    hyper._set_covariance("U", state, chol)
    cov = chol @ chol.T
    np.testing.assert_allclose(state["row_precision_U"], np.linalg.inv(cov), rtol=1e-10)
    np.testing.assert_allclose(state["Lambda_U"], np.linalg.inv(cov[:D, :D]), rtol=1e-10)
    np.testing.assert_allclose(state["Sigma_U"], cov[:D, :D])
    assert state["user_bias_precision"] == pytest.approx(1.0 / cov[D, D])
    gamma = hyper.bias_regression("U", state)
    np.testing.assert_allclose(gamma, np.linalg.solve(cov[:D, :D], cov[:D, D]), rtol=1e-10)
    rows = np.column_stack([state["U"], state["user_bias"]])
    lam, weights = hyper.bias_terms("user_bias", state)
    precision = np.linalg.inv(cov)
    assert lam == pytest.approx(precision[-1, -1])
    np.testing.assert_allclose(weights, rows @ precision[-1], rtol=1e-10, atol=1e-12)
    A, a = hyper.mean_prior("U", state)
    direction = np.vstack([np.eye(D), gamma[None, :]])
    np.testing.assert_allclose(A, 50 * direction.T @ precision @ direction, rtol=1e-10)
    np.testing.assert_allclose(a, -direction.T @ precision @ rows.sum(axis=0), rtol=1e-10)


def test_correlated_split_moves_keep_the_fitted_values_and_the_rows_prior():
    """The level-split moves of the correlated prior change U, V, the biases and the
    covariances, but not a fitted value nor the Gaussian prior density of either side's
    rows under its own (moved) covariance; the LKJ prior decides the acceptance."""
    from scipy import stats as st

    from bpmf.inference.hyperpriors import CorrelatedLKJHyperpriors

    D = 2
    hyper = CorrelatedLKJHyperpriors(model_config("lkj", correlated_biases=True), D, 10)
    rng = np.random.default_rng(7)
    state = {
        "U": rng.normal(size=(30, D)) + 0.5,
        "V": rng.normal(size=(20, D)) - 0.3,
        "user_bias": rng.normal(size=30),
        "item_bias": rng.normal(size=20),
    }
    for side in ("U", "V"):
        chol = np.tril(rng.normal(scale=0.3, size=(D + 1, D + 1)))
        chol[np.diag_indices(D + 1)] = rng.uniform(0.5, 1.0, D + 1)
        hyper._set_covariance(side, state, chol)

    def fitted(s):
        return s["U"] @ s["V"].T + s["user_bias"][:, None] + s["item_bias"][None, :]

    def row_logp(s, side, bias):
        rows = np.column_stack([s[side], s[bias]])
        cov = s[f"chol_{side}"] @ s[f"chol_{side}"].T
        return st.multivariate_normal(np.zeros(D + 1), cov).logpdf(rows).sum()

    before = fitted(state)
    accepted = 0
    for step in range(20):
        side, bias = (("U", "user_bias"), ("V", "item_bias"))[step % 2]
        prior = row_logp(state, side, bias)
        old_chol = state[f"chol_{side}"].copy()
        if hyper.split_move(side, state, rng):
            accepted += 1
            assert not np.array_equal(state[f"chol_{side}"], old_chol)
        np.testing.assert_allclose(fitted(state), before, atol=1e-10)
        assert row_logp(state, side, bias) == pytest.approx(prior, abs=1e-8)
    assert accepted > 10  # most proposals are accepted
