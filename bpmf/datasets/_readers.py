"""Readers for rating files (CSV, TSV, parquet) with column mapping."""

from pathlib import Path

import pandas as pd

from bpmf._exceptions import DataError
from bpmf.datasets._ratings import Ratings


def read_ratings(
    path,
    *,
    user_col="user",
    item_col="item",
    rating_col="rating",
    sep=None,
    scale="infer",
    duplicates="raise",
    **read_kwargs,
):
    """Read ratings from a CSV, TSV or parquet file.

    Parameters
    ----------
    path : str or Path
        ``.csv``, ``.tsv``/``.tab``/``.txt`` (tab- or ``sep``-separated) or ``.parquet``.
    user_col, item_col, rating_col : str
        Names of the columns holding users, items and ratings.
    sep : str, optional
        Field separator for text files; guessed from the extension when omitted.
    scale, duplicates
        Passed to :class:`Ratings`.
    **read_kwargs
        Passed to :func:`pandas.read_csv` / :func:`pandas.read_parquet`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No ratings file at {path}.")
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            frame = pd.read_parquet(path, **read_kwargs)
        else:
            if sep is None:
                sep = "\t" if suffix in {".tsv", ".tab"} else ","
            frame = pd.read_csv(path, sep=sep, **read_kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"Could not read ratings from {path}: {exc}") from exc
    return Ratings.from_frame(
        frame,
        user_col=user_col,
        item_col=item_col,
        rating_col=rating_col,
        scale=scale,
        duplicates=duplicates,
        name=path.stem,
    )
