"""Side features of a fitted model: the designs the samplers regress on, and the link means
that predict users and items without ratings (the cold start).

The fitted model keeps, per side with features, the encoded table of every id it has a row
for (``features_["user"]``: ``ids``, ``matrix``, ``names`` and the original ``table``), so
that predictions for an id without ratings but with a row use its features after ``save``
and ``load`` too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bpmf._exceptions import DataError
from bpmf.datasets._features import FeatureEncoder, frame_from_state, frame_to_state, match_ids

__all__ = [
    "FEATURE_KEYS",
    "SAVED_TABLE",
    "cold_codes",
    "cold_start_links",
    "encode_features",
    "extend_features",
    "resolve_table",
    "restore_tables",
    "saved_config",
]

#: model_config keys of the feature tables, by dim.
FEATURE_KEYS = {"user": "user_features", "item": "item_features"}
#: What a saved model's parameters hold in place of a feature table (restored on load).
SAVED_TABLE = "<saved with the model>"
_SIDE = {"user": "U", "item": "V"}


def resolve_table(config, dim):
    """The feature table of ``dim`` (a DataFrame or None); ``"ml-100k"`` loads that
    dataset's table (:func:`bpmf.datasets.load_movielens_features`, no download)."""
    key = FEATURE_KEYS[dim]
    table = config.get(key)
    if table is None or isinstance(table, pd.DataFrame):
        return table
    if isinstance(table, str) and table == "ml-100k":
        from bpmf.datasets import load_movielens_features

        users, items = load_movielens_features(table, download=False)
        return users if dim == "user" else items
    if isinstance(table, str) and table == SAVED_TABLE:
        raise DataError(f"model_config[{key!r}] was not restored from the saved model.")
    raise DataError(
        f"model_config[{key!r}] must be a DataFrame indexed by {dim} id, 'ml-100k' or None, "
        f"got {type(table).__name__}."
    )


def encode_features(train, config):
    """Designs in the training codes' order and the fitted features state.

    Returns ``(designs, state)``: ``designs`` is ``{"U": X or None, "V": X or None}`` for
    the samplers (None when neither side has features: ``designs`` is then None) and
    ``state`` is ``{dim: {"ids", "matrix", "names", "table"}}`` for predictions.
    """
    designs, state = {"U": None, "V": None}, {}
    for dim, ids in (("user", train.user_ids), ("item", train.item_ids)):
        table = resolve_table(config, dim)
        if table is None:
            continue
        what = f"model_config[{FEATURE_KEYS[dim]!r}]"
        encoder = FeatureEncoder(what)
        matrix = encoder.fit_transform(table)
        positions = match_ids(table.index, ids, f"{what} index")
        absent = positions < 0
        if absent.any():
            if config.get("missing_features", "raise") != "zero":
                examples = ", ".join(repr(v) for v in np.asarray(ids, dtype=object)[absent][:3])
                raise DataError(
                    f"{what} has no row for {int(absent.sum())} {dim} id(s) of the ratings "
                    f"(e.g. {examples}); add their rows, or set "
                    "model_config['missing_features']='zero' to give them zero features."
                )
        X = np.zeros((len(ids), matrix.shape[1]))
        X[~absent] = matrix[positions[~absent]]
        designs[_SIDE[dim]] = X
        state[dim] = {
            "ids": pd.Index(table.index),
            "matrix": matrix,
            "names": np.array(encoder.feature_names_, dtype=object),
            "table": frame_to_state(table),
        }
    if not state:
        return None, None
    return designs, state


def cold_codes(state, dim, ids, codes):
    """``codes`` with each unseen id (code -1) that has a feature row ``k`` coded ``-2 - k``."""
    if not state or dim not in state:
        return codes
    unseen = codes < 0
    if not unseen.any():
        return codes
    try:
        rows = match_ids(state[dim]["ids"], np.asarray(ids, dtype=object)[unseen], "feature")
    except DataError:  # ids of another kind than the table's: no features for them
        return codes
    codes = codes.copy()
    codes[unseen] = np.where(rows >= 0, -2 - rows, -1)
    return codes


def cold_start_links(state, post, dim, codes):
    """The link means of the unseen codes (``codes < 0``) per draw: factor means
    ``(samples, n_unseen, D)`` and bias means ``(samples, n_unseen)``, zero for code -1 (no
    feature row); ``(None, None)`` when the model has no features on that side."""
    side = _SIDE[dim]
    if not state or dim not in state or f"B_{side}" not in post:
        return None, None
    codes = codes[codes < 0]
    matrix = np.asarray(state[dim]["matrix"], dtype=np.float64)
    X = np.where((codes <= -2)[:, None], matrix[np.maximum(-2 - codes, 0)], 0.0)
    factors = np.matmul(X, post[f"B_{side}"])  # (samples, n_unseen, D)
    bias_link = post.get(f"{dim}_bias_link")
    biases = None if bias_link is None else bias_link @ X.T
    return factors, biases


def extend_features(state, dim, table, what):
    """A copy of the features state ``state`` with the rows of ``table`` (new ids of ``dim``)
    appended, encoded as the fitted table was (the encoder is fitted again on that table,
    which gives the same standardisation and levels). Ids the fitted table already has are
    refused, as are levels it did not have."""
    if not isinstance(table, pd.DataFrame):
        raise DataError(f"{what} must be a DataFrame indexed by {dim} id, got "
                        f"{type(table).__name__}.")
    if not state or dim not in state:
        raise DataError(f"{what} was given, but the model was fitted without {dim} features.")
    fitted = frame_from_state(state[dim]["table"])
    if table.index.has_duplicates:
        raise DataError(f"{what} has duplicated ids (e.g. "
                        f"{table.index[table.index.duplicated()][0]!r}); give one row per id.")
    try:
        known = match_ids(state[dim]["ids"], np.asarray(table.index, dtype=object), what) >= 0
    except DataError:  # ids of another kind than the fitted table's: none of them is known
        known = np.zeros(len(table), dtype=bool)
    if known.any():
        raise DataError(
            f"{what} has rows for {int(known.sum())} id(s) the fitted feature table already "
            f"has (e.g. {table.index[known][0]!r}); give rows for new {dim} ids only."
        )
    matrix = FeatureEncoder(what).fit(fitted).transform(table)
    combined = pd.concat([fitted, table[list(fitted.columns)]])
    extended = dict(state)
    extended[dim] = {
        "ids": pd.Index(state[dim]["ids"]).append(pd.Index(table.index)),
        "matrix": np.vstack([state[dim]["matrix"], matrix]),
        "names": state[dim]["names"],
        "table": frame_to_state(combined),
    }
    return extended


def saved_config(config):
    """``config`` with each feature table replaced by :data:`SAVED_TABLE` (for saving)."""
    if not isinstance(config, dict):
        return config
    return {key: SAVED_TABLE if (key in FEATURE_KEYS.values()
                                 and isinstance(value, pd.DataFrame)) else value
            for key, value in config.items()}


def restore_tables(config, state):
    """``config`` with its :data:`SAVED_TABLE` entries replaced by the saved tables."""
    if not isinstance(config, dict) or not state:
        return config
    config = dict(config)
    for dim, key in FEATURE_KEYS.items():
        if isinstance(config.get(key), str) and config[key] == SAVED_TABLE and dim in state:
            config[key] = frame_from_state(state[dim]["table"])
    return config
