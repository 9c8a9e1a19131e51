"""The ordinal steps of the Gibbs sampler: invariance of the cut-point step, recovery of the
cut-points from data simulated from the model, reproducibility, offsets in the latent score."""

import arviz as az
import numpy as np
import pytest
from scipy import special

from bpmf.inference.gibbs import sample_gibbs
from bpmf.inference.hyperpriors import WISHART_DEFAULTS
from bpmf.inference.ordinal import OrdinalGibbs, cutpoint_prior_means, rating_categories
from bpmf.kernels.rows import csr_pair


def _fixed_eta_chain(eta, categories, n_cuts, prior_sd, tune, draws, seed):
    """Only the (cut-points, latents) block, with the latent scores' means held at ``eta``
    (one user per rating, one item with V = 1, no biases, mu = 0)."""
    n = len(eta)
    users, items = np.arange(n), np.zeros(n, dtype=np.int64)
    csrs = csr_pair(users, items, np.zeros(n), n, 1)
    means = cutpoint_prior_means(1, n_cuts + 1)
    steps = OrdinalGibbs(users, items, categories, n_cuts + 1, csrs, means, prior_sd, tune)
    state = {"U": eta[:, None].copy(), "V": np.ones((1, 1)), "mu": 0.0}
    steps.start(state)
    rng = np.random.default_rng(seed)
    kept = np.empty((draws, n_cuts))
    for sweep in range(tune + draws):
        steps.step(state, False, rng)
        if sweep >= tune:
            kept[sweep - tune] = state["cutpoints"]
            # the latents lie in their ratings' intervals, in both layouts
            cuts = np.concatenate([[-np.inf], state["cutpoints"], [np.inf]])
            z = steps.latent
            assert np.all((z > cuts[categories]) & (z <= cuts[categories + 1]))
            np.testing.assert_array_equal(np.sort(steps.csrs[0][2]), np.sort(z))
    return kept, means


def test_cutpoint_step_leaves_the_conditional_invariant():
    """Posterior means of (c1, c2) given eta by the chain against a grid integral."""
    rng = np.random.default_rng(0)
    eta = rng.normal(2.0, 0.8, 40)
    categories = np.clip(np.round(eta + rng.standard_normal(40)).astype(int) - 1, 0, 2)
    prior_sd = 0.7
    kept, means = _fixed_eta_chain(eta, categories, 2, prior_sd, 300, 4000, seed=1)
    grid = np.linspace(-1.0, 5.0, 601)
    c1, c2 = np.meshgrid(grid, grid, indexing="ij")
    log_density = -0.5 * ((c1 - means[0]) ** 2 + (c2 - means[1]) ** 2) / prior_sd**2
    cuts = [np.full_like(c1, -np.inf), c1, c2, np.full_like(c1, np.inf)]
    for e, k in zip(eta, categories, strict=True):
        upper = special.ndtr(cuts[k + 1] - e)
        lower = special.ndtr(cuts[k] - e)
        log_density += np.log(np.maximum(upper - lower, 1e-300))
    log_density[c1 >= c2] = -np.inf
    weights = np.exp(log_density - log_density.max())
    weights /= weights.sum()
    for j, grid_values in enumerate((c1, c2)):
        exact = float((weights * grid_values).sum())
        draws = kept[:, j]
        mcse = float(az.mcse(draws[None, :], method="mean"))
        assert abs(draws.mean() - exact) / mcse < 4, (j, draws.mean(), exact, mcse)


def _simulate(seed=0, n_users=150, n_items=100, n_ratings=5000, n_factors=2):
    rng = np.random.default_rng(seed)
    U = rng.normal(0, 0.6, (n_users, n_factors))
    V = rng.normal(0, 0.6, (n_items, n_factors))
    user_bias = rng.normal(0, 0.3, n_users)
    item_bias = rng.normal(0, 0.3, n_items)
    pairs = rng.choice(n_users * n_items, n_ratings, replace=False)
    users, items = pairs // n_items, pairs % n_items
    mu = 3.0
    eta = mu + user_bias[users] + item_bias[items] + np.einsum("nk,nk->n", U[users], V[items])
    cutpoints = np.array([1.3, 2.6, 3.3, 4.4])
    ratings = 1.0 + np.searchsorted(cutpoints, eta + rng.standard_normal(n_ratings))
    truth = {"cutpoints": cutpoints, "mu": mu, "user_bias": user_bias, "item_bias": item_bias}
    return users, items, ratings, n_users, n_items, truth


def _fit(users, items, ratings, n_users, n_items, draws, tune, seed, chains=2):
    config = {**WISHART_DEFAULTS, "mu_sd": 1.0, "sigma": None, "cutpoint_sd": 1.0}
    return sample_gibbs(
        users, items, ratings, n_users, n_items, n_factors=2, draws=draws, tune=tune,
        chains=chains, biases=True, covariance_prior="wishart", model_config=config,
        random_state=seed, progressbar=False, ordinal=(1, 5),
    )


def test_cutpoints_recovered_from_data_simulated_from_the_model():
    users, items, ratings, n_users, n_items, truth = _simulate()
    out = _fit(users, items, ratings, n_users, n_items, draws=300, tune=200, seed=3)
    cutpoints = out["cutpoints"]
    assert cutpoints.shape == (2, 300, 4)
    assert np.all(np.diff(cutpoints, axis=2) > 0)
    # identified: the gaps, and the cut-points relative to the level mu + mean biases
    gaps = np.diff(cutpoints, axis=2)
    level = out["mu"] + out["user_bias"].mean(-1) + out["item_bias"].mean(-1)
    relative = cutpoints - level[..., None]
    true_level = truth["mu"] + truth["user_bias"].mean() + truth["item_bias"].mean()
    for draws, true in ((gaps, np.diff(truth["cutpoints"])),
                        (relative, truth["cutpoints"] - true_level)):
        mean = draws.mean((0, 1))
        sd = draws.std((0, 1))
        np.testing.assert_array_less(np.abs(mean - true) / sd, 4.0)
        np.testing.assert_array_less(sd, 0.1)  # and informed by the data, not the prior


def test_same_seed_same_draws():
    users, items, ratings, n_users, n_items, _ = _simulate(n_ratings=800, seed=1)
    first = _fit(users, items, ratings, n_users, n_items, draws=5, tune=5, seed=11)
    second = _fit(users, items, ratings, n_users, n_items, draws=5, tune=5, seed=11)
    np.testing.assert_array_equal(first["cutpoints"], second["cutpoints"])
    np.testing.assert_array_equal(first["U"], second["U"])


def test_latent_score_includes_offsets_and_biases():
    rng = np.random.default_rng(4)
    users, items = np.array([0, 1, 1, 2]), np.array([1, 0, 2, 2])
    categories = np.array([0, 1, 2, 1])
    csrs = csr_pair(users, items, np.ones(4), 3, 3)
    steps = OrdinalGibbs(users, items, categories, 3, csrs, cutpoint_prior_means(1, 3), 1.0, 0)
    state = {
        "U": rng.normal(size=(3, 2)), "V": rng.normal(size=(3, 2)), "mu": 0.4,
        "user_bias": rng.normal(size=3), "item_bias": rng.normal(size=3),
        "offset_U": rng.normal(size=(3, 2)), "offset_V": rng.normal(size=(3, 2)),
    }
    steps.start(state)
    steps.step(state, True, rng)
    expected = (
        state["mu"] + state["user_bias"][users] + state["item_bias"][items]
        + np.einsum("nk,nk->n", (state["U"] + state["offset_U"])[users],
                    (state["V"] + state["offset_V"])[items])
    )
    np.testing.assert_allclose(steps.eta, expected)
    assert state["tau"] == 1.0


@pytest.mark.parametrize(
    ("ratings", "message"),
    [(np.array([1.0, 2.5]), "whole-number ratings"), (np.array([1.0, 7.0]), "outside")],
)
def test_rating_categories_rejects_bad_ratings(ratings, message):
    with pytest.raises(ValueError, match=message):
        rating_categories(ratings, 1, 5)
