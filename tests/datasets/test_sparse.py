import numpy as np
import pytest
from scipy import sparse

from bpmf import DataError
from bpmf.datasets import Ratings


def test_round_trip_through_sparse_keeps_every_rating():
    ratings = Ratings(["b", "a", "a", "c"], [20, 10, 30, 10], [4.0, 0.0, 5.0, 1.0], scale=(0, 5))
    matrix = ratings.to_sparse()
    assert isinstance(matrix, sparse.csr_array) and matrix.shape == (3, 3)
    assert matrix.nnz == 4  # the rating 0 is a stored entry
    dense = matrix.toarray()
    for user, item, value in zip(ratings.users, ratings.items, ratings.values, strict=True):
        row, column = ratings.user_ids.get_loc(user), ratings.item_ids.get_loc(item)
        assert dense[row, column] == value
    back = Ratings.from_sparse(
        matrix, user_ids=ratings.user_ids, item_ids=ratings.item_ids, scale=(0, 5)
    )
    order = np.lexsort((back.items, back.users))
    reference = np.lexsort((ratings.items, ratings.users))
    np.testing.assert_array_equal(back.users[order], ratings.users[reference])
    np.testing.assert_array_equal(back.items[order], ratings.items[reference])
    np.testing.assert_array_equal(back.values[order], ratings.values[reference])


@pytest.mark.parametrize("fmt", ["coo", "csr", "csc", "lil"])
def test_explicit_zeros_are_ratings_and_empty_rows_vanish(fmt):
    matrix = sparse.coo_array(
        (np.array([3.0, 0.0, 5.0]), (np.array([0, 0, 2]), np.array([1, 2, 0]))), shape=(4, 3)
    ).asformat(fmt)
    ratings = Ratings.from_sparse(matrix, user_ids=["u0", "u1", "u2", "u3"], scale=(0, 5))
    assert ratings.n_ratings == 3
    assert list(ratings.user_ids) == ["u0", "u2"]  # users without a stored entry are absent
    assert sorted(ratings.values) == [0.0, 3.0, 5.0]
    assert list(Ratings.from_sparse(matrix, scale=(0, 5)).item_ids) == [0, 1, 2]


def test_repeated_coo_entries_are_not_summed():
    matrix = sparse.coo_array(
        (np.array([2.0, 4.0, 1.0]), (np.array([0, 0, 1]), np.array([0, 0, 1]))), shape=(2, 2)
    )
    with pytest.raises(DataError, match="duplicate"):
        Ratings.from_sparse(matrix, scale=(1, 5))
    averaged = Ratings.from_sparse(matrix, duplicates="mean", scale=(1, 5))
    assert averaged.n_ratings == 2 and sorted(averaged.values) == [1.0, 3.0]
    assert sorted(Ratings.from_sparse(matrix, duplicates="last", scale=(1, 5)).values) == [1.0, 4.0]


def test_sparse_input_errors_are_clear():
    with pytest.raises(DataError, match="scipy.sparse"):
        Ratings.from_sparse(np.eye(2))
    matrix = sparse.csr_array(np.eye(2))
    with pytest.raises(DataError, match="user_ids has 3 ids"):
        Ratings.from_sparse(matrix, user_ids=["a", "b", "c"])
    with pytest.raises(DataError, match="distinct"):
        Ratings.from_sparse(matrix, item_ids=["x", "x"])
