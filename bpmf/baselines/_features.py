"""Shared plumbing of the gradient-descent baselines: input checks, one-hot designs, progress bars.

Nothing here knows about a particular model; every function raises a clear error on bad input.
"""

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm import tqdm

from bpmf._config import resolve_progressbar
from bpmf._exceptions import DataError, NotFittedError
from bpmf._validation import check_choice, check_positive  # noqa: F401 (re-exported)
from bpmf.datasets._ratings import Ratings


class ConvergenceWarning(UserWarning):
    """An iterative fit stopped at ``max_iter`` before meeting its tolerance."""


# ---------------------------------------------------------------------- argument checks
# check_positive and check_choice come from bpmf._validation (imported above for the
# baselines); the checks below are about design matrices.


def is_rating_data(data):
    """Whether ``data`` is rating triples (a Ratings or a DataFrame) rather than a design matrix."""
    return isinstance(data, Ratings | pd.DataFrame)


def check_design(X, y=None, *, name="X"):
    """Validate a design matrix (dense 2-D array or scipy sparse) and, if given, its targets.

    Returns ``(X, y)`` with ``X`` as a float64 ndarray or CSR matrix and ``y`` as a 1-D array.
    """
    if isinstance(X, pd.DataFrame):
        X = X.to_numpy()
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64)
        data = X.data
    else:
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{name} must be a numeric matrix: {exc}") from exc
        if X.ndim == 1:
            raise DataError(
                f"{name} must be 2-D (n_samples, n_features), got a 1-D array of length "
                f"{X.shape[0]}; use X.reshape(-1, 1) for a single feature."
            )
        if X.ndim != 2:
            raise DataError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}.")
        data = X
    if X.shape[0] == 0:
        raise DataError(f"{name} has no rows: at least one sample is needed.")
    if not np.isfinite(data).all():
        n_bad = int((~np.isfinite(data)).sum())
        raise DataError(
            f"{name} contains {n_bad} NaN or infinite value(s); impute or drop them before fitting."
        )
    if y is None:
        return X, None
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"y must be 1-D, got shape {y.shape}.")
    if len(y) != X.shape[0]:
        raise DataError(
            f"{name} has {X.shape[0]} rows but y has {len(y)} values; they must match one to one."
        )
    return X, y


def check_targets(y):
    """Real-valued regression targets: finite float64."""
    try:
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"y must be numeric for regression: {exc}") from exc
    if not np.isfinite(y).all():
        raise DataError(
            f"y contains {int((~np.isfinite(y)).sum())} NaN or infinite value(s); drop those rows."
        )
    return y


def check_n_features(X, n_features, name="X"):
    if X.shape[1] != n_features:
        raise DataError(
            f"{name} has {X.shape[1]} features but the model was fitted with {n_features}."
        )


# ---------------------------------------------------------------------- designs
def one_hot_pairs(user_codes, item_codes, n_users, n_items):
    """Sparse design ``[one-hot user | one-hot item]``, shape ``(n, n_users + n_items)``.

    Codes of -1 (ids unseen in training) give an all-zero block, i.e. a zero effect.
    """
    user_codes = np.asarray(user_codes, dtype=np.intp)
    item_codes = np.asarray(item_codes, dtype=np.intp)
    n = len(user_codes)
    rows = np.concatenate([np.arange(n), np.arange(n)])
    cols = np.concatenate([user_codes, n_users + item_codes])
    keep = np.concatenate([user_codes >= 0, item_codes >= 0])
    data = np.ones(keep.sum())
    return sp.csr_matrix(
        (data, (rows[keep], cols[keep])), shape=(n, n_users + n_items), dtype=np.float64
    )


def add_intercept(X):
    """Prepend a column of ones (dense or sparse)."""
    ones = np.ones((X.shape[0], 1))
    if sp.issparse(X):
        return sp.hstack([sp.csr_matrix(ones), X], format="csr")
    return np.hstack([ones, X])


# ---------------------------------------------------------------------- mini-batches
def minibatches(n, batch_size, rng):
    """Shuffled index batches covering ``range(n)`` once (the last one may be smaller)."""
    order = rng.permutation(n)
    return [order[start : start + batch_size] for start in range(0, n, batch_size)]


# ---------------------------------------------------------------------- progress
def progress(total, progressbar, desc):
    """A tqdm bar over ``total`` iterations, disabled by ``progressbar=False``."""
    return tqdm(total=total, disable=not resolve_progressbar(progressbar), desc=desc, leave=False)


def warn_not_converged(estimator, max_iter, detail=""):
    warnings.warn(
        f"{type(estimator).__name__} stopped at max_iter={max_iter} before meeting tol"
        f"{detail}; raise max_iter or loosen tol.",
        ConvergenceWarning,
        stacklevel=3,
    )


# ---------------------------------------------------------------------- dual-mode estimators
class MatrixOrRatingsMixin:
    """Fitted-state handling for estimators that accept a design matrix or rating data.

    ``fit(X, y)`` with a dense/sparse ``X`` fits the generic model (then ``predict(X)``);
    ``fit(ratings)`` builds the one-hot user/item design (then ``predict(pairs)``).
    """

    def _start_mode(self, X, y):
        """Return ``"ratings"`` or ``"matrix"`` and reset state left by an earlier fit."""
        for attr in ("user_index_", "item_index_", "scale_", "n_train_"):
            self.__dict__.pop(attr, None)
        if y is None:
            if is_rating_data(X):
                self.input_kind_ = "ratings"
                return "ratings"
            raise DataError(
                f"{type(self).__name__}.fit needs y with a design matrix X (fit(X, y)), or rating "
                f"data alone (fit(ratings)); got {type(X).__name__} and no y."
            )
        self.input_kind_ = "matrix"
        return "matrix"

    def _start_design(self, X, y, *, rating_alpha, matrix_alpha):
        """Start a fit: ``(mode, design, targets, intercept, alpha)``.

        Rating data gives the sparse one-hot user + item design with an intercept and
        ``rating_alpha`` as the default L2 penalty; a matrix gives the checked ``X``, ``y``,
        ``fit_intercept`` and ``matrix_alpha``. An explicit ``self.alpha`` wins in both.
        """
        mode = self._start_mode(X, y)
        if mode == "ratings":
            train = self._start_fit(X)
            design = one_hot_pairs(train.user_codes, train.item_codes, train.n_users, train.n_items)
            targets, intercept, default_alpha = train.values, True, rating_alpha
        else:
            design, targets = check_design(X, y)
            intercept, default_alpha = bool(self.fit_intercept), matrix_alpha
        alpha = check_positive(
            "alpha", default_alpha if self.alpha is None else self.alpha, allow_zero=True
        )
        return mode, design, targets, intercept, alpha

    def _check_is_fitted(self):
        if not hasattr(self, "input_kind_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit first.")
