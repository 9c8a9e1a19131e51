"""The embedded default dataset: FiveThirtyEight's Food World Cup survey (CC BY 4.0)."""

from importlib import resources
from pathlib import Path

import pandas as pd

from bpmf.datasets._ratings import Ratings

_FILE = "food_world_cup.csv"


def embedded_path():
    """The shipped CSV: package data in a wheel, ``data/`` in a source checkout."""
    packaged = resources.files("bpmf.datasets") / "data" / _FILE
    if packaged.is_file():
        return Path(str(packaged))
    source_tree = Path(__file__).resolve().parents[2] / "data" / _FILE
    if source_tree.is_file():
        return source_tree
    raise FileNotFoundError(
        f"The embedded dataset {_FILE} is missing from this installation "
        "(reinstall bpmf; in a source checkout it lives in data/)."
    )


def load_food_world_cup():
    """Load the Food World Cup ratings: 1,276 respondents rating 40 national cuisines 1-5.

    FiveThirtyEight's 2014 survey, reshaped to ``user, item, rating`` rows; "N/A" (the
    respondent does not know the cuisine) is not a rating and is left out. 23,943 ratings.
    Credit: FiveThirtyEight, https://github.com/fivethirtyeight/data (CC BY 4.0,
    https://creativecommons.org/licenses/by/4.0/). See ``data/README.md`` for the changes.
    """
    frame = pd.read_csv(embedded_path(), dtype={"user": "int64", "item": str, "rating": float})
    return Ratings.from_frame(frame, scale=(1, 5), name="food-world-cup")
