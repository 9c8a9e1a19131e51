"""MLPRegressor and its layers: BatchNorm statistics, finite-difference gradients, fitting."""

import numpy as np
import pytest

from bpmf import NotFittedError
from bpmf.baselines import MLPRegressor, OLSRegressor
from bpmf.baselines.mlp import Activation, BatchNorm, Dense, _Network
from bpmf.datasets import make_synthetic_ratings, train_test_split
from bpmf.metrics import rmse

W_EXAMPLE = np.array([[0.3, 0.4], [0.5, 0.1], [0.2, 0.3]])
X_EXAMPLE = np.array([[0.7, 0.1], [0.3, 0.8], [0.4, 0.6]])


def _relative_error(numeric, analytic):
    """||numeric - analytic|| / (||numeric|| + ||analytic||), the usual gradient-check measure."""
    scale = np.linalg.norm(numeric) + np.linalg.norm(analytic)
    return np.linalg.norm(numeric - analytic) / max(scale, 1e-12)


def _numeric_gradient(f, array, h=1e-6):
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + h
        up = f()
        array[index] = saved - h
        down = f()
        array[index] = saved
        grad[index] = (up - down) / (2 * h)
    return grad


def test_batchnorm_normalises_each_feature_over_the_batch():
    z = W_EXAMPLE @ X_EXAMPLE.T  # (features, samples): column j is sample j
    layer = BatchNorm(3, momentum=0.1, eps=0.0)
    x_hat = layer.normalize(z.T, training=True)
    np.testing.assert_allclose(x_hat.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(x_hat.var(axis=0), 1.0, rtol=1e-12)
    # feature 0 by hand: z = [0.25, 0.41, 0.36], mean 0.34, variance 0.0134 / 3
    np.testing.assert_allclose(x_hat[:, 0], np.array([-0.09, 0.07, 0.02]) / np.sqrt(0.0134 / 3))
    # per-feature statistics, not one mean over all features of a sample
    assert not np.allclose(x_hat, (z.T - z.T.mean(1, keepdims=True)) / z.T.std(1, keepdims=True))


def test_batchnorm_running_statistics_and_inference():
    batch = (W_EXAMPLE @ X_EXAMPLE.T).T
    layer = BatchNorm(3, momentum=0.1)
    np.testing.assert_array_equal(layer.running_mean, 0.0)
    np.testing.assert_array_equal(layer.running_var, 1.0)
    layer.params["gamma"][:] = [2.0, 0.5, 1.0]
    layer.params["beta"][:] = [0.1, -0.2, 0.3]
    layer.forward(batch, training=True)
    np.testing.assert_allclose(layer.running_mean, 0.1 * batch.mean(axis=0))
    np.testing.assert_allclose(layer.running_var, 0.9 + 0.1 * batch.var(axis=0))
    stats = layer.running_mean.copy(), layer.running_var.copy()
    new = np.array([[1.0, 2.0, 3.0]])
    out = layer.forward(new, training=False)  # one sample is fine at inference
    expected = layer.params["gamma"] * (new - stats[0]) / np.sqrt(stats[1] + layer.eps)
    np.testing.assert_allclose(out, expected + layer.params["beta"])
    np.testing.assert_array_equal(layer.running_mean, stats[0])  # inference leaves them alone
    np.testing.assert_array_equal(layer.running_var, stats[1])


def _check_layer(layer, x, rng):
    upstream = rng.standard_normal(layer.forward(x, True).shape)

    def scalar():
        return float(np.sum(upstream * layer.forward(x, True)))

    layer.forward(x, True)
    grad_x = layer.backward(upstream)
    assert _relative_error(_numeric_gradient(scalar, x), grad_x) < 1e-6
    for name, value in layer.params.items():
        layer.forward(x, True)
        layer.backward(upstream)
        analytic = layer.grads[name].copy()
        assert _relative_error(_numeric_gradient(scalar, value), analytic) < 1e-6, name


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: Dense(4, 3, rng),
        lambda rng: Dense(4, 3, rng, bias=False),
        lambda rng: BatchNorm(4),
        lambda rng: Activation("tanh"),
        lambda rng: Activation("relu"),
    ],
    ids=["dense", "dense-no-bias", "batchnorm-training", "tanh", "relu"],
)
def test_layer_gradients_match_finite_differences(make):
    rng = np.random.default_rng(5)
    layer = make(rng)
    if isinstance(layer, BatchNorm):
        layer.params["gamma"][:] = rng.uniform(0.5, 2.0, 4)
        layer.params["beta"][:] = rng.standard_normal(4)
    x = rng.standard_normal((6, 4))
    x[np.abs(x) < 0.05] = 0.3  # keep relu away from its kink
    _check_layer(layer, x, rng)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_whole_network_gradient_matches_finite_differences(activation):
    rng = np.random.default_rng(6)
    network = _Network(5, 4, 3, (6, 5), activation, True, 0.1, 3.0, rng)
    for layer in network.layers:  # non-trivial values everywhere (the output starts at zero)
        for value in layer.params.values():
            value += 0.3 * rng.standard_normal(value.shape)
    network.embeddings["user_bias"] += rng.standard_normal(5)
    users, items = np.array([0, 1, 1, 3, 4, 2, 0]), np.array([0, 1, 2, 3, 3, 0, 2])
    ratings = rng.uniform(1, 5, 7)
    args = (users, items, ratings, 0.05, 0.01, 0.02)
    saved = [
        (layer.running_mean.copy(), layer.running_var.copy())
        for layer in network.layers
        if isinstance(layer, BatchNorm)
    ]
    _, grads, rows = network.loss_and_grads(*args)
    params = network.parameters()
    for name, value in params.items():
        analytic = grads[name]
        if name in rows:  # row-sparse: scatter-add to a dense gradient
            dense = np.zeros_like(value)
            np.add.at(dense, rows[name], analytic)
            analytic = dense
        numeric = _numeric_gradient(lambda: network.loss_and_grads(*args)[0], value)
        assert _relative_error(numeric, analytic) < 1e-6, name
    del saved  # running statistics do not enter the training-mode loss


@pytest.fixture(scope="module")
def split():
    """Rank-2 synthetic ratings: interactions carry most of the signal, noise sd 0.3."""
    ratings, truth = make_synthetic_ratings(
        n_users=150, n_items=100, n_factors=2, density=0.3, noise_sd=0.3, random_state=1
    )
    return train_test_split(ratings, test_size=0.2, random_state=0), truth


@pytest.fixture(scope="module")
def fitted(split):
    (train, _), _ = split
    return MLPRegressor(random_state=0, progressbar=False).fit(train)


def test_fit_recovers_the_interactions_that_biases_miss(split, fitted):
    (train, test), truth = split
    expected = truth.expected(test.users, test.items)
    additive = OLSRegressor(progressbar=False).fit(train).predict(test)
    # the biases-only model cannot represent U_u . V_i; the network learns most of it
    assert rmse(expected, fitted.predict(test)) < 0.6 * rmse(expected, additive)
    assert fitted.n_iter_ == len(fitted.loss_curve_) == len(fitted.validation_scores_)
    assert 1 <= fitted.best_iter_ <= fitted.n_iter_
    assert fitted.validation_scores_[fitted.best_iter_ - 1] == min(fitted.validation_scores_)


def test_fit_is_deterministic_and_prediction_is_batch_independent(split, fitted):
    (train, test), _ = split
    again = MLPRegressor(random_state=0, progressbar=False).fit(train)
    np.testing.assert_array_equal(again.predict(test), fitted.predict(test))
    pairs = test.to_frame()
    one_by_one = np.array([fitted.predict(pairs.iloc[[k]])[0] for k in range(5)])
    np.testing.assert_allclose(one_by_one, fitted.predict(pairs)[:5])


def test_unseen_users_and_items_do_not_crash(split, fitted):
    (_, test), _ = split
    pairs = (
        test.to_frame()
        .iloc[:3]
        .assign(user=[10_000, 10_001, test.users[0]], item=[test.items[0], 10_002, 10_003])
    )
    assert np.all(np.isfinite(fitted.predict(pairs)))


def test_sgd_optimizer_and_no_batchnorm_also_train(split):
    (train, test), _ = split
    model = MLPRegressor(
        batch_norm=False,
        optimizer="sgd",
        learning_rate=0.01,
        batch_size=64,
        random_state=0,
        progressbar=False,
    ).fit(train)
    baseline = rmse(test.values, np.full(len(test.values), train.values.mean()))
    assert rmse(test.values, model.predict(test)) < baseline


def test_bad_settings_give_clear_errors(split):
    (train, test), _ = split
    with pytest.raises(NotFittedError):
        MLPRegressor().predict(test)
    with pytest.raises(ValueError, match="batch_size"):
        MLPRegressor(batch_size=0).fit(train)
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        MLPRegressor(batch_size=1).fit(train)
    for bad in (0.0, -0.01):
        with pytest.raises(ValueError, match="learning_rate"):
            MLPRegressor(learning_rate=bad).fit(train)
    with pytest.raises(ValueError, match="activation"):
        MLPRegressor(activation="sigmoid").fit(train)
    with pytest.raises(ValueError, match="validation_fraction"):
        MLPRegressor(validation_fraction=1.5).fit(train)
