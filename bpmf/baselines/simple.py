"""Reference predictors with no learning beyond averages (rows of the PyMC PMF case study)."""

import numpy as np

from bpmf._estimator import RatingEstimator


class _MeanBaseline(RatingEstimator):
    def fit(self, train):
        train = self._start_fit(train)
        self.global_mean_ = float(train.values.mean())
        counts_u = np.bincount(train.user_codes, minlength=train.n_users)
        counts_i = np.bincount(train.item_codes, minlength=train.n_items)
        self.user_means_ = np.bincount(train.user_codes, train.values, train.n_users) / counts_u
        self.item_means_ = np.bincount(train.item_codes, train.values, train.n_items) / counts_i
        return self

    def _lookup(self, means, codes):
        """``means[codes]`` with the global mean where the id was unseen (code -1)."""
        return np.where(codes >= 0, means[np.maximum(codes, 0)], self.global_mean_)

    def predict(self, pairs):
        user_codes, item_codes = self._encode_pairs(pairs)
        return self._clip(self._combine(user_codes, item_codes))


class GlobalMean(_MeanBaseline):
    """Predict the mean training rating for every pair."""

    def _combine(self, user_codes, item_codes):
        return np.full(len(user_codes), self.global_mean_)


class UserMean(_MeanBaseline):
    """Predict the user's mean training rating (global mean for unseen users)."""

    def _combine(self, user_codes, item_codes):
        return self._lookup(self.user_means_, user_codes)


class ItemMean(_MeanBaseline):
    """Predict the item's mean training rating (global mean for unseen items)."""

    def _combine(self, user_codes, item_codes):
        return self._lookup(self.item_means_, item_codes)


class UserItemMean(_MeanBaseline):
    """Predict the mean of the user's and the item's means (each falls back to the global mean)."""

    def _combine(self, user_codes, item_codes):
        return 0.5 * (
            self._lookup(self.user_means_, user_codes) + self._lookup(self.item_means_, item_codes)
        )


class UniformRandom(RatingEstimator):
    """Predict uniformly at random on the rating scale (seeded by ``random_state``)."""

    def __init__(self, random_state=None):
        self.random_state = random_state

    def fit(self, train):
        train = self._start_fit(train)
        low, high = (
            train.scale if train.scale is not None else (train.values.min(), train.values.max())
        )
        self.low_, self.high_ = float(low), float(high)
        self._rng = np.random.default_rng(self.random_state)
        return self

    def predict(self, pairs):
        user_codes, _ = self._encode_pairs(pairs)
        return self._rng.uniform(self.low_, self.high_, size=len(user_codes))
