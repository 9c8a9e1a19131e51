"""The gradient-descent baselines on MovieLens 100K fold u1 (the full u1-u5 table: bench/)."""

import pytest

from bpmf.baselines import AdaGradMF, OLSRegressor, UserItemMean
from bpmf.datasets import load_movielens_folds
from bpmf.metrics import rmse

pytestmark = [pytest.mark.slow, pytest.mark.movielens]


@pytest.fixture(scope="module")
def u1(movielens_home):
    return load_movielens_folds("ml-100k", data_home=movielens_home, download=False)["u1"]


def test_baseline_predictor_and_factorisation_beat_the_averages_on_u1(u1):
    train, test = u1
    averages = rmse(test.values, UserItemMean().fit(train).predict(test))
    ols = rmse(test.values, OLSRegressor(progressbar=False).fit(train).predict(test))
    mf = rmse(test.values, AdaGradMF(random_state=0, progressbar=False).fit(train).predict(test))
    # fitted biases beat averaged means; the factors then explain part of what biases cannot
    assert ols < averages - 0.03
    assert mf < ols - 0.02
