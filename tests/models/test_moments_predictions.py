"""Predictions of a Gibbs fit that kept moments instead of every draw: from the retained joint
draws when there are any, else from the expected ratings streamed during the fit."""

import numpy as np
import pytest

from bpmf.datasets import make_synthetic_ratings
from bpmf.inference.gibbs import sample_gibbs
from bpmf.models import BPMF
from bpmf.models._posterior import make_datatree, split_moments

N_FACTORS = 2
DRAWS = 40


@pytest.fixture(scope="module")
def data():
    ratings, _ = make_synthetic_ratings(
        n_users=200, n_items=80, n_factors=N_FACTORS, density=0.3, random_state=2
    )
    rng = np.random.default_rng(1)
    pairs = (rng.integers(0, ratings.n_users, 300), rng.integers(0, ratings.n_items, 300))
    return ratings, pairs


@pytest.fixture(scope="module")
def reference(data):
    """Posterior mean predictions of the pairs from every draw of the same chains."""
    ratings, pairs = data
    full = {k: v for k, v in _draws(ratings).items() if k != "diverging"}
    return _model(ratings, full).predict(_frame(ratings, pairs))


def _draws(ratings, **overrides):
    return sample_gibbs(
        ratings.user_codes,
        ratings.item_codes,
        ratings.values,
        ratings.n_users,
        ratings.n_items,
        n_factors=N_FACTORS,
        draws=DRAWS,
        tune=20,
        chains=2,
        biases=True,
        covariance_prior="lkj",
        model_config=BPMF(N_FACTORS)._model_config(),
        random_state=3,
        progressbar=False,
        cores=1,
        **overrides,
    )


def _model(ratings, posterior, stats=None, extra=None):
    """A BPMF whose fitted state is set from sampler output, as ``fit`` sets it."""
    model = BPMF(N_FACTORS)
    model.user_index_, model.item_index_ = ratings.user_ids, ratings.item_ids
    model.scale_, model.n_train_ = None, ratings.n_ratings
    model.idata_ = make_datatree(
        posterior, ratings, n_factors=N_FACTORS, sample_stats=stats or None, extra=extra
    )
    return model


def _frame(ratings, pairs):
    import pandas as pd

    return pd.DataFrame({"user": ratings.user_ids[pairs[0]], "item": ratings.item_ids[pairs[1]]})


def test_retained_and_streamed_predictions_match_the_full_draws(data, reference):
    ratings, pairs = data
    frame = _frame(ratings, pairs)

    every = _draws(ratings, keep="moments", factor_draws=DRAWS, predict_pairs=pairs)
    posterior, stats, extra = split_moments(every, ratings, n_factors=N_FACTORS, pairs=pairs)
    assert set(extra) == {"trace", "trace_stats", "posterior_moments", "pair_moments"}
    assert extra["trace"].sizes["draw"] == extra["trace_stats"].sizes["draw"] == DRAWS
    assert set(extra["trace_stats"]) == {"diverging", "n_steps_U", "n_steps_V"}
    np.testing.assert_allclose(_model(ratings, posterior, stats, extra).predict(frame), reference)

    streamed = _draws(ratings, keep="moments", predict_pairs=pairs)
    posterior, stats, extra = split_moments(streamed, ratings, n_factors=N_FACTORS, pairs=pairs)
    assert "U" not in posterior
    model = _model(ratings, posterior, stats, extra)
    np.testing.assert_allclose(model.predict(frame), reference, rtol=1e-10)
    np.testing.assert_allclose(model.predict(frame.iloc[::-1]), reference[::-1], rtol=1e-10)
    other = _frame(ratings, (np.array([0]), np.array([0])))
    if not ((pairs[0] == 0) & (pairs[1] == 0)).any():
        with pytest.raises(ValueError, match="not streamed"):
            model.predict(other)
    with pytest.raises(ValueError, match="kept no draws of the factors"):
        model.predict_interval(frame)


def test_a_few_retained_draws_predict_close_to_all_of_them(data, reference):
    ratings, pairs = data
    frame = _frame(ratings, pairs)
    few = _draws(ratings, keep="moments", factor_draws=8)
    posterior, stats, extra = split_moments(few, ratings, n_factors=N_FACTORS)
    assert posterior["U"].shape[:2] == posterior["mu"].shape == (2, 8)
    model = _model(ratings, posterior, stats, extra)
    gap = model.predict(frame) - reference
    # 16 of 80 joint draws: Monte Carlo error only, far below the ratings' spread
    assert np.sqrt(np.mean(gap**2)) < 0.1 * ratings.values.std()
    assert model.predict_interval(frame).shape == (len(frame), 3)
