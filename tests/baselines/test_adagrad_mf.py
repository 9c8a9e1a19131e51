"""AdaGradMF: exact gradients, recovery on synthetic data, determinism, bad input."""

import numpy as np
import pandas as pd
import pytest

from bpmf import NotFittedError
from bpmf.baselines import SGD, AdaGradMF, OLSRegressor
from bpmf.baselines.adagrad_mf import mf_loss_and_grads
from bpmf.datasets import make_synthetic_ratings, train_test_split
from bpmf.metrics import rmse


def test_objective_gradient_matches_finite_differences():
    rng = np.random.default_rng(7)
    params = {
        "mu": np.array([3.2]),
        "user_bias": rng.standard_normal(4),
        "item_bias": rng.standard_normal(5),
        "user_factors": rng.standard_normal((4, 3)),
        "item_factors": rng.standard_normal((5, 3)),
    }
    users, items = np.array([0, 1, 1, 2, 3, 3, 0]), np.array([0, 1, 4, 2, 2, 3, 4])
    ratings = rng.uniform(1, 5, 7)
    args = (users, items, ratings, 0.07, 0.02)
    _, grads, rows = mf_loss_and_grads(params, *args)
    for name, value in params.items():
        analytic = grads[name]
        if name in rows:
            dense = np.zeros_like(value)
            np.add.at(dense, rows[name], analytic)
            analytic = dense
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            saved = value[index]
            value[index] = saved + 1e-6
            up = mf_loss_and_grads(params, *args)[0]
            value[index] = saved - 1e-6
            down = mf_loss_and_grads(params, *args)[0]
            value[index] = saved
            numeric[index] = (up - down) / 2e-6
        error = np.linalg.norm(numeric - analytic) / (
            np.linalg.norm(numeric) + np.linalg.norm(analytic)
        )
        assert error < 1e-6, name


@pytest.fixture(scope="module")
def split():
    ratings, truth = make_synthetic_ratings(
        n_users=150, n_items=100, n_factors=2, density=0.3, noise_sd=0.3, random_state=1
    )
    return train_test_split(ratings, test_size=0.2, random_state=0), truth


@pytest.fixture(scope="module")
def fitted(split):
    (train, _), _ = split
    return AdaGradMF(n_factors=2, random_state=0, progressbar=False).fit(train)


def test_recovers_the_noise_free_ratings(split, fitted):
    (train, test), truth = split
    expected = truth.expected(test.users, test.items)
    # closer to the truth than one noise sd, and far better than biases alone
    assert rmse(expected, fitted.predict(test)) < truth.noise_sd
    additive = OLSRegressor(progressbar=False).fit(train).predict(test)
    assert rmse(expected, fitted.predict(test)) < 0.4 * rmse(expected, additive)
    assert fitted.global_mean_ == pytest.approx(truth.global_mean, abs=0.3)


def test_training_loss_decreases_and_stops_on_tolerance(fitted):
    losses = np.array(fitted.loss_curve_)
    assert losses[-1] < 0.5 * losses[0]
    assert fitted.n_iter_ == len(losses) - 1 < fitted.max_iter
    assert (losses[-2] - losses[-1]) < fitted.tol * losses[-2]


def test_deterministic_given_random_state(split, fitted):
    (train, test), _ = split
    again = AdaGradMF(n_factors=2, random_state=0, progressbar=False).fit(train)
    np.testing.assert_array_equal(again.predict(test), fitted.predict(test))


def test_unseen_ids_fall_back_to_the_known_parts(fitted):
    pairs = pd.DataFrame({"user": [10_000, 0, 10_000], "item": [0, 10_000, 10_001]})
    predicted = fitted.predict(pairs)
    item0 = fitted.item_index_.get_loc(0)
    user0 = fitted.user_index_.get_loc(0)
    assert predicted[0] == pytest.approx(fitted.global_mean_ + fitted.item_bias_[item0])
    assert predicted[1] == pytest.approx(fitted.global_mean_ + fitted.user_bias_[user0])
    assert predicted[2] == pytest.approx(fitted.global_mean_)


def test_sgd_with_momentum_also_fits(split):
    (train, test), truth = split
    model = AdaGradMF(
        n_factors=2,
        optimizer=SGD(learning_rate=0.1, momentum=0.9),
        batch_size=64,
        random_state=0,
        progressbar=False,
    ).fit(train)
    expected = truth.expected(test.users, test.items)
    baseline = rmse(expected, np.full(len(expected), train.values.mean()))
    assert rmse(expected, model.predict(test)) < 0.6 * baseline


def test_bad_settings_give_clear_errors(split):
    (train, test), _ = split
    with pytest.raises(NotFittedError):
        AdaGradMF().predict(test)
    for name, value in [
        ("batch_size", 0),
        ("learning_rate", 0.0),
        ("learning_rate", -1.0),
        ("n_factors", 0),
        ("reg", -0.1),
    ]:
        with pytest.raises(ValueError, match=name):
            AdaGradMF(**{name: value}).fit(train)
    with pytest.raises(ValueError, match="optimizer"):
        AdaGradMF(optimizer="adam").fit(train)
