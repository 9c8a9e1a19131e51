"""MovieLens loaders: read the official files from a data home, download them on request.

The MovieLens licence forbids redistribution, so bpmf never ships these files: they are read
from a data home (argument, else ``$BPMF_DATA``, else a per-user cache directory) and, when
absent and allowed, downloaded from GroupLens with their sha256 checked.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pooch

from bpmf._exceptions import DataError
from bpmf.datasets._ratings import Ratings
from bpmf.datasets._splits import Split

DATA_HOME_ENV = "BPMF_DATA"


@dataclass(frozen=True)
class MovieLensSpec:
    """Where a MovieLens release comes from and what its folder must hold."""

    name: str
    ratings_file: str
    scale: tuple
    url: str | None = None
    archive_sha256: str | None = None
    archive_size: int | None = None
    folds: tuple = ()
    file_sha256: dict = field(default_factory=dict)
    n_ratings: int | None = None

    @property
    def required_files(self):
        fold_files = [f"{fold}.{part}" for fold in self.folds for part in ("base", "test")]
        return [self.ratings_file, *fold_files]


_ML100K_SHA256 = {
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u1.base": "ce253ec86c448b44fb3ba9a30d12dcfc2e9210cbde71efada3730c22e9ac212a",
    "u1.test": "18c6014a4b2c7324f250a63f8904a7b16b2b19f911129e346141507b0cbac950",
    "u2.base": "6c06f0b5df4b256da1a994f3ac66edc8da4d3f09bc9282df6b14d893366d703e",
    "u2.test": "4de658d1e04ed9104629509a2e2528fce833ac8e048280183f1df167632038c3",
    "u3.base": "afdc155c291c6edc41c0407e39d7462eb98d341e064f0b0a12175b80b3c4af5d",
    "u3.test": "0f548b51c78327de4c156461d3e430b7e5579fe2b5681586a59416e48fd35f6d",
    "u4.base": "219f0f4d40dfe9c5141d425f53fa91ee23ed275f14e280bbf1b50117afb064ca",
    "u4.test": "7c02ad0a1e7ab1083c8b9d4b627203a051dd7b5eab46d99fa44de33470de8db9",
    "u5.base": "a9574e59ce961eec2121627760b6e9b0974ce1637b3fe69ac32cb14a4bfab485",
    "u5.test": "351cc52e0d15b6c721466276fc24671d40936899e3d01fadeaf312915b8c5634",
    "ua.base": "67b5bcdb380c29f85d56a012ecd88612ae020f30a6730d117a334ee8203b91f2",
    "ua.test": "d0497e202417720f57a184ec8c66be2d1afa4ff41bb53787c57b28d6bf79bc42",
    "ub.base": "237254d253b6ad7de84f919d041055428646254f34ed8f562703c899430cd881",
    "ub.test": "d54a72d05730d5892062734b2bec73e976f9b713d18c828a18b968d6cce442da",
}

MOVIELENS = {
    "ml-100k": MovieLensSpec(
        name="ml-100k",
        ratings_file="u.data",
        scale=(1, 5),
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        archive_sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        archive_size=4924029,
        folds=("u1", "u2", "u3", "u4", "u5", "ua", "ub"),
        file_sha256=_ML100K_SHA256,
        n_ratings=100_000,
    ),
    "ml-1m": MovieLensSpec(
        name="ml-1m",
        ratings_file="ratings.dat",
        scale=(1, 5),
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        archive_sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        archive_size=5917549,
        n_ratings=1_000_209,
    ),
    # No published checksum is recorded for this (regularly refreshed) release, so bpmf reads
    # it from the data home but does not download it.
    "ml-latest-small": MovieLensSpec(
        name="ml-latest-small", ratings_file="ratings.csv", scale=(0.5, 5)
    ),
}


def get_data_home(data_home=None):
    """The data home: ``data_home`` if given, else ``$BPMF_DATA``, else a per-user cache dir."""
    if data_home is not None:
        return Path(data_home).expanduser()
    if os.environ.get(DATA_HOME_ENV):
        return Path(os.environ[DATA_HOME_ENV]).expanduser()
    return Path(pooch.os_cache("bpmf"))


def _spec(name):
    if name not in MOVIELENS:
        raise ValueError(f"Unknown MovieLens release {name!r}; known: {sorted(MOVIELENS)}.")
    return MOVIELENS[name]


def movielens_path(name="ml-100k", data_home=None, download=True):
    """The folder holding release ``name``, downloading it first when absent and allowed."""
    spec = _spec(name)
    folder = get_data_home(data_home) / name
    if folder.is_dir():
        missing = [f for f in spec.required_files if not (folder / f).is_file()]
        if missing:
            raise DataError(
                f"The MovieLens folder {folder} is incomplete: missing {missing}. Replace it "
                f"with a full copy of the official {name} release (or delete it to re-download)."
            )
        return folder
    if not download or spec.url is None:
        how = (
            "pass download=True (or run `bpmf download " + name + "`)"
            if spec.url
            else "download it from https://grouplens.org/datasets/movielens/"
        )
        raise FileNotFoundError(
            f"MovieLens {name} not found at {folder}. Put the official files there (the folder "
            f"{name}/ with {spec.ratings_file}), point ${DATA_HOME_ENV} or data_home= at the "
            f"folder that contains {name}/, or {how}."
        )
    download_movielens(name, data_home)
    return folder


def _download(url, destination):
    """Fetch ``url`` into the file ``destination`` (a separate function so tests can stub it)."""
    pooch.HTTPDownloader(progressbar=False)(url, str(destination), None)


def download_movielens(name="ml-100k", data_home=None):
    """Download and extract the official zip of ``name`` into the data home, checking its sha256.

    The archive is fetched and extracted in a temporary folder inside the data home and moved
    into place only when complete and verified: a failed or corrupted download leaves nothing.
    """
    spec = _spec(name)
    if spec.url is None:
        raise DataError(f"bpmf has no verified download for {name}; fetch it by hand.")
    home = get_data_home(data_home)
    home.mkdir(parents=True, exist_ok=True)
    target = home / name
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=home, prefix=f".{name}-download-") as tmp:
        archive = Path(tmp) / f"{name}.zip"
        try:
            _download(spec.url, archive)
        except Exception as exc:  # network errors come in many types
            raise DataError(
                f"Could not download {spec.url} ({exc}). Without network access, put the "
                f"official files in {target}."
            ) from exc
        digest = pooch.file_hash(str(archive), alg="sha256")
        if digest != spec.archive_sha256:
            raise DataError(
                f"Checksum mismatch for the downloaded {name}.zip: sha256 {digest}, expected "
                f"{spec.archive_sha256}. The download is corrupted or truncated; nothing was "
                "extracted. Try again."
            )
        extracted = Path(tmp) / "extracted"
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(extracted)
        except zipfile.BadZipFile as exc:
            raise DataError(f"The {name} archive is not a valid zip file: {exc}") from exc
        source = extracted / name
        if not (source / spec.ratings_file).is_file():
            raise DataError(f"The {name} archive does not contain {name}/{spec.ratings_file}.")
        shutil.move(str(source), str(target))
    return target


def _verify(path, spec):
    expected = spec.file_sha256.get(path.name)
    if expected is None:
        return
    digest = pooch.file_hash(str(path), alg="sha256")
    if digest != expected:
        raise DataError(
            f"{path} is corrupted or modified (sha256 {digest[:12]}..., expected "
            f"{expected[:12]}...). Replace it with the official {spec.name} file."
        )


def _read_ratings_file(path, spec, verify):
    if verify:
        _verify(path, spec)
    try:
        if path.suffix == ".csv":
            frame = pd.read_csv(path)
            frame = frame.rename(columns={"userId": "user", "movieId": "item"})
        else:
            raw = path.read_bytes().decode("latin-1")
            sep = "::" if "::" in raw[:200] else "\t"
            frame = pd.read_csv(
                io.StringIO(raw.replace("::", "\t") if sep == "::" else raw),
                sep="\t",
                header=None,
                names=["user", "item", "rating", "timestamp"],
                dtype={"user": "int64", "item": "int64", "rating": "float64"},
            )
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path} is not a valid MovieLens ratings file: {exc}") from exc
    if frame.empty:
        raise DataError(f"{path} holds no ratings; replace it with the official file.")
    return Ratings.from_frame(frame, scale=spec.scale, name=f"{spec.name}/{path.name}",
                              time_col="timestamp" if "timestamp" in frame.columns else None)


def load_movielens(name="ml-100k", data_home=None, download=True, verify=True):
    """Load a MovieLens release as :class:`Ratings`.

    Parameters
    ----------
    name : {"ml-100k", "ml-1m", "ml-latest-small"}
    data_home : str or Path, optional
        Folder that contains ``name/``; defaults to ``$BPMF_DATA`` or the user cache.
    download : bool, default True
        Download the official archive when the files are absent.
    verify : bool, default True
        Check the files' sha256 where bpmf knows it.
    """
    spec = _spec(name)
    folder = movielens_path(name, data_home, download)
    return _read_ratings_file(folder / spec.ratings_file, spec, verify)


def load_movielens_folds(name="ml-100k", data_home=None, download=True, verify=True):
    """The official train/test folds: ``{"u1": Split(train, test), ..., "ua": ..., "ub": ...}``."""
    spec = _spec(name)
    if not spec.folds:
        raise ValueError(
            f"{name} has no official folds; use bpmf.datasets.kfold(load_movielens({name!r}))."
        )
    folder = movielens_path(name, data_home, download)
    return {
        fold: Split(
            _read_ratings_file(folder / f"{fold}.base", spec, verify),
            _read_ratings_file(folder / f"{fold}.test", spec, verify),
        )
        for fold in spec.folds
    }


#: The 19 genre flags of ML-100K's ``u.item``, in file order.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)


def load_movielens_features(name="ml-100k", data_home=None, download=True):
    """The user and item side information of ML-100K as feature tables.

    Returns ``(user_features, item_features)``, DataFrames indexed by the same integer ids as
    the :class:`Ratings` of :func:`load_movielens` (and of its folds), ready to pass as
    ``BPMF(model_config={"user_features": ..., "item_features": ...})``:

    - users (``u.user``, 943 rows): ``age`` (years, int), ``gender`` (category ``F``/``M``),
      ``occupation`` (category, 21 levels), ``zip_region`` (category: the first character of
      the zip code, ``0``-``9`` for the US regions, ``other`` for the few foreign codes);
    - items (``u.item``, 1682 rows): ``release_year`` (int; the one movie without a date gets
      the median year), and one 0/1 int column ``genre_<name>`` per genre of
      :data:`ML100K_GENRES` (a movie may have several).

    :class:`~bpmf.datasets.FeatureEncoder` standardises the numeric columns (age, year and the
    genre flags) and one-hot encodes the categories.

    Parameters
    ----------
    name : {"ml-100k"}
        Only ML-100K ships these tables in this form.
    data_home : str or Path, optional
    download : bool, default True
        Download the official archive when the files are absent.
    """
    if name != "ml-100k":
        raise ValueError(f"Feature tables are available for 'ml-100k' only, got {name!r}.")
    folder = movielens_path(name, data_home, download)
    paths = {file: folder / file for file in ("u.user", "u.item")}
    absent = [str(path) for path in paths.values() if not path.exists()]
    if absent:
        raise DataError(f"{absent[0]} is missing; restore the official {name} folder.")
    try:
        users = pd.read_csv(
            io.StringIO(paths["u.user"].read_bytes().decode("latin-1")), sep="|", header=None,
            names=["user", "age", "gender", "occupation", "zip"], dtype={"zip": str},
        )
        genres = [f"genre_{genre}" for genre in ML100K_GENRES]
        items = pd.read_csv(
            io.StringIO(paths["u.item"].read_bytes().decode("latin-1")), sep="|", header=None,
            names=["item", "title", "release", "video_release", "url", *genres],
        )
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"The {name} user or item file is not in the official form: {exc}") from exc
    zip_region = users["zip"].str[0].where(users["zip"].str[0].str.isdigit(), "other")
    user_features = pd.DataFrame(
        {
            "age": users["age"].astype("int64").to_numpy(),
            "gender": pd.Categorical(users["gender"]),
            "occupation": pd.Categorical(users["occupation"]),
            "zip_region": pd.Categorical(zip_region),
        },
        index=pd.Index(users["user"].astype("int64"), name="user"),
    )
    year = pd.to_datetime(items["release"], format="%d-%b-%Y", errors="coerce").dt.year
    year = year.fillna(year.median()).astype("int64")
    item_features = pd.DataFrame(
        {"release_year": year.to_numpy(),
         **{genre: items[genre].astype("int64").to_numpy() for genre in genres}},
        index=pd.Index(items["item"].astype("int64"), name="item"),
    )
    return user_features, item_features
