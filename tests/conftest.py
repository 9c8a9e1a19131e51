"""Shared fixtures: seeded synthetic data, the embedded dataset, MovieLens when present."""

import os
from pathlib import Path

import pytest

from bpmf.datasets import get_data_home, load_food_world_cup, make_synthetic_ratings

os.environ.setdefault("MPLBACKEND", "Agg")


def _movielens_home():
    home = get_data_home()
    if (home / "ml-100k" / "u.data").is_file():
        return home
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if (shared / "ml-100k" / "u.data").is_file():
        return shared
    return None


@pytest.fixture(scope="session")
def movielens_home():
    """The data home holding ml-100k/; skips the test when MovieLens is absent."""
    home = _movielens_home()
    if home is None:
        pytest.skip("MovieLens 100K not found (set BPMF_DATA to the folder holding ml-100k/)")
    return home


@pytest.fixture(scope="session")
def food_world_cup():
    return load_food_world_cup()


@pytest.fixture(scope="session")
def small_synthetic():
    """A small seeded synthetic problem: (ratings, truth)."""
    return make_synthetic_ratings(
        n_users=60, n_items=40, n_factors=2, density=0.3, noise_sd=0.5, random_state=0
    )
