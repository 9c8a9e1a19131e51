import pandas as pd
import pytest

from bpmf import DataError
from bpmf.datasets import load_dataset, read_ratings


def test_csv_tsv_parquet_round_trip(tmp_path):
    df = pd.DataFrame({"uid": [1, 2, 2], "iid": ["x", "x", "y"], "stars": [3.0, 4.0, 5.0]})
    df.to_csv(tmp_path / "r.csv", index=False)
    df.to_csv(tmp_path / "r.tsv", index=False, sep="\t")
    df.to_parquet(tmp_path / "r.parquet")
    for name in ("r.csv", "r.tsv", "r.parquet"):
        ratings = read_ratings(
            tmp_path / name, user_col="uid", item_col="iid", rating_col="stars", scale=(1, 5)
        )
        assert ratings.n_ratings == 3 and list(ratings.item_ids) == ["x", "y"]
    assert (
        load_dataset(
            str(tmp_path / "r.csv"), user_col="uid", item_col="iid", rating_col="stars",
            scale=(1, 5),
        ).n_users
        == 2
    )


def test_missing_file_and_wrong_columns(tmp_path):
    with pytest.raises(FileNotFoundError, match="No ratings file"):
        read_ratings(tmp_path / "nope.csv")
    pd.DataFrame({"a": [1], "b": [2], "c": [3]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="Missing column"):
        read_ratings(tmp_path / "bad.csv")


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="Unknown dataset"):
        load_dataset("no-such-dataset")


def test_id_columns_are_read_as_text(tmp_path):
    big = "18446744073709551616123"  # beyond 64-bit integers
    (tmp_path / "r.csv").write_text(f"user,item,rating\n007,1,1\n7,1,5\n{big},2,3\n")
    ratings = read_ratings(tmp_path / "r.csv", scale=(1, 5))
    assert sorted(ratings.user_ids) == sorted(["007", "7", big])
    assert list(ratings.item_ids) == ["1", "2"]
    # ids="infer" lets pandas parse numbers: 007 and 7 are then one user (documented).
    parsed = read_ratings(tmp_path / "r.csv", scale=(1, 5), ids="infer", duplicates="mean")
    assert parsed.n_users == 2


def test_blank_id_in_a_file_raises(tmp_path):
    (tmp_path / "r.csv").write_text("user,item,rating\na,x,1\n,x,5\nb,y,3\n")
    with pytest.raises(DataError, match=r"1 user id\(s\) are missing.*row\(s\) 1"):
        read_ratings(tmp_path / "r.csv")


def test_semicolon_file_needs_sep_and_says_so(tmp_path):
    (tmp_path / "r.csv").write_text("user;item;rating\na;x;1\nb;y;5\n")
    with pytest.raises(DataError, match=r"looks ';'-separated; pass sep=';'"):
        read_ratings(tmp_path / "r.csv")
    assert read_ratings(tmp_path / "r.csv", sep=";").n_ratings == 2


def test_txt_is_tab_separated_as_documented(tmp_path):
    (tmp_path / "u.txt").write_text("user\titem\trating\n1\t10\t1\n2\t10\t5\n")
    assert read_ratings(tmp_path / "u.txt").n_users == 2


def test_a_folder_is_not_a_ratings_file(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        read_ratings(tmp_path)
