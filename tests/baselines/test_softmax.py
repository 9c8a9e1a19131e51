"""SoftmaxRegression: stable softmax, exact gradients, agreement with L-BFGS, rating mode."""

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp
from scipy.special import logsumexp as scipy_logsumexp

from bpmf import DataError, NotFittedError
from bpmf.baselines import SoftmaxRegression
from bpmf.baselines.softmax import logsumexp, one_vs_rest_loss, softmax, softmax_loss
from bpmf.datasets import Ratings


def _blobs(n_per_class=60, spread=1.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [2.5, 0.5], [1.0, 2.5]])
    X = np.vstack([c + spread * rng.standard_normal((n_per_class, 2)) for c in centres])
    y = np.repeat(np.array(["a", "b", "c"]), n_per_class)
    return X, y


def test_softmax_rows_sum_to_one_and_survive_huge_logits():
    logits = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0], [3.0, 1.0, 0.2]])
    proba = softmax(logits)
    assert np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(proba[1], [1 / 3] * 3)
    np.testing.assert_allclose(proba[2], np.exp([3.0, 1.0, 0.2]) / np.exp([3.0, 1.0, 0.2]).sum())
    np.testing.assert_allclose(logsumexp(np.array([[1000.0, 1000.0]])), [1000.0 + np.log(2.0)])
    np.testing.assert_allclose(logsumexp(logits), scipy_logsumexp(logits, axis=1))


@pytest.mark.parametrize("loss_fn", [softmax_loss, one_vs_rest_loss])
def test_loss_gradient_matches_finite_differences(loss_fn):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((30, 4))
    codes = rng.integers(0, 3, 30)
    W, b = rng.standard_normal((4, 3)), rng.standard_normal(3)
    _, grad_W, grad_b, _ = loss_fn(W, b, X, codes, 0.3)
    params = np.r_[W.ravel(), b]

    def loss_at(p):
        return loss_fn(p[:12].reshape(4, 3), p[12:], X, codes, 0.3)[0]

    numeric = np.array(
        [(loss_at(params + h) - loss_at(params - h)) / 2e-6 for h in 1e-6 * np.eye(len(params))]
    )
    analytic = np.r_[grad_W.ravel(), grad_b]
    assert np.max(np.abs(numeric - analytic) / np.maximum(np.abs(analytic), 1e-2)) < 1e-6


def test_separates_a_linearly_separable_problem():
    rng = np.random.default_rng(4)
    X = rng.uniform(-1, 1, (80, 2))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0.1).astype(int)
    for multi_class in ("multinomial", "ovr"):
        model = SoftmaxRegression(multi_class=multi_class, progressbar=False).fit(X, y)
        assert np.array_equal(model.predict(X), y)
        np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0)


def test_fitted_loss_matches_lbfgs_on_the_same_regularised_loss():
    X, y = _blobs()
    alpha = 0.01
    model = SoftmaxRegression(alpha=alpha, progressbar=False).fit(X, y)
    codes = np.searchsorted(model.classes_, y)
    Y = np.eye(3)[codes]

    def objective(p):  # written independently of the module, with scipy's logsumexp
        W, b = p[:6].reshape(2, 3), p[6:]
        Z = X @ W + b
        lse = scipy_logsumexp(Z, axis=1)
        P = np.exp(Z - lse[:, None])
        loss = np.mean(lse - (Z * Y).sum(axis=1)) + 0.5 * alpha * np.sum(W**2)
        grad_W = X.T @ (P - Y) / len(X) + alpha * W
        return loss, np.r_[grad_W.ravel(), (P - Y).mean(axis=0)]

    result = scipy.optimize.minimize(
        objective,
        np.zeros(9),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10_000},
    )
    assert abs(model.loss_curve_[-1] - result.fun) < 1e-5
    assert model.loss_curve_[-1] == pytest.approx(
        objective(np.r_[model.coef_.ravel(), model.intercept_])[0]
    )
    # the intercepts are identified only up to a constant shift: compare centred logits
    logits = model.decision_function(X)
    reference = X @ result.x[:6].reshape(2, 3) + result.x[6:]
    np.testing.assert_allclose(
        logits - logits.mean(1, keepdims=True),
        reference - reference.mean(1, keepdims=True),
        atol=1e-4,
    )
    assert np.mean(model.predict(X) == y) > 0.6  # chance is 1/3 on these overlapping blobs


def test_sparse_input_matches_dense():
    X, y = _blobs(n_per_class=20)
    X = np.abs(X)
    dense = SoftmaxRegression(progressbar=False).fit(X, y)
    sparse = SoftmaxRegression(progressbar=False).fit(sp.csr_matrix(X), y)
    np.testing.assert_allclose(sparse.predict_proba(X), dense.predict_proba(X), atol=1e-6)


@pytest.fixture(scope="module")
def small_levels(small_synthetic):
    ratings, _ = small_synthetic
    values = np.clip(np.round(ratings.values), 1, 5)
    return Ratings(ratings.users, ratings.items, values, scale=(1, 5))


@pytest.fixture(scope="module")
def fitted_levels(small_levels):
    return SoftmaxRegression(alpha=1e-3, progressbar=False).fit(small_levels)


def test_rating_mode_expected_and_argmax_predictions(small_levels, fitted_levels):
    model = fitted_levels
    np.testing.assert_array_equal(model.classes_, small_levels.levels)
    pairs = small_levels.to_frame()
    proba = model.predict_proba(pairs)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(model.predict(pairs), proba @ model.classes_)
    argmax = (
        SoftmaxRegression(alpha=1e-3, prediction="argmax", progressbar=False)
        .fit(small_levels)
        .predict(pairs)
    )
    assert set(np.unique(argmax)) <= set(model.classes_)
    # the fitted probabilities beat the class frequencies on the training data
    codes = np.searchsorted(model.classes_, small_levels.values)
    frequencies = np.bincount(codes) / len(codes)
    rows = np.arange(len(codes))
    assert -np.mean(np.log(proba[rows, codes])) < -np.mean(np.log(frequencies[codes]))


def test_rating_mode_unseen_pairs_fall_back_to_the_intercepts(small_levels, fitted_levels):
    model = fitted_levels
    pairs = small_levels.to_frame().iloc[:1].assign(user=-5, item=-7)
    np.testing.assert_allclose(model.predict_proba(pairs)[0], softmax(model.intercept_[None])[0])


def test_bad_input_gives_clear_errors():
    X, y = _blobs(n_per_class=5)
    with pytest.raises(NotFittedError):
        SoftmaxRegression().predict(X)
    with pytest.raises(DataError, match="at least two classes"):
        SoftmaxRegression(progressbar=False).fit(X, np.zeros(len(X)))
    with pytest.raises(DataError, match="15 rows but y has 14"):
        SoftmaxRegression().fit(X, y[:-1])
    X_nan = X.copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        SoftmaxRegression().fit(X_nan, y)
    for bad in (0.0, -0.5):
        with pytest.raises(ValueError, match="learning_rate"):
            SoftmaxRegression(learning_rate=bad).fit(X, y)
    with pytest.raises(ValueError, match="multi_class"):
        SoftmaxRegression(multi_class="sigmoid").fit(X, y)
