import shutil
import zipfile

import pytest

from bpmf import DataError
from bpmf.datasets import (
    DATA_HOME_ENV,
    MOVIELENS,
    _movielens,
    download_movielens,
    get_data_home,
    load_movielens,
    load_movielens_folds,
)


def test_data_home_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_HOME_ENV, str(tmp_path / "env"))
    assert get_data_home() == tmp_path / "env"
    assert get_data_home(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(DATA_HOME_ENV)
    assert "bpmf" in str(get_data_home())


def test_offline_absent_data_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ml-100k not found at .*BPMF_DATA"):
        load_movielens("ml-100k", data_home=tmp_path, download=False)


def test_unknown_release():
    with pytest.raises(ValueError, match="Unknown MovieLens release"):
        load_movielens("ml-5m")


def _fake_archive(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)


def test_corrupted_download_leaves_nothing(tmp_path, monkeypatch):
    def fake_download(url, destination):
        _fake_archive(destination, {"ml-100k/u.data": "1\t1\t5\t0\n"})

    monkeypatch.setattr(_movielens, "_download", fake_download)
    with pytest.raises(DataError, match="Checksum mismatch"):
        download_movielens("ml-100k", data_home=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    def no_network(url, destination):
        raise OSError("network unreachable")

    monkeypatch.setattr(_movielens, "_download", no_network)
    with pytest.raises(DataError, match="Could not download.*put the official files"):
        load_movielens("ml-1m", data_home=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_verified_download_is_extracted(tmp_path, monkeypatch):
    """A download with a matching checksum (patched to the fake's) is extracted into place."""
    source = tmp_path / "archive.zip"
    _fake_archive(source, {"ml-1m/ratings.dat": "1::10::5::0\n1::20::3::0\n2::10::4::0\n"})
    import pooch

    spec = MOVIELENS["ml-1m"]
    patched = type(spec)(**{**spec.__dict__, "archive_sha256": pooch.file_hash(str(source))})
    monkeypatch.setitem(MOVIELENS, "ml-1m", patched)
    monkeypatch.setattr(_movielens, "_download", lambda url, dest: shutil.copy(source, dest))
    ratings = load_movielens("ml-1m", data_home=tmp_path / "home")
    assert ratings.n_ratings == 3 and ratings.n_users == 2
    assert [p.name for p in (tmp_path / "home").iterdir()] == ["ml-1m"]


def test_incomplete_and_corrupted_folders(tmp_path, movielens_home):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    shutil.copy(movielens_home / "ml-100k" / "u.data", folder / "u.data")
    with pytest.raises(DataError, match=r"incomplete: missing \['u1.base'"):
        load_movielens("ml-100k", data_home=tmp_path)
    for name in MOVIELENS["ml-100k"].required_files[1:]:
        shutil.copy(movielens_home / "ml-100k" / name, folder / name)
    with open(folder / "u.data", "r+b") as handle:  # truncate: a corrupted copy
        handle.truncate(1000)
    with pytest.raises(DataError, match="corrupted or modified"):
        load_movielens("ml-100k", data_home=tmp_path)


def test_garbage_ratings_file(tmp_path):
    (tmp_path / "ml-latest-small").mkdir()
    (tmp_path / "ml-latest-small" / "ratings.csv").write_text("userId,movieId,rating\n1,2,abc\n")
    with pytest.raises(DataError, match="not numbers"):
        load_movielens("ml-latest-small", data_home=tmp_path)


@pytest.mark.movielens
def test_ml100k_counts(movielens_home):
    ratings = load_movielens("ml-100k", data_home=movielens_home)
    assert (ratings.n_ratings, ratings.n_users, ratings.n_items) == (100_000, 943, 1_682)
    assert ratings.scale == (1.0, 5.0)


@pytest.mark.movielens
def test_ml100k_official_folds(movielens_home):
    folds = load_movielens_folds("ml-100k", data_home=movielens_home)
    assert list(folds) == ["u1", "u2", "u3", "u4", "u5", "ua", "ub"]
    for name in ["u1", "u2", "u3", "u4", "u5"]:
        train, test = folds[name]
        assert (train.n_ratings, test.n_ratings) == (80_000, 20_000)
    assert (folds["ua"].train.n_ratings, folds["ua"].test.n_ratings) == (90_570, 9_430)
    # the five official test sets are disjoint and cover u.data
    pairs = set()
    for name in ["u1", "u2", "u3", "u4", "u5"]:
        test = folds[name].test
        pairs |= set(zip(test.users, test.items, strict=True))
    assert len(pairs) == 100_000
    assert folds["u1"].unseen == {"users": 0, "items": 32, "pairs": 32}
