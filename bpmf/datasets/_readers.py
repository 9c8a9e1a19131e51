"""Readers for rating files (CSV, TSV, parquet) with column mapping.

Id columns of text files are read as text by default, so ``007`` and ``7`` stay two ids and
ids longer than 64-bit integers survive; ``ids="infer"`` lets pandas parse them instead.
"""

from pathlib import Path

import pandas as pd

from bpmf._exceptions import DataError
from bpmf.datasets._ratings import Ratings

#: Extensions read as tab-separated when no separator is given.
TAB_SUFFIXES = {".tsv", ".tab", ".txt"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
_ID_TYPES = ("str", "infer")
_OTHER_SEPARATORS = {";": "';'", "\t": "'\\t'", "|": "'|'", ",": "','"}


def default_sep(path):
    """The separator used for ``path`` when none is given: tab for .tsv/.tab/.txt, else comma."""
    return "\t" if Path(path).suffix.lower() in TAB_SUFFIXES else ","


def read_table(path, *, columns, sep=None, ids="str", what="ratings", **read_kwargs):
    """Read a delimited or parquet file into a DataFrame; ``columns`` are the id columns.

    Id columns are read as text when ``ids="str"``. A file that comes out as one column whose
    header holds another separator raises :class:`DataError` naming ``sep``. Read errors
    (unreadable, empty, malformed, a directory) raise :class:`DataError` or
    :class:`FileNotFoundError` with one-line messages.
    """
    path = Path(path)
    if ids not in _ID_TYPES:
        raise ValueError(f"ids must be one of {_ID_TYPES}, got {ids!r}.")
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a folder, not a {what} file; give the file's path.")
    if not path.is_file():
        raise FileNotFoundError(f"No {what} file at {path}.")
    suffix = path.suffix.lower()
    try:
        if suffix in PARQUET_SUFFIXES:
            return pd.read_parquet(path, **read_kwargs)
        if sep is None:
            sep = default_sep(path)
        if ids == "str":
            read_kwargs = {"dtype": {c: str for c in columns}, **read_kwargs}
        frame = pd.read_csv(path, sep=sep, **read_kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        message = " ".join(str(exc).split())
        raise DataError(f"Could not read {what} from {path}: {message}") from exc
    except (OSError, ImportError, ValueError) as exc:
        message = " ".join(str(exc).split())
        raise DataError(f"Could not read {what} from {path}: {message}") from exc
    if frame.shape[1] == 1:
        header = str(frame.columns[0])
        for other, shown in _OTHER_SEPARATORS.items():
            if other != sep and other in header:
                raise DataError(
                    f"{path} was read as one column {header!r}: it looks {shown}-separated; "
                    f"pass sep={shown}."
                )
    return frame


def read_ratings(
    path,
    *,
    user_col="user",
    item_col="item",
    rating_col="rating",
    sep=None,
    scale="infer",
    duplicates="raise",
    ids="str",
    time_col=None,
    **read_kwargs,
):
    """Read ratings from a CSV, TSV or parquet file.

    Parameters
    ----------
    path : str or Path
        ``.csv`` (comma-separated), ``.tsv``/``.tab``/``.txt`` (tab-separated), any other
        extension comma-separated unless ``sep`` says otherwise, or ``.parquet``/``.pq``.
    user_col, item_col, rating_col : str
        Names of the columns holding users, items and ratings.
    sep : str, optional
        Field separator for text files (e.g. ``";"``); by extension when omitted. A file that
        reads as one column with another separator in its header raises an error naming it.
    scale, duplicates
        Passed to :class:`Ratings`.
    ids : {"str", "infer"}, default "str"
        ``"str"`` reads the user and item columns of text files as text, so ids are kept
        exactly as written (``007`` is not ``7``); ``"infer"`` lets pandas parse them
        (numbers become integers). Parquet files keep their stored types.
    time_col : str, optional
        The column holding each rating's time (Unix seconds or datetimes), for models with
        time effects; None reads no times.
    **read_kwargs
        Passed to :func:`pandas.read_csv` / :func:`pandas.read_parquet`.
    """
    path = Path(path)
    frame = read_table(
        path, columns=(user_col, item_col), sep=sep, ids=ids, what="ratings", **read_kwargs
    )
    return Ratings.from_frame(
        frame,
        user_col=user_col,
        item_col=item_col,
        rating_col=rating_col,
        scale=scale,
        duplicates=duplicates,
        name=path.stem,
        time_col=time_col,
    )
