import numpy as np
import pandas as pd
import pytest

from bpmf import DataError
from bpmf._exceptions import RatingScaleWarning
from bpmf.datasets import Ratings, as_pairs, as_ratings


def frame(**overrides):
    data = {"user": ["a", "b", "a", "c"], "item": [10, 10, 20, 30], "rating": [1.0, 5.0, 3.0, 4.0]}
    data.update(overrides)
    return pd.DataFrame(data)


def test_round_trip_keeps_ids_and_values():
    ratings = Ratings.from_frame(frame())
    assert ratings.n_ratings == 4 and ratings.n_users == 3 and ratings.n_items == 3
    assert list(ratings.user_ids) == ["a", "b", "c"]
    back = ratings.to_frame()
    pd.testing.assert_frame_equal(back, frame(), check_dtype=False)
    # codes index the id maps
    assert list(ratings.user_ids[ratings.user_codes]) == ["a", "b", "a", "c"]
    assert ratings.scale == (1.0, 5.0)
    assert ratings.density == pytest.approx(4 / 9)


def test_encode_unknown_ids_is_minus_one():
    ratings = Ratings.from_frame(frame())
    assert list(ratings.encode_users(["c", "zz", "a"])) == [2, -1, 0]
    assert list(ratings.encode_items([30, 99])) == [2, -1]


def test_column_mapping_and_declared_scale():
    df = frame().rename(columns={"user": "uid", "item": "movie", "rating": "stars"})
    ratings = Ratings.from_frame(
        df, user_col="uid", item_col="movie", rating_col="stars", scale=(0, 5)
    )
    assert ratings.scale == (0.0, 5.0)


def test_subset_recodes_densely():
    ratings = Ratings.from_frame(frame())
    sub = ratings.subset(np.array([False, True, False, True]))
    assert list(sub.user_ids) == ["b", "c"] and sub.n_items == 2
    assert sub.scale == ratings.scale


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rating": [1.0, np.nan, 3.0, 4.0]}, "NaN or infinite"),
        ({"rating": [1.0, np.inf, 3.0, 4.0]}, "NaN or infinite"),
        ({"rating": ["1", "x", "3", "4"]}, "not numbers"),
        ({"user": ["a", None, "a", "c"]}, "user id"),
        ({"item": [1, 1, 1, 1], "user": ["a", "a", "b", "b"]}, "duplicate"),
    ],
)
def test_bad_values_raise_clear_errors(overrides, message):
    with pytest.raises(DataError, match=message):
        Ratings.from_frame(frame(**overrides))


def test_off_scale_rating_is_reported():
    with pytest.raises(DataError, match=r"outside the declared scale \(1.0, 5.0\)"):
        Ratings.from_frame(frame(rating=[1.0, 6.0, 3.0, 4.0]), scale=(1, 5))


def test_duplicates_can_be_aggregated():
    df = pd.DataFrame({"user": [1, 1, 2], "item": [1, 1, 1], "rating": [2.0, 4.0, 5.0]})
    ratings = Ratings.from_frame(df, duplicates="mean", scale=(1, 5))
    assert ratings.n_ratings == 2
    assert sorted(ratings.values) == [3.0, 5.0]
    last = Ratings.from_frame(df, duplicates="last", scale=(1, 5))
    assert last.to_frame()["rating"].tolist() == [4.0, 5.0]


def test_empty_and_missing_columns():
    with pytest.raises(DataError, match="empty"):
        Ratings.from_frame(frame().iloc[:0])
    with pytest.raises(DataError, match=r"Missing column\(s\) \['rating'\].*rating_col"):
        Ratings.from_frame(frame().drop(columns="rating"))
    with pytest.raises(DataError, match="DataFrame"):
        as_ratings([[1, 2, 3]])


def test_bad_scale_argument():
    with pytest.raises(ValueError, match="low < high"):
        Ratings.from_frame(frame(), scale=(5, 1))


def test_as_pairs_accepts_frames_and_ratings():
    ratings = Ratings.from_frame(frame())
    users, items = as_pairs(ratings)
    assert list(users) == ["a", "b", "a", "c"] and list(items) == [10, 10, 20, 30]
    users, items = as_pairs(pd.DataFrame({"user": ["b"], "item": [20]}))
    assert list(users) == ["b"]
    with pytest.raises(DataError, match="Missing column"):
        as_pairs(pd.DataFrame({"usr": ["b"], "item": [20]}))


# ---------------------------------------------------------------------- ids kept as given
@pytest.mark.parametrize(
    ("users", "message"),
    [
        ([1, 1, "1", "1", "b", "b"], r"user ids 1 \(int\) and '1' \(str\) .* print the same"),
        ([1, 1, 1.0, 1.0, "b", "b"], r"user ids 1 \(int\) and 1.0 \(float\) .* compare equal"),
    ],
)
def test_ids_of_different_types_never_merge(users, message):
    df = pd.DataFrame({"user": users, "item": list("xyyzxz"), "rating": [1.0, 2, 3, 4, 5, 1]})
    with pytest.raises(DataError, match=message) as caught:
        Ratings.from_frame(df)
    assert "astype(str)" in str(caught.value) and "\n" not in str(caught.value)


def test_mixed_id_types_that_cannot_merge_are_kept():
    df = pd.DataFrame({"user": [1, "b", 2], "item": ["x", "x", "y"], "rating": [1.0, 5.0, 3.0]})
    ratings = Ratings.from_frame(df)
    assert ratings.n_users == 3 and list(ratings.users) == [1, "b", 2]


def test_ids_are_kept_exactly():
    huge = 2**70  # beyond int64
    df = pd.DataFrame(
        {"user": ["007", "7", "7"], "item": [huge, 1, huge], "rating": [1.0, 5.0, 3.0]}
    )
    ratings = Ratings.from_frame(df)
    assert list(ratings.user_ids) == ["007", "7"]
    assert set(ratings.item_ids) == {huge, 1} and ratings.encode_items([huge])[0] >= 0


@pytest.mark.parametrize("blank", ["", "  ", np.nan, None])
def test_missing_or_blank_ids_raise(blank):
    with pytest.raises(DataError, match=r"1 item id\(s\) are (missing|blank).*row\(s\) 2"):
        Ratings(["a", "b", "c"], ["x", "y", blank], [1.0, 2.0, 5.0])


# ---------------------------------------------------------------------- inferred scale
def test_constant_ratings_have_no_inferred_scale():
    with pytest.warns(RatingScaleWarning, match="All 3 ratings equal 3"):
        ratings = Ratings(["a", "b", "c"], ["x", "x", "x"], [3.0, 3.0, 3.0])
    assert ratings.scale is None
    assert Ratings(["a", "b"], ["x", "x"], [3.0, 3.0], scale=(1, 5)).scale == (1.0, 5.0)


def test_stars_short_of_a_common_scale_warn():
    with pytest.warns(RatingScaleWarning, match=r"span 3-5, short of the common 1-5.*\(1, 5\)"):
        ratings = Ratings(["a", "b", "c"], ["x", "x", "x"], [3.0, 4.0, 5.0])
    assert ratings.scale == (3.0, 5.0)
    assert ratings.with_scale((1, 5)).scale == (1.0, 5.0)
    with pytest.raises(DataError, match="outside the declared scale"):
        ratings.with_scale((0, 4))


@pytest.mark.parametrize(
    "values", [[1.0, 3.0, 5.0], [0.0, 1.0, 1.0], [0.5, 2.5, 5.0], [-1.3, 0.2, 2.7]]
)
def test_full_or_continuous_ranges_infer_silently(values):
    # filterwarnings=error turns any warning into a failure here
    assert Ratings(["a", "b", "c"], ["x", "x", "x"], values).scale == (min(values), max(values))
