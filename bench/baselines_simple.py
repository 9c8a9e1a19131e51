"""Test RMSE of the simple reference predictors on official MovieLens 100K folds.

Usage: python bench/baselines_simple.py [--fold u1] [--data-home DIR]
(the data home holds ml-100k/; defaults to $BPMF_DATA or the user cache)
"""

import argparse
import time

import pandas as pd

from bpmf import metrics
from bpmf.baselines import GlobalMean, ItemMean, UniformRandom, UserItemMean, UserMean
from bpmf.datasets import load_movielens_folds

MODELS = {
    "uniform random": lambda: UniformRandom(random_state=0),
    "global mean": GlobalMean,
    "user mean": UserMean,
    "item mean": ItemMean,
    "mean of user and item means": UserItemMean,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fold", default="u1", help="u1..u5, ua, ub, or 'all' (default u1)")
    parser.add_argument("--data-home", default=None)
    args = parser.parse_args(argv)
    folds = load_movielens_folds("ml-100k", data_home=args.data_home, download=False)
    names = list(folds) if args.fold == "all" else args.fold.split(",")
    rows = []
    for fold in names:
        train, test = folds[fold]
        for label, make in MODELS.items():
            start = time.perf_counter()
            predictions = make().fit(train).predict(test)
            rows.append(
                {
                    "fold": fold,
                    "model": label,
                    "rmse": metrics.rmse(test.values, predictions),
                    "seconds": time.perf_counter() - start,
                }
            )
    table = pd.DataFrame(rows).pivot(index="model", columns="fold", values="rmse")
    print(table.loc[list(MODELS)].round(4).to_string())


if __name__ == "__main__":
    main()
