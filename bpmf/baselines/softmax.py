"""Multiclass logistic (softmax) regression by full-batch gradient descent."""

import numpy as np
from scipy.special import expit

from bpmf._estimator import RatingEstimator
from bpmf._exceptions import DataError
from bpmf.baselines._features import (
    MatrixOrRatingsMixin,
    check_choice,
    check_design,
    check_n_features,
    check_positive,
    one_hot_pairs,
    progress,
    warn_not_converged,
)

#: L2 penalty used on rating data when ``alpha=None`` (chosen on the ml-100k ``ua`` split).
RATING_ALPHA = 1e-5
#: L2 penalty used on a design matrix when ``alpha=None``.
MATRIX_ALPHA = 1e-4


def softmax(logits):
    """Row-wise softmax, stable for any finite logits (the row maximum is subtracted first)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def logsumexp(logits):
    """Row-wise ``log(sum(exp(logits)))`` without overflow: ``m + log(sum(exp(logits - m)))``."""
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(logits - top).sum(axis=-1, keepdims=True)))[..., 0]


def softmax_loss(W, b, X, codes, alpha):
    r"""Mean cross-entropy plus :math:`\tfrac{\alpha}{2}\lVert W\rVert^2`, and its gradient.

    ``codes`` holds the class index (0..K-1) of each row. Returns
    ``(loss, grad_W, grad_b, probabilities)``.
    """
    n = X.shape[0]
    rows = np.arange(n)
    # classes along axis 0 and samples contiguous: reductions over K stay vectorised over n
    logits = np.ascontiguousarray((np.asarray(X @ W) + b).T)
    top = logits.max(axis=0)
    logits -= top
    exp = np.exp(logits)
    total = exp.sum(axis=0)
    lse = np.log(total)
    loss = float(np.mean(lse - logits[codes, rows]) + 0.5 * alpha * np.sum(W * W))
    proba = exp / total
    d_logits = proba.copy()
    d_logits[codes, rows] -= 1.0
    d_logits /= n
    grad_W = np.asarray(X.T @ d_logits.T) + alpha * W
    return loss, grad_W, d_logits.sum(axis=1), proba.T


def one_vs_rest_loss(W, b, X, codes, alpha):
    r"""Sum over classes of the mean binary cross-entropy of class k vs the rest, plus L2."""
    n = X.shape[0]
    rows = np.arange(n)
    logits = np.ascontiguousarray((np.asarray(X @ W) + b).T)
    # log(1 + e^z) - y z, computed stably with logaddexp
    loss = float(
        (np.sum(np.logaddexp(0.0, logits)) - np.sum(logits[codes, rows])) / n
        + 0.5 * alpha * np.sum(W * W)
    )
    sig = expit(logits)
    d_logits = sig.copy()
    d_logits[codes, rows] -= 1.0
    d_logits /= n
    grad_W = np.asarray(X.T @ d_logits.T) + alpha * W
    return loss, grad_W, d_logits.sum(axis=1), (sig / sig.sum(axis=0)).T


class SoftmaxRegression(MatrixOrRatingsMixin, RatingEstimator):
    r"""Multinomial logistic regression trained by gradient descent on the softmax cross-entropy.

    Two ways to use it:

    * a generic classifier: ``fit(X, y)`` with a dense or sparse ``X`` and class labels ``y``;
      ``predict_proba(X)`` gives the class probabilities (columns ordered as ``classes_``) and
      ``predict(X)`` the most probable class;
    * a rating model: ``fit(ratings)``; the classes are the rating levels and the features are
      one-hot user + one-hot item. ``predict(pairs)`` returns the expected rating under the
      class probabilities (``prediction="argmax"`` returns the most probable level instead);
      unseen users or items contribute zero logits.

    Parameters
    ----------
    alpha : float or None, default None
        L2 penalty on the weights (not the intercepts). ``None`` means :data:`MATRIX_ALPHA` for a
        design matrix and :data:`RATING_ALPHA` for rating data.
    multi_class : {"multinomial", "ovr"}, default "multinomial"
        ``"ovr"`` fits K independent sigmoid (one-vs-rest) classifiers and normalises their
        outputs. It is inferior: the K problems do not share a likelihood, so the normalised
        scores are not calibrated probabilities. Kept for comparison.
    prediction : {"expected", "argmax"}, default "expected"
        Rating mode only: what ``predict(pairs)`` returns.
    learning_rate : float or None, default None
        First step size (``None``: 1). Later steps are Barzilai-Borwein steps, safeguarded by a
        non-monotone Armijo search. The gradient is divided elementwise by a diagonal
        preconditioner (mean square of each feature, plus ``alpha``) so that rare and frequent
        one-hot features converge at the same pace; the minimiser is unchanged.
    tol : float, default 1e-6
        Stop when the gradient norm (of the mean loss) falls below ``tol``.
    max_iter : int, default 5000
        At most this many gradient steps.
    fit_intercept : bool, default True
        Learn one unpenalised intercept per class (always on in rating mode).
    progressbar : bool or None, default None
        Show a tqdm bar; ``None`` follows :func:`bpmf.set_config`.
    on_unseen : {"ignore", "warn", "raise"}, default "ignore"
        What ``predict(pairs)`` does with ids not seen in training.

    Attributes
    ----------
    classes_ : ndarray
        The class labels (rating mode: the rating levels), in column order.
    coef_ : ndarray of shape (n_features, n_classes)
    intercept_ : ndarray of shape (n_classes,)
    loss_curve_ : list of float
        The objective at each accepted iterate.
    n_iter_ : int

    Notes
    -----
    With logits :math:`z_i = W^\top x_i + b` and :math:`p_{ik} = e^{z_{ik}} / \sum_j e^{z_{ij}}`,

    .. math::

        y_i \sim \mathrm{Categorical}(p_i), \qquad
        J(W, b) = \frac{1}{n}\sum_i \Big(\log\sum_k e^{z_{ik}} - z_{i y_i}\Big)
                  + \frac{\alpha}{2}\lVert W \rVert^2,

    .. math::

        \nabla_W J = X^\top (P - Y)/n + \alpha W, \qquad \nabla_b J = \mathbf{1}^\top (P - Y)/n .

    The softmax and log-sum-exp subtract the row maximum, so logits of :math:`\pm 1000` are safe.
    In rating mode the prediction is :math:`\hat r_{ui} = \sum_k \ell_k\, p_{uik}` over the levels
    :math:`\ell_k`.
    """

    def __init__(
        self,
        alpha=None,
        multi_class="multinomial",
        prediction="expected",
        learning_rate=None,
        tol=1e-6,
        max_iter=5000,
        fit_intercept=True,
        progressbar=None,
        on_unseen="ignore",
    ):
        self.alpha = alpha
        self.multi_class = multi_class
        self.prediction = prediction
        self.learning_rate = learning_rate
        self.tol = tol
        self.max_iter = max_iter
        self.fit_intercept = fit_intercept
        self.progressbar = progressbar
        self.on_unseen = on_unseen

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None):
        """Fit on a design matrix ``X`` and labels ``y``, or on rating data ``X`` alone.

        Returns
        -------
        self
        """
        check_choice("multi_class", self.multi_class, ("multinomial", "ovr"))
        check_choice("prediction", self.prediction, ("expected", "argmax"))
        tol = check_positive("tol", self.tol)
        max_iter = check_positive("max_iter", self.max_iter, integer=True)
        learning_rate = check_positive("learning_rate", self.learning_rate, allow_none=True)
        _, features, labels, intercept, alpha = self._start_design(
            X, y, rating_alpha=RATING_ALPHA, matrix_alpha=MATRIX_ALPHA
        )
        classes, codes = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise DataError(
                f"SoftmaxRegression needs at least two classes, but y holds only {classes!r}; "
                "a classifier cannot be learned from one class."
            )
        n_features, n_classes = features.shape[1], len(classes)
        loss_fn = softmax_loss if self.multi_class == "multinomial" else one_vs_rest_loss
        # start from the class log-frequencies: the intercept-only optimum
        prior = np.bincount(codes, minlength=n_classes) / len(codes)
        b0 = np.log(prior) if intercept else np.zeros(n_classes)
        if self.multi_class == "ovr" and intercept:
            b0 = np.log(prior) - np.log1p(-prior + 1e-12)

        def fun(params):
            W = params[: n_features * n_classes].reshape(n_features, n_classes)
            b = params[n_features * n_classes :] if intercept else np.zeros(n_classes)
            loss, grad_W, grad_b, _ = loss_fn(W, b, features, codes, alpha)
            grad = np.concatenate([grad_W.ravel(), grad_b]) if intercept else grad_W.ravel()
            return loss, grad

        start = np.zeros(n_features * n_classes + (n_classes if intercept else 0))
        if intercept:
            start[n_features * n_classes :] = b0
        # Jacobi-style preconditioner: the curvature of weight (j, k) grows with the mean
        # squared value of feature j (for one-hot features, how often the user/item occurs)
        feature_scale = _mean_square(features) + alpha
        scale = np.concatenate(
            [np.repeat(feature_scale, n_classes), np.ones(n_classes if intercept else 0)]
        )
        if learning_rate is None:
            learning_rate = 1.0
        params, self.loss_curve_, self.n_iter_, self.grad_norm_ = bb_descent(
            self, fun, start, learning_rate, tol, max_iter, scale=scale
        )
        self.coef_ = params[: n_features * n_classes].reshape(n_features, n_classes)
        self.intercept_ = params[n_features * n_classes :] if intercept else np.zeros(n_classes)
        self.classes_ = classes
        self.n_features_in_ = n_features
        self.alpha_ = alpha
        self._loss_fn = loss_fn
        return self

    # ------------------------------------------------------------------ prediction
    def _features(self, X):
        if self.input_kind_ == "ratings":
            user_codes, item_codes = self._encode_pairs(X)
            self._handle_unseen(user_codes, item_codes, self.on_unseen)
            return one_hot_pairs(
                user_codes, item_codes, len(self.user_index_), len(self.item_index_)
            )
        features, _ = check_design(X)
        check_n_features(features, self.n_features_in_)
        return features

    def decision_function(self, X):
        """The logits ``X W + b`` (rating mode: ``X`` are (user, item) pairs)."""
        self._check_is_fitted()
        return np.asarray(self._features(X) @ self.coef_) + self.intercept_

    def predict_proba(self, X):
        """Class probabilities, shape (n, n_classes), columns ordered as ``classes_``."""
        logits = self.decision_function(X)
        if self.multi_class == "ovr":
            sig = expit(logits)
            return sig / sig.sum(axis=1, keepdims=True)
        return softmax(logits)

    def predict(self, X):
        """Most probable class (matrix mode) or the predicted rating (rating mode)."""
        proba = self.predict_proba(X)
        if self.input_kind_ == "ratings" and self.prediction == "expected":
            return self._clip(proba @ self.classes_.astype(np.float64))
        return self.classes_[np.argmax(proba, axis=1)]


def _mean_square(X):
    """Mean of each column's squared values (dense or sparse)."""
    squared = X.multiply(X) if hasattr(X, "multiply") else X * X
    return np.asarray(squared.mean(axis=0)).ravel()


def bb_descent(estimator, fun, params, learning_rate, tol, max_iter, scale=None, memory=10):
    """Gradient descent with Barzilai-Borwein steps and a non-monotone Armijo safeguard.

    ``fun(params) -> (loss, grad)``. The step is ``-eta * grad / scale``: ``scale`` is a positive
    diagonal preconditioner (e.g. how often each one-hot feature occurs; ``None`` = plain
    gradient descent), which leaves the minimiser unchanged and only evens out the curvature.
    A step is accepted when the loss falls below the maximum of the last ``memory`` losses minus
    ``1e-4 * eta * grad . direction`` (Grippo-Lampariello-Lucidi); otherwise it is halved.
    Returns ``(params, losses, n_iter, grad_norm)``.
    """
    scale = np.ones_like(params) if scale is None else scale
    loss, grad = fun(params)
    losses = [loss]
    grad_norm = float(np.linalg.norm(grad))
    eta = learning_rate
    n_iter = 0
    with progress(max_iter, estimator.progressbar, type(estimator).__name__) as bar:
        while grad_norm >= tol and n_iter < max_iter:
            reference = max(losses[-memory:])
            direction = grad / scale
            slope = float(grad @ direction)
            for _ in range(60):
                candidate = params - eta * direction
                new_loss, new_grad = fun(candidate)
                if np.isfinite(new_loss) and new_loss <= reference - 1e-4 * eta * slope:
                    break
                eta *= 0.5
            else:
                break  # no decrease possible at machine precision: the gradient is noise
            dw, dg = candidate - params, new_grad - grad
            params, grad, loss = candidate, new_grad, new_loss
            grad_norm = float(np.linalg.norm(grad))
            losses.append(loss)
            n_iter += 1
            bar.update()
            # BB step in the preconditioned metric: eta = (dw . D dw) / (dw . dg)
            curvature = float(dw @ dg)
            eta = float(dw @ (scale * dw)) / curvature if curvature > 0 else eta * 2.0
    if grad_norm >= tol and n_iter >= max_iter:
        warn_not_converged(estimator, max_iter, f" (gradient norm {grad_norm:.3g} >= tol={tol:g})")
    return params, losses, n_iter, grad_norm
