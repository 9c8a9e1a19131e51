"""Feature tables: encoding, exact id matching, saving form, the ML-100K tables."""

import numpy as np
import pandas as pd
import pytest

from bpmf import DataError
from bpmf.datasets import FeatureEncoder, load_movielens_features
from bpmf.datasets._features import frame_from_state, frame_to_state, match_ids


def _table():
    return pd.DataFrame(
        {
            "age": [20, 30, 40, 50],
            "flag": [True, False, False, True],
            "job": pd.Categorical(["b", "a", "b", "c"]),
            "city": ["x", "y", "x", "x"],
        },
        index=[1, 2, 3, 4],
    )


def test_encoder_standardises_numbers_and_centres_one_hot_levels():
    encoder = FeatureEncoder()
    X = encoder.fit_transform(_table())
    assert encoder.feature_names_ == ["age", "flag", "job=a", "job=b", "job=c", "city=x", "city=y"]
    age = np.array([20, 30, 40, 50.0])
    np.testing.assert_allclose(X[:, 0], (age - age.mean()) / age.std())
    np.testing.assert_allclose(X[:, 1], [1, -1, -1, 1])
    one_hot = np.array([[0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]])
    np.testing.assert_allclose(X[:, 2:5], one_hot - one_hot.mean(0))
    # every column has mean zero: no combination of them is the constant 1
    np.testing.assert_allclose(X.mean(0), 0.0, atol=1e-12)
    ones = np.linalg.lstsq(X, np.ones(4), rcond=None)[0]
    assert np.linalg.norm(X @ ones - 1.0) > 0.5


def test_encoder_transform_of_new_rows_uses_the_fitted_levels():
    encoder = FeatureEncoder().fit(_table())
    row = pd.DataFrame({"age": [35], "flag": [True], "job": ["c"], "city": ["y"]}, index=[9])
    X = encoder.transform(row)
    assert X.shape == (1, 7)
    assert X[0, 0] == pytest.approx(0.0)
    with pytest.raises(DataError, match="not seen"):
        encoder.transform(row.assign(job=["zzz"]))


@pytest.mark.parametrize(
    ("table", "match"),
    [
        (np.ones((3, 2)), "must be a pandas DataFrame"),
        (pd.DataFrame({"a": [1.0, np.nan]}), "missing value"),
        (pd.DataFrame({"a": pd.to_datetime(["2020-01-01", "2021-01-01"])}), "dtype"),
        (pd.DataFrame(index=[1, 2]), "empty"),
    ],
)
def test_encoder_refuses_bad_tables_with_one_line(table, match):
    with pytest.raises(DataError, match=match) as info:
        FeatureEncoder().fit(table)
    assert "\n" not in str(info.value)


def test_ids_match_exactly_by_kind():
    assert match_ids(pd.Index([1, 2, 3]), np.array([3, 1]), "t").tolist() == [2, 0]
    # the string "1" is another id than the integer 1
    assert match_ids(pd.Index(["1", "2"]), np.array([1, "2"], dtype=object), "t").tolist() == [
        -1, 1]
    with pytest.raises(DataError, match="more than one row"):
        match_ids(pd.Index([1, 1]), np.array([1]), "t")
    with pytest.raises(DataError, match="integers or strings"):
        match_ids(pd.Index([1.5]), np.array([1]), "t")


def test_frame_state_round_trip():
    table = _table()
    back = frame_from_state(frame_to_state(table))
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    assert isinstance(back["job"].dtype, pd.CategoricalDtype)
    np.testing.assert_array_equal(FeatureEncoder().fit_transform(back),
                                  FeatureEncoder().fit_transform(table))


def test_movielens_feature_tables(movielens_home):
    from bpmf.datasets import load_movielens

    users, items = load_movielens_features("ml-100k", data_home=movielens_home, download=False)
    ratings = load_movielens("ml-100k", data_home=movielens_home, download=False)
    assert users.shape == (943, 4) and items.shape == (1682, 20)
    assert (match_ids(users.index, ratings.user_ids, "users") >= 0).all()
    assert (match_ids(items.index, ratings.item_ids, "items") >= 0).all()
    assert set(users["gender"]) == {"F", "M"}
    assert users["occupation"].nunique() == 21
    assert set(users["zip_region"]) <= {*"0123456789", "other"}
    assert items["release_year"].between(1920, 1999).all()
    assert items.filter(like="genre_").isin([0, 1]).all().all()
    encoded = FeatureEncoder().fit_transform(users)
    assert encoded.shape == (943, 1 + 2 + 21 + users["zip_region"].nunique())
    assert np.isfinite(encoded).all()


def test_movielens_feature_tables_other_release():
    with pytest.raises(ValueError, match="ml-100k"):
        load_movielens_features("ml-1m", download=False)
