"""BPMF on the smallest data sets: one user, one item, one rating, with either sampler."""

import numpy as np
import pandas as pd
import pytest

from bpmf.models import BPMF

CASES = {
    "one user": pd.DataFrame({"user": ["a"] * 4, "item": list("wxyz"), "rating": [1.0, 2, 3, 4]}),
    "one item": pd.DataFrame({"user": list("abcd"), "item": ["x"] * 4, "rating": [1.0, 2, 3, 4]}),
    "one rating": pd.DataFrame({"user": ["a"], "item": ["x"], "rating": [3.0]}),
}


@pytest.mark.parametrize("method", ["gibbs", pytest.param("nuts", marks=pytest.mark.slow)])
@pytest.mark.parametrize("case", list(CASES))
def test_fits_and_predicts_within_the_scale(case, method):
    ratings = CASES[case]
    model = BPMF(2, method=method, sampler_config={"draws": 30, "tune": 30}, random_state=0,
                 progressbar=False, rating_scale=(1, 5)).fit(ratings)
    predicted = model.predict(ratings)
    assert predicted.shape == (len(ratings),)
    assert np.isfinite(predicted).all() and (predicted >= 1).all() and (predicted <= 5).all()
    posterior = model.idata_["posterior"].ds
    for name in ("sigma", "user_bias_sd", "item_bias_sd"):
        assert np.isfinite(posterior[name].values).all() and (posterior[name].values > 0).all()


@pytest.mark.parametrize("seed", [7, 13])
def test_more_factors_than_the_data_support(seed):
    """200 ratings and 10 factors: the LKJ blocks' trajectories reach nearly singular
    Cholesky factors, which must end as divergences, not as a LinAlgError from inside the
    compiled sampler (these seeds raised one)."""
    from bpmf.datasets import load_food_world_cup

    ratings = load_food_world_cup()
    ratings = ratings.subset(np.arange(ratings.n_ratings) < 200)
    model = BPMF(10, sampler_config={"draws": 2, "tune": 3}, random_state=seed,
                 progressbar=False).fit(ratings)
    assert np.isfinite(model.predict(ratings)).all()


def test_correlated_biases_need_biases_and_zero_means():
    ratings = CASES["one item"]
    for config in ({"correlated_biases": True, "biases": False},
                   {"correlated_biases": True, "factor_means": True}):
        with pytest.raises(ValueError, match="correlated_biases"):
            BPMF(2, model_config=config, progressbar=False).fit(ratings)
