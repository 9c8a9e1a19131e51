"""The dataset registry: names, licences and where each dataset lives."""

from pathlib import Path

import pandas as pd

from bpmf.datasets._embedded import embedded_path, load_food_world_cup
from bpmf.datasets._movielens import MOVIELENS, get_data_home, load_movielens
from bpmf.datasets._readers import read_ratings

_MOVIELENS_LICENCE = "GroupLens research licence: no redistribution (never shipped)"
_DESCRIPTIONS = {
    "food-world-cup": (
        "FiveThirtyEight Food World Cup survey: 1,276 respondents x 40 cuisines (embedded)",
        "CC BY 4.0, credit FiveThirtyEight",
    ),
    "ml-100k": ("MovieLens 100K: 943 users x 1,682 movies, 100,000 ratings", _MOVIELENS_LICENCE),
    "ml-1m": ("MovieLens 1M: 6,040 users x 3,706 movies, 1,000,209 ratings", _MOVIELENS_LICENCE),
    "ml-latest-small": ("MovieLens latest-small: 0.5-5 stars, ~100k ratings", _MOVIELENS_LICENCE),
}


def list_datasets(data_home=None):
    """A DataFrame of the known datasets: name, description, licence, location, available."""
    home = get_data_home(data_home)
    rows = []
    for name, (description, licence) in _DESCRIPTIONS.items():
        if name == "food-world-cup":
            location, available = embedded_path(), True
        else:
            location = home / name
            available = (location / MOVIELENS[name].ratings_file).is_file()
        rows.append(
            {
                "name": name,
                "description": description,
                "licence": licence,
                "location": str(location),
                "available": available,
            }
        )
    return pd.DataFrame(rows)


def load_dataset(name_or_path, data_home=None, download=False, **read_kwargs):
    """Load a registered dataset by name, or a ratings file (CSV/TSV/parquet) by path."""
    if name_or_path == "food-world-cup":
        return load_food_world_cup()
    if name_or_path in MOVIELENS:
        return load_movielens(name_or_path, data_home=data_home, download=download)
    path = Path(name_or_path)
    if path.suffix or path.exists():
        return read_ratings(path, **read_kwargs)
    raise ValueError(
        f"Unknown dataset {name_or_path!r}: give a file path or one of {list(_DESCRIPTIONS)}."
    )
