"""How cost grows with the number of ratings: 10^4 to 10^7 synthetic ratings, 10 factors.

For each size (users = ratings / 50 and items = ratings / 100, so both grow with the data) a
fresh subprocess draws synthetic ratings and measures

* ``grad ms``: the median (and the minimum) over repeated calls of one log-density +
  gradient evaluation of the biased matrix-factorisation model
  (Normal priors, the fused Gaussian likelihood ``GaussianPairLogp`` of the models) compiled
  with the numba backend, data passed as function inputs, with the ratings in the order
  that ``PMF`` and ``BPMF`` impose when they build their graphs (``user_run_order``: blocks
  of items whose rows fit a 4 MiB share of the L3 cache, pairs sorted by user and item
  within a block, so the SIMD row kernel keeps each user's row in registers for the run);
  ``grad ms (random)`` is the same with the ratings in random order, where every pair
  touches a random row of ``U`` and of ``V``;
* ``gibbs s``: one sweep of the conjugate Gibbs sampler: the time of ``1 + k`` sweeps minus
  that of one sweep (each the faster of two runs), divided by ``k``, which leaves out the
  once-per-fit setup (input checks, grouping the ratings by user and by item, the starting
  point); the setup, and the time to compute the pair order, are printed after
  the table;
* ``map ms/it``: one L-BFGS-B iteration on that log-density (scipy, as ``PMF`` does);
* ``peak MiB``: the subprocess's peak resident memory (data + compiled functions + draws).

It then prints each quantity's growth per 10x more ratings; linear cost gives about 10x.

A second table (``--sweep-sizes``, 10^6 to 10^8 ratings by default) measures the Gibbs sweep
of the package's default model (LKJ prior, biases, 10 factors, one chain) on every core: the
seconds per sweep with one thread and with all the CPUs (the rows of a side drawn by blocks in
parallel; the draws are the same), their ratio, and the peak resident memory of a fit that
keeps what a large fit should (``keep="moments"``: running moments of the rows, one retained
draw of them, every draw of the scalars). Seconds per sweep are the time of a fit of ``1 + k``
sweeps minus that of one sweep, divided by ``k``; each fit runs ``REPEATS`` times, one thread
and all threads interleaved, and the fastest run counts. Its synthetic ratings are drawn lean
(uniform user and item codes, a rank-3 truth, no de-duplication), so that 10^8 ratings fit in
memory.

Usage::

    python bench/scaling.py                      # 1e4, 1e5, 1e6, 1e7; then the sweep table
    python bench/scaling.py --sizes 10000,100000 --sweep-sizes 1000000
    python bench/scaling.py --sizes none         # the sweep table only
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

N_FACTORS = 10
#: timed runs of each sweep-table fit; the fastest counts
REPEATS = 3


def build_logp_grad(n_users, n_items, n_factors):
    """Compiled f(flat_params, user_codes, item_codes, ratings) -> (logp, grad)."""
    import pytensor
    import pytensor.tensor as pt

    from bpmf.kernels.likelihood import gaussian_pair_logp

    flat = pt.vector("flat", dtype="float64")
    user_codes = pt.vector("user_codes", dtype="int64")
    item_codes = pt.vector("item_codes", dtype="int64")
    ratings = pt.vector("ratings", dtype="float64")
    sizes = [n_users * n_factors, n_items * n_factors, n_users, n_items, 1, 1]
    parts, offset = [], 0
    for size in sizes:
        parts.append(flat[offset : offset + size])
        offset += size
    U = parts[0].reshape((n_users, n_factors))
    V = parts[1].reshape((n_items, n_factors))
    user_bias, item_bias = parts[2], parts[3]
    mu, log_sigma = parts[4][0], parts[5][0]
    loglik = gaussian_pair_logp(
        ratings, mu, U, V, user_bias, item_bias, pt.exp(log_sigma), user_codes, item_codes
    )
    logp = (
        loglik
        + log_sigma  # log-Jacobian of sigma = exp(log_sigma), as in a PyMC model
        - 0.5 * (pt.sum(U**2) + pt.sum(V**2))
        - 0.5 * (pt.sum(user_bias**2) + pt.sum(item_bias**2))
        - 0.5 * log_sigma**2
    )
    fn = pytensor.function(
        [flat, user_codes, item_codes, ratings], [logp, pt.grad(logp, flat)], mode="NUMBA"
    )
    return fn, offset


def worker(n_ratings, seed=0):
    from scipy.optimize import minimize

    from bpmf.datasets import make_synthetic_ratings
    from bpmf.inference.gibbs import sample_gibbs
    from bpmf.kernels.order import user_run_order

    n_users, n_items = max(20, n_ratings // 50), max(10, n_ratings // 100)
    start = time.perf_counter()
    train, _ = make_synthetic_ratings(
        n_users,
        n_items,
        n_factors=3,
        density=n_ratings / (n_users * n_items),
        random_state=seed,
    )
    data_seconds = time.perf_counter() - start
    n_users, n_items = train.n_users, train.n_items
    random_order = np.random.default_rng(seed).permutation(train.n_ratings)
    # as the models; the first call also loads the compiled sort, so the second one is timed
    tiled = user_run_order(train.user_codes, train.item_codes, n_users, n_items)
    start = time.perf_counter()
    user_run_order(train.user_codes, train.item_codes, n_users, n_items)
    order_seconds = time.perf_counter() - start
    user_codes = train.user_codes.astype(np.int64)[tiled]
    item_codes = train.item_codes.astype(np.int64)[tiled]
    ratings = train.values[tiled]

    fn, size = build_logp_grad(n_users, n_items, N_FACTORS)
    rng = np.random.default_rng(seed)
    point = 0.1 * rng.standard_normal(size)
    fn(point, user_codes, item_codes, ratings)  # compile / warm up
    repeats = max(5, min(200, int(2e7 // n_ratings)))

    def call_ms(*inputs):  # each call timed on its own: median and minimum
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(point, *inputs)
            times.append(time.perf_counter() - start)
        return 1e3 * float(np.median(times)), 1e3 * float(np.min(times))

    grad_ms, grad_min_ms = call_ms(user_codes, item_codes, ratings)
    shuffled = [a[random_order] for a in (user_codes, item_codes, ratings)]
    fn(point, *shuffled)
    grad_random_ms, _ = call_ms(*shuffled)
    del shuffled

    def negative(x):
        value, grad = fn(x, user_codes, item_codes, ratings)
        return -float(value), -grad

    start = time.perf_counter()
    result = minimize(negative, point, jac=True, method="L-BFGS-B", options={"maxiter": 10})
    map_ms = (time.perf_counter() - start) / max(result.nit, 1) * 1e3

    gibbs_args = dict(
        n_factors=N_FACTORS,
        tune=0,
        chains=1,
        biases=True,
        covariance_prior="wishart",
        model_config=_model_config("wishart"),
        init=None,
        random_state=seed,
        progressbar=False,
    )
    sample_gibbs(
        user_codes[:100], item_codes[:100], ratings[:100], n_users, n_items, draws=1, **gibbs_args
    )  # load the numba kernels
    sweeps = 2 if n_ratings >= 1_000_000 else 5
    args = (user_codes, item_codes, ratings, n_users, n_items)

    def gibbs_seconds(draws):  # the faster of two runs: a load burst on the machine hits one
        seconds = []
        for _ in range(2):
            start = time.perf_counter()
            sample_gibbs(*args, draws=draws, **gibbs_args)
            seconds.append(time.perf_counter() - start)
        return min(seconds)

    one_sweep_s = gibbs_seconds(1)
    gibbs_s = (gibbs_seconds(1 + sweeps) - one_sweep_s) / sweeps
    gibbs_setup_s = one_sweep_s - gibbs_s

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "ratings": int(train.n_ratings),
        "users": int(n_users),
        "items": int(n_items),
        "grad_ms": grad_ms,
        "grad_min_ms": grad_min_ms,
        "grad_random_ms": grad_random_ms,
        "gibbs_s": gibbs_s,
        "gibbs_setup_s": gibbs_setup_s,
        "order_s": order_seconds,
        "map_ms_per_it": map_ms,
        "peak_mib": peak_mib,
        "data_s": data_seconds,
    }


def _model_config(covariance_prior):
    """BPMF's resolved default priors for one covariance prior."""
    from bpmf.models import BPMF

    return BPMF(N_FACTORS, model_config={"covariance_prior": covariance_prior})._model_config()


def lean_ratings(n_ratings, seed=0, chunk=10_000_000):
    """Codes and ratings of a rank-3 biased model, drawn chunk by chunk (int64, float64)."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(20, n_ratings // 50), max(10, n_ratings // 100)
    U, V = rng.normal(size=(n_users, 3)), rng.normal(size=(n_items, 3))
    user_bias, item_bias = 0.3 * rng.normal(size=n_users), 0.3 * rng.normal(size=n_items)
    user_codes = rng.integers(0, n_users, n_ratings)
    item_codes = rng.integers(0, n_items, n_ratings)
    ratings = np.empty(n_ratings)
    for start in range(0, n_ratings, chunk):
        u, i = user_codes[start : start + chunk], item_codes[start : start + chunk]
        ratings[start : start + chunk] = (
            3.5
            + user_bias[u]
            + item_bias[i]
            + np.einsum("nk,nk->n", U[u], V[i])
            + 0.5 * rng.normal(size=len(u))
        )
    return user_codes, item_codes, ratings, n_users, n_items


def sweep_worker(n_ratings, seed=0):
    """Seconds per Gibbs sweep with 1 thread and with every CPU; peak memory."""
    from bpmf.inference.gibbs import sample_gibbs
    from bpmf.inference.rows import available_cores

    start = time.perf_counter()
    user_codes, item_codes, ratings, n_users, n_items = lean_ratings(n_ratings, seed)
    data_seconds = time.perf_counter() - start
    args = (user_codes, item_codes, ratings, n_users, n_items)
    config = _model_config("lkj")
    common = dict(
        n_factors=N_FACTORS,
        tune=0,
        chains=1,
        biases=True,
        covariance_prior="lkj",
        model_config=config,
        random_state=seed,
        progressbar=False,
        keep="moments",
        factor_draws=1,
    )
    sample_gibbs(*(a[:1000] for a in args[:3]), n_users, n_items, draws=1, **common)  # load
    cores = available_cores()
    sweeps = 3 if n_ratings >= 10_000_000 else 6
    result = {"ratings": n_ratings, "users": n_users, "items": n_items, "cores": cores}
    # each fit timed REPEATS times, one thread and all threads interleaved so that both see the
    # same machine; the fastest of the repeats counts (a burst of load hits single runs)
    seconds = {}
    for _ in range(REPEATS):
        for threads in (1, cores):
            for draws in (1, 1 + sweeps):
                start = time.perf_counter()
                sample_gibbs(*args, draws=draws, threads=threads, **common)
                elapsed = time.perf_counter() - start
                key = (threads, draws)
                seconds[key] = min(seconds.get(key, np.inf), elapsed)
    for label, threads in (("one", 1), ("all", cores)):
        result[f"sweep_{label}_s"] = (seconds[threads, 1 + sweeps] - seconds[threads, 1]) / sweeps
        result[f"setup_{label}_s"] = seconds[threads, 1] - result[f"sweep_{label}_s"]
    result["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    result["data_s"] = data_seconds
    return result


def run_workers(flag, sizes, label=""):
    """One fresh subprocess per size (``--worker`` or ``--sweep-worker``); their results."""
    rows = []
    for size in sizes:
        print(f"{size:.0e} ratings{label} ...", flush=True)
        done = subprocess.run(
            [sys.executable, __file__, flag, str(size)], capture_output=True, text=True
        )
        if done.returncode != 0:
            print(done.stderr[-2000:])
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def sweep_table(sizes):
    rows = run_workers("--sweep-worker", sizes, " (sweep)")
    if not rows:
        return
    cores = rows[0]["cores"]
    print(
        f"\nGibbs sweep, default model (LKJ, biases, {N_FACTORS} factors), one chain, "
        f'keep="moments"; {cores} CPUs'
    )
    print(
        f"{'ratings':>11}{'users':>10}{'items':>10}{'s/sweep 1 thr':>15}"
        f"{f's/sweep {cores} thr':>15}{'speed-up':>10}{'setup s':>9}{'peak GiB':>10}"
    )
    for row in rows:
        print(
            f"{row['ratings']:>11}{row['users']:>10}{row['items']:>10}{row['sweep_one_s']:>15.3f}"
            f"{row['sweep_all_s']:>15.3f}{row['sweep_one_s'] / row['sweep_all_s']:>9.2f}x"
            f"{row['setup_all_s']:>9.1f}{row['peak_gib']:>10.2f}"
        )
    print("growth per 10x ratings (linear = 10x):")
    for previous, row in zip(rows, rows[1:], strict=False):
        factor = row["ratings"] / previous["ratings"]
        print(
            f"{previous['ratings']:>11} -> {row['ratings']:<11} (x{factor:.0f}): "
            f"sweep 1 thread x{row['sweep_one_s'] / previous['sweep_one_s']:.1f}, "
            f"{cores} threads x{row['sweep_all_s'] / previous['sweep_all_s']:.1f}, "
            f"memory x{row['peak_gib'] / previous['peak_gib']:.1f}"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000,10000000")
    parser.add_argument("--sweep-sizes", default="1000000,10000000,100000000")
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--sweep-worker", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    if args.sweep_worker:
        print(json.dumps(sweep_worker(args.sweep_worker)))
        return
    if args.sizes != "none":
        size_table([int(s) for s in args.sizes.split(",")])
    if args.sweep_sizes != "none":
        sweep_table([int(s) for s in args.sweep_sizes.split(",")])


def size_table(sizes):
    rows = run_workers("--worker", sizes)

    header = (
        f"{'ratings':>10}{'users':>9}{'items':>9}{'grad ms':>10}{'(min)':>9}{'(random)':>10}"
        f"{'gibbs s':>10}{'map ms/it':>11}{'peak MiB':>10}"
    )
    print(header)
    for row in rows:
        print(
            f"{row['ratings']:>10}{row['users']:>9}{row['items']:>9}{row['grad_ms']:>10.2f}"
            f"{row['grad_min_ms']:>9.2f}"
            f"{row['grad_random_ms']:>10.2f}{row['gibbs_s']:>10.3f}"
            f"{row['map_ms_per_it']:>11.1f}{row['peak_mib']:>10.0f}"
        )
    print("\ngrowth per 10x ratings (linear = 10x):")
    for previous, row in zip(rows, rows[1:], strict=False):
        factor = row["ratings"] / previous["ratings"]
        print(
            f"{previous['ratings']:>10} -> {row['ratings']:<10} (x{factor:.1f}): "
            f"grad x{row['grad_ms'] / previous['grad_ms']:.1f} "
            f"(min x{row['grad_min_ms'] / previous['grad_min_ms']:.1f}; "
            f"random order x{row['grad_random_ms'] / previous['grad_random_ms']:.1f}), "
            f"gibbs x{row['gibbs_s'] / previous['gibbs_s']:.1f}, "
            f"map x{row['map_ms_per_it'] / previous['map_ms_per_it']:.1f}, "
            f"memory x{row['peak_mib'] / previous['peak_mib']:.1f}"
        )
    print("\nonce per fit, seconds (growth per 10x):")
    for key, label in (("gibbs_setup_s", "Gibbs setup"), ("order_s", "user_run_order")):
        cells = [f"{row[key]:.3f}" for row in rows]
        growth = [f"x{b[key] / a[key]:.1f}" for a, b in zip(rows, rows[1:], strict=False)]
        print(f"{label:>22}: {' '.join(cells)} ({' '.join(growth)})")


if __name__ == "__main__":
    main()
