"""Gradient-descent baselines on the official MovieLens 100K folds u1-u5.

Prints per-fold and mean test RMSE and fit time for OLSRegressor (baseline predictor),
SoftmaxRegression (expected rating), MLPRegressor (BatchNorm) and AdaGradMF, with the default
settings, next to Surprise's BaselineOnly and SVD measured in the same run (when installed), and
the ratio of each model's mean RMSE to theirs.

    python bench/baselines_movielens.py [--data-home DIR] [--folds u1,u2] [--no-peers]
"""

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from bpmf.baselines import AdaGradMF, MLPRegressor, OLSRegressor, SoftmaxRegression
from bpmf.datasets import load_movielens_folds
from bpmf.metrics import rmse

TARGETS = {
    "OLSRegressor": 0.946,
    "SoftmaxRegression": 0.96,
    "MLPRegressor": 0.94,
    "AdaGradMF": 0.935,
}


def models(seed):
    return {
        "OLSRegressor": OLSRegressor(progressbar=False),
        "SoftmaxRegression": SoftmaxRegression(progressbar=False),
        "MLPRegressor": MLPRegressor(random_state=seed, progressbar=False),
        "AdaGradMF": AdaGradMF(random_state=seed, progressbar=False),
    }


def surprise_peers(train, test, seed):
    """Surprise BaselineOnly and SVD (library defaults) on the same split: {name: (rmse, s)}."""
    try:
        from surprise import SVD, BaselineOnly, Dataset, Reader
    except ImportError:
        return {}
    reader = Reader(rating_scale=train.scale)
    trainset = Dataset.load_from_df(train.to_frame(), reader).build_full_trainset()
    results = {}
    for name, algo in (
        ("Surprise BaselineOnly", BaselineOnly(verbose=False)),
        ("Surprise SVD", SVD(random_state=seed)),
    ):
        start = time.perf_counter()
        algo.fit(trainset)
        seconds = time.perf_counter() - start
        pairs = zip(test.users, test.items, strict=True)
        predicted = np.array([algo.predict(u, i).est for u, i in pairs])
        results[name] = (rmse(test.values, predicted), seconds)
    return results


def markdown(frame):
    """A GitHub markdown table of ``frame`` (index as the first column), numbers to 4 decimals."""
    header = [frame.index.name or "", *map(str, frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in frame.iterrows():
        cells = ["" if pd.isna(v) else f"{v:.4f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--folds", default="u1,u2,u3,u4,u5")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folds = load_movielens_folds("ml-100k", data_home=args.data_home, download=False)
    rows = []
    for fold in args.folds.split(","):
        train, test = folds[fold]
        for name, model in models(args.seed).items():
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model.fit(train)
            seconds = time.perf_counter() - start
            score = rmse(test.values, model.predict(test))
            note = "; ".join(sorted({str(w.message)[:60] for w in caught}))
            rows.append(
                {
                    "fold": fold,
                    "model": name,
                    "rmse": score,
                    "fit_s": seconds,
                    "n_iter": model.n_iter_,
                    "warnings": note,
                }
            )
            print(
                f"{fold} {name:<22} RMSE {score:.4f}  fit {seconds:6.1f} s  "
                f"n_iter {model.n_iter_} {note}",
                flush=True,
            )
        if not args.no_peers:
            for name, (score, seconds) in surprise_peers(train, test, args.seed).items():
                rows.append({"fold": fold, "model": name, "rmse": score, "fit_s": seconds})
                print(f"{fold} {name:<22} RMSE {score:.4f}  fit {seconds:6.1f} s", flush=True)
    table = pd.DataFrame(rows)
    wide = table.pivot(index="model", columns="fold", values="rmse")
    wide["mean RMSE"] = wide.mean(axis=1)
    wide["mean fit s"] = table.groupby("model")["fit_s"].mean()
    wide["target"] = pd.Series(TARGETS)
    order = [m for m in [*TARGETS, "Surprise BaselineOnly", "Surprise SVD"] if m in wide.index]
    wide = wide.loc[order]
    for peer in ("Surprise BaselineOnly", "Surprise SVD"):
        if peer in wide.index:
            wide[f"ratio to {peer.split()[1]}"] = wide["mean RMSE"] / wide.loc[peer, "mean RMSE"]
    print()
    print(markdown(wide))
    met = {m: wide.loc[m, "mean RMSE"] <= t for m, t in TARGETS.items() if m in wide.index}
    print("\ntargets met:", met)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
