"""NUTS sampler settings for BPMF on ML-100K fold u1: accuracy, convergence and cost per setting.

Each setting named on the command line is one fit of :class:`bpmf.BPMF` on u1, run one after
the other, printed as one row: test RMSE, divergences, mean leapfrog steps per draw, R-hat and
bulk ESS of ``sigma`` and of the expected rating of a few held-out pairs, the total number of
gradient evaluations (warm-up + draws) and ESS(sigma) per 1000 of them, and the wall time split
into MAP / compile / sampling. Gradient counts do not depend on the load of the machine, so
ESS per 1000 gradients is the robust comparison; wall times are noisy on a shared machine.

A setting is a ``+``-joined list of tokens over a base of ``--draws`` / ``--tune`` / 2 chains and
BPMF's other defaults::

    default        BPMF's defaults (non-centred factors, partially centred biases, Gibbs
                   start, nutpie diagonal mass matrix)
    centered       model_config={"parameterization": "centered"}
    biasnc         model_config={"bias_parameterization": "noncentered"}
    nomeans        model_config={"factor_means": False}
    nobias         model_config={"biases": False} (factor means carry the user and item effects)
    mapstart       sampler_config={"init": "map"} (chains start at the jittered MAP)
    lowrank        sampler_config={"adaptation": "low_rank"} (nutpie low-rank mass matrix)
    drawdiag       sampler_config={"adaptation": "draw_diag"} (diagonal from draw variances)
    tuneN drawsN   tune / draws per chain, e.g. tune150
    fmsdX          model_config={"factor_mean_sd": X}, e.g. fmsd0.2
    etaX           model_config={"lkj_eta": X}, e.g. eta50
    sweepsN        init_sweeps: Gibbs sweeps from the MAP to each chain's start, e.g. sweeps300
    taNN           target_accept 0.NN, e.g. ta90
    depthN         max_treedepth N

BPMF calls ``nutpie.compile_pymc_model`` and ``nutpie.sample`` itself; the script wraps both to
time them and to keep the warm-up statistics (for the warm-up gradient count). The fit is
BPMF's own.

Usage::

    python bench/nuts_settings.py default centered centered+lowrank --tune 200 --draws 200
"""

import argparse
import contextlib
import os
import re
import subprocess
import sys
import time

import arviz as az
import numpy as np
import xarray as xr

from bpmf.datasets import load_movielens_folds, make_synthetic_ratings, train_test_split
from bpmf.metrics import rmse
from bpmf.models import BPMF

N_TEST_PAIRS = 20
FOUR_DIGITS = ("rmse", "rhat_sig", "rhat_pred_max")
COLUMNS = (
    "setting",
    "rmse",
    "div",
    "steps/draw",
    "rhat_sig",
    "ess_sig",
    "rhat_pred_max",
    "ess_pred_min",
    "ess_pred_med",
    "grad_evals",
    "ess_sig/1k_grad",
    "map_s",
    "compile_s",
    "sample_s",
    "total_s",
)


def parse_setting(spec, draws, tune):
    """``(model_config, sampler_config, nutpie_extra)`` for one ``+``-joined setting."""
    model_config, sampler_config, extra = {}, {"draws": draws, "tune": tune, "chains": 2}, {}
    for token in spec.split("+"):
        if token == "default":
            continue
        if token == "centered":
            model_config["parameterization"] = "centered"
        elif token == "noncentered":
            model_config["parameterization"] = "noncentered"
        elif token == "lowrank":
            sampler_config["adaptation"] = "low_rank"
        elif token == "drawdiag":
            sampler_config["adaptation"] = "draw_diag"
        elif token == "mapstart":
            sampler_config["init"] = "map"
        elif token == "nomeans":
            model_config["factor_means"] = False
        elif token == "nobias":
            model_config["biases"] = False
        elif token == "biasnc":
            model_config["bias_parameterization"] = "noncentered"
        elif match := re.fullmatch(r"(tune|draws|chains|depth|sweeps)(\d+)", token):
            key = {"depth": "max_treedepth", "sweeps": "init_sweeps"}.get(match[1], match[1])
            sampler_config[key] = int(match[2])
        elif match := re.fullmatch(r"eta([\d.]+)", token):
            model_config["lkj_eta"] = float(match[1])
        elif match := re.fullmatch(r"fmsd([\d.]+)", token):
            model_config["factor_mean_sd"] = float(match[1])
        elif match := re.fullmatch(r"ta(\d+)", token):
            sampler_config["target_accept"] = float("0." + match[1])
        else:
            raise ValueError(f"Unknown setting token {token!r} in {spec!r}; see --help.")
    return model_config, sampler_config, extra


@contextlib.contextmanager
def instrumented_sample(extra, record):
    """Wrap the nutpie calls BPMF makes: keep the warm-up statistics, add options, time them."""
    import nutpie

    original_compile, original_sample = nutpie.compile_pymc_model, nutpie.sample

    def compile_pymc_model(*args, **kwargs):
        start = time.perf_counter()
        compiled = original_compile(*args, **kwargs)
        record["compile_s"] = time.perf_counter() - start
        return compiled

    def sample(*args, **kwargs):
        kwargs.update(extra)
        kwargs["save_warmup"] = True
        start = time.perf_counter()
        tree = original_sample(*args, **kwargs)
        record["sampling_time"] = time.perf_counter() - start
        record["tree"] = tree
        return tree

    nutpie.compile_pymc_model, nutpie.sample = compile_pymc_model, sample
    try:
        yield
    finally:
        nutpie.compile_pymc_model, nutpie.sample = original_compile, original_sample


def _steps(stats):
    for name in ("n_steps", "tree_size"):
        if name in stats:
            return np.asarray(stats[name].values, dtype=float)
    return np.asarray(2.0 ** stats["depth"].values - 1, dtype=float)


def run(spec, split, draws, tune, seed):
    model_config, sampler_config, extra = parse_setting(spec, draws, tune)
    train, test = split
    model = BPMF(
        n_factors=10,
        model_config=model_config,
        sampler_config=sampler_config,
        random_state=seed,
        progressbar=False,
    )
    record = {}
    start = time.perf_counter()
    with instrumented_sample(extra, record):
        model.fit(train)
    total = time.perf_counter() - start
    tree = record["tree"]
    stats = tree["sample_stats"].ds
    warm = tree["warmup_sample_stats"].ds if "warmup_sample_stats" in tree.children else None
    steps = _steps(stats)
    grad_evals = steps.sum() + (_steps(warm).sum() if warm is not None else np.nan)

    posterior = model.idata_["posterior"].ds
    sigma = posterior[["sigma"]].drop_vars(
        [c for c in posterior.coords if c not in ("chain", "draw")], errors="ignore"
    )
    rhat_sigma = float(az.rhat(sigma)["sigma"])
    ess_sigma = float(az.ess(sigma, method="bulk")["sigma"])

    # expected rating of a few held-out pairs (users and items seen in training)
    users, items = model._encode_pairs(test.to_frame())
    seen = np.flatnonzero((users >= 0) & (items >= 0))
    rows = np.random.default_rng(0).choice(seen, N_TEST_PAIRS, replace=False)
    n_chains, n_draws = posterior.sizes["chain"], posterior.sizes["draw"]
    pred = model._expected_draws(users[rows], items[rows]).reshape(n_chains, n_draws, -1)
    pred_ds = xr.Dataset({"pred": (("chain", "draw", "pair"), pred)})
    rhat_pred = az.rhat(pred_ds)["pred"].values
    ess_pred = az.ess(pred_ds, method="bulk")["pred"].values

    test_rmse = rmse(test.values, model.predict(test.to_frame(), on_unseen="ignore"))
    sample_s = record["sampling_time"]
    return {
        "setting": spec,
        "rmse": test_rmse,
        "div": int(stats["diverging"].values.sum()),
        "steps/draw": float(steps.mean()),
        "rhat_sig": rhat_sigma,
        "ess_sig": ess_sigma,
        "rhat_pred_max": float(np.max(rhat_pred)),
        "ess_pred_min": float(np.min(ess_pred)),
        "ess_pred_med": float(np.median(ess_pred)),
        "grad_evals": int(grad_evals),
        "ess_sig/1k_grad": 1000 * ess_sigma / grad_evals,
        "map_s": total - record["compile_s"] - sample_s,  # MAP, Gibbs starts, graph, output
        "compile_s": record["compile_s"],
        "sample_s": sample_s,
        "total_s": total,
        "config": f"model_config={model_config} sampler_config={sampler_config} nutpie={extra}",
    }


def format_row(row):
    cells = []
    for key in COLUMNS:
        value = row[key]
        if isinstance(value, float):
            value = f"{value:.4f}" if key in FOUR_DIGITS else f"{value:.1f}"
        cells.append(str(value))
    return "| " + " | ".join(cells) + " |"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="+", help="settings to run, in order (see module doc)")
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--tune", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-home", default=os.environ.get("BPMF_DATA", "/work/shared/data"))
    parser.add_argument("--out", help="append the rows (markdown) to this file as they finish")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny synthetic data: checks the script"
    )
    args = parser.parse_args(argv)
    for spec in args.settings:  # fail on a typo before any fit
        parse_setting(spec, args.draws, args.tune)
    if args.smoke:
        ratings, _ = make_synthetic_ratings(60, 40, 2, 0.3, 0.5, random_state=0)
        split = train_test_split(ratings, test_size=0.2, random_state=0)
    else:
        split = load_movielens_folds("ml-100k", data_home=args.data_home)["u1"]
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)
    print(header, flush=True)
    for spec in args.settings:
        load_before = os.getloadavg()
        row = run(spec, split, args.draws, args.tune, args.seed)
        line = format_row(row)
        load = f"load {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}"
        print(line, flush=True)
        print(f"  {row['config']}; {load}", flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                stamp = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout
                fh.write(f"{line}\n<!-- {stamp.strip()}; {row['config']}; {load} -->\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
