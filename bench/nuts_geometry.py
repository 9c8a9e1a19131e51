"""Which parameters set NUTS's step size: the posterior's curvature in the sampler's own metric.

NUTS on BPMF takes ~127 leapfrog steps per draw on ML-100K u1 (tree depth 7 on every draw).
The step size is bounded by the stiffest direction of the posterior *after* the adapted
diagonal mass matrix has rescaled every coordinate to its marginal spread, and the trajectory
length by the widest one. This script measures both at a posterior draw:

1. fits :class:`bpmf.BPMF` on fold u1 with nutpie (the settings tokens of
   ``bench/nuts_settings.py``), keeping the adapted mass matrix ``M^-1`` (the last one of the
   warm-up) and the unconstrained draws;
2. builds the model's log-density and gradient over nutpie's flat unconstrained vector
   (``logp_speed.compile_logp_dlogp``: the same layout, ``model.free_RVs`` in order) and
   checks the gradient against the one nutpie stored for the draw;
3. with ``scipy.sparse.linalg.eigsh`` (Lanczos) on central finite-difference Hessian-vector
   products finds the largest and smallest eigenvalues of ``-S H S`` at the last draw of
   chain 0, with ``S = diag(sqrt(M^-1))``: the curvature in whitened coordinates, where a
   perfectly adapted diagonal metric gives eigenvalues near 1;
4. prints, for each extreme eigenvector, the share of its squared length on each variable
   (and on the largest entries), which names the parameters the extreme direction moves.

With ``--fix NAMES`` it then samples the model again with those variables fixed at the last
draw of chain 0 (``pymc.do``; e.g. ``--fix mu,mu_U,mu_V,chol_U,chol_V`` conditions on every
global parameter of the factors) and prints the leapfrog steps per draw of the conditional:
how much of the trajectory length the fixed variables account for.

An eigenvalue ``lambda`` is a local posterior sd of ``1 / sqrt(lambda)`` in the metric; the
leapfrog integrator is unstable on a Gaussian once the step exceeds twice the smallest sd.
Local curvature at one draw is not the global covariance (negative eigenvalues mark funnel-
like regions), so read the output as a map of *which* parameters are stiff, not as a precise
condition number.

Usage::

    python bench/nuts_geometry.py                      # BPMF defaults, seed 1
    python bench/nuts_geometry.py nomeans --tune 300
    python bench/nuts_geometry.py --fix mu,mu_U,mu_V,chol_U,chol_V
    python bench/nuts_geometry.py --smoke              # tiny synthetic data: checks the script
"""

import argparse
import os
import sys
import time

import numpy as np

from bpmf.datasets import load_movielens_folds, make_synthetic_ratings, train_test_split
from bpmf.models import BPMF

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from logp_speed import compile_logp_dlogp  # noqa: E402
from nuts_settings import instrumented_sample, parse_setting  # noqa: E402


class _CapturingBPMF(BPMF):
    """BPMF that keeps the ``pm.Model`` it sampled (``model_``)."""

    def build_model(self, train):
        self.model_ = super().build_model(train)
        return self.model_


def flat_layout(model):
    """``(name, slice, shape)`` of each value variable in the flat unconstrained vector.

    ``model.value_vars`` follow ``model.free_RVs``: the layout of nutpie's flat vector and of
    ``logp_speed.compile_logp_dlogp``'s input (checked against nutpie's gradient in ``main``).
    """
    point = model.initial_point()
    layout, offset = [], 0
    for value in model.value_vars:
        shape = np.shape(point[value.name])
        size = int(np.prod(shape))
        layout.append((value.name, slice(offset, offset + size), shape))
        offset += size
    return layout


def whitened_hessian(fn, x0, scale, step=1e-4):
    """LinearOperator ``v -> -S H S v`` by central differences of the gradient at ``x0``."""
    import scipy.sparse.linalg as sla

    def matvec(v):
        norm = np.linalg.norm(v)
        if norm == 0:
            return np.zeros_like(v)
        d = scale * (v / norm)
        g_plus, g_minus = fn(x0 + step * d)[1], fn(x0 - step * d)[1]
        return -norm * scale * (g_plus - g_minus) / (2 * step)

    n = x0.size
    return sla.LinearOperator((n, n), matvec=matvec, dtype=np.float64)


def describe(vector, layout, n_top=6):
    shares = [(name, float(np.sum(vector[sl] ** 2))) for name, sl, _ in layout]
    parts = ", ".join(f"{name} {share:.2f}" for name, share in shares if share >= 0.01)
    top = np.argsort(-np.abs(vector))[:n_top]
    entries = []
    for index in top:
        name, sl, _ = next(item for item in layout if item[1].start <= index < item[1].stop)
        entries.append(f"{name}[{index - sl.start}] {vector[index]:+.2f}")
    return parts, ", ".join(entries)


def conditional_steps(bpmf, names, tune, draws, seed):
    """Steps per draw of NUTS on the model with ``names`` fixed at the last draw of chain 0."""
    import nutpie
    import pymc as pm

    model = bpmf.model_
    posterior = bpmf.idata_["posterior"].ds
    fixed = {}
    for name in names:
        if name.startswith("chol_"):  # LKJCholeskyCov's packed lower triangle
            cov = posterior[f"Sigma_{name[5:]}"].values[0, -1]
            rows, cols = np.tril_indices(cov.shape[0])
            fixed[model[name]] = np.linalg.cholesky(cov)[rows, cols]
        else:
            fixed[model[name]] = posterior[name].values[0, -1]
    compiled = nutpie.compile_pymc_model(pm.do(model, fixed))
    tree = nutpie.sample(compiled, tune=tune, draws=draws, chains=2, seed=seed,
                         target_accept=0.9, progress_bar=False)
    stats = tree["sample_stats"].ds
    depths = np.bincount(stats["depth"].values.ravel())
    return (float(stats["n_steps"].values.mean()), float(stats["step_size"].values.mean()),
            {d: int(c) for d, c in enumerate(depths) if c}, int(stats["diverging"].values.sum()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("setting", nargs="?", default="default", help="nuts_settings tokens")
    parser.add_argument("--tune", type=int, default=300)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--k", type=int, default=6, help="eigenvalues at each end")
    parser.add_argument("--data-home", default=os.environ.get("BPMF_DATA", "/work/shared/data"))
    parser.add_argument("--fix", default="", help="comma-separated variables to condition on")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic data")
    args = parser.parse_args(argv)

    model_config, sampler_config, extra = parse_setting(args.setting, args.draws, args.tune)
    extra.update(store_mass_matrix=True, store_unconstrained=True, store_gradient=True)
    if args.smoke:
        ratings, _ = make_synthetic_ratings(60, 40, 2, 0.3, 0.5, random_state=0)
        train, _ = train_test_split(ratings, test_size=0.2, random_state=0)
        n_factors = 2
    else:
        train, _ = load_movielens_folds("ml-100k", data_home=args.data_home)["u1"]
        n_factors = 10
    bpmf = _CapturingBPMF(n_factors, model_config=model_config, sampler_config=sampler_config,
                          random_state=args.seed, progressbar=False)
    record = {}
    with instrumented_sample(extra, record):
        bpmf.fit(train)
    tree = record["tree"]
    stats = tree["sample_stats"].ds
    warm = tree["warmup_sample_stats"].ds
    masses = warm["mass_matrix_inv"].values[0]
    finite = np.flatnonzero(np.all(np.isfinite(masses), axis=1))
    scale = np.sqrt(masses[finite[-1]])
    x0 = stats["unconstrained_draw"].values[0, -1]
    print(f"setting {args.setting!r}: {scale.size} unconstrained parameters, step size "
          f"{stats['step_size'].values.mean():.4f}, {stats['n_steps'].values.mean():.1f} "
          f"leapfrog steps per draw")

    fn, _ = compile_logp_dlogp(bpmf.model_, "NUMBA")
    layout = flat_layout(bpmf.model_)
    stored = stats["gradient"].values[0, -1]
    mismatch = float(np.max(np.abs(fn(x0)[1] - stored)))
    print(f"gradient vs nutpie's at the draw: max abs difference {mismatch:.2e}")
    if mismatch > 1e-6 * max(1.0, float(np.max(np.abs(stored)))):
        raise SystemExit("the flat layout does not match nutpie's; the spectrum would be wrong")

    import scipy.sparse.linalg as sla

    operator = whitened_hessian(fn, x0, scale)
    k = min(args.k, scale.size - 2)
    rng = np.random.default_rng(0)
    v1, v2 = rng.standard_normal(scale.size), rng.standard_normal(scale.size)
    asym = abs(v1 @ operator.matvec(v2) - v2 @ operator.matvec(v1))
    print(f"finite-difference symmetry |v1.Hv2 - v2.Hv1| / |v1.Hv2| = "
          f"{asym / abs(v1 @ operator.matvec(v2)):.1e}")
    start = time.perf_counter()
    top, top_vectors = sla.eigsh(operator, k=k, which="LA", tol=1e-3)
    shift = 1.05 * float(top.max())
    shifted = sla.LinearOperator(operator.shape, dtype=np.float64,
                                 matvec=lambda v: shift * v - operator.matvec(v))
    low, low_vectors = sla.eigsh(shifted, k=k, which="LA", tol=1e-4, maxiter=20_000)
    low = shift - low
    print(f"Lanczos: {time.perf_counter() - start:.0f} s")
    print("\nstiffest directions (largest eigenvalues; local sd = 1/sqrt):")
    for j in np.argsort(-top):
        parts, entries = describe(top_vectors[:, j], layout)
        print(f"  {top[j]:10.4g} (sd {1 / np.sqrt(top[j]):.4f}): {parts}\n      {entries}")
    print("\nsoftest directions (smallest eigenvalues; negative = locally non-convex):")
    for j in np.argsort(low):
        parts, entries = describe(low_vectors[:, j], layout)
        print(f"  {low[j]:10.4g}: {parts}\n      {entries}")
    if args.fix:
        names = [name.strip() for name in args.fix.split(",") if name.strip()]
        steps, step_size, depths, divergences = conditional_steps(
            bpmf, names, args.tune, 100, args.seed
        )
        print(f"\nwith {', '.join(names)} fixed at the draw (2 chains, {args.tune} tune + 100 "
              f"draws): {steps:.1f} steps per draw, step size {step_size:.4f}, tree depths "
              f"{depths}, {divergences} divergences")
    return 0


if __name__ == "__main__":
    sys.exit(main())
