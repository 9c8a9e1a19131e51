"""Log-density + gradient time of a BPMF-like model: plain graph, fused PairDot, fused likelihood.

The model is representative of ``BPMF`` with NUTS: LKJ-Cholesky priors on the user and item
factor covariances, non-centred factors, user and item biases, a Normal likelihood. Three
variants of the same model are compiled for the C backend (``C``: ``FAST_RUN`` rewrites with
the ``cvm`` linker, what ``pm.sample``'s own NUTS used before PyTensor 3) and the numba backend
(``NUMBA``, what nutpie uses, and PyTensor 3's ``FAST_RUN`` default) and timed side by side
in one run at the same random points:

* ``naive``: plain PyTensor indexing for the bilinear term, ``pm.Normal(observed=...)``;
* ``fused``: the bilinear term through the fused ``PairDot`` Op, ``pm.Normal(observed=...)``;
* ``fused-lik``: the whole likelihood (value and every gradient in one pass over the ratings)
  through ``GaussianPairLogp`` in a ``pm.Potential``;
* ``bpmf``: the model ``BPMF`` itself samples (``BPMF(n_factors).build_model(train)`` with the
  default ``model_config``: fused likelihood, partially centred biases, Cholesky factors
  unpacked by a constant matrix). Its parameterisation differs from the three above, so its
  value is checked against the same model with ``fused_likelihood=False`` instead.

Each timing is the minimum over batches of calls, the variants taking turns batch by batch
(least disturbed by other load, and disturbed alike).

Usage::

    python bench/logp_speed.py                     # ML-100K fold u1 (needs the data home)
    python bench/logp_speed.py --synthetic 80000   # synthetic data of that size
    python bench/logp_speed.py --factors 10 --repeats 200
"""

import argparse
import time

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt

from bpmf.kernels.likelihood import gaussian_pair_logp
from bpmf.kernels.pair_dot import pair_dot, pair_dot_naive
from bpmf.models import BPMF

VARIANTS = ("naive", "fused", "fused-lik")


def load_codes(args):
    """(user_codes, item_codes, ratings, n_users, n_items, train, label)."""
    if args.synthetic:
        from bpmf.datasets import make_synthetic_ratings

        n_ratings = args.synthetic
        n_users = max(20, int(np.sqrt(n_ratings / 0.06) * 1.2))
        n_items = max(20, int(n_ratings / (0.06 * n_users)))
        train, _ = make_synthetic_ratings(
            n_users,
            n_items,
            n_factors=3,
            density=n_ratings / (n_users * n_items),
            random_state=0,
        )
        label = f"synthetic {train.n_ratings} ratings"
    else:
        from bpmf.datasets import load_movielens_folds

        train = load_movielens_folds("ml-100k", data_home=args.data_home, download=False)[
            "u1"
        ].train
        label = f"ML-100K u1 train ({train.n_ratings} ratings)"
    return (
        train.user_codes, train.item_codes, train.values, train.n_users, train.n_items, train, label
    )


def build_model(
    user_codes, item_codes, ratings, n_users, n_items, n_factors, bilinear, fused_likelihood=False
):
    """A BPMF-like model (LKJ priors, non-centred factors, biases) using ``bilinear``.

    With ``fused_likelihood`` the ratings enter through ``pm.Potential`` of
    :func:`~bpmf.models._likelihood.gaussian_pair_logp` (``bilinear`` is then unused).
    """
    coords = {
        "user": np.arange(n_users),
        "item": np.arange(n_items),
        "factor": np.arange(n_factors),
    }
    with pm.Model(coords=coords) as model:
        factors = {}
        for side, dim in (("U", "user"), ("V", "item")):
            chol, _, _ = pm.LKJCholeskyCov(
                f"chol_{side}",
                n=n_factors,
                eta=2.0,
                sd_dist=pm.HalfNormal.dist(1.0, shape=n_factors),
                compute_corr=True,
            )
            mean = pm.Normal(f"mu_{side}", 0.0, 1.0, dims="factor")
            raw = pm.Normal(f"{side}_raw", 0.0, 1.0, dims=(dim, "factor"))
            factors[side] = pm.Deterministic(side, mean + raw @ chol.T, dims=(dim, "factor"))
        mu = pm.Normal("mu", float(np.mean(ratings)), 1.0)
        user_bias_sd = pm.HalfNormal("user_bias_sd", 1.0)
        item_bias_sd = pm.HalfNormal("item_bias_sd", 1.0)
        user_bias = pm.Normal("user_bias", 0.0, user_bias_sd, dims="user")
        item_bias = pm.Normal("item_bias", 0.0, item_bias_sd, dims="item")
        sigma = pm.HalfNormal("sigma", 1.0)
        if fused_likelihood:
            pm.Potential(
                "rating",
                gaussian_pair_logp(
                    ratings,
                    mu,
                    factors["U"],
                    factors["V"],
                    user_bias,
                    item_bias,
                    sigma,
                    user_codes,
                    item_codes,
                ),
            )
            return model
        mean = (
            mu
            + user_bias[user_codes]
            + item_bias[item_codes]
            + bilinear(factors["U"], factors["V"], user_codes, item_codes)
        )
        pm.Normal("rating", mean, sigma, observed=ratings)
    return model


def compile_logp_dlogp(model, mode):
    """A function of the flat unconstrained point returning (logp, flat gradient)."""
    value_vars = model.value_vars
    logp = model.logp()
    grads = pt.grad(logp, value_vars)
    flat = pt.vector("flat", dtype="float64")
    ip = model.initial_point()
    replacements, offset = {}, 0
    for var in value_vars:
        size = int(np.prod(ip[var.name].shape))
        replacements[var] = flat[offset : offset + size].reshape(ip[var.name].shape)
        offset += size
    outputs = pytensor.graph.graph_replace(
        [logp, pt.concatenate([g.ravel() for g in grads])], replacements
    )
    if mode == "C":
        mode = pytensor.compile.mode.Mode(linker="cvm", optimizer="fast_run")
    fn = pytensor.function([flat], outputs, mode=mode)
    return fn, offset


def time_calls(fns, at, repeats, batches=10):
    """Per function: minimum over ``batches`` of the mean ms per call in a batch.

    ``at[name]`` lists the points function ``name`` is called at. The functions take turns
    batch by batch, so a burst of load from other processes hits them alike instead of
    whichever happened to be timed at that moment.
    """
    for name, fn in fns.items():
        fn(at[name][0])  # warm up
    per_batch = max(1, repeats // batches)
    best = dict.fromkeys(fns, np.inf)
    for _ in range(batches):
        for name, fn in fns.items():
            start = time.perf_counter()
            points = at[name]
            for r in range(per_batch):
                fn(points[r % len(points)])
            best[name] = min(best[name], (time.perf_counter() - start) / per_batch * 1e3)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--synthetic", type=int, default=0, help="synthetic ratings (0: ML-100K)")
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--modes", default="C,NUMBA", help="C and/or NUMBA")
    args = parser.parse_args(argv)

    codes = load_codes(args)
    label = codes[-1]
    print(f"data: {label}; factors: {args.factors}; repeats: {args.repeats}")
    rng = np.random.default_rng(0)
    rows = []
    points = None
    for mode in args.modes.split(","):
        fns, values = {}, {}
        for name in VARIANTS:
            bilinear = pair_dot_naive if name == "naive" else pair_dot
            model = build_model(
                *codes[:-2], args.factors, bilinear, fused_likelihood=name == "fused-lik"
            )
            fn, size = compile_logp_dlogp(model, mode)
            if points is None:
                points = [rng.normal(scale=0.3, size=size) for _ in range(5)]
            values[name] = fn(points[0])
            fns[name] = fn
        train = codes[-2]
        fns["bpmf"], size = compile_logp_dlogp(BPMF(args.factors).build_model(train), mode)
        textbook = BPMF(args.factors, model_config={"fused_likelihood": False})
        fn_textbook, _ = compile_logp_dlogp(textbook.build_model(train), mode)
        bpmf_points = [rng.normal(scale=0.3, size=size) for _ in range(5)]
        bpmf_value, textbook_value = fns["bpmf"](bpmf_points[0]), fn_textbook(bpmf_points[0])
        bpmf_diff = (
            abs(float(bpmf_value[0]) - float(textbook_value[0])),
            float(np.max(np.abs(bpmf_value[1] - textbook_value[1]))),
        )
        at = dict.fromkeys(VARIANTS, points) | {"bpmf": bpmf_points}  # its own parameter vector
        timings = time_calls(fns, at, args.repeats)
        logp_diff = max(
            abs(float(values["naive"][0]) - float(values[name][0])) for name in VARIANTS[1:]
        )
        grad_diff = max(
            float(np.max(np.abs(values["naive"][1] - values[name][1]))) for name in VARIANTS[1:]
        )
        rows.append((mode, timings, logp_diff, grad_diff, bpmf_diff))
    print(
        f"{'backend':<10}{'naive ms':>10}{'fused ms':>10}{'fused-lik ms':>14}{'bpmf ms':>9}"
        f"{'fused x':>9}{'lik x':>8}{'bpmf x':>8}{'|dlogp|':>11}{'max|dgrad|':>12}"
        f"{'bpmf |dlogp|':>14}{'bpmf max|dgrad|':>17}"
    )
    for mode, timings, logp_diff, grad_diff, bpmf_diff in rows:
        naive = timings["naive"]
        print(
            f"{mode:<10}{naive:>10.3f}{timings['fused']:>10.3f}{timings['fused-lik']:>14.3f}"
            f"{timings['bpmf']:>9.3f}"
            f"{naive / timings['fused']:>8.1f}x{naive / timings['fused-lik']:>7.1f}x"
            f"{naive / timings['bpmf']:>7.1f}x"
            f"{logp_diff:>11.1e}{grad_diff:>12.1e}{bpmf_diff[0]:>14.1e}{bpmf_diff[1]:>17.1e}"
        )


if __name__ == "__main__":
    main()
