"""PMF (MAP) and BPMF (NUTS) on a MovieLens 100K fold: test RMSE, wall time, sampler health.

Usage::

    python bench/bpmf_movielens.py --fold u1 [--models pmf bpmf] [--draws 300 --tune 300]
        [--chains 2 --cores 2] [--parameterization noncentered] [--backend nutpie]

Prints one line per model with the test RMSE, the wall time, divergences, max-treedepth hits
and R-hat / bulk ESS of sigma, then the RMSE ratio BPMF / PMF. Needs MovieLens 100K in the data
home (``BPMF_DATA`` or ``--data-home``). Recorded results are in ``bench/README.md``.
"""

import argparse
import json
import sys
import time
import warnings

import numpy as np

from bpmf.datasets import load_movielens_folds
from bpmf.metrics import rmse
from bpmf.models import BPMF, PMF


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fold", default="u1")
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--models", nargs="+", default=["pmf", "bpmf"], choices=["pmf", "bpmf"])
    parser.add_argument("--n-factors", type=int, default=10)
    parser.add_argument("--draws", type=int, default=None)
    parser.add_argument("--tune", type=int, default=None)
    parser.add_argument("--chains", type=int, default=None)
    parser.add_argument("--cores", type=int, default=None)
    parser.add_argument("--backend", default=None, help="nuts_sampler (default: BPMF's)")
    parser.add_argument("--parameterization", default=None, choices=["noncentered", "centered"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
    split = load_movielens_folds("ml-100k", data_home=args.data_home)[args.fold]
    test = split.test.to_frame()
    print(
        f"ml-100k {args.fold}: {split.train.n_ratings} train / {split.test.n_ratings} test "
        f"ratings, n_factors={args.n_factors}",
        flush=True,
    )
    results = {}
    if "pmf" in args.models:
        start = time.perf_counter()
        pmf = PMF(args.n_factors, random_state=args.seed, progressbar=False).fit(split.train)
        seconds = time.perf_counter() - start
        score = rmse(test["rating"], pmf.predict(test, on_unseen="ignore"))
        results["pmf"] = {"rmse": score, "seconds": seconds, "sigma": float(pmf.map_["sigma"])}
        print(f"PMF-MAP   rmse={score:.4f}  time={seconds:.1f}s  sigma={pmf.map_['sigma']:.3f}",
              flush=True)
    if "bpmf" in args.models:
        sampler_config = {
            key: value
            for key, value in {
                "draws": args.draws,
                "tune": args.tune,
                "chains": args.chains,
                "cores": args.cores,
                "nuts_sampler": args.backend,
            }.items()
            if value is not None
        }
        model_config = {}
        if args.parameterization:
            model_config["parameterization"] = args.parameterization
        model = BPMF(
            args.n_factors,
            model_config=model_config,
            sampler_config=sampler_config,
            random_state=args.seed,
            progressbar=False,
        )
        start = time.perf_counter()
        model.fit(split.train)
        seconds = time.perf_counter() - start
        score = rmse(test["rating"], model.predict(test, on_unseen="ignore"))
        interval = model.predict_interval(test, prob=0.9, on_unseen="ignore")
        inside = (test["rating"] >= interval["lower"]) & (test["rating"] <= interval["upper"])
        stats = model.idata_["sample_stats"].ds
        steps = float(stats["n_steps"].mean()) if "n_steps" in stats else float("nan")
        diagnostics = model.diagnostics_
        results["bpmf"] = {
            "rmse": score,
            "seconds": seconds,
            "coverage90": float(inside.mean()),
            "mean_steps_per_draw": steps,
            **diagnostics,
        }
        print(
            f"BPMF-NUTS rmse={score:.4f}  time={seconds:.1f}s  "
            f"divergences={diagnostics['divergences']}  "
            f"treedepth_hits={diagnostics['max_treedepth_hits']}  "
            f"rhat_sigma={diagnostics.get('rhat_sigma', np.nan):.4f}  "
            f"ess_sigma={diagnostics.get('ess_bulk_sigma', np.nan):.0f}  "
            f"steps/draw={steps:.0f}  coverage90={inside.mean():.3f}",
            flush=True,
        )
    if "pmf" in results and "bpmf" in results:
        print(f"RMSE ratio BPMF/PMF = {results['bpmf']['rmse'] / results['pmf']['rmse']:.4f}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
