"""Maximum a posteriori fits of the PMF model: L-BFGS on the PyMC log density, and
alternating least squares with the Gibbs row kernels."""

import numpy as np
import pytensor
import xarray as xr
from scipy import optimize
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from bpmf.inference.gibbs import check_inputs
from bpmf.inference.rows import available_cores, sample_side, workspace
from bpmf.kernels.rows import csr_pair

__all__ = ["alternating_least_squares", "fit_map"]

# numba compiles in seconds (the C backend takes ~10 s) and is what nutpie uses too.
_MODE = "NUMBA"


def fit_map(model, train, *, n_factors, config, random_state, progressbar):
    """L-BFGS MAP of a PMF ``model`` from a small random start; returns (point, result dataset).

    The log posterior (without Jacobian terms, as ``pm.find_MAP``) and its gradient are
    compiled once with the numba backend and handed to ``scipy.optimize.minimize`` over the
    unconstrained value variables.
    """
    rng = np.random.default_rng(random_state)
    init_sd = config["init_sd"]
    start = model.initial_point()
    start["U"] = rng.normal(0.0, init_sd, (train.n_users, n_factors))
    start["V"] = rng.normal(0.0, init_sd, (train.n_items, n_factors))
    start["mu"] = np.asarray(float(train.values.mean()))
    if "sigma" in model.named_vars:
        sigma_value = model.rvs_to_values[model["sigma"]].name
        start[sigma_value] = np.asarray(np.log(max(float(train.values.std()), 1e-3)))
    value_vars = model.value_vars
    shapes = [np.shape(start[v.name]) for v in value_vars]
    sizes = [int(np.prod(shape)) for shape in shapes]
    logp = model.logp(jacobian=False)
    logp_grad = pytensor.function(value_vars, [logp, *pytensor.grad(logp, value_vars)], mode=_MODE)

    def unpack(x):
        parts = np.split(x, np.cumsum(sizes)[:-1])
        return [part.reshape(shape) for part, shape in zip(parts, shapes, strict=True)]

    def objective(x):
        value, *grads = logp_grad(*unpack(x))
        return -float(value), -np.concatenate([np.ravel(g) for g in grads])

    x0 = np.concatenate([np.ravel(start[v.name]) for v in value_vars]).astype(np.float64)
    maxiter = int(config["maxiter"])
    # Multithreaded BLAS inside L-BFGS-B's small dense updates is ~30x slower on a busy machine.
    with (
        threadpool_limits(limits=1, user_api="blas"),
        tqdm(total=maxiter, desc="PMF MAP", disable=not progressbar, leave=False) as bar,
    ):
        result = optimize.minimize(
            objective,
            x0,
            jac=True,
            method="L-BFGS-B",
            callback=lambda *_: bar.update(),
            options={"maxiter": maxiter, "maxfun": 2 * maxiter},
        )
    names = ("U", "V", "mu", "sigma", "user_bias", "item_bias")
    wanted = [n for n in names if n in model.named_vars]
    to_point = pytensor.function(
        value_vars,
        model.replace_rvs_by_values([model[n] for n in wanted]),
        on_unused_input="ignore",
        mode=_MODE,
    )
    point = {
        name: np.asarray(value, dtype=np.float64)
        for name, value in zip(wanted, to_point(*unpack(result.x)), strict=True)
    }
    if "sigma" not in point:
        point["sigma"] = np.asarray(float(config["sigma"]))
    summary = xr.Dataset(
        {
            "neg_log_posterior": float(result.fun),
            "n_iterations": int(result.nit),
            "n_evaluations": int(result.nfev),
            "converged": bool(result.success),
            "message": str(result.message),
        }
    )
    return point, summary


def alternating_least_squares(
    user_codes,
    item_codes,
    ratings,
    n_users,
    n_items,
    *,
    n_factors,
    biases,
    factor_sd,
    bias_sd,
    mu_sd,
    sigma=None,
    sigma_sd=1.0,
    n_iter=30,
    tol=1e-6,
    random_state=None,
    init_sd=0.1,
    threads=None,
):
    """MAP of the PMF model by alternating exact row solves (ridge regressions).

    Each pass solves every user row given the items, then every item row given the users
    (the Gibbs row kernel with zero noise), then the intercept and the noise sd in closed
    form. The log posterior increases at every step; it stops after ``n_iter`` passes or
    when the relative change of the residual sum of squares falls below ``tol``.

    The rows of a side are solved on ``threads`` numba threads (None: every CPU; see
    :func:`bpmf.inference.rows.sample_side`); the result does not depend on it.

    Returns a dict with ``U``, ``V``, ``mu``, ``sigma`` and, with biases, ``user_bias`` and
    ``item_bias``, and the number of passes made.
    """
    user_codes, item_codes, ratings = check_inputs(
        user_codes, item_codes, ratings, n_users, n_items, 1, 0, 1
    )
    rng = np.random.default_rng(random_state)
    D = int(n_factors)
    shapes = (int(n_users), int(n_items), D)
    csrs = csr_pair(user_codes, item_codes, ratings, shapes[0], shapes[1])
    mean_rating = float(ratings.mean())
    state = {
        "U": rng.normal(0.0, init_sd, (shapes[0], D)),
        "V": rng.normal(0.0, init_sd, (shapes[1], D)),
        "mu": mean_rating,
        "user_bias": np.zeros(shapes[0]),
        "item_bias": np.zeros(shapes[1]),
        "user_bias_precision": 1.0 / bias_sd**2,
        "item_bias_precision": 1.0 / bias_sd**2,
    }
    sd = float(ratings.std()) if sigma is None else float(sigma)
    sd = max(sd, 1e-3)
    for side in ("U", "V"):
        state[f"mu_{side}"] = np.zeros(D)
    work = workspace(*shapes, biases)
    threads = available_cores() if threads is None else int(threads)
    n_ratings = ratings.shape[0]
    previous = np.inf
    n_passes = 0
    with threadpool_limits(limits=1, user_api="blas"):
        for n_passes in range(1, int(n_iter) + 1):  # noqa: B007 (returned)
            # the row solves of the MAP: precisions scaled by the noise variance
            state["tau"] = 1.0 / sd**2
            for side in ("U", "V"):
                state[f"Lambda_{side}"] = np.eye(D) / factor_sd**2
            sample_side(
                state, "U", csrs[0], biases, work["U"], None, False, noise=False, threads=threads
            )
            sum_errors, sum_squares = sample_side(
                state, "V", csrs[1], biases, work["V"], None, True, noise=False, threads=threads
            )
            # intercept: maximise -sum(e + mu_old - mu)^2 tau / 2 - (mu - rbar)^2 / 2 s^2
            prior_prec = 1.0 / mu_sd**2
            mu_old = state["mu"]
            state["mu"] = (
                prior_prec * mean_rating + state["tau"] * (sum_errors + n_ratings * mu_old)
            ) / (prior_prec + state["tau"] * n_ratings)
            shift = mu_old - state["mu"]
            sse = max(sum_squares + 2.0 * shift * sum_errors + n_ratings * shift**2, 0.0)
            if sigma is None:
                # argmax of -N log s - sse / 2 s^2 - s^2 / 2 sigma_sd^2 (the HalfNormal prior)
                root = np.sqrt(n_ratings**2 + 4.0 * sse / sigma_sd**2)
                s2 = 0.5 * sigma_sd**2 * (root - n_ratings)
                sd = max(float(np.sqrt(s2)), 1e-6)
            if abs(previous - sse) <= tol * max(sse, 1e-12):
                break
            previous = sse
    point = {
        "U": state["U"],
        "V": state["V"],
        "mu": np.asarray(state["mu"]),
        "sigma": np.asarray(sd),
    }
    if biases:
        point["user_bias"] = state["user_bias"]
        point["item_bias"] = state["item_bias"]
    return point, n_passes
