"""Rating data: the :class:`Ratings` container, loaders, synthetic data and splits."""

from bpmf._exceptions import RatingScaleWarning
from bpmf.datasets._embedded import load_food_world_cup
from bpmf.datasets._features import FeatureEncoder
from bpmf.datasets._movielens import (
    DATA_HOME_ENV,
    MOVIELENS,
    download_movielens,
    get_data_home,
    load_movielens,
    load_movielens_features,
    load_movielens_folds,
    movielens_path,
)
from bpmf.datasets._ratings import Ratings, as_pairs, as_ratings, pair_times
from bpmf.datasets._readers import read_ratings
from bpmf.datasets._registry import list_datasets, load_dataset
from bpmf.datasets._splits import Split, kfold, per_user_split, train_test_split
from bpmf.datasets._synthetic import SyntheticTruth, make_synthetic_ratings

__all__ = [
    "DATA_HOME_ENV",
    "FeatureEncoder",
    "MOVIELENS",
    "RatingScaleWarning",
    "Ratings",
    "Split",
    "SyntheticTruth",
    "as_pairs",
    "as_ratings",
    "download_movielens",
    "get_data_home",
    "kfold",
    "list_datasets",
    "load_dataset",
    "load_food_world_cup",
    "load_movielens",
    "load_movielens_features",
    "load_movielens_folds",
    "make_synthetic_ratings",
    "movielens_path",
    "pair_times",
    "per_user_split",
    "read_ratings",
    "train_test_split",
]
