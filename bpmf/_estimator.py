"""The estimator conventions every bpmf model and baseline shares (scikit-learn style).

``__init__`` only stores its arguments; ``fit(train)`` validates, learns state whose names end
in ``_`` and returns ``self``; ``predict(pairs)`` returns values aligned with the input rows.
"""

import inspect
import warnings

import numpy as np

from bpmf._exceptions import DataError, NotFittedError
from bpmf.datasets._ratings import as_pairs, as_ratings

_UNSEEN_POLICIES = ("warn", "raise", "ignore")


class RatingEstimator:
    """Base class: parameter handling, id maps, fitted checks, pair encoding and clipping."""

    # ------------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls):
        signature = inspect.signature(cls.__init__)
        return [
            name
            for name, p in signature.parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def get_params(self, deep=False):
        """The constructor arguments, as stored."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set constructor arguments; unknown names raise ``ValueError``."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"{type(self).__name__} has no parameter {name!r}; valid: {sorted(valid)}."
                )
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = {
            name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()
        }
        shown = [
            f"{name}={value!r}"
            for name, value in self.get_params().items()
            if not _same(value, defaults.get(name, inspect.Parameter.empty))
        ]
        return f"{type(self).__name__}({', '.join(shown)})"

    # ------------------------------------------------------------------ fitting helpers
    def _start_fit(self, train):
        """Validate ``train`` and record the id maps and scale; returns the Ratings."""
        train = as_ratings(train)
        self.user_index_ = train.user_ids
        self.item_index_ = train.item_ids
        self.scale_ = train.scale
        self.n_train_ = train.n_ratings
        return train

    def _check_is_fitted(self):
        if not hasattr(self, "user_index_"):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet; call fit(train) first."
            )

    def _encode_pairs(self, pairs):
        """Codes of the users and items in ``pairs``; -1 marks ids unseen in training."""
        self._check_is_fitted()
        users, items = as_pairs(pairs)
        return self.user_index_.get_indexer(users), self.item_index_.get_indexer(items)

    def _handle_unseen(self, user_codes, item_codes, policy):
        """Apply the unseen-id policy; returns the mask of pairs with an unseen user or item."""
        if policy not in _UNSEEN_POLICIES:
            raise ValueError(f"on_unseen must be one of {_UNSEEN_POLICIES}, got {policy!r}.")
        new_users = user_codes < 0
        new_items = item_codes < 0
        unseen = new_users | new_items
        if unseen.any() and policy != "ignore":
            message = (
                f"{int(new_users.sum())} pair(s) with a user and {int(new_items.sum())} with an "
                "item unseen in training; they are predicted from the population level."
            )
            if policy == "raise":
                raise DataError(
                    message.replace("they are predicted", "set on_unseen='warn' to predict them")
                )
            warnings.warn(message, UserWarning, stacklevel=3)
        return unseen

    def _clip(self, values, clip=True):
        if clip and self.scale_ is not None:
            return np.clip(values, *self.scale_)
        return values


def _same(a, b):
    try:
        return bool(a is b or a == b)
    except (TypeError, ValueError):
        return False
