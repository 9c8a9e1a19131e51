"""The :class:`Ratings` container: rating triples with dense integer codes for users and items."""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from bpmf._exceptions import DataError, RatingScaleWarning
from bpmf._validation import check_scale, warn

_DUPLICATE_POLICIES = ("raise", "mean", "first", "last")


class Ratings:
    """Observed ratings with arbitrary user/item ids mapped to dense integer codes.

    Parameters
    ----------
    user, item : array-like
        User and item ids, one per rating (ints or strings), kept exactly as given: ``"007"``
        and ``"7"`` are two users. Missing or blank ids raise :class:`DataError`, and so do
        ids of different types that would merge (``1`` and ``"1"``, ``1`` and ``1.0``).
    rating : array-like of float
        The ratings.
    scale : {"infer"} or tuple of (float, float) or None, default "infer"
        The rating scale ``(low, high)``. Ratings outside it raise :class:`DataError`;
        models clip predictions to it and derive default thresholds from it. ``"infer"``
        takes the observed minimum and maximum, with a
        :class:`~bpmf._exceptions.RatingScaleWarning` when they are unlikely to be the
        scale (constant ratings: no scale; whole stars short of a common scale such as 3-5
        of 1-5). ``None`` means unbounded (continuous synthetic data). Declare the scale
        whenever it is known.
    duplicates : {"raise", "mean", "first", "last"}, default "raise"
        What to do when a (user, item) pair occurs more than once.
    name : str, optional
        A label used in reprs and reports.
    time : array-like, optional
        When each rating was given: Unix time in seconds (ints or floats, as MovieLens
        stores it), datetimes (``numpy.datetime64``, pandas timestamps) or ISO 8601 date
        strings; naive ones are taken as UTC. Models with time effects
        (``model_config["user_day_bias"]``) need it; other models ignore it.

    Attributes
    ----------
    user_ids, item_ids : pandas.Index
        The distinct ids; position = integer code.
    user_codes, item_codes : ndarray of intp
        Code of the user and item of each rating.
    values : ndarray of float64
        The ratings.
    times : ndarray of float64 or None
        Unix time in seconds of each rating (None when no ``time`` was given).
    """

    def __init__(self, user, item, rating, *, scale="infer", duplicates="raise", name=None,
                 time=None):
        user = _as_id_array(user, "user")
        item = _as_id_array(item, "item")
        rating = _as_rating_array(rating)
        if not (len(user) == len(item) == len(rating)):
            raise DataError(
                f"user, item and rating must have the same length, got "
                f"{len(user)}, {len(item)} and {len(rating)}."
            )
        if time is not None:
            time = as_unix_seconds(time)
            if len(time) != len(rating):
                raise DataError(
                    f"time must have one value per rating, got {len(time)} for "
                    f"{len(rating)} ratings."
                )
        if len(rating) == 0:
            raise DataError(
                "The ratings are empty: at least one (user, item, rating) row is needed."
            )
        if duplicates not in _DUPLICATE_POLICIES:
            raise ValueError(
                f"duplicates must be one of {_DUPLICATE_POLICIES}, got {duplicates!r}."
            )
        user, item, rating, time = _handle_duplicates(user, item, rating, duplicates, time)
        self.times = time
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
        time_col=None,
    ):
        """Build from a DataFrame; ``*_col`` name the columns holding users, items and ratings
        (and, with ``time_col``, the time of each rating: see ``time``)."""
        if not isinstance(frame, pd.DataFrame):
            raise DataError(
                f"Expected a pandas DataFrame with columns {user_col!r}, {item_col!r}, "
                f"{rating_col!r}; got {type(frame).__name__}."
            )
        _require_columns(frame, [user_col, item_col, rating_col]
                         + ([time_col] if time_col is not None else []))
        return cls(
            frame[user_col].to_numpy(),
            frame[item_col].to_numpy(),
            frame[rating_col],
            scale=scale,
            duplicates=duplicates,
            name=name,
            time=None if time_col is None else frame[time_col],
        )

    @classmethod
    def from_sparse(
        cls, matrix, user_ids=None, item_ids=None, *, scale="infer", duplicates="raise", name=None
    ):
        """Build from a scipy.sparse user x item matrix (any format, matrix or array).

        Every stored entry is a rating, explicit zeros included: a stored ``0`` is a rating of
        0, and an absent entry is an unobserved pair. Call ``matrix.eliminate_zeros()`` first
        when zeros mean "not rated". An entry stored more than once (possible in COO and
        non-canonical CSR/CSC input) is never summed: it is a duplicate (user, item) pair,
        handled by ``duplicates`` as in the constructor (``"raise"`` by default).

        Parameters
        ----------
        matrix : scipy.sparse matrix or array, shape (n_rows, n_columns)
            Rows are users, columns items.
        user_ids, item_ids : array-like, optional
            The id of each row and of each column (default: the positions ``0, 1, ...``).
            Rows and columns without any stored entry do not appear in the result.
        scale, duplicates, name
            As in the constructor.
        """
        from scipy import sparse

        if not sparse.issparse(matrix):
            raise DataError(
                f"from_sparse expects a scipy.sparse matrix or array, got {type(matrix).__name__}."
            )
        if matrix.ndim != 2:
            raise DataError(f"from_sparse expects a 2-d matrix, got {matrix.ndim} dimensions.")
        n_rows, n_columns = matrix.shape
        user_ids = _axis_ids(user_ids, n_rows, "user")
        item_ids = _axis_ids(item_ids, n_columns, "item")
        coo = matrix.tocoo(copy=False)  # keeps repeated entries (no summing)
        rows, columns = np.asarray(coo.row, dtype=np.intp), np.asarray(coo.col, dtype=np.intp)
        return cls(
            user_ids[rows],
            item_ids[columns],
            np.asarray(coo.data),
            scale=scale,
            duplicates=duplicates,
            name=name,
        )

    def to_sparse(self):
        """The ratings as a ``scipy.sparse.csr_array`` of shape ``(n_users, n_items)``.

        Row ``u`` is the user ``user_ids[u]``, column ``i`` the item ``item_ids[i]``; every
        rating is a stored entry, ratings of 0 included (so ``from_sparse`` gives the same
        ratings back with ``user_ids=ratings.user_ids, item_ids=ratings.item_ids``).
        """
        from scipy import sparse

        matrix = sparse.csr_array(
            (self.values, (self.user_codes, self.item_codes)),
            shape=(self.n_users, self.n_items),
        )
        matrix.sort_indices()
        return matrix

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
            time=None if self.times is None else self.times[rows],
        )

    def with_scale(self, scale):
        """The same ratings with another declared scale (ratings outside it raise)."""
        scale = check_scale(scale)
        _check_on_scale(self.values, scale)
        copy = object.__new__(Ratings)
        copy.__dict__.update(self.__dict__)
        copy.scale = scale
        return copy

    # ------------------------------------------------------------------ views
    def to_frame(self):
        """A DataFrame with columns ``user``, ``item``, ``rating`` (original ids), and ``time``
        (Unix seconds) when the ratings carry times."""
        frame = pd.DataFrame({"user": self.users, "item": self.items, "rating": self.values})
        if self.times is not None:
            frame["time"] = self.times
        return frame

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
    """Return ``data`` as a :class:`Ratings` (a DataFrame is converted with ``from_frame``; its
    column ``time``, if any, gives the times of the ratings)."""
    if isinstance(data, Ratings):
        return data
    if isinstance(data, pd.DataFrame):
        if "time" in data.columns:
            kwargs.setdefault("time_col", "time")
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


def pair_times(pairs):
    """The time (Unix seconds) of each pair of ``pairs``: a Ratings' ``times``, a DataFrame's
    ``time`` column; None when they carry no times."""
    if isinstance(pairs, Ratings):
        return pairs.times
    if isinstance(pairs, pd.DataFrame) and "time" in pairs.columns:
        return as_unix_seconds(pairs["time"])
    return None


def as_unix_seconds(time):
    """Times as float Unix seconds: numbers are taken as seconds, datetimes and date strings
    (``"1998-04-22 23:10:40"``) are converted (naive ones as UTC). Missing or non-finite
    times raise :class:`DataError`."""
    series = time if isinstance(time, pd.Series) else pd.Series(np.asarray(time))
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        numeric = pd.to_numeric(series, errors="coerce")
        if numeric.isna().any() and series.notna().all():  # date strings
            try:
                series = pd.to_datetime(series, utc=True, format="ISO8601")
            except (ValueError, TypeError):
                pass  # reported below as not numbers
    if pd.api.types.is_datetime64_any_dtype(series):
        if series.isna().any():
            raise DataError(f"{int(series.isna().sum())} time(s) are missing; every rating "
                            "needs its time (or leave time out).")
        if getattr(series.dt, "tz", None) is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        return (series - pd.Timestamp(0)).dt.total_seconds().to_numpy(np.float64)
    if pd.api.types.is_bool_dtype(series):
        raise DataError(f"Times must be Unix seconds or datetimes, got dtype {series.dtype}.")
    numeric = pd.to_numeric(series, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(numeric)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{int(bad.sum())} time(s) are missing or not numbers (e.g. {series.iloc[row]!r} at "
            f"row {row}); give Unix seconds or datetimes."
        )
    return numeric


def _axis_ids(ids, n, what):
    """The ids of the ``n`` rows (users) or columns (items) of a sparse matrix."""
    if ids is None:
        return np.arange(n)
    ids = _as_id_array(ids, what)
    if len(ids) != n:
        raise DataError(f"{what}_ids has {len(ids)} ids but the matrix has {n} {what}s.")
    if len(pd.unique(ids)) != n:
        raise DataError(f"{what}_ids must be distinct; {n - len(pd.unique(ids))} are repeated.")
    return ids


def _require_columns(frame, columns):
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"Missing column(s) {missing}; the data has columns {list(frame.columns)}. "
            "Rename them or name the columns to use (e.g. user_col=..., item_col=..., "
            "rating_col=...)."
        )


def _as_id_array(ids, what, allow_empty=True):
    """Ids as a 1-D array, kept exactly as given; missing, blank or colliding ids raise."""
    if not isinstance(ids, np.ndarray | pd.Series | pd.Index | str | bytes | numbers.Number):
        # A list: let pandas infer the type, so that a NaN among strings stays missing
        # (numpy would turn it into the string "nan").
        ids = pd.Series(list(ids) if not isinstance(ids, list) else ids, dtype=None)
    if isinstance(ids, pd.Series | pd.Index):
        ids = ids.to_numpy(dtype=object) if _is_extension(ids.dtype) else ids.to_numpy()
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise DataError(f"{what} ids must be one-dimensional, got shape {ids.shape}.")
    if not len(ids):
        return ids
    missing = pd.isna(ids)
    if missing.any():
        rows = _first_rows(missing)
        raise DataError(
            f"{int(missing.sum())} {what} id(s) are missing (blank, NaN or None; row(s) {rows}); "
            "drop those rows or give them an id."
        )
    if ids.dtype.kind in "OUS":
        # Checked on the distinct values (C speed), then located in the rows when found.
        if any(isinstance(v, str | bytes) and not v.strip() for v in pd.unique(ids)):
            blank = np.array(
                [isinstance(v, str | bytes) and not v.strip() for v in ids], dtype=bool
            )
            raise DataError(
                f"{int(blank.sum())} {what} id(s) are blank strings (row(s) "
                f"{_first_rows(blank)}); drop those rows or give them an id."
            )
    if ids.dtype == object and pd.api.types.infer_dtype(ids, skipna=False) not in (
        "string",
        "bytes",
        "integer",
        "floating",
        "boolean",
    ):
        _check_no_collisions(ids, what)
    return ids


def _is_extension(dtype):
    return not isinstance(dtype, np.dtype)


def _first_rows(mask, n=3):
    rows = np.flatnonzero(mask)
    text = ", ".join(str(r) for r in rows[:n])
    return text + (", ..." if len(rows) > n else "")


def _id_family(value):
    """The kind of an id for collision checks: numpy and Python scalars of a kind agree."""
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, numbers.Integral):
        return "int"
    if isinstance(value, numbers.Real):
        return "float"
    if isinstance(value, str):
        return "str"
    return type(value).__name__


def _check_no_collisions(ids, what):
    """Refuse ids of different types that are equal (1 == 1.0) or print the same (1, "1").

    Such ids would be merged into one user or item when coded or written out, silently.
    """
    families = {}
    for value in ids:
        families.setdefault(_id_family(value), value)
        if len(families) > 1:
            break
    if len(families) < 2:
        return
    typed = {}
    by_text = {}
    by_value = {}
    for value in ids:
        key = (_id_family(value), value)
        if key in typed:
            continue
        typed[key] = value
        for table, probe in ((by_text, str(value)), (by_value, value)):
            try:
                other = table.setdefault(probe, value)
            except TypeError:  # unhashable: compared by text only
                continue
            if _id_family(other) != _id_family(value):
                raise DataError(
                    f"{what} ids {other!r} ({_id_family(other)}) and {value!r} "
                    f"({_id_family(value)}) are different ids that "
                    f"{'print the same' if table is by_text else 'compare equal'}, so they "
                    f"would be merged; make the {what} column one type, e.g. "
                    f"frame['{what}'] = frame['{what}'].astype(str)."
                )


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


def _handle_duplicates(user, item, rating, policy, time=None):
    frame = pd.DataFrame({"user": user, "item": item, "rating": rating})
    if time is not None:
        frame["time"] = time
    dup = frame.duplicated(["user", "item"], keep=False)
    if not dup.any():
        return user, item, rating, time
    if policy == "raise":
        example = frame[dup].iloc[0]
        raise DataError(
            f"{int(frame.duplicated(['user', 'item']).sum())} duplicate (user, item) pair(s), "
            f"e.g. user={example['user']!r}, item={example['item']!r}. Remove them, or pass "
            "duplicates='mean' (or 'first'/'last') to aggregate."
        )
    if policy == "mean":  # the mean rating, at the time of the latest
        aggregate = {"rating": "mean", **({"time": "max"} if time is not None else {})}
        frame = frame.groupby(["user", "item"], sort=False, as_index=False).agg(aggregate)
    else:
        frame = frame.drop_duplicates(["user", "item"], keep=policy)
    return (frame["user"].to_numpy(), frame["item"].to_numpy(), frame["rating"].to_numpy(float),
            None if time is None else frame["time"].to_numpy(float))


#: Rating scales in common use; inferred scales inside one of these draw a warning.
COMMON_SCALES = ((0, 1), (1, 5), (0, 5), (0.5, 5), (1, 7), (1, 10), (0, 10), (-10, 10), (0, 100))


def _resolve_scale(scale, rating):
    if isinstance(scale, str) and scale == "infer":
        return infer_scale(rating)
    if isinstance(scale, str) and "," not in scale:
        raise ValueError(f"scale must be 'infer', None or (low, high); got {scale!r}.")
    return check_scale(scale)


def infer_scale(rating):
    """``(min, max)`` of the ratings, with a :class:`RatingScaleWarning` when that is unlikely
    to be the real scale: constant ratings (no scale at all: ``None`` is returned and nothing
    is clipped) or whole/half-star ratings that stop short of a common scale (e.g. 3-5 of 1-5).
    """
    low, high = float(rating.min()), float(rating.max())
    if low == high:
        warn(
            f"All {len(rating)} ratings equal {low:g}, so the rating scale cannot be inferred; "
            "predictions are not clipped. Pass scale=(low, high) to declare it.",
            RatingScaleWarning,
        )
        return None
    if np.all(np.round(2 * rating) == 2 * rating):
        around = [
            (lo, hi)
            for lo, hi in COMMON_SCALES
            if lo <= low and high <= hi
        ]
        if around and (low, high) not in [(float(a), float(b)) for a, b in around]:
            lo, hi = min(around, key=lambda pair: pair[1] - pair[0])
            warn(
                f"The ratings span {low:g}-{high:g}, short of the common {lo:g}-{hi:g} scale; "
                f"predictions are clipped to {low:g}-{high:g}. Pass scale=({lo:g}, {hi:g}) if "
                f"that is the scale, or scale=({low:g}, {high:g}) to keep this one.",
                RatingScaleWarning,
            )
    return (low, high)


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
