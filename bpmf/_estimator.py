"""The estimator conventions every bpmf model and baseline shares (scikit-learn style).

``__init__`` only stores its arguments; ``fit(train)`` validates, learns state whose names end
in ``_`` and returns ``self``; ``predict(pairs)`` returns values aligned with the input rows.
"""

import inspect
import numbers

import numpy as np

from bpmf._exceptions import DataError, NotFittedError
from bpmf._validation import (
    check_factor_memory,
    check_n_factors,
    check_random_state,
    check_scale,
    warn,
)
from bpmf.datasets._ratings import Ratings, as_pairs, as_ratings

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
        """Validate ``train`` and the shared settings; record the id maps and the scale.

        Checks ``n_factors`` and ``random_state`` where the estimator has them (see
        :mod:`bpmf._validation`), and that the draws a factor model keeps fit in memory
        (``_kept_draws()``, chains x draws, where the model defines it; 1 otherwise). The
        rating scale is ``rating_scale`` where the estimator has that setting and it is not
        ``None``; otherwise the scale of ``train`` (declared, or inferred with a warning when
        implausible). Returns the Ratings.
        """
        if hasattr(self, "n_factors"):
            check_n_factors(self.n_factors)
        if hasattr(self, "random_state"):
            check_random_state(self.random_state)
        declared = getattr(self, "rating_scale", None)
        if declared is not None:
            declared = check_scale(declared, "rating_scale")
            train = as_ratings(train, scale=declared) if not isinstance(train, Ratings) else train
            train = train.with_scale(declared)
        else:
            train = as_ratings(train)
        if hasattr(self, "n_factors"):
            # Models that keep draws say how many (chains x draws) with ``_kept_draws()``.
            kept = getattr(self, "_kept_draws", None)
            check_factor_memory(
                self.n_factors, train.n_users, train.n_items, kept() if kept else 1,
                what=f"{type(self).__name__}.fit",
            )
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

    def _handle_unseen(self, user_codes, item_codes, policy, users=None, items=None):
        """Apply the unseen-id policy; returns the mask of pairs with an unseen user or item.

        The message counts the pairs and names the first few rows (and their ids, when
        ``users``/``items`` are given); it also says when the ids are of another kind than
        the model's (e.g. integers against a model trained on text ids).
        """
        if policy not in _UNSEEN_POLICIES:
            raise ValueError(f"on_unseen must be one of {_UNSEEN_POLICIES}, got {policy!r}.")
        new_users = user_codes < 0
        new_items = item_codes < 0
        unseen = new_users | new_items
        if unseen.any() and policy != "ignore":
            message = (
                f"{int(new_users.sum())} pair(s) with a user and {int(new_items.sum())} with an "
                f"item unseen in training ({_examples(unseen, users, items)}); they are "
                "predicted from the population level."
            )
            message += _kind_hint(users, self.user_index_, new_users, "user")
            message += _kind_hint(items, self.item_index_, new_items, "item")
            if policy == "raise":
                raise DataError(
                    message.replace("they are predicted", "set on_unseen='warn' to predict them")
                )
            warn(message)
        return unseen

    def _clip(self, values, clip=True):
        if clip and self.scale_ is not None:
            return np.clip(values, *self.scale_)
        return values


def _examples(unseen, users, items, n=3):
    rows = np.flatnonzero(unseen)
    more = f" and {len(rows) - n} more" if len(rows) > n else ""
    if users is None and items is None:
        label = "row" if len(rows) == 1 else "rows"
        return f"{label} {', '.join(str(r) for r in rows[:n])}{more}"
    shown = []
    for row in rows[:n]:
        ids = [
            f"{what} {_plain(values[row])!r}"
            for what, values in (("user", users), ("item", items))
            if values is not None
        ]
        shown.append(f"row {row}: {', '.join(ids)}")
    return "; ".join(shown) + more


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def id_kind(values):
    """``"integer"``, ``"float"``, ``"text"`` or ``"mixed"``: the kind of a set of ids."""
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return "integer"
    if values.dtype.kind == "f":
        return "float"
    if values.dtype.kind in "US":
        return "text"
    kinds = {
        "text" if isinstance(v, str) else "integer" if isinstance(v, numbers.Integral)
        else "float" if isinstance(v, numbers.Real) else "other"
        for v in values[:1000]
    }
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _kind_hint(ids, index, new, what):
    """A sentence when every given id is unseen and the ids differ in kind from the model's."""
    if ids is None or not new.all() or not len(ids):
        return ""
    given, known = id_kind(ids), id_kind(np.asarray(index))
    if given == known or "mixed" in (given, known) or {given, known} == {"integer", "float"}:
        return ""
    plural = {"integer": "integers", "float": "floats", "text": "text", "other": "objects"}
    return (
        f" The {what} ids given are {plural[given]} but the model's are {plural[known]}; "
        "convert them "
        f"(e.g. pairs['{what}'].astype({'str' if known == 'text' else 'int'}))."
    )


def _same(a, b):
    try:
        return bool(a is b or a == b)
    except (TypeError, ValueError):
        return False
