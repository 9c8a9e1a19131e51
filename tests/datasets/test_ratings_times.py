"""Times of ratings: kept through the constructors, subsets, duplicates and the readers."""

import numpy as np
import pandas as pd
import pytest

from bpmf import DataError
from bpmf.datasets import Ratings, pair_times, read_ratings


def frame_with_times():
    return pd.DataFrame({
        "user": ["a", "b", "a", "c"],
        "item": [10, 10, 20, 30],
        "rating": [1.0, 5.0, 3.0, 4.0],
        "timestamp": [874965758, 876893171, 878542960, 0],
    })


def test_times_follow_the_ratings_through_subset_and_to_frame():
    ratings = Ratings.from_frame(frame_with_times(), time_col="timestamp")
    np.testing.assert_array_equal(ratings.times, [874965758, 876893171, 878542960, 0])
    part = ratings.subset([2, 0])
    np.testing.assert_array_equal(part.times, [878542960, 874965758])
    back = part.to_frame()
    assert list(back.columns) == ["user", "item", "rating", "time"]
    np.testing.assert_array_equal(back["time"], [878542960, 874965758])
    assert pair_times(back).tolist() == [878542960.0, 874965758.0]
    assert pair_times(part).tolist() == [878542960.0, 874965758.0]


def test_ratings_without_times_have_none():
    ratings = Ratings.from_frame(frame_with_times())
    assert ratings.times is None
    assert "time" not in ratings.to_frame().columns
    assert pair_times(ratings) is None
    assert pair_times(pd.DataFrame({"user": ["a"], "item": [10]})) is None


def test_datetimes_become_unix_seconds_and_aware_ones_are_taken_to_utc():
    naive = pd.to_datetime(["1970-01-02 00:00:00", "2000-01-01 00:00:01"])
    ratings = Ratings(["a", "b"], [1, 2], [3.0, 4.0], scale=(1, 5), time=naive)
    np.testing.assert_array_equal(ratings.times, [86400.0, 946684801.0])
    aware = pd.Series(pd.to_datetime(["1970-01-02 01:00"]).tz_localize("Europe/Paris"))
    assert Ratings(["a"], [1], [3.0], scale=(1, 5), time=aware).times.tolist() == [86400.0]


def test_duplicates_keep_the_time_of_the_kept_rating():
    user, item, rating = ["a", "a", "b"], [1, 1, 1], [2.0, 4.0, 3.0]
    time = [100, 300, 50]
    last = Ratings(user, item, rating, scale=(1, 5), duplicates="last", time=time)
    assert last.values.tolist() == [4.0, 3.0] and last.times.tolist() == [300.0, 50.0]
    first = Ratings(user, item, rating, scale=(1, 5), duplicates="first", time=time)
    assert first.values.tolist() == [2.0, 3.0] and first.times.tolist() == [100.0, 50.0]
    # the mean rating is dated at the latest of its ratings
    mean = Ratings(user, item, rating, scale=(1, 5), duplicates="mean", time=time)
    assert mean.values.tolist() == [3.0, 3.0] and mean.times.tolist() == [300.0, 50.0]


@pytest.mark.parametrize(
    ("time", "message"),
    [([1.0, np.nan], "missing or not numbers"), ([1.0, "soon"], "missing or not numbers"),
     ([1.0], "one value per rating"), ([True, False], "Unix seconds or datetimes"),
     (pd.to_datetime(["2000-01-01", None]), "missing")],
)
def test_bad_times_raise_one_line(time, message):
    with pytest.raises(DataError, match=message) as info:
        Ratings(["a", "b"], [1, 2], [3.0, 4.0], scale=(1, 5), time=time)
    assert "\n" not in str(info.value)


def test_read_ratings_reads_the_time_column(tmp_path):
    path = tmp_path / "r.csv"
    frame_with_times().to_csv(path, index=False)
    ratings = read_ratings(path, time_col="timestamp")
    assert ratings.times.tolist() == [874965758.0, 876893171.0, 878542960.0, 0.0]
    assert read_ratings(path).times is None
    with pytest.raises(DataError, match="when"):
        read_ratings(path, time_col="when")


def test_iso_date_strings_are_read_as_utc_times():
    ratings = Ratings(["a", "b"], [1, 2], [3.0, 4.0], scale=(1, 5),
                      time=["1970-01-02", "1970-01-01T01:00:00+01:00"])
    assert ratings.times.tolist() == [86400.0, 0.0]
    with pytest.raises(DataError, match="not numbers"):
        Ratings(["a", "b"], [1, 2], [3.0, 4.0], scale=(1, 5), time=["1970-01-02", "later"])
