"""OLSRegressor: agreement with lstsq / the ridge closed form, divergence detection, ratings."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from bpmf import DataError, NotFittedError
from bpmf.baselines import ConvergenceWarning, DivergenceError, OLSRegressor
from bpmf.baselines.ols import _objective

ILL_X = np.array([[1, 23], [5, 29], [7, 60], [9, 85], [11, 99]], dtype=float)
ILL_Y = np.array([20, 40, 60, 80, 100], dtype=float)


def _lstsq(X, y):
    H = np.hstack([np.ones((len(X), 1)), X])
    return np.linalg.lstsq(H, y, rcond=None)[0]


def _ridge(X, y, alpha):
    H = np.hstack([np.ones((len(X), 1)), X])
    D = np.eye(H.shape[1])
    D[0, 0] = 0.0
    return np.linalg.solve(H.T @ H + alpha * D, H.T @ y)


@pytest.fixture
def dense_problem():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 4))
    y = 1.5 + X @ np.array([0.5, -2.0, 1.0, 0.0]) + 0.3 * rng.standard_normal(40)
    return X, y


def test_ill_conditioned_example_by_bb_matches_lstsq_and_published_values():
    model = OLSRegressor(step="bb", progressbar=False).fit(ILL_X, ILL_Y)
    fitted = np.r_[model.intercept_, model.coef_]
    np.testing.assert_allclose(fitted, _lstsq(ILL_X, ILL_Y), atol=1e-6)
    np.testing.assert_allclose(fitted, [4.344435, 4.387702, 0.450958], atol=1e-6)
    assert model.grad_norm_ < model.tol
    assert model.n_iter_ == len(model.loss_curve_) - 1


def test_fixed_step_too_large_raises_divergence_error():
    model = OLSRegressor(step="fixed", learning_rate=0.05, progressbar=False)
    with pytest.raises(DivergenceError, match=r"smaller learning_rate.*step='bb'"):
        model.fit(ILL_X, ILL_Y)


def test_growing_gradient_is_detected_before_it_explodes():
    # just above the stability limit 2 / L the error grows slowly: caught by the growth streak
    X = np.array([[1.0], [2.0], [3.0]])
    y = np.array([1.0, 2.0, 2.5])
    H = np.hstack([np.ones((3, 1)), X])
    limit = 2.0 / np.linalg.eigvalsh(2 * H.T @ H).max()
    with pytest.raises(DivergenceError, match="grew"):
        OLSRegressor(step="fixed", learning_rate=1.02 * limit, progressbar=False).fit(X, y)


@pytest.mark.parametrize(
    "settings",
    [{"step": "fixed"}, {"step": "fixed", "learning_rate": 0.005}, {"step": "bb"}],
)
def test_gradient_descent_matches_lstsq_on_dense_problem(dense_problem, settings):
    X, y = dense_problem
    model = OLSRegressor(progressbar=False, tol=1e-9, **settings).fit(X, y)
    np.testing.assert_allclose(np.r_[model.intercept_, model.coef_], _lstsq(X, y), atol=1e-6)
    np.testing.assert_allclose(
        model.predict(X), np.hstack([np.ones((40, 1)), X]) @ _lstsq(X, y), atol=1e-6
    )


def test_fixed_step_loss_decreases_monotonically(dense_problem):
    X, y = dense_problem
    model = OLSRegressor(step="fixed", progressbar=False).fit(X, y)
    assert np.all(np.diff(model.loss_curve_) <= 1e-9)


@pytest.mark.parametrize("step", ["fixed", "bb"])
def test_ridge_matches_closed_form(dense_problem, step):
    X, y = dense_problem
    model = OLSRegressor(alpha=7.5, step=step, progressbar=False, tol=1e-9).fit(X, y)
    np.testing.assert_allclose(np.r_[model.intercept_, model.coef_], _ridge(X, y, 7.5), atol=1e-6)


def test_sparse_design_gives_the_dense_solution(dense_problem):
    X, y = dense_problem
    X = np.where(np.abs(X) > 0.8, X, 0.0)
    dense = OLSRegressor(alpha=1.0, progressbar=False).fit(X, y)
    sparse = OLSRegressor(alpha=1.0, progressbar=False).fit(sp.csr_matrix(X), y)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, atol=1e-7)
    np.testing.assert_allclose(sparse.predict(sp.csr_matrix(X)), dense.predict(X), atol=1e-7)


def test_without_intercept_matches_lstsq(dense_problem):
    X, y = dense_problem
    model = OLSRegressor(fit_intercept=False, progressbar=False).fit(X, y)
    np.testing.assert_allclose(model.coef_, np.linalg.lstsq(X, y, rcond=None)[0], atol=1e-6)
    assert model.intercept_ == 0.0


def test_objective_gradient_matches_finite_differences(dense_problem):
    X, y = dense_problem
    H = np.hstack([np.ones((40, 1)), X])
    penalty = np.array([0.0, 2.0, 2.0, 2.0, 2.0])
    w = np.random.default_rng(2).standard_normal(5)
    _, grad = _objective(H, y, penalty, w)
    numeric = np.empty(5)
    for j in range(5):
        step = np.zeros(5)
        step[j] = 1e-6
        numeric[j] = (
            _objective(H, y, penalty, w + step)[0] - _objective(H, y, penalty, w - step)[0]
        ) / 2e-6
    assert np.max(np.abs(numeric - grad) / np.maximum(np.abs(grad), 1.0)) < 1e-6


def test_rating_mode_is_the_ridge_baseline_predictor(small_synthetic):
    ratings, _ = small_synthetic
    model = OLSRegressor(alpha=3.0, progressbar=False).fit(ratings)
    onehot = np.hstack(
        [np.eye(ratings.n_users)[ratings.user_codes], np.eye(ratings.n_items)[ratings.item_codes]]
    )
    expected = _ridge(onehot, ratings.values, 3.0)
    np.testing.assert_allclose(model.intercept_, expected[0], atol=1e-6)
    np.testing.assert_allclose(model.user_bias_, expected[1 : 1 + ratings.n_users], atol=1e-6)
    np.testing.assert_allclose(model.item_bias_, expected[1 + ratings.n_users :], atol=1e-6)
    pairs = ratings.to_frame()
    np.testing.assert_allclose(model.predict(pairs), onehot @ expected[1:] + expected[0], atol=1e-6)


def test_rating_mode_unseen_ids_get_zero_bias_and_predictions_are_clipped():
    train = pd.DataFrame(
        {"user": [1, 1, 2, 2, 3], "item": [10, 11, 10, 12, 11], "rating": [5.0, 4.0, 5.0, 5.0, 1.0]}
    )
    model = OLSRegressor(progressbar=False).fit(train)
    pairs = pd.DataFrame({"user": [99, 1, 99], "item": [10, 999, 999]})
    predicted = model.predict(pairs)
    assert predicted[2] == pytest.approx(model.intercept_)
    assert predicted[0] == pytest.approx(model.intercept_ + model.item_bias_[0])
    assert predicted[1] == pytest.approx(model.intercept_ + model.user_bias_[0])
    assert np.all((model.predict(train) >= 1) & (model.predict(train) <= 5))
    with pytest.raises(DataError, match="unseen"):
        OLSRegressor(on_unseen="raise", progressbar=False).fit(train).predict(pairs)


def test_max_iter_reached_warns(dense_problem):
    X, y = dense_problem
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        OLSRegressor(step="fixed", max_iter=3, progressbar=False).fit(X, y)


def test_bad_input_gives_clear_errors(dense_problem):
    X, y = dense_problem
    model = OLSRegressor(progressbar=False)
    with pytest.raises(NotFittedError):
        model.predict(X)
    with pytest.raises(DataError, match="40 rows but y has 39"):
        model.fit(X, y[:-1])
    X_nan = X.copy()
    X_nan[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        model.fit(X_nan, y)
    y_nan = y.copy()
    y_nan[0] = np.inf
    with pytest.raises(DataError, match="NaN or infinite"):
        model.fit(X, y_nan)
    with pytest.raises(DataError, match="needs y"):
        model.fit(X)
    with pytest.raises(DataError, match="2-D"):
        model.fit(X[:, 0], y)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="learning_rate"):
            OLSRegressor(step="fixed", learning_rate=bad).fit(X, y)
    with pytest.raises(ValueError, match="step"):
        OLSRegressor(step="newton").fit(X, y)
    with pytest.raises(ValueError, match="alpha"):
        OLSRegressor(alpha=-1.0).fit(X, y)
    fitted = OLSRegressor(progressbar=False).fit(X, y)
    with pytest.raises(DataError, match="fitted with 4"):
        fitted.predict(X[:, :3])


def test_progress_bar_and_parameters(dense_problem, capsys):
    X, y = dense_problem
    model = OLSRegressor(progressbar=True).fit(X, y)
    assert "OLSRegressor" in capsys.readouterr().err
    OLSRegressor(progressbar=False).fit(X, y)
    assert capsys.readouterr().err == ""
    assert repr(OLSRegressor(step="fixed")) == "OLSRegressor(step='fixed')"
    assert model.get_params()["step"] == "bb"
