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
