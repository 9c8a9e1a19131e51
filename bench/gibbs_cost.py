"""Where a Gibbs sweep's time goes: the row draws against the hyperparameter steps.

Runs the blocked Gibbs sampler of ``BPMF`` (package defaults, one chain, so that nothing runs
beside it) on an ML-100K fold with timers around the row draws of both sides and around every
other step (the covariance prior's steps, the translation and rescaling moves, the intercept,
noise and bias-scale draws), and prints milliseconds per sweep and the hyperparameter share.
The target: the hyperparameter steps together cost at most 20% of the row sweep.

Usage::

    python bench/gibbs_cost.py                       # fold u1, LKJ prior
    python bench/gibbs_cost.py --prior wishart --sweeps 600
    python bench/gibbs_cost.py --model-config '{"correlated_biases": true}'
"""

import argparse
import json
import time

import numpy as np

import bpmf.inference.gibbs as gibbs
from bpmf.datasets import load_movielens_folds
from bpmf.models import BPMF


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fold", default="u1")
    parser.add_argument("--prior", default="lkj", choices=["lkj", "wishart"])
    parser.add_argument("--sweeps", type=int, default=600, help="kept sweeps (after 150 tune)")
    parser.add_argument("--model-config", default="{}", help="JSON merged into model_config")
    parser.add_argument("--data-home", default=None)
    args = parser.parse_args(argv)
    train = load_movielens_folds("ml-100k", data_home=args.data_home, download=False)[
        args.fold
    ].train
    config = {"covariance_prior": args.prior, **json.loads(args.model_config)}
    # compile (or load) the kernels before timing
    BPMF(10, model_config=config, sampler_config={"draws": 2, "tune": 3, "chains": 1},
         progressbar=False).fit(train.subset(np.arange(train.n_ratings) < 500))

    timers = {"rows": 0.0, "sweep": 0.0}
    sample_side, sweep = gibbs.sample_side, gibbs._sweep

    def timed_side(*args, **kwargs):
        start = time.perf_counter()
        try:
            return sample_side(*args, **kwargs)
        finally:
            timers["rows"] += time.perf_counter() - start

    def timed_sweep(*args, **kwargs):
        start = time.perf_counter()
        try:
            return sweep(*args, **kwargs)
        finally:
            timers["sweep"] += time.perf_counter() - start

    gibbs.sample_side, gibbs._sweep = timed_side, timed_sweep
    try:
        BPMF(10, model_config=config, random_state=0, progressbar=False,
             sampler_config={"draws": args.sweeps, "tune": 150, "chains": 1}).fit(train)
    finally:
        gibbs.sample_side, gibbs._sweep = sample_side, sweep
    n = args.sweeps + 150
    rows = timers["rows"] / n * 1e3
    rest = (timers["sweep"] - timers["rows"]) / n * 1e3
    print(f"{args.fold}, {args.prior}: {n} sweeps; row draws {rows:.2f} ms per sweep, "
          f"everything else {rest:.2f} ms per sweep ({rest / rows:.1%} of the row draws)")


if __name__ == "__main__":
    main()
