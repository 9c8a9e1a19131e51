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

With implicit feedback (Bayesian SVD++, :mod:`bpmf.inference.implicit`), each sweep also draws
the items' implicit factors ``Y`` and their scales before the user rows (given the effective
user rows ``U + offset_U``, or with the user rows integrated out), and, with the items' own
implicit factors ``Z``, the same before the item rows; the users' ratings then see
``U + offset_U``, the item side regresses on it, the translation
``(mu_V + f, V + f, b_u - (U_u + o_u) . f)`` compensates with the effective vectors, and the
rescaling move scales ``Y`` and its scales with ``U`` (``Z`` with ``V``).

Every step leaves the posterior invariant, so the chain samples exactly the model's posterior.
Chains run in parallel threads (the compiled kernels release the GIL), each with its own
:class:`numpy.random.Generator` spawned from ``random_state``, and within a chain the rows of a
side are drawn by blocks spread over numba's threads (:func:`bpmf.inference.rows.sample_side`):
the draws do not depend on the number of threads, on which thread runs which chain, or on
which thread draws which block.

What is kept (``keep``): every draw of every variable, or, to bound memory on large data,
the draws of the scalars and hyperparameters, running means and variances of the rows (``U``,
``V`` and the biases), an evenly spaced subset of the rows' draws (for predictions: the
expected rating ``U_u . V_i`` needs the joint draws of both sides, which no per-side moment
gives), and optionally the running mean and variance of the expected rating of chosen pairs.
"""

import contextlib
import mmap
import numbers
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from bpmf._config import resolve_progressbar
from bpmf.inference import rows as rows_module
from bpmf.inference.day_bias import DayBiasGibbs
from bpmf.inference.features import FeatureLinks, bias_prior_values
from bpmf.inference.hyperpriors import (
    WISHART_DEFAULTS,
    CorrelatedLKJHyperpriors,
    LKJHyperpriors,
    WishartHyperpriors,
    positive_normal,
    settle_scipy_imports,
)
from bpmf.inference.implicit import (
    IMPLICIT_KEYS,
    IMPLICIT_METHODS,
    OFFSET_MEANS,
    ImplicitSets,
    ImplicitStep,
)
from bpmf.inference.noise_weights import NoiseWeights
from bpmf.inference.ordinal import OrdinalGibbs, cutpoint_prior_means, rating_categories
from bpmf.inference.rows import available_cores, released, sample_side, workspace
from bpmf.kernels.dense import gaussian_from_precision
from bpmf.kernels.moments import welford_parallel
from bpmf.kernels.rows import aligned_zeros, csr_pair, sample_rows, sample_rows_parallel

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
    return user_codes.astype(np.int64, copy=False), item_codes.astype(np.int64, copy=False), ratings


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
    if not biases or hyper.shift_moves(state, config, rng):  # done by the prior's own
        return
    # (mu + d, b - d): Gaussian in d from the intercept's prior and the biases' prior
    prior_prec = 1.0 / config["mu_sd"] ** 2
    for bias in ("user_bias", "item_bias"):
        b = state[bias]
        lam, weights = hyper.bias_terms(bias, state)
        precision = prior_prec + b.shape[0] * lam
        linear = -prior_prec * (state["mu"] - config["intercept_mean"]) + weights.sum()
        d = linear / precision + rng.standard_normal() / np.sqrt(precision)
        state["mu"] += d
        state[bias] = b - d
    # (mu_U + e, U + e, c - V e) and (mu_V + f, V + f, b - U f)
    # With biases correlated to the factors a priori, the side's own biases move too, along
    # their regression on the factors (b + gamma . e, mu - gamma . e): the level then shifts
    # with the factors' mean, the direction in which it is otherwise slow.
    for side, other, other_bias in (("U", "V", "item_bias"), ("V", "U", "user_bias")):
        A, a = hyper.mean_prior(side, state)
        lam, weights = hyper.bias_terms(other_bias, state)
        # the fitted values see ``other + offset_other`` (implicit feedback): the biases
        # compensate the shift's change of those
        offset = state.get(f"offset_{other}")
        partner = state[other] if offset is None else state[other] + offset
        precision = A + lam * partner.T @ partner
        linear = a + partner.T @ weights
        gamma = hyper.bias_regression(side, state)
        if gamma is not None:
            precision = precision + prior_prec * np.outer(gamma, gamma)
            linear = linear + prior_prec * (state["mu"] - config["intercept_mean"]) * gamma
        shift = gaussian_from_precision(
            0.5 * (precision + precision.T), linear, rng.standard_normal(linear.shape[0])
        )
        state[side] = state[side] + shift
        if hyper.free_means[side]:  # a fixed (zero) mean stays: the rows took the shift alone
            state[f"mu_{side}"] = state[f"mu_{side}"] + shift
        state[other_bias] = state[other_bias] - partner @ shift
        if gamma is not None:
            own_bias = "user_bias" if side == "U" else "item_bias"
            state[own_bias] = state[own_bias] + gamma @ shift
            state["mu"] -= gamma @ shift


def ordered_overrelaxation(current, candidates):
    """Neal's ordered overrelaxation of a scalar: ``candidates`` are ``K`` independent
    draws from its conditional; with the current value among them at rank ``r`` (the number
    of candidates below it), the new value is the one at rank ``K - r`` of the ``K + 1``.

    Exact for any ``K`` (it leaves the conditional invariant; Neal 1998). The new value
    lies on the other side of the conditional's median, which counters the positive
    autocorrelation that a scalar coupled to many others keeps under plain Gibbs draws.
    """
    candidates = np.sort(np.asarray(candidates, dtype=float))
    rank = int(np.searchsorted(candidates, current))
    values = np.insert(candidates, rank, current)
    return float(values[len(candidates) - rank])


def _bias_scale_applies(state, hyper, bias):
    """Whether :func:`_scale_biases` moves ``bias``: its hyperprior has a half-normal scale
    and there are no per-row prior means (side features: the biases' prior then has a
    regression mean as well)."""
    if "row_mean_U" in state or "row_mean_V" in state:
        return False
    return hyper.bias_scale(bias, state) is not None


def _scale_biases(state, hyper, bias, counts, residual_sums, rng):
    """Scale one side's biases and their scale together: ``(g b, g s)``.

    A generalised Gibbs step on the multiplicative group (Liu & Sabatti, 2000). The biases'
    prior ``N(0, s^2)`` (in the correlated prior, the rows' Gaussian with the Cholesky
    factor's bias row scaled) and the Jacobian cancel against the Haar measure ``dg / g``,
    leaving the likelihood, Gaussian in ``g``, times the half-normal prior of ``g s``: ``g``
    is a normal truncated to ``g > 0``, drawn exactly. It moves the bias scale along the
    direction its conditional draw given the biases explores only by small steps (the two
    are strongly coupled when the biases are well determined). ``counts``: each row's number
    of ratings; ``residual_sums``: each row's sum of residuals at the current state. Only
    where :func:`_bias_scale_applies`.
    """
    s, prior_sd = hyper.bias_scale(bias, state)
    b = state[bias]
    quadratic = float(counts @ (b * b))
    cross = float(b @ residual_sums)
    precision = state["tau"] * quadratic + (s / prior_sd) ** 2
    mean = state["tau"] * (quadratic + cross) / precision
    hyper.scale_biases(bias, state, positive_normal(mean, 1.0 / np.sqrt(precision), rng))


def _sweep(state, csrs, hyper, config, biases, work, rng, threads=1, links=None,
           data_step=None):
    phase_lock = work.get("phase_lock")
    # a step that rewrites the targets of the regression: the ordinal likelihood's latent
    # scores, or the ratings less their day biases
    if data_step is not None:
        with released(phase_lock):  # long compiled kernels
            data_step.step(state, biases, rng)
        csrs = data_step.csrs
    noise = work.get("noise")
    if noise is not None:  # per-user and per-item noise weights, and the rows' weights
        # the day-bias step has just computed the linear predictors at this state
        known = data_step.eta if isinstance(data_step, DayBiasGibbs) else None
        noise.step(state, biases, work, rng, known,
                   None if config["sigma"] is not None else hyper.noise_prior())
    user_csr, item_csr = csrs
    hyper.factor_step("U", state, rng)
    hyper.factor_step("V", state, rng)
    if links is not None:  # side features: the links, then the rows' prior means from them
        links.step(state, rng)
        links.row_means(state)
    implicit = work.get("implicit", {})
    alpha = config.get("overrelax", 0.0)
    if "U" in implicit:  # the users' implicit factors Y, then their scales
        with released(phase_lock):  # long compiled kernels
            implicit["U"].step(state, user_csr, rng)
    # after a draw of Y with the user rows integrated out ("collapsed"), the rows must be drawn
    # afresh from their conditional (a partially collapsed step): an overrelaxed draw starts
    # from the old rows, which are not a draw given the new Y
    # the users' residual sums are needed only by their bias scaling move
    move_users = biases and _bias_scale_applies(state, hyper, "user_bias")
    sample_side(
        state, "U", user_csr, biases, work["U"], rng, move_users, threads=threads,
        overrelax=_row_overrelax(implicit, "U", alpha), row_sums=work["U"]["row_sums"],
        phase_lock=phase_lock,
    )
    if move_users:  # at the state the user rows were just drawn in
        _scale_biases(state, hyper, "user_bias", work["U"]["counts"], work["U"]["row_sums"], rng)
    if "V" in implicit:  # the same for the items' offsets: Z and its scales
        with released(phase_lock):
            implicit["V"].step(state, item_csr, rng)
    sum_errors, sum_squares = sample_side(
        state, "V", item_csr, biases, work["V"], rng, True, threads=threads,
        overrelax=_row_overrelax(implicit, "V", alpha), row_sums=work["V"]["row_sums"],
        phase_lock=phase_lock,
    )
    # intercept: e_n = r_n - mu_old - fitted_n, so sum(r - fitted) = sum(e) + N mu_old
    mu_old = state["mu"]
    n_ratings = len(item_csr[2])
    # with noise weights the sums are weighted, and so is the count in them
    weight = work.get("weight_total", n_ratings)
    prior_prec = 1.0 / config["mu_sd"] ** 2
    post_prec = prior_prec + state["tau"] * weight
    post_mean = (
        prior_prec * config["intercept_mean"] + state["tau"] * (sum_errors + weight * mu_old)
    ) / post_prec
    state["mu"] = post_mean + rng.standard_normal() / np.sqrt(post_prec)
    mu_drawn = state["mu"]  # the moves below shift mu too, but keep the fitted values
    if config["sigma"] is None:
        # sum((e + mu_old - mu)^2), expanded about the old intercept
        shift = mu_old - state["mu"]
        sse = max(sum_squares + 2.0 * shift * sum_errors + weight * shift**2, 0.0)
        candidates = config.get("noise_overrelax", 0)
        if candidates:
            state["tau"] = ordered_overrelaxation(
                state["tau"], hyper.noise_precisions(n_ratings, sse, candidates, rng)
            )
        else:
            state["tau"] = hyper.noise_precision(n_ratings, sse, rng)
    if biases:
        for bias in ("user_bias", "item_bias"):
            precision = hyper.bias_precision(bias_prior_values(bias, state), rng)
            if precision is not None:  # None: the bias scale belongs to the covariance block
                state[f"{bias}_precision"] = precision
    _shift_moves(state, hyper, biases, config, rng)
    hyper.split_moves(state, rng)  # a move of the correlated prior only, which has biases
    g = hyper.rescale(state, rng, _rescale_terms(implicit, state))
    if g is not None:  # Y moves with U, Z with V, and their scales
        for side, step in implicit.items():
            step.rescale(state, g if side == "U" else 1.0 / g)
    if biases and _bias_scale_applies(state, hyper, "item_bias"):
        # the items' residual sums, drawn about the old intercept; the moves since the new
        # intercept's draw keep the fitted values
        item_sums = work["V"]["row_sums"] - work["V"]["counts"] * (mu_drawn - mu_old)
        _scale_biases(state, hyper, "item_bias", work["V"]["counts"], item_sums, rng)
    if data_step is not None:
        data_step.shift(state, config, rng, hyper)


def _row_overrelax(implicit, side, alpha):
    """The rows' overrelaxation: none right after a collapsed draw of the side's implicit
    factors (module docstring), ``alpha`` otherwise."""
    step = implicit.get(side)
    return 0.0 if step is not None and step.method == "collapsed" else alpha


def _rescale_terms(implicit, state):
    """``(a, b, c)`` of the implicit factors' scales in the rescaling move (None without
    implicit feedback): ``Y`` scales with ``U`` (``-a e^{2t} + t``), ``Z`` with ``V``
    (``-b e^{-2t} - t``)."""
    if not implicit:
        return None
    a, b, c = 0.0, 0.0, 0.0
    for side, step in implicit.items():
        terms, jacobian = step.rescale_terms(state)
        if side == "U":
            a, c = a + terms, c + jacobian
        else:
            b, c = b + terms, c - jacobian
    return a, b, c


#: the per-row variables: with ``keep="moments"`` their running moments replace their draws
ROW_VARIABLES = ("U", "V", "user_bias", "item_bias")
#: the variables of implicit feedback, kept with ``keep="all"``
IMPLICIT_VARIABLES = ("Y", "Y_sd", "offset_U", "offset_mean_U", "Z", "Z_sd", "offset_V",
                      "offset_mean_V")
_KEEP = ("all", "moments")


def _allocate(
    chains, draws, shapes, biases, covariance_prior, keep, retained, n_pairs, correlated=False
):
    n_users, n_items, D = shapes
    row_shapes = {"U": (n_users, D), "V": (n_items, D)}
    if biases:
        row_shapes.update({"user_bias": (n_users,), "item_bias": (n_items,)})
    n_row_draws = draws if keep == "all" else len(retained)
    out = {
        "mu_U": np.empty((chains, draws, D)),
        "mu_V": np.empty((chains, draws, D)),
        "Sigma_U": np.empty((chains, draws, D, D)),
        "Sigma_V": np.empty((chains, draws, D, D)),
        "mu": np.empty((chains, draws)),
        "sigma": np.empty((chains, draws)),
    }
    if biases:
        for name in ("user_bias", "item_bias"):
            out[f"{name}_sd"] = np.empty((chains, draws))
            if correlated:  # each bias's covariance with its row's factors
                out[f"{name}_factor_cov"] = np.empty((chains, draws, D))
    if n_row_draws:
        for name, shape in row_shapes.items():
            out[name] = prefaulted_empty((chains, n_row_draws, *shape))
    if keep == "moments":
        out["retained"] = np.asarray(retained, dtype=np.int64)
        for name, shape in row_shapes.items():
            out[f"{name}_mean"] = np.zeros((chains, *shape))
            out[f"{name}_var"] = np.zeros((chains, *shape))
        if n_pairs:
            out["pair_mean"] = np.zeros((chains, n_pairs))
            out["pair_var"] = np.zeros((chains, n_pairs))
    if covariance_prior == "lkj":
        out["diverging"] = np.zeros((chains, draws), dtype=bool)
        out["n_steps_U"] = np.zeros((chains, draws), dtype=np.int64)
        out["n_steps_V"] = np.zeros((chains, draws), dtype=np.int64)
    return out


#: Arrays of kept draws at least this large are mapped with their pages populated at once
PREFAULT_MIN_BYTES = 4 << 20


def prefaulted_empty(shape):
    """An uninitialised float64 array whose memory is mapped and populated in one call.

    The kept draws of the rows fill hundreds of megabytes one draw at a time; on a fresh
    ``np.empty`` each draw's first write faults in its pages one 4 KiB page at a time (0.58
    ms a draw of ``U`` and ``V`` on MovieLens 100K against 0.03 ms into populated memory, and
    the chains' threads queue on the faults). ``MAP_POPULATE`` maps the whole array in the
    kernel at once (0.13 s for 378 MB). Small arrays, and systems without it, get
    ``np.empty``.
    """
    size = int(np.prod(shape))
    populate = getattr(mmap, "MAP_POPULATE", None)
    if populate is None or size * 8 < PREFAULT_MIN_BYTES:
        return np.empty(shape)
    try:
        buffer = mmap.mmap(-1, size * 8, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
    except OSError:  # e.g. an overcommit limit: lazily faulted memory may still do
        return np.empty(shape)
    return np.frombuffer(buffer, dtype=np.float64, count=size).reshape(shape)


def _welford(mean, m2, value, count, parallel=False):
    """Update a running mean and sum of squared deviations in place with the ``count``-th
    value (Welford's algorithm: no cancellation, unlike sums of squares); ``parallel``: on
    numba's threads, with the same result."""
    if parallel:
        welford_parallel(mean.reshape(-1), m2.reshape(-1), np.ascontiguousarray(value).reshape(-1),
                         float(count))
        return
    delta = value - mean
    mean += delta / count
    m2 += delta * (value - mean)


NOISE_WEIGHT_VARIABLES = ("user_noise_weight", "item_noise_weight", "noise_df_user",
                          "noise_df_item")


def _record(out, chain, draw, state, biases, keep="all", row_slot=None, pairs=None,
            parallel=False):
    """Store kept draw ``draw``; with ``keep="moments"``, update the running moments and
    store the rows only in their ``row_slot`` (None: this draw's rows are not retained);
    ``parallel``: the moments of the rows on numba's threads."""
    for name in ("mu_U", "mu_V", "Sigma_U", "Sigma_V", "mu"):
        out[name][chain, draw] = state[name]
    out["sigma"][chain, draw] = 1.0 / np.sqrt(state["tau"])
    if "cutpoints" in out:
        out["cutpoints"][chain, draw] = state["cutpoints"]
    if "day_bias_sd" in out:
        out["day_bias_sd"][chain, draw] = 1.0 / np.sqrt(state["day_bias_precision"])
    for name in NOISE_WEIGHT_VARIABLES:
        if name in out:
            out[name][chain, draw] = state[name]
    if biases:
        for name in ("user_bias", "item_bias"):
            out[f"{name}_sd"][chain, draw] = 1.0 / np.sqrt(state[f"{name}_precision"])
            if f"{name}_factor_cov" in out:
                out[f"{name}_factor_cov"][chain, draw] = state[f"{name}_factor_cov"]
    rows = ROW_VARIABLES if biases else ROW_VARIABLES[:2]
    if "day_bias_sd" in out:  # the day biases are kept as the rows are
        rows = (*rows, "day_bias")
    slot = draw if keep == "all" else row_slot
    if slot is not None:
        for name in rows:
            if name in out:
                out[name][chain, slot] = state[name]
    if keep == "moments":
        for name in rows:
            # the variance slot holds the sum of squared deviations until the end
            _welford(out[f"{name}_mean"][chain], out[f"{name}_var"][chain], state[name], draw + 1,
                     parallel)
        if pairs is not None:
            users, items = pairs
            expected = state["mu"] + np.einsum("nk,nk->n", state["U"][users], state["V"][items])
            if biases:
                expected += state["user_bias"][users] + state["item_bias"][items]
            _welford(out["pair_mean"][chain], out["pair_var"][chain], expected, draw + 1)
    for name in IMPLICIT_VARIABLES:
        if name in out:
            out[name][chain, draw] = state[name]
    if "diverging" in out:
        out["diverging"][chain, draw] = state["diverging_U"] or state["diverging_V"]
        out["n_steps_U"][chain, draw] = state["steps_U"]
        out["n_steps_V"][chain, draw] = state["steps_V"]


def _finish_moments(out, draws):
    """Turn the sums of squared deviations into variances (over the ``draws`` kept draws)."""
    for name in [*ROW_VARIABLES, "day_bias", "pair"]:
        if f"{name}_var" in out:
            out[f"{name}_var"] /= draws


def _check_keep(keep, thin, factor_draws, predict_pairs, draws, n_users, n_items):
    if keep not in _KEEP:
        raise ValueError(f"keep must be one of {_KEEP}, got {keep!r}")
    if isinstance(thin, bool) or int(thin) != thin or thin < 1:
        raise ValueError(f"thin must be an integer >= 1, got {thin!r}")
    if keep == "all":
        if factor_draws is not None or predict_pairs is not None:
            raise ValueError("factor_draws and predict_pairs apply to keep='moments' only")
        return None, None
    factor_draws = 0 if factor_draws is None else factor_draws
    if isinstance(factor_draws, bool) or int(factor_draws) != factor_draws or factor_draws < 0:
        raise ValueError(f"factor_draws must be an integer >= 0, got {factor_draws!r}")
    factor_draws = min(int(factor_draws), draws)
    # evenly spaced over the kept draws, the last one included
    retained = np.unique(np.round(np.linspace(draws - 1, 0, factor_draws)).astype(np.int64))
    if factor_draws == 0:
        retained = np.empty(0, dtype=np.int64)
    pairs = None
    if predict_pairs is not None:
        users, items = (np.asarray(codes) for codes in predict_pairs)
        if users.shape != items.shape or users.ndim != 1:
            raise ValueError("predict_pairs must be two 1-d arrays of equal length (users, items)")
        for name, codes, n in (("user", users, n_users), ("item", items, n_items)):
            if not np.issubdtype(codes.dtype, np.integer) or (
                codes.size and (codes.min() < 0 or codes.max() >= n)
            ):
                raise ValueError(f"predict_pairs {name} codes must be integers in [0, {n})")
        pairs = (users.astype(np.int64), items.astype(np.int64))
    return retained, pairs


def row_threads(threads, workers, n_ratings=None, check_layer=True):
    """Threads for the rows of each chain: the ``threads`` budget (None: every CPU) shared
    by the ``workers`` chains that run at once, at least one. One below
    :data:`bpmf.inference.rows.PARALLEL_MIN_RATINGS` ratings (when ``n_ratings`` is given),
    and, with ``check_layer``, one when numba's threading layer cannot run parallel loops
    from several threads at once (workqueue, or not known yet: no parallel loop has run)."""
    total = available_cores() if threads is None else int(threads)
    if total < 1:
        raise ValueError(f"threads must be an integer >= 1 or None, got {threads!r}")
    per_chain = max(1, total // workers)
    if n_ratings is not None and n_ratings < rows_module.PARALLEL_MIN_RATINGS:
        return 1
    if per_chain > 1 and workers > 1 and check_layer:
        try:
            layer = numba.threading_layer()
        except ValueError:  # no parallel loop has run yet
            layer = "workqueue"
        if layer == "workqueue":
            return 1
    return per_chain


def _implicit_sides(implicit, n_users, n_items):
    """``{side: ImplicitSets}`` from ``sample_gibbs``'s ``implicit`` argument: None (no
    implicit feedback), the users' sets ``N(u)``, or a dict with ``"U"`` and/or ``"V"``."""
    if implicit is None:
        return {}
    if isinstance(implicit, ImplicitSets):
        implicit = {"U": implicit}
    sides = {side: sets for side, sets in dict(implicit).items() if sets is not None}
    for side, sets in sides.items():
        if side not in IMPLICIT_KEYS:
            raise ValueError(f"implicit sides must be 'U' or 'V', got {side!r}")
        rows, partners = (n_users, n_items) if side == "U" else (n_items, n_users)
        if (sets.n_users, sets.n_items) != (rows, partners):
            raise ValueError(f"implicit[{side!r}] sets are {sets.n_users} x {sets.n_items}; "
                             f"expected {rows} x {partners}.")
    return sides


def _hyperpriors(covariance_prior, config, n_factors, tune, nuts, biases=True):
    if covariance_prior == "lkj":
        if biases and config.get("correlated_biases"):
            return CorrelatedLKJHyperpriors(config, n_factors, tune, **nuts)
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
    threads=None,
    thin=1,
    keep="all",
    factor_draws=None,
    predict_pairs=None,
    overrelax=0.0,
    noise_overrelax=0,
    features=None,
    ordinal=None,
    implicit=None,
    implicit_step="rows",
    day_groups=None,
    noise_weights=False,
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
    threads : int or None
        Threads for the whole fit (None: every CPU). The chains that run at once share them:
        each draws its rows on ``threads // chains in parallel`` threads, so with as many
        chains as cores the rows run on one thread each. The draws do not depend on it.
    thin : int, default 1
        Keep every ``thin``-th sweep after the warm-up (``draws * thin`` sweeps run).
    keep : {"all", "moments"}, default "all"
        ``"all"``: every kept draw of every variable. ``"moments"``: every kept draw of the
        scalars and hyperparameters; for the rows (``U``, ``V``, ``user_bias``,
        ``item_bias``) their running mean and variance over every kept draw plus the draws
        of ``factor_draws`` of them, evenly spaced (memory: ``chains x (2 + factor_draws)``
        copies of the rows instead of ``chains x draws``).
    factor_draws : int or None
        With ``keep="moments"``: how many draws of the rows to retain (None: 0). They make
        predictions possible: a posterior mean prediction averages ``U_u . V_i`` over joint
        draws of both sides, which the per-side moments do not determine.
    predict_pairs : (user_codes, item_codes) or None
        With ``keep="moments"``: pairs whose expected rating ``mu + b_u + c_i + U_u . V_i``
        is averaged over every kept draw as the chain runs (exact posterior mean and
        variance of the expected rating, at the cost of one float pair per pair).
    overrelax : float in (-1, 1), default 0
        Adler's overrelaxation of the row draws (0: plain draws).
    noise_overrelax : int, default 0
        Candidates of the ordered overrelaxation of the noise precision
        (:func:`ordered_overrelaxation`; 0: a plain draw).
    features : dict or None
        Side features: ``{"U": X_users, "V": X_items}`` (either may be None), each an
        ``(n_rows, F)`` design in code order. The rows' prior means (and the biases') then
        regress on them through a link with a matrix normal prior
        (:mod:`bpmf.inference.features`; ``model_config["link_precision_shape"]`` and
        ``["link_precision_rate"]`` give the Gamma prior of its precision, default 1, 1), and
        the draws also hold ``B_U``, ``user_bias_link``, ``link_precision_U`` (and ``V``'s).
    ordinal : (low, high) or None
        The ordered-probit likelihood on the whole ratings ``low..high`` instead of the
        Gaussian one (:mod:`bpmf.inference.ordinal`; ``model_config["cutpoint_sd"]``, default 1,
        is the prior sd of the cut-points about the midpoints between ratings):
        the noise sd is 1 and the cut-points are drawn and returned as ``cutpoints``
        ``(chain, draw, K - 1)``.
    implicit : bpmf.inference.implicit.ImplicitSets, dict or None
        Implicit feedback (Bayesian SVD++, :mod:`bpmf.inference.implicit`): the sets ``N(u)``
        of the users, or ``{"U": sets, "V": sets}`` with the items' sets ``N(i)`` of users
        (built with the roles swapped) for implicit factors ``Z`` of the users in the items'
        effective vectors; ``model_config["implicit_scale_sd"]`` is the half-normal prior
        scale of ``s_Y`` (and ``s_Z``). Needs ``keep="all"``.
    implicit_step : {"rows", "collapsed"}, default "rows"
        How the implicit factors are drawn (:class:`bpmf.inference.implicit.ImplicitStep`).
    day_groups : (groups, group_users) or None
        Day-specific user biases (:mod:`bpmf.inference.day_bias`): the (user, day) group of
        each rating and the user of each group; ``model_config["day_bias_scale_sd"]`` is the
        half-normal prior scale of their sd. The draws then hold ``day_bias`` (group) and
        ``day_bias_sd``; with ``keep="moments"`` the day biases are kept as the rows are
        (``day_bias_mean``, ``day_bias_var`` and the retained draws). Not with ``ordinal``.
    noise_weights : bool, default False
        Per-user and per-item noise weights (:mod:`bpmf.inference.noise_weights`): rating
        ``(u, i)`` has the noise sd ``sigma / sqrt(a_u c_i)``. The draws then hold
        ``user_noise_weight`` (user), ``item_noise_weight`` (item) and their Gamma priors'
        degrees of freedom ``noise_df_user``, ``noise_df_item``. Needs ``keep="all"``; not
        with ``ordinal`` or ``implicit_step="collapsed"``.

    Returns
    -------
    dict of str to ndarray
        Draws with leading ``(chain, draw)`` axes: ``U``, ``V``, ``mu_U``, ``mu_V``,
        ``Sigma_U``, ``Sigma_V``, ``mu``, ``sigma`` and, with biases, ``user_bias``,
        ``item_bias``, ``user_bias_sd``, ``item_bias_sd``; with the LKJ prior also the NUTS
        statistics of the Cholesky blocks, ``diverging``, ``n_steps_U``, ``n_steps_V``.
        With ``keep="moments"``, ``U``, ``V``, ``user_bias`` and ``item_bias`` hold only the
        retained draws (absent when there are none), at the positions ``retained`` of the
        draw axis; ``U_mean``, ``U_var`` (and so on for ``V`` and the biases) with a leading
        ``chain`` axis hold the running moments; ``pair_mean``, ``pair_var`` (chain, pair)
        those of ``predict_pairs``. With ``implicit``: ``Y`` (item, factor), ``Y_sd``
        (factor) and ``offset_U`` (user, factor); with the items' sets also ``Z`` (user,
        factor), ``Z_sd`` and ``offset_V`` (item, factor).
    """
    user_codes, item_codes, ratings = check_inputs(
        user_codes, item_codes, ratings, n_users, n_items, draws, tune, chains
    )
    draws, tune, chains, D = int(draws), int(tune), int(chains), int(n_factors)
    shapes = (int(n_users), int(n_items), D)
    retained, pairs = _check_keep(
        keep, thin, factor_draws, predict_pairs, draws, shapes[0], shapes[1]
    )
    implicit = _implicit_sides(implicit, n_users, n_items)
    if implicit and keep != "all":
        raise ValueError("implicit feedback keeps every draw: use keep='all'")
    noise_weights = bool(noise_weights)
    if noise_weights and (keep != "all" or ordinal is not None
                          or (implicit and implicit_step == "collapsed")):
        raise ValueError("noise weights need keep='all', the Gaussian likelihood and "
                         "implicit_step='rows'.")
    if implicit_step not in IMPLICIT_METHODS:
        raise ValueError(f"implicit_step must be one of {IMPLICIT_METHODS}, got "
                         f"{implicit_step!r}")
    thin = int(thin)
    slots = {} if retained is None else {int(d): slot for slot, d in enumerate(retained)}
    overrelax = float(overrelax)
    if not -1.0 < overrelax < 1.0:
        raise ValueError(f"overrelax must lie in (-1, 1), got {overrelax!r}")
    if isinstance(noise_overrelax, bool) or not isinstance(noise_overrelax, numbers.Integral) \
            or noise_overrelax < 0:
        raise ValueError(f"noise_overrelax must be an integer >= 0, got {noise_overrelax!r}")
    noise_overrelax = int(noise_overrelax)
    config = {**model_config, "intercept_mean": float(ratings.mean()), "overrelax": overrelax,
              "noise_overrelax": noise_overrelax}
    if ordinal is not None:
        low, high = ordinal
        categories = rating_categories(ratings, low, high)
        config["sigma"] = 1.0
    # With the LKJ prior, the first third of the warm-up runs the conjugate sweeps: from a
    # start with a factor shrunk on both sides (a MAP on little data), LKJ sweeps take
    # hundreds of sweeps to regrow it, while the Wishart prior's pull away from zero
    # covariances does it in a few. Warm-up draws are discarded, so this changes no draw's law.
    early = tune // 3 if covariance_prior == "lkj" else 0
    hyper = _hyperpriors(covariance_prior, config, D, tune - early, dict(nuts or {}), biases)
    early_hyper = WishartHyperpriors(WISHART_DEFAULTS, D) if early else None
    if isinstance(random_state, np.random.Generator):
        random_state = int(random_state.integers(2**63))
    seeds = np.random.SeedSequence(random_state).spawn(chains)
    csrs = csr_pair(user_codes, item_codes, ratings, shapes[0], shapes[1])
    links = _links(features, biases, config, shapes)
    out = _allocate(
        chains,
        draws,
        shapes,
        biases,
        covariance_prior,
        keep,
        retained,
        0 if pairs is None else len(pairs[0]),
        correlated=isinstance(hyper, CorrelatedLKJHyperpriors),
    )
    if links is not None:
        links.allocate(out, chains, draws)
    if ordinal is not None:
        out["cutpoints"] = np.empty((chains, draws, int(round(high - low))))
    if day_groups is not None:
        if ordinal is not None:
            raise ValueError("day biases are not available with the ordinal likelihood")
        # kept as the rows are: every draw, or the retained draws and running moments
        n_groups = len(day_groups[1])
        kept = draws if keep == "all" else len(retained)
        if kept:
            out["day_bias"] = np.empty((chains, kept, n_groups))
        out["day_bias_sd"] = np.empty((chains, draws))
        if keep == "moments":
            out["day_bias_mean"] = np.zeros((chains, n_groups))
            out["day_bias_var"] = np.zeros((chains, n_groups))
    if noise_weights:
        out["user_noise_weight"] = np.empty((chains, draws, shapes[0]))
        out["item_noise_weight"] = np.empty((chains, draws, shapes[1]))
        out["noise_df_user"] = np.empty((chains, draws))
        out["noise_df_item"] = np.empty((chains, draws))
    for side, sets in implicit.items():
        factors, scales, offset = IMPLICIT_KEYS[side][:3]
        out[factors] = prefaulted_empty((chains, draws, sets.n_items, D))
        out[scales] = np.empty((chains, draws, D))
        out[offset] = prefaulted_empty((chains, draws, sets.n_users, D))
        if config.get("implicit_centered", False):
            out[OFFSET_MEANS[side]] = np.empty((chains, draws, D))
    bar = tqdm(
        total=chains * (tune + draws * thin),
        desc="Gibbs",
        unit="sweep",
        disable=not resolve_progressbar(progressbar),
    )

    def run_chain(chain):
        if phase_lock is None:
            return _run_chain(chain)
        with phase_lock:  # released around the compiled kernels (``released``)
            return _run_chain(chain)

    def _run_chain(chain):
        rng = np.random.default_rng(seeds[chain])
        state = _initial_state(init, shapes, biases, ratings, init_jitter, rng)
        if config["sigma"] is not None:
            state["tau"] = 1.0 / float(config["sigma"]) ** 2
        for bias in ("user_bias", "item_bias"):
            state[f"{bias}_precision"] = 1.0 / max(float(np.mean(state[bias] ** 2)), 1e-2)
        work = workspace(*shapes, biases)
        work["phase_lock"] = phase_lock
        for side, csr in zip(("U", "V"), csrs, strict=True):
            work[side]["counts"] = np.diff(csr[0]).astype(float)
        if links is not None:
            links.start(state, D)
        steps = None
        if ordinal is not None:
            steps = OrdinalGibbs(
                user_codes, item_codes, categories, int(round(high - low)) + 1, csrs,
                cutpoint_prior_means(low, high), config.get("cutpoint_sd", 1.0), tune,
            )
            steps.start(state)
        if day_groups is not None:
            steps = DayBiasGibbs(user_codes, item_codes, ratings, *day_groups, csrs,
                                 config.get("day_bias_scale_sd", 1.0))
            steps.start(state)
        if noise_weights:
            work["noise"] = NoiseWeights(
                user_codes, item_codes, ratings, *shapes[:2], csrs,
                None if day_groups is None else day_groups[0],
            )
            work["noise"].start(state)
            work["noise"].set_weights(state, work)
            if day_groups is not None:  # the day biases' sums use the same weights
                steps.weights = work["noise"].weights
        work["implicit"] = {
            side: ImplicitStep(sets, D, config.get("implicit_scale_sd", 1.0), biases, side,
                               implicit_step, config.get("implicit_centered", False))
            for side, sets in implicit.items()
        }
        for step in work["implicit"].values():
            step.start(state, rng)
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
                    threads_per_chain,
                    links,
                    steps,
                )
                bar.update()
        hyper.start(state, rng)
        for sweep in range(early, tune + draws * thin):
            _sweep(state, csrs, hyper, config, biases, work, rng, threads_per_chain, links, steps)
            bar.update()
            if sweep >= tune and (sweep - tune + 1) % thin == 0:
                draw = (sweep - tune) // thin
                with (rows_module.numba_threads(threads_per_chain) if parallel_moments
                      else contextlib.nullcontext()):
                    _record(out, chain, draw, state, biases, keep, slots.get(draw), pairs,
                            parallel_moments)
                if links is not None:
                    links.record(out, chain, draw, state)

    workers = max(1, min(chains, int(cores) if cores else chains))
    if workers > 1:
        settle_scipy_imports()
    # chains in threads take turns in the Python parts of their sweeps (``released``)
    phase_lock = threading.Lock() if workers > 1 else None
    # the parallel kernel is loaded (and numba's thread pool started, which a process must
    # not have done before it forks) only when it will run
    parallel = row_threads(threads, workers, len(ratings), check_layer=False) > 1
    dim = D + 1 if biases else D
    _compile_kernels(
        D, biases, parallel,
        (rows_module.partner_dtype(shapes[1], dim), rows_module.partner_dtype(shapes[0], dim)),
    )
    threads_per_chain = row_threads(threads, workers, len(ratings))
    # the running moments of the rows on the rows' threads too (more than one only for fits
    # large enough to draw their rows in parallel)
    parallel_moments = keep == "moments" and threads_per_chain > 1
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
    if keep == "moments":
        _finish_moments(out, draws)
    return out


def _links(features, biases, config, shapes):
    """The side-feature link block (None without features); checks the designs' shapes."""
    if features is None or all(X is None for X in features.values()):
        return None
    if biases and config.get("correlated_biases"):
        raise ValueError("side features need correlated_biases=False.")
    designs = {}
    for side, n_rows in (("U", shapes[0]), ("V", shapes[1])):
        X = features.get(side)
        if X is None:
            continue
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] != n_rows or X.shape[1] < 1:
            raise ValueError(
                f"features[{side!r}] must be a 2-d array with {n_rows} rows and at least one "
                f"column, got shape {X.shape}."
            )
        if not np.isfinite(X).all():
            raise ValueError(f"features[{side!r}] contains NaN or infinite values.")
        designs[side] = X
    return FeatureLinks(designs, biases, config.get("link_precision_shape", 1.0),
                        config.get("link_precision_rate", 1.0))


def _compile_kernels(n_factors, biases, parallel=False, dtypes=(np.float64,)):
    """Load (or compile) the row kernel (and with ``parallel`` its parallel twin), for the
    partner rows' ``dtypes``, before the progress bar starts counting sweeps."""
    user_codes = np.array([0, 1], dtype=np.int64)
    item_codes = np.array([0, 0], dtype=np.int64)
    ratings = np.array([1.0, 2.0])
    user_csr, _ = csr_pair(user_codes, item_codes, ratings, 2, 1)
    dim = n_factors + 1 if biases else n_factors
    rows = np.empty((2, dim))
    blocks = np.array([0, 1, 2], dtype=np.int64)
    if parallel:
        welford_parallel(np.zeros(1), np.zeros(1), np.zeros(1), 1.0)
    kernels = (sample_rows, sample_rows_parallel) if parallel else (sample_rows,)
    for kernel in kernels:
        for dtype in set(dtypes):
            X = aligned_zeros((1, dim + 1), dtype)
            kernel(
                *user_csr,
                X,
                0.0,
                np.eye(dim),
                np.zeros((1, dim)),
                1.0,
                np.empty((0, dim)),
                rows,
                True,
                blocks,
                0.0,
                np.zeros(2),
                1,
            )
