"""BPMF with per-user and per-item noise weights: recovery on heteroscedastic data simulated
from the model, calibration of the predictive intervals for noisy and quiet users, the
per-pair noise of predictions and recommendations (seen and unseen users), persistence,
reproducibility, the combinations with day biases and implicit feedback, and the errors of
unsupported combinations."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bpmf.datasets import Ratings
from bpmf.inference.noise_weights import DF_GRID
from bpmf.models import BPMF

SAMPLER = {"draws": 400, "tune": 150, "chains": 2}
SIGMA = 0.5
USER_DF = 4.0  # a_u ~ Gamma(2, rate 2); the items' weights are all one
DAY = 86_400.0


def simulate(seed=0, n_users=200, n_items=150, density=0.3, day_sd=0.0):
    """Ratings ``3 + b_u + c_i + U_u . V_i (+ d_(u, day)) + N(0, SIGMA^2 / a_u)`` of a rank-2
    model; returns the frame (with the times and true day biases when ``day_sd``) and the
    true user weights."""
    rng = np.random.default_rng(seed)
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    U = 0.8 * rng.standard_normal((n_users, 2))
    V = 0.8 * rng.standard_normal((n_items, 2))
    weights = rng.gamma(USER_DF / 2, 2 / USER_DF, n_users)
    values = (3.0 + 0.3 * rng.standard_normal(n_users)[users]
              + 0.3 * rng.standard_normal(n_items)[items]
              + np.einsum("nk,nk->n", U[users], V[items])
              + SIGMA / np.sqrt(weights[users]) * rng.standard_normal(len(users)))
    frame = pd.DataFrame({"user": users, "item": items, "rating": values})
    if day_sd:
        day = rng.integers(0, 3, len(users))  # each user rates on up to three days
        first = rng.integers(10_000, 10_200, n_users)
        frame["time"] = DAY * (first[users] + 2 * day) + rng.uniform(0, DAY - 1, len(users))
        frame["truth"] = day_sd * rng.standard_normal((n_users, 3))[users, day]
        frame["rating"] += frame["truth"]
    return frame, weights


def fit(train, seed=1, sampler=None, **config):
    return BPMF(2, model_config={"noise_weights": True, **config},
                sampler_config={**SAMPLER, **(sampler or {})}, random_state=seed,
                progressbar=False).fit(train)


@pytest.fixture(scope="module")
def data():
    frame, weights = simulate()
    test = np.random.default_rng(5).random(len(frame)) < 0.2
    return frame[~test].reset_index(drop=True), frame[test].reset_index(drop=True), weights


@pytest.fixture(scope="module")
def model(data):
    return fit(data[0], sampler={"log_likelihood": True, "posterior_predictive": True})


@pytest.fixture(scope="module")
def plain(data):
    return BPMF(2, sampler_config=SAMPLER, random_state=1, progressbar=False).fit(data[0])


def _user_weights(model, users):
    """Posterior mean weight of each of ``users`` (ids)."""
    post = model.idata_["posterior"].ds
    means = post["user_noise_weight"].mean(("chain", "draw")).values
    return means[model.user_index_.get_indexer(users)]


def _flat(model, name):
    """Draws of a posterior variable with chain and draw stacked: (samples, ...)."""
    values = model.idata_["posterior"].ds[name].values
    return values.reshape(-1, *values.shape[2:])


# ---------------------------------------------------------------------- recovery
def test_recovers_the_user_weights_their_degrees_of_freedom_and_sigma(model, data):
    weights = data[2]
    post = model.idata_["posterior"].ds
    assert post["user_noise_weight"].dims == ("chain", "draw", "user")
    assert post["item_noise_weight"].dims == ("chain", "draw", "item")
    assert post["noise_df_user"].dims == ("chain", "draw")
    estimate = _user_weights(model, np.arange(len(weights)))
    assert stats.spearmanr(estimate, weights).statistic > 0.8
    # the weights average one a priori, which fixes the scale that sigma would share with them
    assert abs(estimate.mean() - 1) < 0.15
    nu_user, nu_item = _flat(model, "noise_df_user"), _flat(model, "noise_df_item")
    assert np.isin(nu_user, DF_GRID).all() and np.isin(nu_item, DF_GRID).all()
    assert nu_user.mean() < 8 and np.mean(nu_user <= 16) > 0.95, nu_user.mean()
    assert nu_item.mean() > 32 and np.mean(nu_item >= 16) > 0.95, nu_item.mean()
    # unit item weights: their posterior means stay close to one
    items = post["item_noise_weight"].mean(("chain", "draw")).values
    assert np.abs(items - 1).max() < 0.3
    sigma = _flat(model, "sigma")
    assert abs(sigma.mean() - SIGMA) < 4 * sigma.std(), (sigma.mean(), sigma.std())


def test_intervals_are_calibrated_for_noisy_and_quiet_users(model, plain, data):
    """90% intervals of held-out ratings among the quarter of users with the smallest
    (noisiest) and the largest (quietest) posterior mean weight: about 0.9 with noise
    weights; the homoscedastic model's one sigma under-covers the noisy quarter and
    over-covers the quiet one. (Quarters chosen by the data, not by the true weights: the
    posterior is calibrated given the data, while the users selected by a small true weight
    have weights the posterior shrinks towards one.)"""
    _, test, weights = data
    estimate = _user_weights(model, np.arange(len(weights)))
    low, high = np.quantile(estimate, [0.25, 0.75])
    per_rating = estimate[test["user"]]
    noisy, quiet = per_rating <= low, per_rating >= high
    assert noisy.sum() > 300 and quiet.sum() > 300
    # the quarters by the data are mostly the quarters by the truth
    assert np.mean(weights[estimate <= low] < np.quantile(weights, 0.5)) > 0.9

    def cover(m):
        interval = m.predict_interval(test, clip=False)
        inside = (test["rating"] >= interval["lower"]) & (test["rating"] <= interval["upper"])
        return inside.to_numpy()

    weighted, homoscedastic = cover(model), cover(plain)
    for group in (noisy, quiet):
        assert 0.84 <= weighted[group].mean() <= 0.96, weighted[group].mean()
    assert homoscedastic[noisy].mean() < 0.84
    assert homoscedastic[noisy].mean() < weighted[noisy].mean() - 0.08
    assert homoscedastic[quiet].mean() > 0.96
    # both cover about 0.9 overall: the difference is in how the width is spread
    assert abs(weighted.mean() - 0.9) < 0.03 and abs(homoscedastic.mean() - 0.9) < 0.03


# ---------------------------------------------------------------------- predictions
def test_predictive_noise_of_each_pair_is_sigma_over_root_weights(model, data):
    train, _, weights = data
    # pairs of the two noisiest and two quietest users, on one item each
    order = np.argsort(_user_weights(model, np.arange(len(weights))))
    users = np.concatenate([order[:2], order[-2:]])
    items = [int(train.loc[train["user"] != u, "item"].iloc[0]) for u in users]
    pairs = pd.DataFrame({"user": users, "item": items})
    predictive = model.predict_posterior(pairs, kind="predictive", random_state=3).values
    expected = model.predict_posterior(pairs, kind="expected", random_state=3).values
    noise = (predictive - expected).reshape(-1, len(pairs))
    a = _flat(model, "user_noise_weight")[:, model.user_index_.get_indexer(users)]
    c = _flat(model, "item_noise_weight")[:, model.item_index_.get_indexer(items)]
    variance = _flat(model, "sigma")[:, None] ** 2 / (a * c)
    n = len(noise)
    # E[noise^2] = mean of sigma^2 / (a c); the sd of noise^2 is sqrt(3 E[v^2] - E[v]^2)
    se = np.sqrt((3 * (variance**2).mean(0) - variance.mean(0) ** 2) / n)
    z = ((noise**2).mean(0) - variance.mean(0)) / se
    assert np.all(np.abs(z) < 4), z
    # and the noisy users' noise is several times the quiet users'
    assert variance.mean(0)[:2].min() > 3 * variance.mean(0)[2:].max()
    # standardised by each draw's sd, the noise is standard normal
    standard = (noise / np.sqrt(variance)).ravel()
    assert stats.kstest(standard, "norm").pvalue > 1e-3


def test_log_likelihood_and_posterior_predictive_use_each_pairs_noise(model, data):
    train = data[0]
    users = model.user_index_.get_indexer(train["user"])
    items = model.item_index_.get_indexer(train["item"])
    post = model.idata_["posterior"].ds
    chain, draw = 1, 17
    p = {name: post[name].values[chain, draw] for name in
         ("mu", "sigma", "U", "V", "user_bias", "item_bias", "user_noise_weight",
          "item_noise_weight")}
    eta = (p["mu"] + p["user_bias"][users] + p["item_bias"][items]
           + np.einsum("nk,nk->n", p["U"][users], p["V"][items]))
    sd = p["sigma"] / np.sqrt(p["user_noise_weight"][users] * p["item_noise_weight"][items])
    log_lik = model.idata_["log_likelihood"]["rating"].values[chain, draw]
    np.testing.assert_allclose(log_lik, stats.norm.logpdf(train["rating"], eta, sd),
                               rtol=1e-9, atol=1e-9)
    replicated = model.idata_["posterior_predictive"]["rating"].values.reshape(-1, len(train))
    a = _flat(model, "user_noise_weight")[:, users]
    sds = _flat(model, "sigma")[:, None] / np.sqrt(a * _flat(model, "item_noise_weight")[:, items])
    eta_all = model.predict_posterior(train, kind="expected").values.reshape(-1, len(train))
    standard = ((replicated - eta_all) / sds).ravel()
    assert abs(standard.var() - 1) < 4 * np.sqrt(2 / standard.size)
    assert stats.kstest(standard[::97], "norm").pvalue > 1e-3


def test_unseen_users_get_their_weight_from_the_prior(model, data):
    """An unseen user's predictive draws are a population row plus noise
    sigma / sqrt(a c_i) with a ~ Gamma(nu_U / 2, nu_U / 2) per draw: the same distribution as a
    Monte Carlo built from independent population draws (kind="expected") and Gamma draws,
    and a visibly different one from Gaussian noise of sd sigma / sqrt(c_i)."""
    train = data[0]
    item = int(train["item"].iloc[0])
    repeats = 100
    pairs = pd.DataFrame({"user": [10_000] * repeats, "item": [item] * repeats})
    predictive = model.predict_posterior(pairs, kind="predictive", random_state=0,
                                         on_unseen="ignore").values.reshape(-1)
    expected = model.predict_posterior(pairs, kind="expected", random_state=1,
                                       on_unseen="ignore").values.reshape(-1, repeats)
    rng = np.random.default_rng(2)
    half = 0.5 * _flat(model, "noise_df_user")[:, None]
    c = _flat(model, "item_noise_weight")[:, [model.item_index_.get_loc(item)]]
    scale = _flat(model, "sigma")[:, None] / np.sqrt(c)
    z = rng.standard_normal(expected.shape)
    heavy = (expected + scale * z / np.sqrt(rng.gamma(half, 1 / half, expected.shape))).ravel()
    gaussian = (expected + scale * z).ravel()
    assert stats.ks_2samp(predictive, heavy).pvalue > 1e-3
    assert stats.ks_2samp(predictive, gaussian).pvalue < 1e-6
    # wider intervals than for a seen user of average weight
    codes = np.argsort(np.abs(_user_weights(model, model.user_index_) - 1))[:5]
    seen = pd.DataFrame({"user": model.user_index_[codes], "item": item})
    unseen = pd.DataFrame({"user": 10_001 + np.arange(5), "item": item})
    width = {}
    for name, frame in (("seen", seen), ("unseen", unseen)):
        interval = model.predict_interval(frame, clip=False, on_unseen="ignore")
        width[name] = (interval["upper"] - interval["lower"]).mean()
    assert width["unseen"] > 1.2 * width["seen"], width


def test_recommend_probabilities_for_seen_and_unseen_users(model, data):
    threshold = 4.5
    user = 7
    frame = model.recommend(user, k=1000, threshold=threshold)
    assert frame["prob_at_least"].between(0, 1).all()
    code = model.user_index_.get_loc(user)
    items = model.item_index_.get_indexer(frame["item"])
    post = {name: _flat(model, name) for name in
            ("mu", "sigma", "U", "V", "user_bias", "item_bias", "user_noise_weight",
             "item_noise_weight", "noise_df_user")}
    eta = (post["mu"][:, None] + post["user_bias"][:, [code]] + post["item_bias"][:, items]
           + np.einsum("sk,snk->sn", post["U"][:, code], post["V"][:, items]))
    sd = post["sigma"][:, None] / np.sqrt(post["user_noise_weight"][:, [code]]
                                          * post["item_noise_weight"][:, items])
    np.testing.assert_allclose(frame["mean"], eta.mean(0), rtol=1e-10)
    np.testing.assert_allclose(frame["prob_at_least"],
                               stats.norm.sf(threshold, eta, sd).mean(0), rtol=1e-8, atol=1e-12)
    # an unseen user: the population-mean row (ranking), its Gamma weight integrated out
    with pytest.warns(UserWarning, match="unseen"):
        cold = model.recommend(10_000, k=6, threshold=threshold)
    assert cold["prob_at_least"].between(0, 1).all()
    items = model.item_index_.get_indexer(cold["item"])
    mu_U = _flat(model, "mu_U")  # zero with correlated biases, free otherwise
    eta = (post["mu"][:, None] + post["item_bias"][:, items]
           + np.einsum("sk,snk->sn", mu_U, post["V"][:, items]))
    np.testing.assert_allclose(cold["mean"], eta.mean(0), rtol=1e-10)
    rng = np.random.default_rng(0)
    reps = 200
    half = 0.5 * post["noise_df_user"][:, None, None]
    a = rng.gamma(half, 1 / half, (len(eta), reps, len(items)))
    scale = post["sigma"][:, None, None] / np.sqrt(a * post["item_noise_weight"][:, None, items])
    draws = eta[:, None, :] + scale * rng.standard_normal(a.shape)
    monte_carlo = (draws >= threshold).mean((0, 1))
    se = np.sqrt(monte_carlo * (1 - monte_carlo) / (len(eta) * reps)) + 1e-4
    assert np.all(np.abs(cold["prob_at_least"] - monte_carlo) < 5 * se), (
        cold["prob_at_least"].values, monte_carlo)
    # the Student-t tails differ from Gaussian noise of the same scale
    gaussian = stats.norm.sf(threshold, eta,
                             post["sigma"][:, None] / np.sqrt(post["item_noise_weight"][:, items]))
    assert np.max(np.abs(gaussian.mean(0) - monte_carlo)) > 10 * se.max()


def test_save_and_load_keep_the_weights_and_the_predictions(model, data, tmp_path):
    test = data[1]
    path = tmp_path / "model.bpmf"
    model.save(path)
    loaded = BPMF.load(path)
    for name in ("user_noise_weight", "item_noise_weight", "noise_df_user", "noise_df_item"):
        np.testing.assert_array_equal(loaded.idata_["posterior"][name].values,
                                      model.idata_["posterior"][name].values)
    assert loaded._model_config()["noise_weights"] is True
    np.testing.assert_array_equal(loaded.predict(test), model.predict(test))
    pd.testing.assert_frame_equal(loaded.predict_interval(test), model.predict_interval(test))
    pd.testing.assert_frame_equal(loaded.recommend(3, threshold=4.0),
                                  model.recommend(3, threshold=4.0))


def test_unsupported_combinations_fail_with_one_line(model, data):
    train = data[0]
    small = train[train["user"] < 30]
    cases = [
        (BPMF(2, model_config={"noise_weights": True}, method="nuts"), "method='gibbs'"),
        (BPMF(2, model_config={"noise_weights": True}, sampler_config={"keep": "moments"}),
         "keep"),
        (BPMF(2, model_config={"noise_weights": True, "likelihood": "ordinal"}),
         "likelihood='gaussian'"),
        (BPMF(2, model_config={"noise_weights": "yes"}), "True or False"),
        (BPMF(2, model_config={"noise_weights": True, "implicit": True},
              sampler_config={"implicit_step": "collapsed"}), "implicit_step"),
    ]
    for estimator, message in cases:
        estimator.progressbar = False
        with pytest.raises(ValueError, match=message) as error:
            estimator.fit(small)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="fold_in does not support noise weights") as error:
        model.fold_in(pd.DataFrame({"user": [10_000] * 3, "item": train["item"][:3],
                                    "rating": [3.0, 4.0, 2.0]}))
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="noise weights") as error:
        BPMF(2, model_config={"noise_weights": True}).build_model(small)
    assert "\n" not in str(error.value)


def test_same_seed_gives_identical_draws(data):
    train = data[0]
    quick = {"draws": 20, "tune": 10}
    first, second, other = (fit(train, seed=seed, sampler=quick) for seed in (4, 4, 5))
    for name in ("user_noise_weight", "item_noise_weight", "noise_df_user", "noise_df_item",
                 "sigma", "U"):
        np.testing.assert_array_equal(first.idata_["posterior"][name].values,
                                      second.idata_["posterior"][name].values)
    assert not np.array_equal(first.idata_["posterior"]["user_noise_weight"].values,
                              other.idata_["posterior"]["user_noise_weight"].values)


# ---------------------------------------------------------------------- combinations
def test_day_biases_and_noise_weights(data):
    frame, weights = simulate(seed=3, n_users=150, n_items=100, density=0.3, day_sd=0.5)
    test = np.random.default_rng(6).random(len(frame)) < 0.2
    train, held = frame[~test].reset_index(drop=True), frame[test].reset_index(drop=True)
    as_ratings = Ratings(train["user"], train["item"], train["rating"], scale=None,
                         time=train["time"])
    model = fit(as_ratings, seed=2, sampler={"draws": 250, "tune": 150}, user_day_bias=True)
    post = model.idata_["posterior"].ds
    estimate = _user_weights(model, np.arange(len(weights)))
    assert stats.spearmanr(estimate, weights).statistic > 0.7
    sd = post["day_bias_sd"].values.ravel()
    assert abs(sd.mean() - 0.5) < 4 * sd.std(), (sd.mean(), sd.std())
    sigma = post["sigma"].values.ravel()
    assert abs(sigma.mean() - SIGMA) < 4 * sigma.std(), (sigma.mean(), sigma.std())
    days = model._pair_days(train, model.user_index_.get_indexer(train["user"]))
    day_means = post["day_bias"].values.reshape(-1, post.sizes["user_day"]).mean(0)[days]
    assert np.corrcoef(day_means, train["truth"])[0, 1] > 0.7
    # predictions on known days beat those without the day biases, and the intervals are
    # wider for the noisier users
    with_days = model.predict(held, clip=False)
    without = model.predict(held.drop(columns="time"), clip=False)
    rmse = lambda pred: float(np.sqrt(np.mean((held["rating"] - pred) ** 2)))  # noqa: E731
    assert rmse(with_days) < rmse(without) - 0.05
    interval = model.predict_interval(held, clip=False)
    width = (interval["upper"] - interval["lower"]).to_numpy()
    assert stats.spearmanr(width, weights[held["user"]]).statistic < -0.6


def test_implicit_feedback_and_noise_weights(data):
    train, test, weights = data
    model = fit(train, seed=3, sampler={"draws": 200, "tune": 100}, implicit=True)
    post = model.idata_["posterior"].ds
    assert "offset_U" in post and "user_noise_weight" in post
    estimate = _user_weights(model, np.arange(len(weights)))
    assert stats.spearmanr(estimate, weights).statistic > 0.8
    sigma = post["sigma"].values.ravel()
    assert abs(sigma.mean() - SIGMA) < 4 * sigma.std(), (sigma.mean(), sigma.std())
    assert post["noise_df_user"].values.mean() < 8
    interval = model.predict_interval(test, clip=False)
    inside = (test["rating"] >= interval["lower"]) & (test["rating"] <= interval["upper"])
    assert abs(inside.mean() - 0.9) < 0.03


@pytest.mark.parametrize("config", [{"covariance_prior": "wishart"},
                                    {"correlated_biases": False}])
def test_other_priors_with_noise_weights(data, config):
    train, test, weights = data
    model = fit(train, seed=4, sampler={"draws": 200, "tune": 100}, **config)
    estimate = _user_weights(model, np.arange(len(weights)))
    assert stats.spearmanr(estimate, weights).statistic > 0.8
    sigma = _flat(model, "sigma")
    assert abs(sigma.mean() - SIGMA) < 4 * sigma.std(), (sigma.mean(), sigma.std())
    assert _flat(model, "noise_df_user").mean() < 8
