import numpy as np
import pandas as pd
import pytest

from bpmf import NotFittedError, metrics
from bpmf.baselines import GlobalMean, ItemMean, UniformRandom, UserItemMean, UserMean
from bpmf.datasets import load_movielens_folds

TRAIN = pd.DataFrame(
    {"user": ["a", "a", "b", "c"], "item": ["x", "y", "x", "z"], "rating": [4.0, 2.0, 5.0, 1.0]}
)


def test_means_and_fallbacks_by_hand():
    pairs = pd.DataFrame({"user": ["a", "new", "b"], "item": ["z", "x", "new"]})
    mean = 3.0
    np.testing.assert_allclose(GlobalMean().fit(TRAIN).predict(pairs), [mean] * 3)
    np.testing.assert_allclose(UserMean().fit(TRAIN).predict(pairs), [3.0, mean, 5.0])
    np.testing.assert_allclose(ItemMean().fit(TRAIN).predict(pairs), [1.0, 4.5, mean])
    np.testing.assert_allclose(
        UserItemMean().fit(TRAIN).predict(pairs), [(3 + 1) / 2, (mean + 4.5) / 2, (5 + mean) / 2]
    )


def test_uniform_random_is_seeded_and_on_scale():
    first = UniformRandom(random_state=3).fit(TRAIN).predict(TRAIN)
    second = UniformRandom(random_state=3).fit(TRAIN).predict(TRAIN)
    np.testing.assert_array_equal(first, second)
    assert ((first >= 1) & (first <= 5)).all()


def test_unfitted_and_params():
    with pytest.raises(NotFittedError, match="fit"):
        UserMean().predict(TRAIN)
    model = UniformRandom(random_state=1)
    assert model.get_params() == {"random_state": 1}
    assert repr(model.set_params(random_state=2)) == "UniformRandom(random_state=2)"
    with pytest.raises(ValueError, match="no parameter"):
        model.set_params(seed=1)


@pytest.mark.movielens
def test_reference_values_on_u1(movielens_home):
    """The rows of the PyMC PMF case study, reproduced to 3 decimals."""
    train, test = load_movielens_folds("ml-100k", data_home=movielens_home)["u1"]
    expected = {GlobalMean: 1.154, UserMean: 1.063, ItemMean: 1.033, UserItemMean: 0.999}
    for cls, value in expected.items():
        score = metrics.rmse(test.values, cls().fit(train).predict(test))
        assert round(score, 3) == value, cls.__name__
