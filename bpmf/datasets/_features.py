"""Side features of users and items: a table indexed by id, encoded as a numeric design.

:class:`FeatureEncoder` turns a DataFrame indexed by user (or item) id into a float matrix:

- a numeric column (integers or floats) is standardised, ``(x - mean) / sd`` over the
  table's rows (a constant column is centred only);
- a boolean column becomes 0/1 and is standardised like a numeric one;
- any other column (strings, pandas ``category``) is one-hot encoded with one column per
  level, levels sorted, none dropped (the Gaussian prior on the regression weights, not a
  reference level, makes them identifiable), and centred by each level's share of the rows.

Every encoded column has mean zero over the table's rows, so no combination of columns is the
constant 1: a model's intercept (and its factor means) keep the level, which would otherwise
also be a sum of one-hot weights, shared between two blocks of a Gibbs sampler that would
trade it back and forth slowly.

Rows are matched to the ids of a :class:`~bpmf.datasets.Ratings` exactly, as the ratings
hold them: an integer id matches an equal integer id only, a string id an equal string only
(``1`` and ``"1"`` are two ids). Rows for ids that have no ratings are allowed (they are the
cold-start users or items); an id with ratings but no row raises :class:`DataError`.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from bpmf._exceptions import DataError

__all__ = ["FeatureEncoder", "frame_from_state", "frame_to_state", "id_keys", "match_ids"]


def id_keys(ids, what):
    """Exact keys of ids: ``("i", int)`` for integers, ``("s", str)`` for strings.

    Any other kind of id (floats, missing values, booleans, tuples) raises :class:`DataError`,
    so that ids of different kinds are never merged.
    """
    keys = []
    for value in np.asarray(ids, dtype=object).tolist():
        if isinstance(value, bool | np.bool_):
            kind = None
        elif isinstance(value, numbers.Integral):
            kind = "i"
        elif isinstance(value, str):
            kind = "s"
        else:
            kind = None
        if kind is None:
            raise DataError(
                f"{what} ids must be integers or strings, got {value!r} "
                f"({type(value).__name__}); convert the index of the feature table."
            )
        keys.append((kind, int(value) if kind == "i" else value))
    return keys


def match_ids(table_ids, ids, what):
    """Position of each id of ``ids`` among ``table_ids`` (-1 where absent), matched exactly."""
    positions = {}
    for position, key in enumerate(id_keys(table_ids, what)):
        if key in positions:
            raise DataError(
                f"{what} has the id {key[1]!r} on more than one row; keep one row per id."
            )
        positions[key] = position
    return np.array([positions.get(key, -1) for key in id_keys(ids, what)], dtype=np.int64)


class FeatureEncoder:
    """Encode a feature table (DataFrame indexed by id) as a standardised numeric design.

    Parameters
    ----------
    name : str, default "features"
        Names the table in error messages (e.g. ``"model_config['user_features']"``).

    Attributes
    ----------
    columns_ : list of (column, kind, detail)
        Per input column: ``kind`` "numeric" (detail ``(mean, sd)``) or "categorical"
        (detail ``(levels, shares)``: the sorted levels and their shares of the rows).
    feature_names_ : list of str
        Names of the encoded columns: the column's name, or ``column=level`` for a level.
    """

    def __init__(self, name="features"):
        self.name = name

    def fit(self, table):
        """Learn the levels and the standardisation from ``table``; returns self."""
        table = self._check(table)
        self.columns_ = []
        for column in table.columns:
            values = table[column]
            if _is_numeric(values):
                x = values.to_numpy(dtype=np.float64)
                sd = float(x.std())
                self.columns_.append((column, "numeric", (float(x.mean()), sd if sd > 0 else 1.0)))
            else:
                text = [str(v) for v in values.astype(object).tolist()]
                levels = sorted(set(text))
                shares = [text.count(level) / len(text) for level in levels]
                self.columns_.append((column, "categorical", (levels, shares)))
        self.feature_names_ = [
            name
            for column, kind, detail in self.columns_
            for name in ([str(column)] if kind == "numeric"
                         else [f"{column}={level}" for level in detail[0]])
        ]
        return self

    def transform(self, table):
        """The design of ``table``'s rows, shape ``(rows, len(feature_names_))``."""
        table = self._check(table)
        missing = [column for column, _, _ in self.columns_ if column not in table.columns]
        if missing:
            raise DataError(f"{self.name} lacks the column(s) {missing} it was encoded with.")
        blocks = []
        for column, kind, detail in self.columns_:
            values = table[column]
            if kind == "numeric":
                if not _is_numeric(values):
                    raise DataError(f"{self.name} column {column!r} is no longer numeric.")
                mean, sd = detail
                blocks.append(((values.to_numpy(dtype=np.float64) - mean) / sd)[:, None])
            else:
                levels, shares = detail
                text = np.array([str(v) for v in values.astype(object).tolist()], dtype=object)
                unknown = sorted(set(text.tolist()) - set(levels))
                if unknown:
                    raise DataError(
                        f"{self.name} column {column!r} has level(s) {unknown[:3]} not seen "
                        "when the encoder was fitted; fit it on a table with every level."
                    )
                one_hot = text[:, None] == np.array(levels, dtype=object)[None, :]
                blocks.append(one_hot.astype(np.float64) - np.array(shares)[None, :])
        if not blocks:
            return np.zeros((len(table), 0))
        return np.hstack(blocks)

    def fit_transform(self, table):
        return self.fit(table).transform(table)

    def _check(self, table):
        if not isinstance(table, pd.DataFrame):
            raise DataError(
                f"{self.name} must be a pandas DataFrame indexed by id, got "
                f"{type(table).__name__}."
            )
        if table.shape[1] == 0 or table.shape[0] == 0:
            raise DataError(f"{self.name} is empty: give at least one row and one column.")
        for column in table.columns:
            values = table[column]
            if values.isna().any():
                raise DataError(
                    f"{self.name} column {column!r} has {int(values.isna().sum())} missing "
                    "value(s); fill them (e.g. with a level 'unknown') or drop the column."
                )
            if not (_is_numeric(values) or _is_categorical(values)):
                raise DataError(
                    f"{self.name} column {column!r} has dtype {values.dtype}; give numbers, "
                    "booleans or categories (convert dates to numbers, e.g. the year)."
                )
        return table


def _is_numeric(values):
    dtype = values.dtype
    return pd.api.types.is_bool_dtype(dtype) or (
        pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype)
    )


def _is_categorical(values):
    dtype = values.dtype
    return isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(dtype) or (
        pd.api.types.is_string_dtype(dtype)
    )


def frame_to_state(table):
    """A feature table as plain values (index, column names, column arrays) for saving."""
    columns, kinds, values = [], [], []
    for column in table.columns:
        series = table[column]
        columns.append(column)
        if _is_numeric(series):
            kinds.append("numeric")
            values.append(series.to_numpy())
        else:
            kinds.append("category" if isinstance(series.dtype, pd.CategoricalDtype) else "text")
            values.append(np.array([str(v) for v in series.astype(object).tolist()], dtype=object))
    return {"index": pd.Index(table.index), "columns": columns, "kinds": kinds,
            "values": values}


def frame_from_state(state):
    """Inverse of :func:`frame_to_state`."""
    data = {}
    for column, kind, values in zip(state["columns"], state["kinds"], state["values"],
                                    strict=True):
        values = np.asarray(values)
        data[column] = (pd.Categorical(values.astype(object)) if kind == "category"
                        else values.astype(object) if kind == "text" else values)
    return pd.DataFrame(data, index=pd.Index(state["index"]))
