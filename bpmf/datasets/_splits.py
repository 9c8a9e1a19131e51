"""Seeded train/test splits: random hold-out, per-user hold-out and k-fold."""

from typing import NamedTuple

import numpy as np

from bpmf.datasets._ratings import Ratings, as_ratings


class Split(NamedTuple):
    """A ``(train, test)`` pair of :class:`Ratings`; unpacks like a tuple."""

    train: Ratings
    test: Ratings

    @property
    def unseen(self):
        """Counts of test users, items and pairs that never appear in ``train``.

        Models predict such pairs from the population level; these counts say how many.
        """
        new_user = self.train.encode_users(self.test.users) < 0
        new_item = self.train.encode_items(self.test.items) < 0
        return {
            "users": int(len(np.unique(self.test.users[new_user]))),
            "items": int(len(np.unique(self.test.items[new_item]))),
            "pairs": int((new_user | new_item).sum()),
        }


def _split_by_mask(ratings, test_mask, name):
    return Split(
        ratings.subset(~test_mask, name=f"{name}-train" if name else None),
        ratings.subset(test_mask, name=f"{name}-test" if name else None),
    )


def _check_fraction(test_size):
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}.")


def train_test_split(ratings, test_size=0.2, random_state=None):
    """Random hold-out: a fraction ``test_size`` of all ratings goes to the test set."""
    ratings = as_ratings(ratings)
    _check_fraction(test_size)
    rng = np.random.default_rng(random_state)
    n_test = int(round(test_size * len(ratings)))
    if not 0 < n_test < len(ratings):
        raise ValueError(f"test_size={test_size} leaves an empty train or test set.")
    test_mask = np.zeros(len(ratings), dtype=bool)
    test_mask[rng.choice(len(ratings), size=n_test, replace=False)] = True
    return _split_by_mask(ratings, test_mask, ratings.name)


def per_user_split(ratings, n_test=10, random_state=None):
    """Hold out ``n_test`` ratings per user; users with ``<= n_test`` ratings keep one in train."""
    ratings = as_ratings(ratings)
    if int(n_test) != n_test or n_test < 1:
        raise ValueError(f"n_test must be a positive integer, got {n_test!r}.")
    rng = np.random.default_rng(random_state)
    test_mask = np.zeros(len(ratings), dtype=bool)
    order = np.argsort(ratings.user_codes, kind="stable")
    starts = np.searchsorted(ratings.user_codes[order], np.arange(ratings.n_users + 1))
    for code in range(ratings.n_users):
        rows = order[starts[code] : starts[code + 1]]
        take = min(int(n_test), len(rows) - 1)
        if take > 0:
            test_mask[rng.choice(rows, size=take, replace=False)] = True
    return _split_by_mask(ratings, test_mask, ratings.name)


def kfold(ratings, n_splits=5, random_state=None):
    """Shuffle the ratings into ``n_splits`` disjoint test folds.

    Returns a dict ``{"fold1": Split, ...}`` in fold order.
    """
    ratings = as_ratings(ratings)
    if int(n_splits) != n_splits or not 2 <= n_splits <= len(ratings):
        raise ValueError(
            f"n_splits must be an integer between 2 and the number of ratings, got {n_splits!r}."
        )
    rng = np.random.default_rng(random_state)
    fold_of = np.empty(len(ratings), dtype=np.intp)
    fold_of[rng.permutation(len(ratings))] = np.arange(len(ratings)) % n_splits
    return {
        f"fold{k + 1}": _split_by_mask(ratings, fold_of == k, ratings.name)
        for k in range(int(n_splits))
    }
