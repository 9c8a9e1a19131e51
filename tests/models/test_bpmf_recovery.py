"""BPMF recovers data drawn from its own generative model: calibrated held-out predictive
intervals, converged chains for sigma and every held-out prediction, accuracy close to the
oracle. The fit uses the defaults: LKJ prior, blocked Gibbs sampler.

Design (issue #3): 400 users x 300 items, 3 factors, noise sd 0.5, 4 chains. The issue's
example density is 10%; there, with ~27 training ratings per user for 4 parameters per user,
the posterior mean itself errs by ~0.3 against the truth, which adds in quadrature to the 0.5
noise: ~13% above the oracle for BPMF (measured 0.566 vs 0.502), the Gibbs sampler and any
other estimator of that model alike. At 20% density (~54 ratings per user) the 10% bound of
the issue is reachable, so the test uses 20%.
"""

import numpy as np
import pytest
import xarray as xr
from arviz_stats import ess, rhat

from bpmf.datasets import make_synthetic_ratings, train_test_split
from bpmf.metrics import coverage, rmse
from bpmf.models import BPMF

pytestmark = pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS:UserWarning")


@pytest.fixture(scope="module")
def recovery():
    ratings, truth = make_synthetic_ratings(
        n_users=400, n_items=300, n_factors=3, density=0.2, noise_sd=0.5, random_state=42
    )
    split = train_test_split(ratings, test_size=0.1, random_state=0)
    # the model the data are drawn from: biases independent of the factors (the default
    # correlates them, and its bias scales are then marginal sds that mix more slowly: user
    # bias scale ESS 360 of 2,000 draws here)
    model = BPMF(
        3,
        model_config={"map_config": {"factor_sd": 0.3}, "correlated_biases": False},
        sampler_config={"draws": 500, "tune": 250, "chains": 4, "cores": 2},
        random_state=0,
        progressbar=False,
    ).fit(split.train)
    test = split.test.to_frame()
    return model, test, truth


@pytest.mark.slow
def test_heldout_intervals_are_calibrated(recovery):
    model, test, _ = recovery
    for prob, low, high in ((0.9, 0.85, 0.95), (0.5, 0.45, 0.55)):
        interval = model.predict_interval(test, prob=prob, on_unseen="ignore")
        covered = coverage(test["rating"], interval["lower"], interval["upper"])
        assert low <= covered <= high, (prob, covered)


@pytest.mark.slow
def test_chains_converge_on_identifiable_quantities(recovery):
    model, test, _ = recovery
    posterior = model.idata_["posterior"].ds
    assert posterior.sizes["chain"] == 4
    for name in ("sigma", "user_bias_sd", "item_bias_sd"):
        assert float(rhat(posterior[[name]])[name]) <= 1.01, name
        assert float(ess(posterior[[name]], method="bulk")[name]) >= 400, name
    draws = model.predict_posterior(test, kind="expected", on_unseen="ignore")
    predictions = xr.Dataset({"rating": draws.drop_vars(["user", "item"])})
    r_hat = rhat(predictions)["rating"].values
    bulk = ess(predictions, method="bulk")["rating"].values
    # ~2,400 held-out predictions. Each R-hat is itself an estimate: with 4 x 500 independent
    # draws the largest of 2,400 is about 1.005; LKJ-Gibbs seeds 0-2 gave 99% quantiles
    # 1.004 and maxima 1.007 (ESS of every prediction >= 1,179; joint NUTS: 1.006-1.007,
    # 1.010-1.012, >= 990). Hence 1.01 for 99% of them and a cap on the largest.
    assert np.quantile(r_hat, 0.99) <= 1.01, np.quantile(r_hat, 0.99)
    assert r_hat.max() <= 1.02, r_hat.max()
    assert bulk.min() >= 400, bulk.min()
    # divergences of the NUTS step of the LKJ Cholesky blocks: 0 in seeds 0-2 (joint NUTS
    # gave 0-4 over the 2,000 draws)
    assert model.diagnostics_["divergences"] <= 5


@pytest.mark.slow
def test_accuracy_close_to_the_true_factors(recovery):
    model, test, truth = recovery
    predicted = model.predict(test, on_unseen="ignore")
    noise_free = truth.expected(test["user"], test["item"])
    oracle = rmse(test["rating"], noise_free)  # the true factors: only the noise is left
    achieved = rmse(test["rating"], predicted)
    assert achieved <= 1.10 * oracle, (achieved, oracle)  # measured 1.060 (seeds 0-2)
    assert rmse(noise_free, predicted) <= 0.45 * truth.noise_sd  # measured 0.186 / 0.5
    # and the noise level itself is recovered
    sigma = float(model.idata_["posterior"].ds["sigma"].mean())
    assert sigma == pytest.approx(truth.noise_sd, rel=0.05)
