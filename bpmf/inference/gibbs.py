r"""Blocked Gibbs sampler for Bayesian probabilistic matrix factorisation.

One sweep of a chain draws, in turn:

1. each side's factor mean and covariance given its rows (the hyperparameter step of the
   covariance prior, :mod:`bpmf.inference.hyperpriors`: NUTS on the LKJ Cholesky factor's
   conditional, or the conjugate Normal-Wishart draw of Salakhutdinov & Mnih);
2. every user's factor vector jointly with the user's bias, then every item's, from their
   Gaussian conditionals (:func:`bpmf.kernels.rows.sample_rows`, one ``(D+1) x (D+1)``
   Cholesky factorisation per row);
3. the intercept (Gaussian), the noise precision and the two bias precisions;
4. moves that leave the likelihood unchanged: three translations (the generalised Gibbs steps
   of Liu & Sabatti, 2000): ``(mu + d, b - d)`` for the users' and the items' biases,
   ``(mu_U + e, U_u + e, c_i - e . V_i)`` and ``(mu_V + f, V_i + f, b_u - U_u . f)``, each
   shift drawn from its Gaussian conditional. The global level is shared by ``mu``, the
   mean of the biases and ``mu_U . mu_V``, and ``mu_U . V_i`` acts as a second item bias;
   single-site updates move along those directions only by small steps, and the shifts move
   along them in one draw; and, with the LKJ prior, a rescaling of each factor between the
   two sides (``U[:, k] g``, ``V[:, k] / g``), which the priors alone identify.

Every step leaves the posterior invariant, so the chain samples exactly the model's posterior.
Chains run in parallel threads (the compiled kernels release the GIL), each with its own
:class:`numpy.random.Generator` spawned from ``random_state``: the draws do not depend on the
number of threads or on which thread runs which chain.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from bpmf._config import resolve_progressbar
from bpmf.inference.hyperpriors import WISHART_WARMUP, LKJHyperpriors, WishartHyperpriors
from bpmf.inference.rows import sample_side, workspace
from bpmf.kernels.rows import aligned_zeros, csr_pair, sample_rows

__all__ = ["check_inputs", "sample_gibbs"]


def check_inputs(user_codes, item_codes, ratings, n_users, n_items, draws, tune, chains):
    user_codes = np.asarray(user_codes)
    item_codes = np.asarray(item_codes)
    ratings = np.asarray(ratings, dtype=float)
    if not (user_codes.ndim == item_codes.ndim == ratings.ndim == 1):
        raise ValueError("user_codes, item_codes and ratings must be 1-d arrays")
    if not (len(user_codes) == len(item_codes) == len(ratings)):
        raise ValueError(
            f"user_codes, item_codes and ratings differ in length: {len(user_codes)}, "
            f"{len(item_codes)}, {len(ratings)}"
        )
    if len(ratings) == 0:
        raise ValueError("no ratings to fit")
    for name, codes, n in (
        ("user_codes", user_codes, n_users),
        ("item_codes", item_codes, n_items),
    ):
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"{name} must be integer codes, got dtype {codes.dtype}")
        if codes.min() < 0 or codes.max() >= n:
            raise ValueError(f"{name} must lie in [0, {n}); got [{codes.min()}, {codes.max()}]")
    if not np.all(np.isfinite(ratings)):
        raise ValueError("ratings contain NaN or infinite values")
    for name, value, low in (("draws", draws, 1), ("tune", tune, 0), ("chains", chains, 1)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return user_codes.astype(np.int64), item_codes.astype(np.int64), ratings


def _initial_state(init, shapes, biases, ratings, jitter, rng):
    """A chain's start: ``init`` (e.g. the MAP) plus a small jitter, or small random factors."""
    n_users, n_items, n_factors = shapes
    if init is None:
        return {
            "U": 0.1 * rng.standard_normal((n_users, n_factors)),
            "V": 0.1 * rng.standard_normal((n_items, n_factors)),
            "mu": float(ratings.mean()),
            "tau": 1.0 / max(float(ratings.var()), 1e-2),
            "user_bias": np.zeros(n_users),
            "item_bias": np.zeros(n_items),
        }
    required = ["U", "V", "mu", "sigma"] + (["user_bias", "item_bias"] if biases else [])
    missing = [key for key in required if key not in init]
    if missing:
        raise ValueError(f"init is missing {missing}; give the MAP arrays {required}")
    expected = {
        "U": (n_users, n_factors),
        "V": (n_items, n_factors),
        "user_bias": (n_users,),
        "item_bias": (n_items,),
    }
    state = {
        "mu": float(np.asarray(init["mu"]).reshape(())),
        "tau": 1.0 / float(np.asarray(init["sigma"]).reshape(())) ** 2,
        "user_bias": np.zeros(n_users),
        "item_bias": np.zeros(n_items),
    }
    for name in required:
        if name not in expected:
            continue
        values = np.asarray(init[name], dtype=float)
        if values.shape != expected[name]:
            raise ValueError(f"init[{name!r}] has shape {values.shape}; expected {expected[name]}")
        scale = jitter * (values.std() if values.size > 1 else abs(values).max() + 1e-3)
        state[name] = values + scale * rng.standard_normal(values.shape)
    return state


def _shift_moves(state, hyper, biases, config, rng):
    """The translation moves of the module docstring; the fitted values do not change."""
    if not biases:
        return
    # (mu + d, b - d): Gaussian in d from the intercept's prior and the biases' prior
    prior_prec = 1.0 / config["mu_sd"] ** 2
    for bias in ("user_bias", "item_bias"):
        b = state[bias]
        lam = state[f"{bias}_precision"]
        precision = prior_prec + b.shape[0] * lam
        linear = -prior_prec * (state["mu"] - config["intercept_mean"]) + lam * b.sum()
        d = linear / precision + rng.standard_normal() / np.sqrt(precision)
        state["mu"] += d
        state[bias] = b - d
    # (mu_U + e, U + e, c - V e) and (mu_V + f, V + f, b - U f)
    for side, other, other_bias in (("U", "V", "item_bias"), ("V", "U", "user_bias")):
        A, a = hyper.mean_prior(side, state)
        lam = state[f"{other_bias}_precision"]
        partner = state[other]
        precision = A + lam * partner.T @ partner
        linear = a + lam * partner.T @ state[other_bias]
        chol = np.linalg.cholesky(0.5 * (precision + precision.T))
        shift = np.linalg.solve(
            chol.T, np.linalg.solve(chol, linear) + rng.standard_normal(linear.shape[0])
        )
        state[side] = state[side] + shift
        state[f"mu_{side}"] = state[f"mu_{side}"] + shift
        state[other_bias] = state[other_bias] - partner @ shift


def _sweep(state, csrs, hyper, config, biases, work, rng):
    user_csr, item_csr = csrs
    hyper.factor_step("U", state, rng)
    hyper.factor_step("V", state, rng)
    sample_side(state, "U", user_csr, biases, work["U"], rng, residuals=False)
    sum_errors, sum_squares = sample_side(
        state, "V", item_csr, biases, work["V"], rng, residuals=True
    )
    # intercept: e_n = r_n - mu_old - fitted_n, so sum(r - fitted) = sum(e) + N mu_old
    mu_old = state["mu"]
    n_ratings = len(item_csr[2])
    prior_prec = 1.0 / config["mu_sd"] ** 2
    post_prec = prior_prec + state["tau"] * n_ratings
    post_mean = (
        prior_prec * config["intercept_mean"] + state["tau"] * (sum_errors + n_ratings * mu_old)
    ) / post_prec
    state["mu"] = post_mean + rng.standard_normal() / np.sqrt(post_prec)
    if config["sigma"] is None:
        # sum((e + mu_old - mu)^2), expanded about the old intercept
        shift = mu_old - state["mu"]
        sse = max(sum_squares + 2.0 * shift * sum_errors + n_ratings * shift**2, 0.0)
        state["tau"] = hyper.noise_precision(n_ratings, sse, rng)
    if biases:
        for bias in ("user_bias", "item_bias"):
            state[f"{bias}_precision"] = hyper.bias_precision(state[bias], rng)
    _shift_moves(state, hyper, biases, config, rng)
    hyper.rescale(state, rng)


def _allocate(chains, draws, shapes, biases, covariance_prior):
    n_users, n_items, D = shapes
    out = {
        "U": np.empty((chains, draws, n_users, D)),
        "V": np.empty((chains, draws, n_items, D)),
        "mu_U": np.empty((chains, draws, D)),
        "mu_V": np.empty((chains, draws, D)),
        "Sigma_U": np.empty((chains, draws, D, D)),
        "Sigma_V": np.empty((chains, draws, D, D)),
        "mu": np.empty((chains, draws)),
        "sigma": np.empty((chains, draws)),
    }
    if biases:
        for name, n in (("user_bias", n_users), ("item_bias", n_items)):
            out[name] = np.empty((chains, draws, n))
            out[f"{name}_sd"] = np.empty((chains, draws))
    if covariance_prior == "lkj":
        out["diverging"] = np.zeros((chains, draws), dtype=bool)
        out["n_steps_U"] = np.zeros((chains, draws), dtype=np.int64)
        out["n_steps_V"] = np.zeros((chains, draws), dtype=np.int64)
    return out


def _record(out, chain, draw, state, biases):
    for name in ("U", "V", "mu_U", "mu_V", "Sigma_U", "Sigma_V", "mu"):
        out[name][chain, draw] = state[name]
    out["sigma"][chain, draw] = 1.0 / np.sqrt(state["tau"])
    if biases:
        for name in ("user_bias", "item_bias"):
            out[name][chain, draw] = state[name]
            out[f"{name}_sd"][chain, draw] = 1.0 / np.sqrt(state[f"{name}_precision"])
    if "diverging" in out:
        out["diverging"][chain, draw] = state["diverging_U"] or state["diverging_V"]
        out["n_steps_U"][chain, draw] = state["steps_U"]
        out["n_steps_V"][chain, draw] = state["steps_V"]


def _hyperpriors(covariance_prior, config, n_factors, tune, nuts):
    if covariance_prior == "lkj":
        return LKJHyperpriors(config, n_factors, tune, **nuts)
    if covariance_prior == "wishart":
        return WishartHyperpriors(config, n_factors)
    raise ValueError(f"covariance_prior must be 'lkj' or 'wishart', got {covariance_prior!r}")


def sample_gibbs(
    user_codes,
    item_codes,
    ratings,
    n_users,
    n_items,
    *,
    n_factors,
    draws,
    tune,
    chains,
    biases,
    covariance_prior,
    model_config,
    init=None,
    random_state=None,
    progressbar=None,
    cores=None,
    init_jitter=0.01,
    nuts=None,
):
    r"""Draw from the BPMF posterior with the blocked Gibbs sampler.

    Parameters
    ----------
    user_codes, item_codes : array of int, shape (n_ratings,)
        Row positions of each rating's user in ``[0, n_users)`` and item in ``[0, n_items)``.
    ratings : array of float, shape (n_ratings,)
    n_users, n_items : int
    n_factors : int
        Latent dimension ``D``.
    draws, tune, chains : int
        Kept sweeps per chain, warm-up sweeps per chain (discarded), number of chains.
    biases : bool
        Whether the model has user and item bias terms.
    covariance_prior : {"lkj", "wishart"}
        The hyperprior family (:mod:`bpmf.inference.hyperpriors`).
    model_config : dict
        The resolved prior settings of :class:`bpmf.models.BPMF` for that family, with
        ``mu_sd`` and ``sigma`` (None to sample the noise).
    init : dict or None
        A starting point, e.g. the MAP: ``U``, ``V``, ``mu``, ``sigma`` and, with biases,
        ``user_bias`` and ``item_bias``; each chain starts there plus a relative jitter of
        ``init_jitter``. None starts from small random factors, zero biases and the mean.
    random_state : int, numpy Generator or None
        Seed; equal seeds give equal draws.
    progressbar : bool or None
        Show a tqdm bar of sweeps; None uses the package-wide setting.
    cores : int or None
        Chains run in at most this many threads (None: one per chain, up to the CPUs).
    nuts : dict or None
        ``target_accept``, ``max_treedepth``, ``tune_transitions`` of the LKJ block.

    Returns
    -------
    dict of str to ndarray
        Draws with leading ``(chain, draw)`` axes: ``U``, ``V``, ``mu_U``, ``mu_V``,
        ``Sigma_U``, ``Sigma_V``, ``mu``, ``sigma`` and, with biases, ``user_bias``,
        ``item_bias``, ``user_bias_sd``, ``item_bias_sd``; with the LKJ prior also the NUTS
        statistics of the Cholesky blocks, ``diverging``, ``n_steps_U``, ``n_steps_V``.
    """
    user_codes, item_codes, ratings = check_inputs(
        user_codes, item_codes, ratings, n_users, n_items, draws, tune, chains
    )
    draws, tune, chains, D = int(draws), int(tune), int(chains), int(n_factors)
    shapes = (int(n_users), int(n_items), D)
    config = {**model_config, "intercept_mean": float(ratings.mean())}
    # With the LKJ prior, the first third of the warm-up runs the conjugate sweeps: from a
    # start with a factor shrunk on both sides (a MAP on little data), LKJ sweeps take
    # hundreds of sweeps to regrow it, while the Wishart prior's pull away from zero
    # covariances does it in a few. Warm-up draws are discarded, so this changes no draw's law.
    early = tune // 3 if covariance_prior == "lkj" else 0
    hyper = _hyperpriors(covariance_prior, config, D, tune - early, dict(nuts or {}))
    early_hyper = WishartHyperpriors(WISHART_WARMUP, D) if early else None
    if isinstance(random_state, np.random.Generator):
        random_state = int(random_state.integers(2**63))
    seeds = np.random.SeedSequence(random_state).spawn(chains)
    csrs = csr_pair(user_codes, item_codes, ratings, shapes[0], shapes[1])
    out = _allocate(chains, draws, shapes, biases, covariance_prior)
    bar = tqdm(
        total=chains * (tune + draws),
        desc="Gibbs",
        unit="sweep",
        disable=not resolve_progressbar(progressbar),
    )

    def run_chain(chain):
        rng = np.random.default_rng(seeds[chain])
        state = _initial_state(init, shapes, biases, ratings, init_jitter, rng)
        if config["sigma"] is not None:
            state["tau"] = 1.0 / float(config["sigma"]) ** 2
        for bias in ("user_bias", "item_bias"):
            state[f"{bias}_precision"] = 1.0 / max(float(np.mean(state[bias] ** 2)), 1e-2)
        work = workspace(*shapes, biases)
        if early:
            early_hyper.start(state, rng)
            for _ in range(early):
                _sweep(
                    state,
                    csrs,
                    early_hyper,
                    {**config, "sigma": config["sigma"]},
                    biases,
                    work,
                    rng,
                )
                bar.update()
        hyper.start(state, rng)
        for sweep in range(early, tune + draws):
            _sweep(state, csrs, hyper, config, biases, work, rng)
            bar.update()
            if sweep >= tune:
                _record(out, chain, sweep - tune, state, biases)

    workers = max(1, min(chains, int(cores) if cores else chains))
    _compile_kernels(D, biases)
    try:
        # one BLAS thread per chain: the chains are the parallelism
        with threadpool_limits(limits=1, user_api="blas"):
            if workers == 1:
                for chain in range(chains):
                    run_chain(chain)
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for future in [pool.submit(run_chain, c) for c in range(chains)]:
                        future.result()
    finally:
        bar.close()
    return out


def _compile_kernels(n_factors, biases):
    """Load (or compile) the row kernel before the progress bar starts counting sweeps."""
    user_codes = np.array([0, 1], dtype=np.int64)
    item_codes = np.array([0, 0], dtype=np.int64)
    ratings = np.array([1.0, 2.0])
    user_csr, _ = csr_pair(user_codes, item_codes, ratings, 2, 1)
    dim = n_factors + 1 if biases else n_factors
    X = aligned_zeros((1, dim + 1))
    rows = np.empty((2, dim))
    sample_rows(*user_csr, X, 0.0, np.eye(dim), np.zeros(dim), 1.0, np.zeros((2, dim)), rows, True)
