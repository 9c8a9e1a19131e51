"""Convergence of ``BPMF`` with the package defaults on ML-100K, over several seeds.

For each seed: the whole fit's wall time, test RMSE, R-hat and bulk ESS of every scalar
parameter (``sigma``, ``mu``, ``user_bias_sd``, ``item_bias_sd``), and R-hat of the expected
rating of every held-out pair (the share above 1.01 and the 99th percentile). The targets:
R-hat <= 1.01 on the scalars and on 99% of the held-out predictions, bulk ESS >= 400 on sigma.

Usage::

    python bench/diagnostics.py                       # fold u1, seeds 0, 1, 2
    python bench/diagnostics.py --seeds 0,1,2,3 --method nuts
"""

import argparse
import json
import time
import warnings

import arviz as az
import numpy as np
import xarray as xr

from bpmf.datasets import load_movielens_folds
from bpmf.models import BPMF


def held_out_rhat(model, test):
    """R-hat of each held-out pair's expected rating (pairs with a seen user and item)."""
    users = model.user_index_.get_indexer(test.users)
    items = model.item_index_.get_indexer(test.items)
    seen = (users >= 0) & (items >= 0)
    n_chains, n_draws = model._sample_shape()
    draws = model._expected_draws(users[seen], items[seen]).reshape(n_chains, n_draws, -1)
    rhat = az.rhat(xr.Dataset({"rating": (("chain", "draw", "pair"), draws)}))["rating"].values
    return np.asarray(rhat, dtype=float)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fold", default="u1")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--method", default=None, help="gibbs or nuts (default: the package's)")
    parser.add_argument("--sampler-config", default="{}", help="JSON merged into sampler_config")
    parser.add_argument("--model-config", default="{}", help="JSON merged into model_config")
    parser.add_argument("--data-home", default=None)
    args = parser.parse_args(argv)
    split = load_movielens_folds("ml-100k", data_home=args.data_home, download=False)[args.fold]
    kwargs = {"method": args.method} if args.method else {}
    # load the compiled kernels outside the timing (cached on disk after the first run)
    BPMF(10, sampler_config={"draws": 2, "tune": 3}, progressbar=False, **kwargs).fit(
        split.train.subset(np.arange(split.train.n_ratings) < 500)
    )
    for seed in (int(s) for s in args.seeds.split(",")):
        model = BPMF(10, random_state=seed, progressbar=False,
                     sampler_config=json.loads(args.sampler_config),
                     model_config=json.loads(args.model_config), **kwargs)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(split.train)
        seconds = time.perf_counter() - start
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = model.predict(split.test, on_unseen="ignore")
        rmse = float(np.sqrt(np.mean((pred - split.test.values) ** 2)))
        diagnostics = model.diagnostics_
        rhat = held_out_rhat(model, split.test)
        print(
            f"seed {seed}: {seconds:.1f} s, RMSE {rmse:.4f}, divergences "
            f"{diagnostics['divergences']}, R-hat "
            + ", ".join(f"{k} {v:.4f}" for k, v in diagnostics["rhat"].items())
            + "; bulk ESS "
            + ", ".join(f"{k} {v:.0f}" for k, v in diagnostics["ess_bulk"].items())
            + f"; held-out predictions: R-hat > 1.01 for {np.mean(rhat > 1.01):.2%} of "
            f"{rhat.size}, 99th percentile {np.percentile(rhat, 99):.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
