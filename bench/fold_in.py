"""Fold-in of new users on MovieLens 100K u1, against a full refit and the population level.

Protocol, per seed: 10% of the users of u1.base are held out entirely (chosen with the seed);
``BPMF()`` with the package defaults is fitted on the other users' ratings. Each held-out user
then gives half of their u1.base ratings (chosen with the seed), and their u1.test ratings are
predicted three ways:

* fold-in: ``model.fold_in(given)`` (their rows drawn per posterior draw, no refit);
* refit: ``BPMF()`` fitted again on the other users' ratings plus the given ones;
* population: the first model without the given ratings (held-out users are unseen and get the
  population-level prediction).

Given ratings of items that no other user rated cannot be folded in (a new user with a new
item); they are left out of both the fold-in and the refit, and test pairs with such items
are left out of the scores (their counts are printed). Prints the RMSEs, the fold-in's
distance to the refit, its gain over the population level and the refit / fold-in time ratio.

``--model-config`` passes a ``model_config`` to every fit, e.g. ``'{"user_features":
"ml-100k"}'`` (side features: the population level is then the held-out users'
feature-based prediction) or ``'{"implicit": true}'`` (implicit feedback on the users' side:
a folded-in user's implicit set is its given items, as in the refit).
``--sampler-config`` passes a ``sampler_config`` to every fit, e.g. ``'{"thin": 2, "draws":
450}'``: the same sweeps as the defaults with every second draw kept, which halves the
fold-in's work (one row draw per kept draw) and leaves the refit's as it is.

Usage::

    python bench/fold_in.py [--seeds 0,1,2] [--data-home DIR] [--model-config JSON]
                            [--sampler-config JSON]
"""

import argparse
import json
import time
import warnings

import numpy as np
import pandas as pd

from bpmf import metrics
from bpmf.datasets import Ratings, load_movielens_folds
from bpmf.models import BPMF


def _fit(frame, model_config, sampler_config=None):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BPMF(model_config=model_config, sampler_config=sampler_config, random_state=0,
                     progressbar=False).fit(
            Ratings.from_frame(frame, scale=(1, 5),
                               time_col="time" if "time" in frame.columns else None)
        )
    return model, time.perf_counter() - start


def run(seed, base, test, model_config=None, sampler_config=None):
    rng = np.random.default_rng(seed)
    users = np.unique(base["user"])
    held = rng.choice(users, int(round(0.1 * len(users))), replace=False)
    is_held = base["user"].isin(held).to_numpy()
    rest, held_ratings = base[~is_held], base[is_held]
    given_mask = np.zeros(len(held_ratings), dtype=bool)
    for _, rows in held_ratings.groupby("user").indices.items():
        given_mask[rng.choice(rows, len(rows) // 2, replace=False)] = True
    given = held_ratings[given_mask]
    known_items = set(rest["item"])
    foldable = given["item"].isin(known_items).to_numpy()
    given = given[foldable]
    scored = test[test["user"].isin(held) & test["item"].isin(known_items)]
    n_skipped = int(test["user"].isin(held).sum() - len(scored))
    # the pairs keep their times (used by a model with day biases only)
    pairs = scored.drop(columns="rating")
    truth = scored["rating"].to_numpy()

    model, fit_s = _fit(rest, model_config, sampler_config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the held-out users are unseen
        population = metrics.rmse(truth, model.predict(pairs))
    start = time.perf_counter()
    folded = model.fold_in(given)
    fold_s = time.perf_counter() - start
    fold_rmse = metrics.rmse(truth, folded.predict(pairs))
    refit, refit_s = _fit(pd.concat([rest, given], ignore_index=True), model_config,
                          sampler_config)
    refit_rmse = metrics.rmse(truth, refit.predict(pairs))
    return {
        "seed": seed,
        "held_users": len(held),
        "given": len(given),
        "given_dropped": int((~foldable).sum()),
        "scored": len(scored),
        "test_dropped": n_skipped,
        "population": population,
        "fold_in": fold_rmse,
        "refit": refit_rmse,
        "fit_s": fit_s,
        "fold_s": fold_s,
        "refit_s": refit_s,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--model-config", default=None, help="JSON model_config of every fit")
    parser.add_argument("--sampler-config", default=None,
                        help="JSON sampler_config of every fit (e.g. thinning)")
    args = parser.parse_args(argv)
    model_config = json.loads(args.model_config) if args.model_config else None
    sampler_config = json.loads(args.sampler_config) if args.sampler_config else None
    split = load_movielens_folds("ml-100k", data_home=args.data_home, download=False)["u1"]
    base, test = split.train.to_frame(), split.test.to_frame()
    rows = [run(int(seed), base, test, model_config, sampler_config)
            for seed in args.seeds.split(",")]
    print(
        f"{'seed':>4}{'held':>6}{'given':>7}{'scored':>8}{'population':>12}{'fold-in':>9}"
        f"{'refit':>8}{'fold-refit':>12}{'pop-fold':>10}{'fold s':>8}{'refit s':>9}"
        f"{'refit/fold':>12}"
    )
    for row in rows:
        print(
            f"{row['seed']:>4}{row['held_users']:>6}{row['given']:>7}{row['scored']:>8}"
            f"{row['population']:>12.4f}{row['fold_in']:>9.4f}{row['refit']:>8.4f}"
            f"{row['fold_in'] - row['refit']:>+12.4f}{row['population'] - row['fold_in']:>10.4f}"
            f"{row['fold_s']:>8.2f}{row['refit_s']:>9.1f}{row['refit_s'] / row['fold_s']:>11.0f}x"
        )
    for row in rows:
        print(
            f"seed {row['seed']}: {row['given_dropped']} given ratings and {row['test_dropped']} "
            "test pairs left out (items rated by held-out users only)"
        )


if __name__ == "__main__":
    main()
