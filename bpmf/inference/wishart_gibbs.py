r"""Conjugate Gibbs sampler for Bayesian probabilistic matrix factorisation.

The sampler of Salakhutdinov & Mnih (2008), "Bayesian probabilistic matrix factorization using
Markov chain Monte Carlo", ICML, extended with a global intercept, optional user and item biases
and a Gamma prior on the noise precision. Every full conditional is conjugate, so one sweep
draws, in turn, the Normal-Wishart hyperparameters of the user and of the item factors, every
user's factor vector (jointly with the user's bias), every item's factor vector (jointly with
the item's bias), the intercept, the noise precision and the bias precisions.

The per-row updates are numba-compiled loops over the ratings grouped by user and by item (a
CSR layout computed once, by a radix sort); each row costs one ``(D+1) x (D+1)`` Cholesky
factorisation. The cost of a sweep stays close to linear in the number of ratings once the
factor matrices outgrow the CPU caches (``bench/scaling.py``): the kernel prefetches the
partner rows it is about to read (see the comment above :func:`_gather`), the residual sums
that the intercept and the noise precision need come out of the item pass rather than an
extra pass over the ratings, and sweeps reuse their buffers. All
random numbers come from a :class:`numpy.random.Generator` seeded by ``random_state``, so equal
seeds give equal draws.

:func:`sample_gibbs` is called by ``BPMF(method="gibbs")``; its output dictionary uses the same
names and shapes as the NUTS model so that one ``predict`` / save / load serves both.
"""

import numpy as np
from tqdm.auto import tqdm

from bpmf._config import resolve_progressbar
from bpmf.kernels.rows import aligned_zeros, csr_pair, sample_rows

__all__ = ["DEFAULT_GIBBS_CONFIG", "sample_gibbs"]

DEFAULT_GIBBS_CONFIG = {
    # Normal-Wishart hyperprior of (mu_U, Lambda_U) and (mu_V, Lambda_V):
    # Lambda ~ Wishart(W0, nu0), mu | Lambda ~ N(mu0, (beta0 Lambda)^-1).
    "beta0": 2.0,
    "nu0": None,  # None: n_factors
    "W0": None,  # None: identity; a scalar s means s * identity; or a (D, D) matrix
    "mu0": 0.0,  # scalar or (D,) vector
    # noise: sigma fixed to "noise_sd" when it is not None, else tau = 1/sigma^2 ~ Gamma(a, b)
    "noise_sd": None,
    "noise_shape": 1.0,
    "noise_rate": 1.0,
    # intercept: mu ~ N(mean of the training ratings, intercept_sd^2)
    "intercept_sd": 1.0,
    # biases: b ~ N(0, 1/lambda), lambda ~ Gamma(bias_precision_shape, bias_precision_rate)
    "bias_precision_shape": 1.0,
    "bias_precision_rate": 0.1,
    # relative size of the per-chain jitter added to an ``init`` point
    "init_jitter": 0.01,
}


# --------------------------------------------------------------------------------------------
# conjugate pieces in numpy (D x D work, once per sweep)
# --------------------------------------------------------------------------------------------


def _sample_wishart(scale_chol, dof, rng):
    """Wishart(scale = L L^T, dof) by the Bartlett decomposition."""
    dim = scale_chol.shape[0]
    A = np.tril(rng.standard_normal((dim, dim)), -1)
    A[np.diag_indices(dim)] = np.sqrt(rng.chisquare(dof - np.arange(dim)))
    LA = scale_chol @ A
    return LA @ LA.T


def sample_normal_wishart(factors, beta0, nu0, W0_inv, mu0, rng):
    """Draw (mu, Lambda) from the Normal-Wishart posterior given the factor rows."""
    n_rows, dim = factors.shape
    mean = factors.mean(axis=0)
    centred = factors - mean
    scatter = centred.T @ centred
    beta_n = beta0 + n_rows
    nu_n = nu0 + n_rows
    mu_n = (beta0 * mu0 + n_rows * mean) / beta_n
    diff = mean - mu0
    W_n_inv = W0_inv + scatter + (beta0 * n_rows / beta_n) * np.outer(diff, diff)
    W_n_inv = 0.5 * (W_n_inv + W_n_inv.T)
    # W_n = inv(W_n_inv); its Cholesky factor from that of W_n_inv without forming the inverse
    chol_inv = np.linalg.cholesky(W_n_inv)
    eye = np.eye(dim)
    W_n_chol = np.linalg.cholesky(np.linalg.solve(chol_inv.T, np.linalg.solve(chol_inv, eye)))
    Lambda = _sample_wishart(W_n_chol, nu_n, rng)
    Lambda = 0.5 * (Lambda + Lambda.T)
    chol_lambda = np.linalg.cholesky(beta_n * Lambda)
    mu = mu_n + np.linalg.solve(chol_lambda.T, rng.standard_normal(dim))
    return mu, Lambda


def _resolve_config(model_config, n_factors):
    config = dict(DEFAULT_GIBBS_CONFIG)
    model_config = dict(model_config or {})
    # the NUTS model's names for the same quantities, used when the Gibbs name is not given
    if model_config.get("noise_sd") is None and model_config.get("sigma") is not None:
        model_config["noise_sd"] = model_config["sigma"]
    if "intercept_sd" not in model_config and "mu_sd" in model_config:
        model_config["intercept_sd"] = model_config["mu_sd"]
    config.update({k: v for k, v in model_config.items() if k in DEFAULT_GIBBS_CONFIG})
    beta0 = float(config["beta0"])
    if not beta0 > 0:
        raise ValueError(f"model_config['beta0'] must be positive, got {beta0}")
    nu0 = n_factors if config["nu0"] is None else float(config["nu0"])
    if not nu0 > n_factors - 1:
        raise ValueError(
            f"model_config['nu0'] must exceed n_factors - 1 = {n_factors - 1}, got {nu0}"
        )
    W0 = config["W0"]
    if W0 is None:
        W0 = np.eye(n_factors)
    elif np.ndim(W0) == 0:
        W0 = float(W0) * np.eye(n_factors)
    W0 = np.asarray(W0, dtype=float)
    if W0.shape != (n_factors, n_factors):
        raise ValueError(f"model_config['W0'] must be ({n_factors}, {n_factors}), got {W0.shape}")
    try:
        W0_inv = np.linalg.inv(np.linalg.cholesky(W0) @ np.linalg.cholesky(W0).T)
    except np.linalg.LinAlgError:
        raise ValueError("model_config['W0'] must be symmetric positive definite") from None
    mu0 = np.broadcast_to(np.asarray(config["mu0"], dtype=float), (n_factors,)).copy()
    noise_sd = config["noise_sd"]
    if noise_sd is not None and not float(noise_sd) > 0:
        raise ValueError(f"model_config['noise_sd'] must be positive or None, got {noise_sd}")
    for key in (
        "noise_shape",
        "noise_rate",
        "intercept_sd",
        "bias_precision_shape",
        "bias_precision_rate",
    ):
        if not float(config[key]) > 0:
            raise ValueError(f"model_config[{key!r}] must be positive, got {config[key]}")
    config.update(beta0=beta0, nu0=nu0, W0_inv=W0_inv, mu0=mu0)
    return config


def _check_inputs(
    user_codes, item_codes, ratings, n_users, n_items, n_factors, draws, tune, chains
):
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
    for name, value, low in (
        ("n_factors", n_factors, 1),
        ("draws", draws, 1),
        ("tune", tune, 0),
        ("chains", chains, 1),
    ):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return user_codes.astype(np.int64), item_codes.astype(np.int64), ratings


def _initial_state(init, n_users, n_items, n_factors, biases, ratings, jitter, rng):
    if init is None:
        return {
            "U": 0.1 * rng.standard_normal((n_users, n_factors)),
            "V": 0.1 * rng.standard_normal((n_items, n_factors)),
            "mu": float(ratings.mean()),
            "tau": 1.0 / max(float(ratings.var()), 1e-6),
            "user_bias": np.zeros(n_users),
            "item_bias": np.zeros(n_items),
        }
    required = ["U", "V", "mu", "sigma"] + (["user_bias", "item_bias"] if biases else [])
    missing = [key for key in required if key not in init]
    if missing:
        raise ValueError(f"init is missing {missing}; give the MAP arrays {required}")
    U = np.asarray(init["U"], dtype=float)
    V = np.asarray(init["V"], dtype=float)
    if U.shape != (n_users, n_factors) or V.shape != (n_items, n_factors):
        raise ValueError(
            f"init U and V must be ({n_users}, {n_factors}) and ({n_items}, {n_factors}), "
            f"got {U.shape} and {V.shape}"
        )

    def jittered(values):
        values = np.asarray(values, dtype=float)
        scale = jitter * (values.std() if values.size > 1 else abs(float(values)) + 1e-3)
        return values + scale * rng.standard_normal(values.shape)

    state = {
        "U": jittered(U),
        "V": jittered(V),
        "mu": float(init["mu"]),
        "tau": 1.0 / float(init["sigma"]) ** 2,
        "user_bias": np.zeros(n_users),
        "item_bias": np.zeros(n_items),
    }
    if biases:
        user_bias = np.asarray(init["user_bias"], dtype=float)
        item_bias = np.asarray(init["item_bias"], dtype=float)
        if user_bias.shape != (n_users,) or item_bias.shape != (n_items,):
            raise ValueError("init user_bias / item_bias have the wrong length")
        state["user_bias"] = jittered(user_bias)
        state["item_bias"] = jittered(item_bias)
    return state


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
    model_config,
    init,
    random_state,
    progressbar,
):
    r"""Draw from the BPMF posterior with the conjugate Gibbs sampler.

    Parameters
    ----------
    user_codes, item_codes : array of int, shape (n_ratings,)
        Row positions of each rating's user in ``[0, n_users)`` and item in ``[0, n_items)``.
    ratings : array of float, shape (n_ratings,)
    n_users, n_items : int
    n_factors : int
        Latent dimension ``D``.
    draws, tune, chains : int
        Kept sweeps per chain, burn-in sweeps per chain (discarded), number of chains. Chains
        run one after the other, each from its own random stream.
    biases : bool
        Whether the model has user and item bias terms.
    model_config : dict or None
        Prior settings merged over :data:`DEFAULT_GIBBS_CONFIG`; keys it does not know are
        ignored (the NUTS model shares the dictionary; its ``sigma`` and ``mu_sd`` stand in
        for ``noise_sd`` and ``intercept_sd`` when those are not given). ``beta0``, ``nu0``
        (None: ``D``), ``W0`` (None: identity), ``mu0``: the Normal-Wishart hyperprior;
        ``noise_sd``: fixed noise sd, or None to sample the precision from its
        Gamma(``noise_shape``, ``noise_rate``) prior; ``intercept_sd``: prior sd of the
        intercept around the mean training rating; ``bias_precision_shape``,
        ``bias_precision_rate``: Gamma prior on the precision of the biases; ``init_jitter``:
        relative jitter of an ``init`` point.
    init : dict or None
        A starting point, e.g. the MAP: ``U``, ``V``, ``mu``, ``sigma`` and, with biases,
        ``user_bias`` and ``item_bias``. Each chain starts there plus a small jitter. None
        starts from small random factors, zero biases and the mean rating.
    random_state : int, numpy Generator or None
        Seed; equal seeds give equal draws.
    progressbar : bool or None
        Show a tqdm bar; None uses the package-wide setting.

    Returns
    -------
    dict of str to ndarray
        Posterior draws with leading ``(chain, draw)`` axes: ``U`` (n_users, D), ``V``
        (n_items, D), ``mu_U``, ``mu_V`` (D,), ``Sigma_U``, ``Sigma_V`` (D, D) covariances,
        ``mu`` and ``sigma`` scalars and, when ``biases``, ``user_bias`` (n_users),
        ``item_bias`` (n_items), ``user_bias_sd`` and ``item_bias_sd`` scalars.

    Notes
    -----
    The model is

    .. math::

        r_{n} &\sim \mathcal N(\mu + b_{u_n} + c_{i_n} + U_{u_n}^\top V_{i_n},\; \tau^{-1}),
        \qquad \tau \sim \mathrm{Gamma}(a_\tau, b_\tau) \\
        U_u &\sim \mathcal N(\mu_U, \Lambda_U^{-1}), \qquad
        V_i \sim \mathcal N(\mu_V, \Lambda_V^{-1}) \\
        \Lambda_U &\sim \mathcal W(W_0, \nu_0), \qquad
        \mu_U \mid \Lambda_U \sim \mathcal N(\mu_0, (\beta_0 \Lambda_U)^{-1})
        \quad \text{(same for } V) \\
        b_u &\sim \mathcal N(0, \lambda_b^{-1}), \quad c_i \sim \mathcal N(0, \lambda_c^{-1}),
        \quad \lambda_b, \lambda_c \sim \mathrm{Gamma}(a_b, b_b), \qquad
        \mu \sim \mathcal N(\bar r, s_\mu^2).

    Each sweep draws :math:`(\mu_U, \Lambda_U)`, :math:`(\mu_V, \Lambda_V)` from their
    Normal-Wishart conditionals, then every :math:`(U_u, b_u)` jointly from
    :math:`\mathcal N(P^{-1} h, P^{-1})` with
    :math:`P = \mathrm{diag}(\Lambda_U, \lambda_b) + \tau \sum_{i \in I_u} x_i x_i^\top`,
    :math:`x_i = (V_i, 1)`, :math:`h = \mathrm{diag}(\Lambda_U, \lambda_b)(\mu_U, 0)
    + \tau \sum_{i} x_i (r_{ui} - \mu - c_i)`, then every :math:`(V_i, c_i)` the same way,
    then :math:`\mu`, :math:`\tau`, :math:`\lambda_b`, :math:`\lambda_c` from their Normal and
    Gamma conditionals. ``sigma`` is :math:`\tau^{-1/2}`, ``Sigma_U`` is
    :math:`\Lambda_U^{-1}` and ``user_bias_sd`` is :math:`\lambda_b^{-1/2}`.
    """
    user_codes, item_codes, ratings = _check_inputs(
        user_codes, item_codes, ratings, n_users, n_items, n_factors, draws, tune, chains
    )
    n_factors, draws, tune, chains = int(n_factors), int(draws), int(tune), int(chains)
    config = _resolve_config(model_config, n_factors)
    config["intercept_mean"] = float(ratings.mean())
    seeds = np.random.SeedSequence(
        random_state.integers(2**63)
        if isinstance(random_state, np.random.Generator)
        else random_state
    ).spawn(chains)

    # ratings grouped by user and by item, partners in increasing order within each group
    user_csr, item_csr = csr_pair(user_codes, item_codes, ratings, int(n_users), int(n_items))
    D = n_factors
    dim = D + 1 if biases else D
    work = _workspace(n_users, n_items, D, dim, biases)
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
        out.update(
            user_bias=np.empty((chains, draws, n_users)),
            item_bias=np.empty((chains, draws, n_items)),
            user_bias_sd=np.empty((chains, draws)),
            item_bias_sd=np.empty((chains, draws)),
        )

    bar = tqdm(
        total=chains * (tune + draws),
        desc="Gibbs",
        unit="sweep",
        disable=not resolve_progressbar(progressbar),
    )
    try:
        for chain, seed in enumerate(seeds):
            rng = np.random.default_rng(seed)
            state = _initial_state(
                init, n_users, n_items, D, biases, ratings, config["init_jitter"], rng
            )
            state["user_bias_precision"] = 1.0 / max(float(state["user_bias"].var()), 1e-2)
            state["item_bias_precision"] = 1.0 / max(float(state["item_bias"].var()), 1e-2)
            for sweep in range(tune + draws):
                _sweep(state, user_csr, item_csr, config, biases, work, rng)
                bar.update()
                if sweep >= tune:
                    _record(out, chain, sweep - tune, state, biases)
    finally:
        bar.close()
    return out


def _prior(Lambda, mu, bias_precision, biases):
    """Prior precision and precision-times-mean of a (factor, bias) row."""
    dim = Lambda.shape[0] + (1 if biases else 0)
    prec = np.zeros((dim, dim))
    prec[: Lambda.shape[0], : Lambda.shape[0]] = Lambda
    if biases:
        prec[-1, -1] = bias_precision
    mean = np.zeros(dim)
    mean[: Lambda.shape[0]] = mu
    return prec, prec @ mean


def _workspace(n_users, n_items, D, dim, biases):
    """Buffers the sweeps reuse, so that no sweep allocates (and page-faults) fresh memory.

    Per side: ``X``, the other side's rows with a column of ones for the bias and a last
    column with the other side's biases (zero without biases), aligned to cache lines;
    ``rows`` for the drawn (factor, bias) rows and ``z`` for their standard normals.
    """
    work = {}
    for side, n_rows, n_other in (("U", n_users, n_items), ("V", n_items, n_users)):
        X = aligned_zeros((n_other, dim + 1))
        if biases:
            X[:, D] = 1.0
        work[side] = {"X": X, "rows": np.empty((n_rows, dim)), "z": np.empty((n_rows, dim))}
    return work


def _sample_side(
    state, side, other, bias, other_bias, csr, mean, Lambda, tau, biases, work, rng, residuals
):
    """Draw every row of ``state[side]`` (and its bias) jointly, given the ``other`` side.

    With ``residuals``, returns the sum and the sum of squares of the residuals
    ``r - mu - b - c - U.V`` under the new rows (and the current ``mu``). The new rows are
    views into ``work["rows"]``, which the next draw of this side overwrites.
    """
    indptr, partners, ratings = csr
    D = state[other].shape[1]
    X, rows, z = work["X"], work["rows"], work["z"]
    X[:, :D] = state[other]
    if biases:
        X[:, -1] = state[other_bias]
    prec, h = _prior(Lambda, mean, state[f"{bias}_precision"], biases)
    rng.standard_normal(out=z)
    sums = sample_rows(indptr, partners, ratings, X, state["mu"], prec, h, tau, z, rows, residuals)
    state[side] = rows[:, :D]
    if biases:
        state[bias] = rows[:, D]
    return sums


def _sweep(state, user_csr, item_csr, config, biases, work, rng):
    n_users = state["U"].shape[0]
    n_items = state["V"].shape[0]
    beta0, nu0, W0_inv, mu0 = config["beta0"], config["nu0"], config["W0_inv"], config["mu0"]

    mu_U, Lambda_U = sample_normal_wishart(state["U"], beta0, nu0, W0_inv, mu0, rng)
    mu_V, Lambda_V = sample_normal_wishart(state["V"], beta0, nu0, W0_inv, mu0, rng)
    tau = state["tau"]

    # users (jointly with their biases) given the items, then items given the users; the item
    # pass also sums the residuals under the new rows, which the intercept and noise need
    _sample_side(
        state, "U", "V", "user_bias", "item_bias", user_csr, mu_U, Lambda_U, tau, biases,
        work["U"], rng, residuals=False,
    )
    sum_errors, sum_squares = _sample_side(
        state, "V", "U", "item_bias", "user_bias", item_csr, mu_V, Lambda_V, tau, biases,
        work["V"], rng, residuals=True,
    )

    # intercept: e_n = r_n - mu_old - fitted_n, so sum(r - fitted) = sum(e) + N mu_old
    mu_old = state["mu"]
    n_ratings = len(item_csr[2])
    prior_prec = 1.0 / config["intercept_sd"] ** 2
    post_prec = prior_prec + tau * n_ratings
    post_mean = (
        prior_prec * config["intercept_mean"] + tau * (sum_errors + n_ratings * mu_old)
    ) / post_prec
    state["mu"] = post_mean + rng.standard_normal() / np.sqrt(post_prec)

    # noise precision: sum((e + mu_old - mu)^2), expanded about the old intercept
    if config["noise_sd"] is None:
        shift = mu_old - state["mu"]
        sse = max(sum_squares + 2.0 * shift * sum_errors + n_ratings * shift**2, 0.0)
        shape = config["noise_shape"] + 0.5 * n_ratings
        rate = config["noise_rate"] + 0.5 * sse
        state["tau"] = rng.gamma(shape, 1.0 / rate)
    else:
        state["tau"] = 1.0 / float(config["noise_sd"]) ** 2

    # bias precisions
    if biases:
        for key, n_rows in (("user_bias", n_users), ("item_bias", n_items)):
            shape = config["bias_precision_shape"] + 0.5 * n_rows
            rate = config["bias_precision_rate"] + 0.5 * float(np.sum(state[key] ** 2))
            state[f"{key}_precision"] = rng.gamma(shape, 1.0 / rate)

    state["mu_U"], state["mu_V"] = mu_U, mu_V
    state["Lambda_U"], state["Lambda_V"] = Lambda_U, Lambda_V


def _record(out, chain, draw, state, biases):
    out["U"][chain, draw] = state["U"]
    out["V"][chain, draw] = state["V"]
    out["mu_U"][chain, draw] = state["mu_U"]
    out["mu_V"][chain, draw] = state["mu_V"]
    out["Sigma_U"][chain, draw] = np.linalg.inv(state["Lambda_U"])
    out["Sigma_V"][chain, draw] = np.linalg.inv(state["Lambda_V"])
    out["mu"][chain, draw] = state["mu"]
    out["sigma"][chain, draw] = 1.0 / np.sqrt(state["tau"])
    if biases:
        out["user_bias"][chain, draw] = state["user_bias"]
        out["item_bias"][chain, draw] = state["item_bias"]
        out["user_bias_sd"][chain, draw] = 1.0 / np.sqrt(state["user_bias_precision"])
        out["item_bias_sd"][chain, draw] = 1.0 / np.sqrt(state["item_bias_precision"])
