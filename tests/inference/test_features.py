"""The side-feature link block: its conditional draws in closed form, and recovery of the
links by the Gibbs sampler on data simulated from the model."""

import numpy as np
import pytest

from bpmf.inference.features import FeatureLinks, bias_prior_values, link_scatter
from bpmf.inference.gibbs import sample_gibbs

LKJ = {"covariance_prior": "lkj", "biases": True, "mu_sd": 1.0, "sigma": None,
       "factor_mean_sd": 1.0, "lkj_eta": 2.0, "factor_scale_sd": 1.0, "bias_scale_sd": 1.0,
       "sigma_sd": 1.0, "factor_means": False, "correlated_biases": False}


def _state(rng, n=40, F=3, D=2):
    X = rng.standard_normal((n, F))
    A = rng.standard_normal((D, D))
    Sigma = A @ A.T + 0.5 * np.eye(D)
    state = {
        "U": rng.standard_normal((n, D)),
        "mu_U": np.array([0.3, -0.2]),
        "Sigma_U": Sigma,
        "user_bias": rng.standard_normal(n),
        "user_bias_precision": 2.5,
    }
    return X, state


def test_link_draw_matches_its_matrix_normal_conditional():
    rng = np.random.default_rng(0)
    X, state = _state(rng)
    links = FeatureLinks({"U": X}, biases=True, precision_shape=2.0, precision_rate=3.0)
    links.start(state, 2)
    lam = 0.7
    residual = np.column_stack([state["U"] - state["mu_U"], state["user_bias"]])
    P = X.T @ X + lam * np.eye(3)
    mean = np.linalg.solve(P, X.T @ residual)
    C = np.zeros((3, 3))
    C[:2, :2] = state["Sigma_U"]
    C[2, 2] = 1.0 / state["user_bias_precision"]
    chol_p, chol_c = np.linalg.cholesky(P), np.linalg.cholesky(C)
    n_draws = 4000
    white = np.empty((n_draws, 9))
    lam_error = np.empty(n_draws)
    for k in range(n_draws):
        state["link_precision_U"] = lam
        links.step(state, rng)
        link = np.column_stack([state["B_U"], state["user_bias_link"]])
        # L_P^T (B' - M) L_C^-T is a matrix of independent standard normals
        white[k] = (chol_p.T @ (link - mean) @ np.linalg.inv(chol_c).T).ravel()
        # lambda given the new link: Gamma(a + F (D + 1) / 2, b + tr(B' C^-1 B'^T) / 2)
        quad = np.trace(link @ np.linalg.solve(C, link.T))
        lam_error[k] = state["link_precision_U"] - (2.0 + 4.5) / (3.0 + 0.5 * quad)
        # the link means follow the draw
        np.testing.assert_allclose(state["link_mean_U"], X @ state["B_U"])
    z_mean = white.mean(0) * np.sqrt(n_draws)
    assert np.abs(z_mean).max() < 4
    cov = np.cov(white, rowvar=False)
    assert np.abs(cov - np.eye(9)).max() < 4 * np.sqrt(2.0 / n_draws)
    assert abs(lam_error.mean() / (lam_error.std() / np.sqrt(n_draws))) < 4


def test_link_prior_terms_of_the_other_conditionals():
    rng = np.random.default_rng(1)
    X, state = _state(rng)
    state["B_U"] = rng.standard_normal((3, 2))
    state["user_bias_link"] = rng.standard_normal(3)
    state["link_precision_U"] = 0.4
    state["link_mean_user_bias"] = X @ state["user_bias_link"]
    scatter, count = link_scatter("U", state)
    np.testing.assert_allclose(scatter, 0.4 * state["B_U"].T @ state["B_U"])
    assert count == 3
    values = bias_prior_values("user_bias", state)
    assert values.shape == (43,)
    np.testing.assert_allclose(values @ values,
                               np.sum((state["user_bias"] - X @ state["user_bias_link"]) ** 2)
                               + 0.4 * state["user_bias_link"] @ state["user_bias_link"])
    assert link_scatter("V", state) == (None, 0)
    np.testing.assert_array_equal(bias_prior_values("item_bias", {"item_bias": np.ones(2)}),
                                  np.ones(2))


def simulate(seed=0, n_users=200, n_items=150, D=2, FU=3, FV=2, density=0.15, sigma=0.5):
    """Ratings drawn from the model with links on both sides (biases regress too)."""
    rng = np.random.default_rng(seed)
    XU = rng.standard_normal((n_users, FU))
    XV = rng.standard_normal((n_items, FV))
    truth = {"B_U": rng.normal(0, 0.7, (FU, D)), "B_V": rng.normal(0, 0.7, (FV, D)),
             "user_bias_link": rng.normal(0, 0.4, FU), "item_bias_link": rng.normal(0, 0.4, FV)}
    U = XU @ truth["B_U"] + 0.5 * rng.standard_normal((n_users, D))
    V = XV @ truth["B_V"] + 0.5 * rng.standard_normal((n_items, D))
    ub = XU @ truth["user_bias_link"] + 0.2 * rng.standard_normal(n_users)
    ib = XV @ truth["item_bias_link"] + 0.2 * rng.standard_normal(n_items)
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    ratings = (3.0 + ub[users] + ib[items] + np.einsum("nk,nk->n", U[users], V[items])
               + sigma * rng.standard_normal(len(users)))
    return users, items, ratings, XU, XV, truth


def _check_recovery(draws, truth):
    # the links rotate with the factors: B_U B_V^T (the features' interaction) is identified
    product = np.einsum("cdfk,cdgk->cdfg", draws["B_U"], draws["B_V"]).reshape(
        -1, truth["B_U"].shape[0], truth["B_V"].shape[0])
    z = (product.mean(0) - truth["B_U"] @ truth["B_V"].T) / product.std(0)
    assert np.abs(z).max() < 4, z
    for name in ("user_bias_link", "item_bias_link"):
        values = draws[name].reshape(-1, truth[name].shape[0])
        z = (values.mean(0) - truth[name]) / values.std(0)
        assert np.abs(z).max() < 4, (name, z)


@pytest.mark.parametrize("prior", ["lkj", "wishart"])
def test_gibbs_recovers_the_links(prior):
    users, items, ratings, XU, XV, truth = simulate()
    if prior == "lkj":
        config = LKJ
    else:
        from bpmf.inference.hyperpriors import WISHART_DEFAULTS

        config = {**WISHART_DEFAULTS, "covariance_prior": "wishart", "biases": True,
                  "mu_sd": 1.0, "sigma": None}
    draws = sample_gibbs(users, items, ratings, XU.shape[0], XV.shape[0], n_factors=2,
                         draws=300, tune=150, chains=2, biases=True, covariance_prior=prior,
                         model_config=config, random_state=1, progressbar=False,
                         features={"U": XU, "V": XV})
    assert draws["B_U"].shape == (2, 300, 3, 2)
    assert draws["link_precision_V"].shape == (2, 300)
    assert abs(draws["sigma"].mean() - 0.5) < 0.03
    _check_recovery(draws, truth)


def test_gibbs_with_features_on_one_side_and_no_biases_is_reproducible():
    users, items, ratings, XU, _, _ = simulate(n_users=60, n_items=40, density=0.3)
    config = {**LKJ, "biases": False, "factor_means": True}
    kwargs = dict(n_factors=2, draws=20, tune=10, chains=1, biases=False,
                  covariance_prior="lkj", model_config=config, progressbar=False,
                  features={"U": XU, "V": None})
    first = sample_gibbs(users, items, ratings, 60, 40, random_state=3, **kwargs)
    second = sample_gibbs(users, items, ratings, 60, 40, random_state=3, **kwargs)
    np.testing.assert_array_equal(first["B_U"], second["B_U"])
    assert "B_V" not in first and "user_bias_link" not in first
    with pytest.raises(ValueError, match="60 rows"):
        sample_gibbs(users, items, ratings, 60, 40, random_state=3,
                     **{**kwargs, "features": {"U": XU[:10]}})
