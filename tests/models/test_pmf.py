"""PMF by MAP: the optimum is a stationary point of the log posterior, beats the mean, persists."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bpmf import DataError, ModelFileError, NotFittedError
from bpmf.datasets import make_synthetic_ratings, train_test_split
from bpmf.metrics import rmse
from bpmf.models import BPMF, PMF

# PyTensor's C backend warns once per process when it finds no BLAS (pip installs); it is an
# environment notice, not a bpmf problem.
pytestmark = pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS:UserWarning")


@pytest.fixture(scope="module")
def problem():
    ratings, truth = make_synthetic_ratings(
        n_users=60, n_items=40, n_factors=2, density=0.4, noise_sd=0.3, random_state=3
    )
    return train_test_split(ratings, test_size=0.2, random_state=0), truth


@pytest.fixture(scope="module")
def fitted(problem):
    split, _ = problem
    return PMF(2, model_config={"factor_sd": 1.0}, random_state=0, progressbar=False).fit(
        split.train
    )


def test_map_is_stationary_point_of_log_posterior(problem, fitted):
    """Finite differences of the compiled log posterior vanish at the MAP (up to optimiser tol)."""
    split, _ = problem
    model = fitted.build_model(fitted._start_fit(split.train))
    logp = model.compile_logp(jacobian=False)
    point = {"mu": fitted.map_["mu"], "U": fitted.map_["U"], "V": fitted.map_["V"],
             "user_bias": fitted.map_["user_bias"], "item_bias": fitted.map_["item_bias"],
             "sigma_log__": np.log(fitted.map_["sigma"])}
    base = logp(point)
    rng = np.random.default_rng(0)
    for name in ("U", "V", "user_bias", "mu"):
        direction = rng.standard_normal(np.shape(point[name]))
        direction /= np.linalg.norm(direction)
        step = 1e-3
        plus = dict(point, **{name: point[name] + step * direction})
        minus = dict(point, **{name: point[name] - step * direction})
        slope = (logp(plus) - logp(minus)) / (2 * step)
        curvature = (logp(plus) - 2 * base + logp(minus)) / step**2
        assert abs(slope) < 0.05 * max(1.0, abs(curvature)) ** 0.5, name
        assert curvature < 0, name  # a maximum, not a saddle


def test_map_recovers_signal(problem, fitted):
    split, truth = problem
    test = split.test.to_frame()
    predicted = fitted.predict(test, on_unseen="ignore")
    expected = truth.expected(test["user"], test["item"])
    mean_only = np.full(len(test), split.train.values.mean())
    # the factors carry most of the signal: far better than the global mean ...
    assert rmse(expected, predicted) < 0.5 * rmse(expected, mean_only)
    # ... and the noise estimate is near the truth (0.3)
    assert 0.2 < fitted.map_["sigma"] < 0.4


def test_zero_start_is_avoided(problem, fitted):
    """The random start escapes the U = V = 0 saddle: the factors are far from zero."""
    assert np.abs(fitted.map_["U"]).max() > 0.1
    assert np.abs(fitted.map_["V"]).max() > 0.1


def test_same_seed_same_map(problem, fitted):
    split, _ = problem
    again = PMF(2, model_config={"factor_sd": 1.0}, random_state=0, progressbar=False).fit(
        split.train
    )
    np.testing.assert_array_equal(again.map_["U"], fitted.map_["U"])
    np.testing.assert_array_equal(again.predict(split.test), fitted.predict(split.test))


def test_predict_clips_to_scale(food_world_cup):
    model = PMF(2, random_state=0, progressbar=False).fit(food_world_cup)
    predictions = model.predict(food_world_cup)
    assert predictions.min() >= food_world_cup.scale[0]
    assert predictions.max() <= food_world_cup.scale[1]
    raw = model.predict(food_world_cup, clip=False)
    assert raw.shape == predictions.shape


def test_save_load_round_trip(problem, fitted, tmp_path):
    split, _ = problem
    path = fitted.save(tmp_path / "pmf.bpmf")
    loaded = PMF.load(path)
    np.testing.assert_array_equal(loaded.predict(split.test), fitted.predict(split.test))
    assert loaded.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.map_["V"], fitted.map_["V"])
    with pytest.raises(ModelFileError, match="PMF model"):
        BPMF.load(path)


def test_bad_input(problem):
    split, _ = problem
    with pytest.raises(ValueError, match="n_factors"):
        PMF(0).fit(split.train)
    with pytest.raises(ValueError, match="Unknown model_config"):
        PMF(2, model_config={"factor_std": 1.0}).fit(split.train)
    with pytest.raises(DataError):
        PMF(2).fit(pd.DataFrame({"user": [], "item": [], "rating": []}))
    with pytest.raises(NotFittedError):
        PMF(2).predict(split.test)


def test_plug_in_predictive_intervals(problem, fitted):
    """PMF's one MAP draw still gives Gaussian predictive intervals of width 2 z sigma."""
    split, _ = problem
    test = split.test.to_frame()
    intervals = fitted.predict_interval(test, prob=0.9, clip=False, on_unseen="ignore")
    assert (intervals["lower"] < intervals["mean"]).all()
    assert (intervals["mean"] < intervals["upper"]).all()
    width = 2 * 1.6449 * fitted.map_["sigma"]
    np.testing.assert_allclose(intervals["upper"] - intervals["lower"], width, rtol=0.12)
    inside = (test["rating"] >= intervals["lower"]) & (test["rating"] <= intervals["upper"])
    # Plug-in intervals ignore parameter uncertainty (BPMF's do not): their coverage is what a
    # N(0, sigma_MAP^2) band gives residuals of the held-out size, below nominal when the MAP
    # overfits. Check it against that Gaussian expectation.
    residual_sd = rmse(test["rating"], intervals["mean"])
    expected = 2 * stats.norm.cdf(1.6449 * fitted.map_["sigma"] / residual_sd) - 1
    assert abs(inside.mean() - expected) < 0.08
