"""Accuracy metrics: pure functions of true and predicted values that return floats."""

import numpy as np
import pandas as pd


def _paired(y_true, y_pred):
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"Shapes differ: y_true {y_true.shape}, y_pred {y_pred.shape}.")
    if y_true.size == 0:
        raise ValueError("Cannot score empty predictions.")
    if not (np.isfinite(y_true).all() and np.isfinite(y_pred).all()):
        raise ValueError("y_true and y_pred must be finite (found NaN or infinity).")
    return y_true, y_pred


def rmse(y_true, y_pred):
    """Root mean squared error."""
    y_true, y_pred = _paired(y_true, y_pred)
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


def mae(y_true, y_pred):
    """Mean absolute error."""
    y_true, y_pred = _paired(y_true, y_pred)
    return float(np.mean(np.abs(y_true - y_pred)))


def coverage(y_true, lower, upper):
    """Fraction of ``y_true`` inside the closed intervals ``[lower, upper]``."""
    y_true, lower = _paired(y_true, lower)
    _, upper = _paired(y_true, upper)
    if np.any(lower > upper):
        raise ValueError("Every lower bound must be <= its upper bound.")
    return float(np.mean((y_true >= lower) & (y_true <= upper)))


def _per_user(users, y_true, y_score):
    y_true, y_score = _paired(y_true, y_score)
    users = np.asarray(users)
    if users.shape != y_true.shape:
        raise ValueError(f"users has shape {users.shape}, expected {y_true.shape}.")
    frame = pd.DataFrame({"user": users, "true": y_true, "score": y_score})
    # Stable order: highest score first, ties broken by position (deterministic).
    frame["position"] = np.arange(len(frame))
    frame = frame.sort_values(["user", "score", "position"], ascending=[True, False, True])
    return frame.groupby("user", sort=False)


def _check_k(k):
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    return int(k)


def precision_at_k(users, y_true, y_score, k=10, threshold=4.0):
    """Mean over users of the fraction of their top-``k`` scored items with ``y_true >= threshold``.

    Users with fewer than ``k`` test items are scored on the items they have.
    """
    k = _check_k(k)
    per_user = _per_user(users, y_true, y_score)
    return float(per_user["true"].apply(lambda t: np.mean(t.to_numpy()[:k] >= threshold)).mean())


def ndcg_at_k(users, y_true, y_score, k=10):
    """Mean over users of NDCG@k with the true ratings as gains (exponential-free, linear gains)."""
    k = _check_k(k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))

    def user_ndcg(group):
        gains = group["true"].to_numpy()
        top = gains[:k]
        ideal = np.sort(gains)[::-1][:k]
        best = float(ideal @ discounts[: len(ideal)])
        return float(top @ discounts[: len(top)]) / best if best > 0 else 0.0

    per_user = _per_user(users, y_true, y_score)
    return float(per_user[["true"]].apply(user_ndcg).mean())
