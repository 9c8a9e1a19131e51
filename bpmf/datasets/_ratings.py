"""The :class:`Ratings` container: rating triples with dense integer codes for users and items."""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from bpmf._exceptions import DataError

_DUPLICATE_POLICIES = ("raise", "mean", "first", "last")


class Ratings:
    """Observed ratings with arbitrary user/item ids mapped to dense integer codes.

    Parameters
    ----------
    user, item : array-like
        User and item ids, one per rating (ints or strings).
    rating : array-like of float
        The ratings.
    scale : {"infer"} or tuple of (float, float) or None, default "infer"
        The rating scale ``(low, high)``. Ratings outside it raise :class:`DataError`;
        models clip predictions to it. ``"infer"`` takes the observed minimum and maximum,
        ``None`` means unbounded (continuous synthetic data).
    duplicates : {"raise", "mean", "first", "last"}, default "raise"
        What to do when a (user, item) pair occurs more than once.
    name : str, optional
        A label used in reprs and reports.

    Attributes
    ----------
    user_ids, item_ids : pandas.Index
        The distinct ids; position = integer code.
    user_codes, item_codes : ndarray of intp
        Code of the user and item of each rating.
    values : ndarray of float64
        The ratings.
    """

    def __init__(self, user, item, rating, *, scale="infer", duplicates="raise", name=None):
        user = _as_id_array(user, "user")
        item = _as_id_array(item, "item")
        rating = _as_rating_array(rating)
        if not (len(user) == len(item) == len(rating)):
            raise DataError(
                f"user, item and rating must have the same length, got "
                f"{len(user)}, {len(item)} and {len(rating)}."
            )
        if len(rating) == 0:
            raise DataError(
                "The ratings are empty: at least one (user, item, rating) row is needed."
            )
        if duplicates not in _DUPLICATE_POLICIES:
            raise ValueError(
                f"duplicates must be one of {_DUPLICATE_POLICIES}, got {duplicates!r}."
            )
        user, item, rating = _handle_duplicates(user, item, rating, duplicates)
        self.scale = _resolve_scale(scale, rating)
        _check_on_scale(rating, self.scale)
        self.user_codes, self.user_ids = _factorize(user)
        self.item_codes, self.item_ids = _factorize(item)
        self.values = rating
        self.name = name

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_frame(
        cls,
        frame,
        *,
        user_col="user",
        item_col="item",
        rating_col="rating",
        scale="infer",
        duplicates="raise",
        name=None,
    ):
        """Build from a DataFrame; ``*_col`` name the columns holding users, items and ratings."""
        if not isinstance(frame, pd.DataFrame):
            raise DataError(
                f"Expected a pandas DataFrame with columns {user_col!r}, {item_col!r}, "
                f"{rating_col!r}; got {type(frame).__name__}."
            )
        _require_columns(frame, [user_col, item_col, rating_col])
        return cls(
            frame[user_col].to_numpy(),
            frame[item_col].to_numpy(),
            frame[rating_col],
            scale=scale,
            duplicates=duplicates,
            name=name,
        )

    def subset(self, rows, *, name=None):
        """A new container with the given rows (boolean mask or positions), re-coded densely."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return Ratings(
            self.user_ids[self.user_codes[rows]].to_numpy(),
            self.item_ids[self.item_codes[rows]].to_numpy(),
            self.values[rows],
            scale=self.scale,
            name=name or self.name,
        )

    # ------------------------------------------------------------------ views
    def to_frame(self):
        """A DataFrame with columns ``user``, ``item``, ``rating`` (original ids)."""
        return pd.DataFrame({"user": self.users, "item": self.items, "rating": self.values})

    @property
    def users(self):
        """The user id of each rating."""
        return self.user_ids[self.user_codes].to_numpy()

    @property
    def items(self):
        """The item id of each rating."""
        return self.item_ids[self.item_codes].to_numpy()

    @property
    def n_users(self):
        return len(self.user_ids)

    @property
    def n_items(self):
        return len(self.item_ids)

    @property
    def n_ratings(self):
        return len(self.values)

    def __len__(self):
        return self.n_ratings

    @property
    def density(self):
        """Fraction of the user x item matrix that is observed."""
        return self.n_ratings / (self.n_users * self.n_items)

    @property
    def levels(self):
        """The distinct rating values, sorted."""
        return np.unique(self.values)

    def encode_users(self, ids):
        """Codes of the given user ids; -1 where the id is unknown."""
        return self.user_ids.get_indexer(_as_id_array(ids, "user"))

    def encode_items(self, ids):
        """Codes of the given item ids; -1 where the id is unknown."""
        return self.item_ids.get_indexer(_as_id_array(ids, "item"))

    def __repr__(self):
        label = f" {self.name!r}" if self.name else ""
        return (
            f"<Ratings{label}: {self.n_ratings} ratings, {self.n_users} users, "
            f"{self.n_items} items, scale={self.scale}>"
        )


# ---------------------------------------------------------------------- coercion helpers
def as_ratings(data, **kwargs):
    """Return ``data`` as a :class:`Ratings` (a DataFrame is converted with ``from_frame``)."""
    if isinstance(data, Ratings):
        return data
    if isinstance(data, pd.DataFrame):
        return Ratings.from_frame(data, **kwargs)
    raise DataError(
        "Expected a bpmf Ratings container or a DataFrame with columns 'user', 'item', "
        f"'rating'; got {type(data).__name__}."
    )


def as_pairs(pairs):
    """Return ``(user_ids, item_ids)`` arrays from a DataFrame of pairs or a Ratings."""
    if isinstance(pairs, Ratings):
        return pairs.users, pairs.items
    if isinstance(pairs, pd.DataFrame):
        _require_columns(pairs, ["user", "item"])
        return (
            _as_id_array(pairs["user"].to_numpy(), "user", allow_empty=True),
            _as_id_array(pairs["item"].to_numpy(), "item", allow_empty=True),
        )
    raise DataError(
        "Expected pairs as a DataFrame with columns 'user' and 'item' (or a Ratings); "
        f"got {type(pairs).__name__}."
    )


def _require_columns(frame, columns):
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"Missing column(s) {missing}; the data has columns {list(frame.columns)}. "
            "Rename them or name the columns to use (e.g. user_col=..., item_col=..., "
            "rating_col=...)."
        )


def _as_id_array(ids, what, allow_empty=True):
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise DataError(f"{what} ids must be one-dimensional, got shape {ids.shape}.")
    if len(ids) and pd.isna(ids).any():
        n_missing = int(pd.isna(ids).sum())
        raise DataError(f"{n_missing} {what} id(s) are missing (NaN/None); drop those rows first.")
    return ids


def _as_rating_array(rating):
    series = pd.Series(np.asarray(rating) if not isinstance(rating, pd.Series) else rating)
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_datetime64_any_dtype(series):
        raise DataError(f"Ratings must be numbers, got dtype {series.dtype}.")
    numeric = pd.to_numeric(series, errors="coerce")
    bad = numeric.isna() & series.notna()
    if bad.any():
        first = series[bad].iloc[0]
        raise DataError(
            f"{int(bad.sum())} rating(s) are not numbers (e.g. {first!r} at row "
            f"{int(np.flatnonzero(bad.to_numpy())[0])}); ratings must be numeric."
        )
    values = numeric.to_numpy(dtype=np.float64)
    nonfinite = ~np.isfinite(values)
    if nonfinite.any():
        row = int(np.flatnonzero(nonfinite)[0])
        raise DataError(
            f"{int(nonfinite.sum())} rating(s) are NaN or infinite (first at row {row}); "
            "drop or fill them before fitting."
        )
    return values


def _handle_duplicates(user, item, rating, policy):
    frame = pd.DataFrame({"user": user, "item": item, "rating": rating})
    dup = frame.duplicated(["user", "item"], keep=False)
    if not dup.any():
        return user, item, rating
    if policy == "raise":
        example = frame[dup].iloc[0]
        raise DataError(
            f"{int(frame.duplicated(['user', 'item']).sum())} duplicate (user, item) pair(s), "
            f"e.g. user={example['user']!r}, item={example['item']!r}. Remove them, or pass "
            "duplicates='mean' (or 'first'/'last') to aggregate."
        )
    if policy == "mean":
        frame = frame.groupby(["user", "item"], sort=False, as_index=False)["rating"].mean()
    else:
        frame = frame.drop_duplicates(["user", "item"], keep=policy)
    return frame["user"].to_numpy(), frame["item"].to_numpy(), frame["rating"].to_numpy(float)


def _resolve_scale(scale, rating):
    if scale is None:
        return None
    if isinstance(scale, str):
        if scale != "infer":
            raise ValueError(f"scale must be 'infer', None or (low, high); got {scale!r}.")
        return (float(rating.min()), float(rating.max()))
    try:
        low, high = scale
    except (TypeError, ValueError):
        raise ValueError(f"scale must be 'infer', None or (low, high); got {scale!r}.") from None
    if not (isinstance(low, numbers.Real) and isinstance(high, numbers.Real) and low < high):
        raise ValueError(f"scale must satisfy low < high, got {scale!r}.")
    return (float(low), float(high))


def _check_on_scale(rating, scale):
    if scale is None:
        return
    low, high = scale
    off = (rating < low) | (rating > high)
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise DataError(
            f"{int(off.sum())} rating(s) lie outside the declared scale {scale} "
            f"(e.g. {rating[row]!r} at row {row}). Fix the data or declare the right scale."
        )


def _factorize(ids):
    try:
        codes, uniques = pd.factorize(ids, sort=True)
    except TypeError:  # mixed id types cannot be sorted: keep order of appearance
        codes, uniques = pd.factorize(ids, sort=False)
    return codes.astype(np.intp), pd.Index(uniques)
