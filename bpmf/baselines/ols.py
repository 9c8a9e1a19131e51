"""Linear least squares by full-batch gradient descent (fixed or Barzilai-Borwein steps)."""

import numpy as np
import scipy.sparse as sp

from bpmf._estimator import RatingEstimator
from bpmf.baselines._features import (
    MatrixOrRatingsMixin,
    add_intercept,
    check_choice,
    check_design,
    check_n_features,
    check_positive,
    check_targets,
    progress,
    warn_not_converged,
)

#: L2 penalty used on rating data when ``alpha=None`` (chosen on the ml-100k ``ua`` split,
#: not on the u1-u5 folds that the README reports).
RATING_ALPHA = 3.0

# Fixed steps: a gradient norm that grew this many iterations in a row, or this factor above
# its starting value, means the step is too large (on a quadratic a stable step never grows it).
_GROWTH_STREAK = 10
_EXPLOSION = 1e10


class DivergenceError(ArithmeticError):
    """Gradient descent diverged (the step size is too large for the problem's curvature)."""


class OLSRegressor(MatrixOrRatingsMixin, RatingEstimator):
    r"""Linear least squares (optionally ridge) fitted by full-batch gradient descent.

    Two ways to use it:

    * ``fit(H, y)`` with a dense array or scipy sparse design ``H`` (n_samples, n_features) and
      targets ``y``; then ``predict(H_new)``. An intercept column is added unless
      ``fit_intercept=False``.
    * ``fit(ratings)`` with a :class:`~bpmf.datasets.Ratings` or DataFrame: the design is
      one-hot user + one-hot item (sparse), giving the classic baseline predictor
      :math:`\mu + b_u + b_i`; then ``predict(pairs)`` (unseen ids get a zero bias).

    Parameters
    ----------
    alpha : float or None, default None
        L2 penalty on the coefficients (never on the intercept). ``None`` means 0 for a design
        matrix (ordinary least squares) and :data:`RATING_ALPHA` for rating data.
    step : {"bb", "fixed"}, default "bb"
        ``"bb"``: Barzilai-Borwein step sizes; ``"fixed"``: a constant ``learning_rate``.
    learning_rate : float or None, default None
        The fixed step size (or the first step for ``"bb"``). ``None`` uses
        :math:`1/L`, with :math:`L` the largest curvature of the objective (power iteration)
        for ``"fixed"``, and the exact line-search step for the first ``"bb"`` step.
    fit_intercept : bool, default True
        Add an unpenalised intercept (design-matrix mode; rating mode always has :math:`\mu`).
    tol : float, default 1e-6
        Stop when the Euclidean norm of the objective's gradient falls below ``tol``.
    max_iter : int, default 10000
        At most this many gradient steps (a :class:`ConvergenceWarning` says when it is hit).
    progressbar : bool or None, default None
        Show a tqdm bar; ``None`` follows :func:`bpmf.set_config`.
    on_unseen : {"ignore", "warn", "raise"}, default "ignore"
        What ``predict(pairs)`` does with ids not seen in training.

    Attributes
    ----------
    coef_ : ndarray
        Coefficients of the features (rating mode: user biases then item biases).
    intercept_ : float
        The intercept (rating mode: :math:`\mu`).
    user_bias_, item_bias_ : ndarray
        Rating mode only: :math:`b_u` and :math:`b_i`.
    loss_curve_ : list of float
        The objective at each iterate.
    n_iter_ : int
        Number of gradient steps taken.
    grad_norm_ : float
        Gradient norm at the returned coefficients.

    Raises
    ------
    DivergenceError
        When a fixed step makes the gradient norm grow, explode or become non-finite.

    Notes
    -----
    The objective is the residual sum of squares plus the ridge penalty,

    .. math::

        J(w) = \lVert y - H w \rVert^2 + \alpha \lVert D w \rVert^2, \qquad
        \nabla J(w) = -2 H^\top (y - H w) + 2 \alpha D w,

    where :math:`D` is the identity with a zero for the intercept. Gradient descent iterates
    :math:`w_{t+1} = w_t - \eta_t \nabla J(w_t)`, with :math:`\eta_t = \eta` (fixed) or the
    Barzilai-Borwein step :math:`\eta_t = (\Delta w \cdot \Delta g) / \lVert \Delta g \rVert^2`,
    :math:`\Delta w = w_t - w_{t-1}`, :math:`\Delta g = \nabla J(w_t) - \nabla J(w_{t-1})`.
    A fixed step converges iff :math:`\eta < 2 / L`; BB needs no tuning and copes with
    ill-conditioned designs. In rating mode the model is
    :math:`r_{ui} = \mu + b_u + b_i + \varepsilon_{ui}`, the MAP estimate under Gaussian noise and
    Gaussian priors on the biases.
    """

    def __init__(
        self,
        alpha=None,
        step="bb",
        learning_rate=None,
        fit_intercept=True,
        tol=1e-6,
        max_iter=10_000,
        progressbar=None,
        on_unseen="ignore",
    ):
        self.alpha = alpha
        self.step = step
        self.learning_rate = learning_rate
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.progressbar = progressbar
        self.on_unseen = on_unseen

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None):
        """Fit on a design matrix ``X`` and targets ``y``, or on rating data ``X`` alone.

        Returns
        -------
        self
        """
        check_choice("step", self.step, ("bb", "fixed"))
        tol = check_positive("tol", self.tol)
        max_iter = check_positive("max_iter", self.max_iter, integer=True)
        learning_rate = check_positive("learning_rate", self.learning_rate, allow_none=True)
        mode, H, targets, intercept, alpha = self._start_design(
            X, y, rating_alpha=RATING_ALPHA, matrix_alpha=0.0
        )
        if mode == "matrix":
            targets = check_targets(targets)
        self.n_features_in_ = H.shape[1]
        if intercept:
            H = add_intercept(H)
        penalized = np.ones(H.shape[1])
        if intercept:
            penalized[0] = 0.0
        w = np.zeros(H.shape[1])
        if intercept:  # start at the mean: the intercept-only least-squares solution
            w[0] = targets.mean()
        w, self.loss_curve_, self.n_iter_, self.grad_norm_ = _gradient_descent(
            self, H, targets, alpha * penalized, w, learning_rate, tol, max_iter
        )
        self.intercept_ = float(w[0]) if intercept else 0.0
        self.coef_ = w[1:] if intercept else w
        self.alpha_ = alpha
        if mode == "ratings":
            self.user_bias_ = self.coef_[: len(self.user_index_)]
            self.item_bias_ = self.coef_[len(self.user_index_) :]
        return self

    # ------------------------------------------------------------------ prediction
    def predict(self, X):
        """Predictions for a design matrix (matrix mode) or for (user, item) pairs (rating mode).

        In rating mode the predictions are clipped to the training scale and unseen users or
        items contribute a zero bias.
        """
        self._check_is_fitted()
        if self.input_kind_ == "ratings":
            user_codes, item_codes = self._encode_pairs(X)
            self._handle_unseen(user_codes, item_codes, self.on_unseen)
            user_part = np.where(user_codes >= 0, self.user_bias_[np.maximum(user_codes, 0)], 0.0)
            item_part = np.where(item_codes >= 0, self.item_bias_[np.maximum(item_codes, 0)], 0.0)
            return self._clip(self.intercept_ + user_part + item_part)
        H, _ = check_design(X)
        check_n_features(H, self.n_features_in_)
        return np.asarray(H @ self.coef_).ravel() + self.intercept_


def _objective(H, y, penalty, w):
    """Return (J(w), grad J(w)) for the ridge objective with per-coefficient penalties."""
    residual = y - H @ w
    loss = float(residual @ residual + (penalty * w) @ w)
    grad = -2.0 * (H.T @ residual) + 2.0 * penalty * w
    return loss, np.asarray(grad).ravel()


def _curvature_times(H, penalty, v):
    """Hessian-vector product: 2 (H^T H + diag(penalty)) v."""
    return 2.0 * np.asarray(H.T @ (H @ v)).ravel() + 2.0 * penalty * v


def _lipschitz(H, penalty, n_power=50, seed=0):
    """Largest eigenvalue of the Hessian by power iteration (slightly inflated for safety)."""
    v = np.random.default_rng(seed).standard_normal(H.shape[1])
    value = 0.0
    for _ in range(n_power):
        v /= np.linalg.norm(v)
        hv = _curvature_times(H, penalty, v)
        value = float(v @ hv)
        v = hv
    return 1.05 * value


def _gradient_descent(estimator, H, y, penalty, w, learning_rate, tol, max_iter):
    step = estimator.step
    if step == "fixed" and learning_rate is None:
        learning_rate = 1.0 / _lipschitz(H, penalty)
    loss, grad = _objective(H, y, penalty, w)
    grad_norm = float(np.linalg.norm(grad))
    first_norm = max(grad_norm, 1e-300)
    losses = [loss]
    streak = 0
    n_iter = 0
    w_prev = grad_prev = None
    with progress(max_iter, estimator.progressbar, type(estimator).__name__) as bar:
        while grad_norm >= tol and n_iter < max_iter:
            if step == "fixed":
                eta = learning_rate
            elif w_prev is None:
                # exact line search along -grad for a quadratic, unless a first step was given
                eta = learning_rate or grad_norm**2 / float(
                    grad @ _curvature_times(H, penalty, grad)
                )
            else:
                dw, dg = w - w_prev, grad - grad_prev
                denom = float(dg @ dg)
                eta = float(dw @ dg) / denom if denom > 0 else eta
            w_prev, grad_prev = w, grad
            w = w - eta * grad
            loss, grad = _objective(H, y, penalty, w)
            new_norm = float(np.linalg.norm(grad))
            n_iter += 1
            losses.append(loss)
            bar.update()
            streak = streak + 1 if new_norm > grad_norm else 0
            grad_norm = new_norm
            _check_divergence(step, eta, grad_norm, first_norm, streak, n_iter)
    if grad_norm >= tol:
        warn_not_converged(estimator, max_iter, f" (gradient norm {grad_norm:.3g} >= tol={tol:g})")
    return w, losses, n_iter, grad_norm


def _check_divergence(step, eta, grad_norm, first_norm, streak, n_iter):
    exploded = not np.isfinite(grad_norm) or grad_norm > _EXPLOSION * first_norm
    growing = step == "fixed" and streak >= _GROWTH_STREAK
    if exploded or growing:
        what = (
            "became non-finite"
            if not np.isfinite(grad_norm)
            else (f"grew to {grad_norm:.3g} (from {first_norm:.3g})")
        )
        advice = (
            f"use a smaller learning_rate than {eta:g} (or learning_rate=None for 1/L), or "
            "step='bb'"
            if step == "fixed"
            else "check the design for huge or duplicated columns"
        )
        raise DivergenceError(
            f"Gradient descent diverged: the gradient norm {what} after {n_iter} step(s) with "
            f"step={step!r}. The step is too large for the curvature of this problem: {advice}."
        )


def ridge_closed_form(H, y, alpha=0.0, fit_intercept=True):
    """The exact ridge / least-squares solution, for checks: returns ``(intercept, coef)``."""
    H, y = check_design(H, y)
    H = H.toarray() if sp.issparse(H) else H
    if fit_intercept:
        H = add_intercept(H)
    penalty = np.full(H.shape[1], float(alpha))
    if fit_intercept:
        penalty[0] = 0.0
    w = np.linalg.solve(H.T @ H + np.diag(penalty), H.T @ np.asarray(y, dtype=float))
    return (float(w[0]), w[1:]) if fit_intercept else (0.0, w)
