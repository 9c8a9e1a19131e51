import numpy as np
import pytest

from bpmf.datasets import kfold, per_user_split, train_test_split


def pair_set(ratings):
    return set(zip(ratings.users, ratings.items, strict=True))


def test_random_split_is_a_seeded_partition(small_synthetic):
    ratings, _ = small_synthetic
    train, test = train_test_split(ratings, test_size=0.25, random_state=0)
    assert len(test) == round(0.25 * len(ratings))
    assert pair_set(train).isdisjoint(pair_set(test))
    assert len(pair_set(train) | pair_set(test)) == len(ratings)
    again = train_test_split(ratings, test_size=0.25, random_state=0)
    np.testing.assert_array_equal(again.test.values, test.values)
    other = train_test_split(ratings, test_size=0.25, random_state=1)
    assert pair_set(other.test) != pair_set(test)


def test_unseen_counts(small_synthetic):
    split = train_test_split(
        small_synthetic[0].subset(np.arange(60)), test_size=0.5, random_state=0
    )
    unseen = split.unseen
    expected_users = set(split.test.users) - set(split.train.users)
    assert unseen["users"] == len(expected_users) > 0
    new_pairs = sum(
        u in expected_users or i not in set(split.train.items)
        for u, i in zip(split.test.users, split.test.items, strict=True)
    )
    assert unseen["pairs"] == new_pairs


def test_per_user_split_keeps_every_user_in_train(food_world_cup):
    train, test = per_user_split(food_world_cup, n_test=3, random_state=0)
    counts = food_world_cup.to_frame().groupby("user").size()
    test_counts = test.to_frame().groupby("user").size()
    expected = np.minimum(counts, 3).where(counts > 3, counts - 1)
    expected = expected[expected > 0]
    assert test_counts.sort_index().equals(expected.sort_index())
    assert set(train.user_ids) == set(food_world_cup.user_ids)


def test_kfold_tests_are_disjoint_and_cover(small_synthetic):
    ratings, _ = small_synthetic
    folds = kfold(ratings, n_splits=4, random_state=0)
    assert list(folds) == ["fold1", "fold2", "fold3", "fold4"]
    tests = [pair_set(split.test) for split in folds.values()]
    assert sum(len(t) for t in tests) == len(ratings)
    assert len(set().union(*tests)) == len(ratings)
    for split in folds.values():
        assert len(split.train) + len(split.test) == len(ratings)


@pytest.mark.parametrize(
    ("split", "kwargs"),
    [
        (train_test_split, {"test_size": 1.5}),
        (per_user_split, {"n_test": 0}),
        (kfold, {"n_splits": 1}),
    ],
)
def test_bad_split_arguments(small_synthetic, split, kwargs):
    with pytest.raises(ValueError):
        split(small_synthetic[0], **kwargs)
