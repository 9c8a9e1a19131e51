"""BPMF with the ordinal (ordered-probit) likelihood: exact predictive probabilities on a
hand-computed case, validation, and agreement of the Gibbs and NUTS samplers."""

import warnings

import arviz as az
import numpy as np
import pandas as pd
import pytest

from bpmf import NotFittedError
from bpmf.datasets import Ratings
from bpmf.models import BPMF
from bpmf.models._posterior import make_datatree


def _hand_model():
    """Two users, one item, one factor; two posterior draws (one chain).

    Draw 1: mu = 0.5, U = (1, 0), V = 1, cut-points (1, 2); draw 2: mu = 0.5, U = (0, 2),
    V = 1, cut-points (0.5, 2.5). Latent scores: user a -> 1.5 and 0.5; user b -> 0.5 and 2.5.
    """
    train = Ratings(["a", "b"], ["x", "x"], np.array([1.0, 3.0]), scale=(1.0, 3.0))
    posterior = {
        "U": np.array([[[[1.0], [0.0]], [[0.0], [2.0]]]]),
        "V": np.array([[[[1.0]], [[1.0]]]]),
        "mu": np.array([[0.5, 0.5]]),
        "sigma": np.ones((1, 2)),
        "cutpoints": np.array([[[1.0, 2.0], [0.5, 2.5]]]),
    }
    model = BPMF(n_factors=1, model_config={"likelihood": "ordinal"})
    model.idata_ = make_datatree(posterior, train, n_factors=1,
                                 coords={"cutpoint": np.array([1.5, 2.5])})
    model.user_index_, model.item_index_ = train.user_ids, train.item_ids
    model.scale_, model.n_train_ = (1.0, 3.0), 2
    return model


def test_predict_proba_on_a_hand_computed_case():
    model = _hand_model()
    pairs = pd.DataFrame({"user": ["a", "b"], "item": ["x", "x"]})
    # Phi(-0.5) = 0.3085375387, Phi(0.5) = 0.6914624613, Phi(0) = 0.5, Phi(2) = 0.9772498681
    # user a: draw 1 (eta 1.5): P = (Phi(-0.5), Phi(0.5) - Phi(-0.5), 1 - Phi(0.5))
    #                           = (0.3085375387, 0.3829249226, 0.3085375387)
    #         draw 2 (eta 0.5): P = (Phi(0), Phi(2) - Phi(0), 1 - Phi(2))
    #                           = (0.5, 0.4772498681, 0.0227501319)
    # user b: draw 1 (eta 0.5): P = (Phi(0.5), Phi(1.5) - Phi(0.5), 1 - Phi(1.5))
    #         Phi(1.5) = 0.9331927987 -> (0.6914624613, 0.2417303374, 0.0668072013)
    #         draw 2 (eta 2.5): P = (Phi(-2), Phi(0) - Phi(-2), 1 - Phi(0))
    #                           = (0.0227501319, 0.4772498681, 0.5)
    expected = np.array([
        [(0.3085375387 + 0.5) / 2, (0.3829249226 + 0.4772498681) / 2,
         (0.3085375387 + 0.0227501319) / 2],
        [(0.6914624613 + 0.0227501319) / 2, (0.2417303374 + 0.4772498681) / 2,
         (0.0668072013 + 0.5) / 2],
    ])
    proba = model.predict_proba(pairs)
    assert list(proba.columns) == [1, 2, 3]
    np.testing.assert_allclose(proba.to_numpy(), expected, atol=1e-9)
    np.testing.assert_allclose(model.predict(pairs), expected @ [1, 2, 3], atol=1e-9)
    # whole-rating intervals. user a: CDF (0.4043, 0.8344, 1); user b: CDF (0.3571, 0.7166, 1);
    # both medians are 2. "cover": between the 5% and 95% quantiles of the CDF
    interval = model.predict_interval(pairs, 0.9, discrete="cover")
    assert interval[["lower", "upper"]].to_numpy().tolist() == [[1, 3], [1, 3]]
    # "nearest": the range holding the median with probability closest to 0.9. user a:
    # {1, 2} 0.8344 (0.066 away) beats {1, 2, 3} 1.0 (0.1 away); user b: {1, 2} 0.7166
    # (0.18 away) loses to {1, 2, 3}
    interval = model.predict_interval(pairs, 0.9)
    assert interval[["lower", "upper"]].to_numpy().tolist() == [[1, 2], [1, 3]]
    with pytest.raises(ValueError, match="discrete"):
        model.predict_interval(pairs, 0.9, discrete="exact")
    assert model.classes_.tolist() == [1, 2, 3]
    quartiles = model.predict_quantiles(pairs, [0.25, 0.5, 0.75])
    assert quartiles[[0.25, 0.5, 0.75]].to_numpy().tolist() == [[1, 2, 2], [1, 2, 3]]
    # exact P(r >= t) in recommend (user a, item x: exclude_seen=False)
    top = model.recommend("a", k=1, exclude_seen=False, threshold=2)
    assert top["prob_at_least"].iloc[0] == pytest.approx(1 - expected[0, 0], abs=1e-9)
    assert top["mean"].iloc[0] == pytest.approx(expected[0] @ [1, 2, 3], abs=1e-9)
    top = model.recommend("b", k=1, exclude_seen=False, threshold=2.5)  # P(r >= 3)
    assert top["prob_at_least"].iloc[0] == pytest.approx(expected[1, 2], abs=1e-9)


def _small_ratings(seed=0, n_users=25, n_items=18, n_ratings=260):
    rng = np.random.default_rng(seed)
    U = rng.normal(0, 0.8, (n_users, 2))
    V = rng.normal(0, 0.8, (n_items, 2))
    pairs = rng.choice(n_users * n_items, n_ratings, replace=False)
    users, items = pairs // n_items, pairs % n_items
    eta = 2.0 + np.einsum("nk,nk->n", U[users], V[items])
    ratings = 1.0 + np.searchsorted([1.5, 2.5], eta + rng.standard_normal(n_ratings))
    return Ratings(users, items, ratings, scale=(1.0, 3.0))


@pytest.mark.parametrize(
    ("model_config", "rating_scale", "values", "message"),
    [
        ({"likelihood": "ordinal"}, None, [1.0, 2.5, 3.0], "whole-number ratings"),
        ({"likelihood": "ordinal"}, (1, 2), [1.0, 2.0, 3.0], "outside"),
        ({"likelihood": "ordinal"}, (0.5, 3), [1.0, 2.0, 3.0], "whole numbers"),
        ({"likelihood": "ordinal", "sigma": 0.5}, None, [1.0, 2.0, 3.0], "fixed at 1"),
        ({"likelihood": "poisson"}, None, [1.0, 2.0, 3.0], "likelihood"),
        ({"likelihood": "ordinal", "cutpoint_sd": -1}, None, [1.0, 2.0, 3.0], "cutpoint_sd"),
    ],
)
def test_bad_ordinal_settings_are_refused(model_config, rating_scale, values, message):
    train = Ratings([0, 1, 2], [0, 1, 1], np.array(values), scale=(0.0, 5.0))
    model = BPMF(n_factors=1, model_config=model_config, rating_scale=rating_scale,
                 sampler_config={"draws": 2, "tune": 2, "chains": 1}, progressbar=False)
    with pytest.raises(ValueError, match=message):
        model.fit(train)


def test_predict_proba_needs_an_ordinal_model():
    model = BPMF(n_factors=1, sampler_config={"draws": 3, "tune": 3, "chains": 1},
                 progressbar=False, random_state=0).fit(_small_ratings())
    with pytest.raises(ValueError, match="ordinal"):
        model.predict_proba(pd.DataFrame({"user": [0], "item": [0]}))
    assert not hasattr(model, "classes_")  # a Gaussian fit has no whole-rating classes
    unfitted = BPMF(n_factors=1, model_config={"likelihood": "ordinal"})
    assert not hasattr(unfitted, "classes_")
    for discrete in ("nearest", "cover"):
        with pytest.raises(NotFittedError):
            unfitted.predict_interval(pd.DataFrame({"user": [0], "item": [0]}),
                                      discrete=discrete)


def _brute_force_nearest(probs, prob):
    """The nearest range by enumeration: every (first, last) holding the median, ordered by
    distance to ``prob`` and then by width."""
    cdf = np.cumsum(probs)
    median = int(np.argmax(cdf >= 0.5 - 1e-12))
    candidates = [
        (abs(probs[first:last + 1].sum() - prob), last - first, first, last)
        for first in range(len(probs)) for last in range(first, len(probs))
        if first <= median <= last
    ]
    return min(candidates)[2:]


def test_nearest_sets_match_enumeration_and_cover_their_probability():
    from bpmf.models.ordinal_predictive import nearest_sets, quantiles

    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.full(5, 0.7), size=4000)
    categories = np.arange(1, 6)
    for prob in (0.5, 0.8, 0.9):
        lower, upper = nearest_sets(np.cumsum(probs, axis=1)[:, :-1], prob, categories)
        expected = np.array([_brute_force_nearest(p, prob) for p in probs[:300]])
        np.testing.assert_array_equal(lower[:300] - 1, expected[:, 0])
        np.testing.assert_array_equal(upper[:300] - 1, expected[:, 1])
        # ratings drawn from the same distributions fall in the ranges with their mean
        # probability. The nearest rule keeps it close to prob (above it at 0.5, where one
        # rating often holds more than half); the quantile rule's ranges hold far more
        ratings = 1 + (rng.random((len(probs), 1)) > np.cumsum(probs, axis=1)).sum(1)
        inside = (ratings >= lower) & (ratings <= upper)
        mass = np.array([p[lo - 1:hi].sum()
                         for p, lo, hi in zip(probs, lower, upper, strict=True)])
        se = np.sqrt(prob * (1 - prob) / len(probs))
        assert abs(inside.mean() - mass.mean()) < 4 * se
        quantile_ranges = quantiles(np.cumsum(probs, axis=1)[:, :-1],
                                    [(1 - prob) / 2, (1 + prob) / 2], categories)
        quantile_mass = np.array([p[lo - 1:hi].sum()
                                  for p, lo, hi in zip(probs, *quantile_ranges, strict=True)])
        assert quantile_mass.mean() - prob > 0.06
        assert abs(mass.mean() - prob) < (0.07 if prob == 0.5 else 0.02)


def _identified(model, pairs):
    """Draws (chain, draw, quantity) of quantities the likelihood identifies: the gap between
    the cut-points and each pair's P(r = 1), P(r = 3) draw by draw."""
    from scipy import special

    post = model.idata_["posterior"].ds
    n_chains, n_draws = post.sizes["chain"], post.sizes["draw"]
    cut = post["cutpoints"].values.reshape(n_chains * n_draws, -1)
    eta = model.predict_posterior(pairs, kind="expected").values.reshape(n_chains * n_draws, -1)
    low = special.ndtr(cut[:, [0]] - eta)
    high = 1.0 - special.ndtr(cut[:, [1]] - eta)
    values = np.column_stack([cut[:, 1] - cut[:, 0], low, high])
    return values.reshape(n_chains, n_draws, -1)


@pytest.mark.slow
def test_gibbs_and_nuts_agree_on_the_ordinal_posterior():
    train = _small_ratings()
    pairs = train.to_frame().iloc[:6][["user", "item"]]
    draws = {}
    for method, sampler in (
        ("gibbs", {"draws": 2000, "tune": 500, "chains": 2}),
        ("nuts", {"draws": 1000, "tune": 1000, "chains": 2, "target_accept": 0.95}),
    ):
        model = BPMF(n_factors=2, method=method, random_state=5, progressbar=False,
                     model_config={"likelihood": "ordinal", "bias_scale_sd": 0.5},
                     sampler_config=sampler)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence notes of the short runs
            model.fit(train)
        draws[method] = _identified(model, pairs)
    for j in range(draws["gibbs"].shape[2]):
        means, errors = [], []
        for values in draws.values():
            means.append(values[:, :, j].mean())
            errors.append(float(az.mcse(values[:, :, j], method="mean")))
        z = (means[0] - means[1]) / np.hypot(*errors)
        assert abs(z) < 4, (j, means, errors)


def test_nearest_ranges_cover_their_probability_on_data_from_the_model():
    """Held-out ratings simulated from an ordered probit: the default ranges cover 90% within
    binomial error, the quantile ranges ('cover') clearly more."""
    rng = np.random.default_rng(7)
    n_users, n_items, n_ratings = 150, 80, 5000
    U = rng.normal(0, 0.7, (n_users, 2))
    V = rng.normal(0, 0.7, (n_items, 2))
    pairs = rng.choice(n_users * n_items, n_ratings, replace=False)
    users, items = pairs // n_items, pairs % n_items
    eta = (0.3 + rng.normal(0, 0.3, n_users)[users] + rng.normal(0, 0.3, n_items)[items]
           + np.einsum("nk,nk->n", U[users], V[items]))
    ratings = 1.0 + np.searchsorted([-1.2, -0.4, 0.5, 1.4], eta + rng.standard_normal(n_ratings))
    test = np.arange(n_ratings) < 1500
    train = Ratings(users[~test], items[~test], ratings[~test], scale=(1.0, 5.0))
    heldout = pd.DataFrame({"user": users[test], "item": items[test]})
    model = BPMF(n_factors=2, model_config={"likelihood": "ordinal"}, random_state=1,
                 progressbar=False, sampler_config={"draws": 300, "tune": 200})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(train)
        coverage = {}
        for rule in ("nearest", "cover"):
            interval = model.predict_interval(heldout, 0.9, discrete=rule, on_unseen="ignore")
            coverage[rule] = np.mean((ratings[test] >= interval["lower"].to_numpy())
                                     & (ratings[test] <= interval["upper"].to_numpy()))
    assert abs(coverage["nearest"] - 0.9) < 4 * np.sqrt(0.09 / test.sum()), coverage
    assert coverage["cover"] > coverage["nearest"] + 0.03, coverage
