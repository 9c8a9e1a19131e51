r"""The hyperparameter steps of the blocked Gibbs sampler, one class per covariance prior.

Both classes give the sweep in :mod:`bpmf.inference.gibbs` the same four things: a draw of a
side's factor mean and precision given its rows, a draw of the noise precision given the sum
of squared residuals, a draw of a bias precision given the biases, and the Gaussian prior
term of a side's factor mean that the sampler's translation moves need.

:class:`LKJHyperpriors` is the mission's model, the one that joint NUTS samples:
``mu_U ~ N(0, s_m^2 I)``, ``chol_U ~ LKJCholeskyCov(eta, HalfNormal(s_f))``, half-normal
bias scales and noise. Its steps are exact: the factor mean given the covariance is
Gaussian; the Cholesky factor given the mean takes one NUTS transition on its full
conditional, which depends on the rows only through their number and scatter
(:mod:`bpmf.kernels.lkj`); a scale ``s`` with a half-normal prior over ``n`` zero-mean
Gaussians with sum of squares ``Q`` has a precision ``1 / s^2`` that is generalised inverse
Gaussian, ``GIG(lambda=(n - 1) / 2, chi=1 / prior_sd^2, psi=Q)``, drawn exactly.

:class:`WishartHyperpriors` is the conjugate model of Salakhutdinov & Mnih (2008):
Normal-Wishart factor hyperpriors and Gamma precisions.
"""

import numpy as np
from scipy import stats

from bpmf.inference.features import link_scatter
from bpmf.kernels.dense import (
    covariance_base,
    covariance_blocks,
    gaussian_from_precision,
    inverse_from_cholesky,
)
from bpmf.kernels.lkj import (
    lkj_relative_logp_grad,
    relative_cholesky,
    relative_coordinates,
)
from bpmf.kernels.moves import bordered_regression, correlated_shifts
from bpmf.kernels.moves import split_move as compiled_split_move
from bpmf.kernels.nuts import StepAdapter, laplace_chol_cov, nuts_transition
from bpmf.kernels.scatter import stacked_scatter, stacked_sums
from bpmf.kernels.slice import slice_log_scales

__all__ = [
    "WISHART_DEFAULTS",
    "CorrelatedLKJHyperpriors",
    "LKJHyperpriors",
    "WishartHyperpriors",
    "draw_halfnormal_scale",
    "draw_halfnormal_scales",
    "positive_normal",
    "sample_normal_wishart",
    "settle_scipy_imports",
]

_MAX_REJECTIONS = 50

#: Defaults of the Normal-Wishart / Gamma hyperpriors (also the LKJ chains' warm-up sweeps).
WISHART_DEFAULTS = {
    "beta0": 2.0,
    "nu0": None,
    "W0": None,
    "mu0": 0.0,
    "noise_shape": 1.0,
    "noise_rate": 1.0,
    "bias_precision_shape": 1.0,
    "bias_precision_rate": 0.1,
}


def settle_scipy_imports():
    """Run SciPy's generalised inverse Gaussian sampler once in the calling thread, before
    chains start in threads. SciPy's array-API helpers look up ``jax`` in ``sys.modules``,
    and ArviZ registers it there as a lazily loaded module, which the first lookup imports:
    two chains doing that at once could see it half-imported (an AttributeError that ended
    the fit). Done here, the import happens once, in one thread."""
    stats.geninvgauss.rvs(1.0, 1.0, random_state=np.random.default_rng(0))


def positive_normal(mean, sd, rng):
    """A draw of N(mean, sd^2) truncated to (0, inf)."""
    if mean > -sd:  # rejection accepts with probability > 0.15
        while True:
            g = mean + sd * rng.standard_normal()
            if g > 0.0:
                return g
    return float(stats.truncnorm.rvs(-mean / sd, np.inf, loc=mean, scale=sd, random_state=rng))


def draw_halfnormal_scale(n, sum_squares, prior_sd, rng):
    """A draw of ``s`` with density proportional to ``s^-n exp(-Q / 2 s^2) HalfNormal(s; sd)``.

    The precision ``tau = 1 / s^2`` is ``GIG(lambda=(n - 1) / 2, chi=1 / sd^2, psi=Q)``. For
    ``n >= 2`` a ``Gamma((n - 1) / 2, rate=Q / 2)`` proposal accepted with probability
    ``exp(-1 / (2 sd^2 tau))`` is exact and cheap (acceptance ``E exp(-s^2 / 2 sd^2)``, above
    0.6 for ``s <= sd``). For ``n < 2`` (a single user or item), proposals from the prior are
    accepted with probability ``L(s) / max L``, ``L(s) = s^-n exp(-Q / 2 s^2)``, also exact.
    scipy's GIG sampler is the last resort where neither accepts.
    """
    sum_squares = max(float(sum_squares), 1e-300)
    chi = 1.0 / float(prior_sd) ** 2
    shape = 0.5 * (n - 1)
    if shape > 0:
        for _ in range(_MAX_REJECTIONS):
            tau = rng.gamma(shape, 2.0 / sum_squares)
            if rng.random() < np.exp(-0.5 * chi / tau):
                return 1.0 / np.sqrt(tau)
    else:
        log_best = -0.5 * n * (np.log(sum_squares / n) + 1.0) if n > 0 else 0.0
        for _ in range(_MAX_REJECTIONS):
            scales = np.abs(rng.normal(0.0, float(prior_sd), 1024))
            log_ratio = -n * np.log(scales) - 0.5 * sum_squares / scales**2 - log_best
            accepted = np.flatnonzero(np.log(rng.random(1024)) < log_ratio)
            if accepted.size:
                return float(scales[accepted[0]])
    # GIG(p, chi, psi) = sqrt(chi / psi) * geninvgauss(p, sqrt(chi * psi))
    tau = np.sqrt(chi / sum_squares) * stats.geninvgauss.rvs(
        shape, np.sqrt(chi * sum_squares), random_state=rng
    )
    return 1.0 / np.sqrt(tau)


def draw_halfnormal_scales(n, sum_squares, prior_sd, size, rng):
    """``size`` independent draws of :func:`draw_halfnormal_scale` at once (the Gamma
    proposals of every draw in one call; the rare draw that still rejects after
    ``_MAX_REJECTIONS`` rounds, or ``n < 2``, falls back on the scalar sampler)."""
    size = int(size)
    kept = []
    if 0.5 * (n - 1) > 0:
        sum_squares = max(float(sum_squares), 1e-300)
        chi = 1.0 / float(prior_sd) ** 2
        # the first ``size`` accepted proposals of an iid stream are iid draws: proposals
        # come in rounds of twice what is missing (usually one round)
        for _ in range(_MAX_REJECTIONS):
            missing = size - sum(len(k) for k in kept)
            if missing <= 0:
                break
            tau = rng.gamma(0.5 * (n - 1), 2.0 / sum_squares, 2 * missing)
            kept.append(tau[rng.random(2 * missing) < np.exp(-0.5 * chi / tau)])
    taus = np.concatenate(kept)[:size] if kept else np.empty(0)
    out = np.empty(size)
    out[: len(taus)] = 1.0 / np.sqrt(taus)
    for i in range(len(taus), size):
        out[i] = draw_halfnormal_scale(n, sum_squares, prior_sd, rng)
    return out


def _prior_rows(side, state):
    """A side's rows about their per-row link means (the rows themselves without features),
    and the extra scatter and count that the link's prior adds to the covariance's
    conditional (:mod:`bpmf.inference.features`)."""
    link = state.get(f"link_mean_{side}")
    rows = state[side] if link is None else state[side] - link
    return (rows, *link_scatter(side, state))


def _draw_rescale(a, b, extra, dim, rng):
    """The rescaling factors ``g = e^t``, ``t`` from ``exp(-a e^{2t} - b e^{-2t})`` times the
    ``extra`` terms ``(a', b', c)``: ``exp(-a' e^{2t} - b' e^{-2t} + c t)`` (None: none)."""
    uniforms = rng.random((dim, 32))
    if extra is None:
        return np.exp(slice_log_scales(a, b, uniforms))
    return np.exp(slice_log_scales(a + extra[0], b + extra[1], uniforms,
                                   np.asarray(extra[2], float)))


def _draw_gaussian(precision, linear, rng):
    """A draw from ``N(P^-1 h, P^-1)`` through the Cholesky factor of ``P``."""
    return gaussian_from_precision(
        np.asarray(precision, dtype=float), np.asarray(linear, dtype=float),
        rng.standard_normal(linear.shape[0]),
    )


class LKJHyperpriors:
    """LKJ covariance, Normal factor means, half-normal bias scales and noise.

    Parameters
    ----------
    config : dict
        ``factor_means``, ``factor_mean_sd``, ``lkj_eta``, ``factor_scale_sd``,
        ``bias_scale_sd``, ``sigma_sd`` as in :class:`bpmf.models.BPMF`.
    n_factors : int
    n_tune : int
        Warm-up sweeps; the NUTS step of each side adapts during them.
    tune_transitions : int
        NUTS transitions per side per warm-up sweep (more data for the adaptation); one per
        sweep after the warm-up.
    target_accept, max_treedepth : float, int
        NUTS settings of the Cholesky block.
    """

    name = "lkj"

    def __init__(
        self, config, n_factors, n_tune, *, tune_transitions=3, target_accept=0.8, max_treedepth=8
    ):
        self.config = config
        self.dim = int(n_factors)
        means = config["factor_means"]
        # per side: whether its factor mean is a free parameter (else fixed at zero)
        self.free_means = {side: (means is True) or (means == side) for side in ("U", "V")}
        self.eta = float(config["lkj_eta"])
        self.scale_sd = float(config["factor_scale_sd"])
        self.mean_precision = 1.0 / float(config["factor_mean_sd"]) ** 2
        self.n_tune = int(n_tune)
        self.tune_transitions = int(tune_transitions)
        self.target_accept = float(target_accept)
        self.max_treedepth = int(max_treedepth)

    def start(self, state, rng):
        """Per-chain hyperparameter state from the chain's starting rows."""
        for side in ("U", "V"):
            rows = state[side]
            mean = rows.mean(axis=0) if self.free_means[side] else np.zeros(self.dim)
            chol, cov = self._start_block(side, state, self._conditional(rows, mean), 0.0)
            state[f"mu_{side}"] = mean
            state[f"chol_{side}"] = chol
            state[f"Lambda_{side}"] = np.linalg.inv(cov)

    def _start_block(self, side, state, args, last_scale_sd):
        """A side's starting Cholesky factor (from the rows' scatter in ``args``) and its
        NUTS adapter, with a Laplace metric at that start; returns the factor and its
        covariance."""
        dim = args[1].shape[0]
        cov = args[1] / max(args[2], 1.0) + 1e-2 * np.eye(dim)
        chol = np.linalg.cholesky(cov)
        x = relative_coordinates(args[0], chol)
        chol_cov = laplace_chol_cov(x, *args, last_scale_sd)
        if chol_cov is None:  # far from the mode: a small isotropic metric to begin with
            chol_cov = 0.05 * np.eye(x.shape[0])
        state[f"adapter_{side}"] = StepAdapter(
            chol_cov, self.n_tune * self.tune_transitions, self.target_accept
        )
        return chol, cov

    def _conditional(self, rows, mean, extra_scatter=None, extra_count=0):
        """Arguments of the Cholesky factor's conditional: base, scatter, n, eta, s_f.

        ``base`` is the Cholesky factor of the rows' covariance about ``mean`` (identity with
        too few rows), a function of the conditioning values only, so the kernel stays exact.
        ``extra_scatter`` and ``extra_count`` are pseudo-rows of a side-feature link's prior
        ``N(0, Sigma / lambda)`` per link row (``lambda B^T B`` and ``F``).
        """
        centred = rows - mean
        scatter = centred.T @ centred
        n_rows = rows.shape[0]
        if extra_scatter is not None:
            scatter = scatter + extra_scatter
            n_rows += int(extra_count)
        return self._conditional_from_scatter(scatter, n_rows)

    def _conditional_from_scatter(self, scatter, n_rows):
        """:meth:`_conditional` given the rows' scatter about their mean and their count."""
        base = covariance_base(scatter, float(n_rows))
        return base, scatter, float(n_rows), self.eta, self.scale_sd

    def factor_step(self, side, state, rng):
        """Draw ``chol_side`` given the rows and mean (NUTS), then the mean given both."""
        rows, extra_scatter, extra_count = _prior_rows(side, state)
        n_rows = rows.shape[0]
        args = self._conditional(rows, state[f"mu_{side}"], extra_scatter, extra_count)
        chol = self._nuts_update(side, state, args, 0.0, rng)
        state[f"chol_{side}"] = chol
        Lambda = inverse_from_cholesky(chol)
        if self.free_means[side]:
            precision = self.mean_precision * np.eye(self.dim) + n_rows * Lambda
            state[f"mu_{side}"] = _draw_gaussian(precision, Lambda @ rows.sum(axis=0), rng)
        state[f"Lambda_{side}"] = Lambda
        state[f"Sigma_{side}"] = chol @ chol.T

    def _nuts_update(self, side, state, args, last_scale_sd, rng):
        """NUTS transitions of ``chol_side`` on its conditional (``args``: base, scatter, n,
        eta, s_f); records the steps and divergences; returns the new Cholesky factor."""
        adapter = state[f"adapter_{side}"]
        x = relative_coordinates(args[0], state[f"chol_{side}"])
        transitions = self.tune_transitions if adapter.tuning else 1
        n_steps = 0
        diverging = False
        for _ in range(transitions):
            z = rng.standard_normal(x.shape[0])
            u = rng.random(3 * self.max_treedepth)
            tuning = adapter.tuning
            x, accept, steps, div = nuts_transition(
                x, adapter.chol_cov, *args, adapter.step_size, self.max_treedepth, z, u,
                last_scale_sd,
            )
            if tuning:
                log_density = lkj_relative_logp_grad(x, *args, last_scale_sd)[0]
                adapter.update(
                    accept, lambda point: laplace_chol_cov(point, *args, last_scale_sd), x,
                    log_density,
                )
            n_steps += steps
            diverging = diverging or (div and not tuning)
        state[f"steps_{side}"] = n_steps
        state[f"diverging_{side}"] = diverging
        return relative_cholesky(args[0], x)

    def noise_precision(self, n_ratings, sse, rng):
        return 1.0 / draw_halfnormal_scale(n_ratings, sse, self.config["sigma_sd"], rng) ** 2

    def noise_prior(self):
        """The prior of the noise: ``("halfnormal", sd)`` of ``sigma``."""
        return "halfnormal", float(self.config["sigma_sd"])

    def noise_precisions(self, n_ratings, sse, size, rng):
        """``size`` independent draws of :meth:`noise_precision`."""
        scales = draw_halfnormal_scales(n_ratings, sse, self.config["sigma_sd"], size, rng)
        return 1.0 / scales**2

    def shift_moves(self, state, config, rng):
        """The translation moves written for this prior alone (compiled); False: none, the
        sweep runs the generic ones."""
        return False

    def split_moves(self, state, rng):
        """Moves of each row's level between its bias and its factors (correlated biases
        only; :meth:`CorrelatedLKJHyperpriors.split_moves`)."""

    def rescale(self, state, rng, extra=None):
        """Move each factor's scale between the sides, keeping ``U_k V_k`` (a generalised
        Gibbs step on the multiplicative group); returns the factors ``g``.

        ``U[:, k], mu_U[k], L_U[k, :]`` times ``g_k`` and the same of ``V`` divided by it
        leave the likelihood unchanged; with the Jacobian and the Haar measure ``dg / g``,
        ``t = log g_k`` has density ``exp(-a e^{2t} - b e^{-2t})`` with ``a`` (``b``) the
        prior terms of ``U``'s (``V``'s) factor ``k``: ``mu[k]^2 / 2 s_m^2 + s_k^2 / 2 s_f^2``.
        Without it the per-factor balance between the sides, which only the priors fix,
        moves by small steps, and a chain started with one side's factor shrunk stays
        near that state for hundreds of sweeps. ``extra``: ``(a, c)`` of further variables
        that scale with ``U`` or ``V`` (the implicit factors), ``(a, b, c)`` adding
        ``-a e^{2t} - b e^{-2t} + c t``; the caller scales them by the returned ``g``.
        """
        terms = []
        for side in ("U", "V"):
            chol = state[f"chol_{side}"]
            term = (chol**2).sum(axis=1) / (2.0 * self.scale_sd**2)
            if self.free_means[side]:
                term = term + 0.5 * self.mean_precision * state[f"mu_{side}"] ** 2
            terms.append(term)
        # a free factor mean scales with its side: its Jacobian g (U) or 1/g (V) per factor
        # cancels between the sides only when both means are free
        jacobian = float(self.free_means["U"]) - float(self.free_means["V"])
        if jacobian:
            a_extra, b_extra, c_extra = (0.0, 0.0, 0.0) if extra is None else extra
            extra = (np.zeros(self.dim) + a_extra, np.zeros(self.dim) + b_extra,
                     np.zeros(self.dim) + c_extra + jacobian)
        g = _draw_rescale(terms[0], terms[1], extra, self.dim, rng)
        for side, factor in (("U", g), ("V", 1.0 / g)):
            state[side] = state[side] * factor
            state[f"mu_{side}"] = state[f"mu_{side}"] * factor
            # a side-feature link scales with its rows: its prior N(0, Sigma / lambda) per
            # link row is invariant, its Jacobian g^F cancelling the |Sigma|^(-F/2) change
            for key in (f"B_{side}", f"link_mean_{side}"):
                if key in state:
                    state[key] = state[key] * factor
            chol = state[f"chol_{side}"] * factor[:, None]
            state[f"chol_{side}"] = chol
            state[f"Sigma_{side}"] = chol @ chol.T
            state[f"Lambda_{side}"] = inverse_from_cholesky(chol)
        return g

    def bias_precision(self, biases, rng):
        scale = draw_halfnormal_scale(
            biases.shape[0], float(biases @ biases), self.config["bias_scale_sd"], rng
        )
        return 1.0 / scale**2

    def bias_scale(self, bias, state):
        """``(s, s0)``: the current scale of the biases ``bias`` and the sd of its half-normal
        prior, for the scaling move of :mod:`bpmf.inference.gibbs` (None: no such move)."""
        return 1.0 / np.sqrt(state[f"{bias}_precision"]), float(self.config["bias_scale_sd"])

    def scale_biases(self, bias, state, g):
        """Multiply the biases ``bias`` and their scale by ``g``."""
        state[bias] = state[bias] * g
        state[f"{bias}_precision"] = state[f"{bias}_precision"] / g**2

    def bias_terms(self, bias, state):
        """``(lam, w)``: a shift ``c -> c - delta`` of the biases ``bias`` changes their prior
        by ``-sum(delta^2) lam / 2 + delta . w``."""
        lam = state[f"{bias}_precision"]
        link = state.get(f"link_mean_{bias}")  # prior mean of each bias under features
        return lam, lam * (state[bias] if link is None else state[bias] - link)

    def bias_regression(self, side, state):
        """The regression of a side's biases on its factors in the prior (None: independent)."""
        return None

    def mean_prior(self, side, state):
        """``(A, a)`` with the factor mean's prior term ``-e^T A e / 2 + a^T e`` in a shift
        ``e`` of the whole side (rows and mean together); rows alone when the mean is fixed."""
        if self.free_means[side]:
            precision = self.mean_precision * np.eye(self.dim)
            return precision, -precision @ state[f"mu_{side}"]
        Lambda = state[f"Lambda_{side}"]
        rows = _prior_rows(side, state)[0]
        return rows.shape[0] * Lambda, -Lambda @ rows.sum(axis=0)


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


class WishartHyperpriors:
    """Normal-Wishart factor hyperpriors and Gamma precisions (the paper's conjugate model).

    ``Lambda ~ Wishart(W0, nu0)``, ``mu | Lambda ~ N(mu0, (beta0 Lambda)^-1)``; the noise and
    bias precisions are ``Gamma(shape, rate)``.
    """

    name = "wishart"
    free_means = {"U": True, "V": True}

    def __init__(self, config, n_factors):
        self.config = config
        self.dim = int(n_factors)
        self.beta0 = float(config["beta0"])
        self.nu0 = self.dim if config["nu0"] is None else float(config["nu0"])
        W0 = config["W0"]
        W0 = np.eye(self.dim) if W0 is None else W0
        W0 = float(W0) * np.eye(self.dim) if np.ndim(W0) == 0 else np.asarray(W0, dtype=float)
        self.W0_inv = np.linalg.inv(W0)
        self.mu0 = np.broadcast_to(np.asarray(config["mu0"], dtype=float), (self.dim,)).copy()

    def start(self, state, rng):
        for side in ("U", "V"):
            rows = state[side]
            cov = np.atleast_2d(np.cov(rows, rowvar=False)) if rows.shape[0] > 1 else None
            cov = np.eye(self.dim) if cov is None else cov + 1e-2 * np.eye(self.dim)
            state[f"mu_{side}"] = rows.mean(axis=0)
            state[f"Lambda_{side}"] = np.linalg.inv(cov)

    def factor_step(self, side, state, rng):
        # a side-feature link's prior N(0, Lambda^-1 / lambda) per link row is a Wishart
        # likelihood term: F more degrees of freedom and lambda B^T B more scatter
        rows, extra_scatter, extra_count = _prior_rows(side, state)
        W0_inv = self.W0_inv if extra_scatter is None else self.W0_inv + extra_scatter
        mean, Lambda = sample_normal_wishart(
            rows, self.beta0, self.nu0 + extra_count, W0_inv, self.mu0, rng
        )
        state[f"mu_{side}"] = mean
        state[f"Lambda_{side}"] = Lambda
        state[f"Sigma_{side}"] = np.linalg.inv(Lambda)

    shift_moves = LKJHyperpriors.shift_moves

    def split_moves(self, state, rng):
        """No such moves: the Wishart model's biases are independent of the factors."""

    def rescale(self, state, rng, extra=None):
        """No rescaling move: the Wishart prior ties the scales of the two sides."""
        return None

    def noise_precision(self, n_ratings, sse, rng):
        return self.noise_precisions(n_ratings, sse, None, rng)

    def noise_prior(self):
        """The prior of the noise: ``("gamma", shape, rate)`` of its precision."""
        return "gamma", float(self.config["noise_shape"]), float(self.config["noise_rate"])

    def noise_precisions(self, n_ratings, sse, size, rng):
        shape = self.config["noise_shape"] + 0.5 * n_ratings
        return rng.gamma(shape, 1.0 / (self.config["noise_rate"] + 0.5 * sse), size)

    bias_terms = LKJHyperpriors.bias_terms
    bias_regression = LKJHyperpriors.bias_regression

    def bias_scale(self, bias, state):
        return None  # Gamma precisions: the scaling move is not implemented for them

    def bias_precision(self, biases, rng):
        shape = self.config["bias_precision_shape"] + 0.5 * biases.shape[0]
        rate = self.config["bias_precision_rate"] + 0.5 * float(biases @ biases)
        return rng.gamma(shape, 1.0 / rate)

    def mean_prior(self, side, state):
        precision = self.beta0 * state[f"Lambda_{side}"]
        return precision, -precision @ (state[f"mu_{side}"] - self.mu0)


_BIAS_OF = {"U": "user_bias", "V": "item_bias"}


class CorrelatedLKJHyperpriors(LKJHyperpriors):
    """The LKJ prior on each side's factors and bias together: ``(U_u, b_u) ~ N(0, Sigma')``
    with ``Sigma'`` of size ``D + 1`` under ``LKJCholeskyCov(eta, HalfNormal)`` (scale
    ``factor_scale_sd`` for the factors, ``bias_scale_sd`` for the bias), and the same for
    ``(V_i, c_i)``: a bias correlates with its row's factors, so an item with few ratings has
    its bias predicted from its factors. The factor means are zero.
    """

    name = "lkj-correlated"

    def __init__(self, config, n_factors, n_tune, **nuts):
        super().__init__(config, n_factors, n_tune, **nuts)
        self.free_means = {"U": False, "V": False}
        self.bias_scale_sd = float(config["bias_scale_sd"])

    def _block_conditional(self, side, state):
        """The conditional's arguments of ``side``'s Cholesky factor, from the scatter of its
        rows (factors, then bias) about the zero mean."""
        factors = state[side]
        scatter = stacked_scatter(factors, state[_BIAS_OF[side]])
        return self._conditional_from_scatter(scatter, factors.shape[0])

    def _row_sums(self, side, state):
        """The sum of ``side``'s rows (factors, then bias) without stacking them."""
        return stacked_sums(state[side], state[_BIAS_OF[side]])

    def _set_covariance(self, side, state, chol):
        D = self.dim
        state[f"chol_{side}"] = chol
        cov, state[f"row_precision_{side}"], state[f"Lambda_{side}"] = covariance_blocks(chol, D)
        state[f"Sigma_{side}"] = cov[:D, :D]
        # the bias scale recorded (user_bias_sd, item_bias_sd) is its marginal sd, and its
        # covariance with the factors is recorded beside it (fold-in needs the joint prior)
        state[f"{_BIAS_OF[side]}_precision"] = 1.0 / cov[D, D]
        state[f"{_BIAS_OF[side]}_factor_cov"] = cov[:D, D].copy()

    def start(self, state, rng):
        for side in ("U", "V"):
            args = self._block_conditional(side, state)
            state[f"mu_{side}"] = np.zeros(self.dim)
            chol, _ = self._start_block(side, state, args, self.bias_scale_sd)
            self._set_covariance(side, state, chol)

    def factor_step(self, side, state, rng):
        args = self._block_conditional(side, state)
        self._set_covariance(side, state, self._nuts_update(side, state, args,
                                                            self.bias_scale_sd, rng))

    def bias_precision(self, biases, rng):
        return None  # the bias scale is a coordinate of the LKJ block

    def bias_scale(self, bias, state):
        """The bias's sd in the LKJ block, the norm of the Cholesky factor's last row (the
        correlations are the other rows' business), and its half-normal prior sd."""
        side = "U" if bias == "user_bias" else "V"
        last = state[f"chol_{side}"][-1]
        return float(np.sqrt(last @ last)), self.bias_scale_sd

    def scale_biases(self, bias, state, g):
        """Multiply the biases and the Cholesky factor's last row (the bias's sd; its
        correlations with the factors stay) by ``g``."""
        side = "U" if bias == "user_bias" else "V"
        state[bias] *= g  # in place: the biases are this chain's own array
        chol = state[f"chol_{side}"].copy()
        chol[-1] *= g
        self._set_covariance(side, state, chol)

    def bias_terms(self, bias, state):
        side = "U" if bias == "user_bias" else "V"
        precision = state[f"row_precision_{side}"]
        last = precision[-1]
        return last[-1], state[side] @ last[:-1] + state[bias] * last[-1]

    def bias_regression(self, side, state):
        """``Sigma_UU^-1 Sigma_Ub`` (:func:`bpmf.kernels.moves.bordered_regression`)."""
        return bordered_regression(state[f"chol_{side}"])

    def mean_prior(self, side, state):
        """The rows' prior term of a shift ``(e, gamma . e)`` of every row (factors and bias,
        along the bias's regression ``gamma`` on the factors): only the factors' marginal
        precision ``Sigma_UU^-1`` sees it."""
        D = self.dim
        precision = state[f"row_precision_{side}"]
        sums = self._row_sums(side, state)
        direction = np.vstack([np.eye(D), self.bias_regression(side, state)[None, :]])
        return (state[side].shape[0] * direction.T @ precision @ direction,
                -direction.T @ (precision @ sums))

    def shift_moves(self, state, config, rng):
        """The translation moves of :func:`bpmf.inference.gibbs._shift_moves` for this
        prior, compiled (:func:`bpmf.kernels.moves.correlated_shifts`), in place; not with
        implicit feedback's offsets (False: the generic moves run)."""
        if "offset_U" in state or "offset_V" in state:
            return False
        normals = rng.standard_normal(2 + 2 * self.dim)
        state["mu"] = correlated_shifts(
            state["U"], state["user_bias"], state["V"], state["item_bias"],
            state["row_precision_U"], state["row_precision_V"], state["chol_U"],
            state["chol_V"], float(state["mu"]), float(config["intercept_mean"]),
            1.0 / float(config["mu_sd"]) ** 2, normals,
        )
        return True

    def split_moves(self, state, rng):
        """Move each user's level between its bias and its factors, then each item's.

        With ``A_w = [[I, 0], [w^T, 1]]``, the map ``V -> V - w`` (every item's factors),
        ``b -> b + U w`` (every user's bias) and ``L_U -> A_w L_U`` (the users' covariance
        ``Sigma'_U -> A_w Sigma'_U A_w^T``) leaves the ratings' likelihood and the users'
        rows' prior unchanged, has unit Jacobian and forms a group in ``w``. Along it the
        posterior is the items' rows' Gaussian prior, Gaussian in ``w``, times the LKJ prior
        of ``A_w L_U``: ``w`` is proposed from the Gaussian and accepted with the ratio of the
        LKJ priors (a Metropolis-Hastings step on the orbit). It moves the split of each
        user's level between ``b_u`` and ``U_u . mean(V)``, which the row draws and the
        covariance step, each given the other, change only by small steps; then the same for
        the items (``U -> U - e``, ``c -> c + V e``, ``L_V -> A_e L_V``). Not with implicit
        feedback, whose offsets the users' prior does not see.
        """
        if "offset_U" in state or "offset_V" in state:
            return
        for side in ("U", "V"):
            self.split_move(side, state, rng)

    def split_move(self, side, state, rng):
        """One move of :meth:`split_moves`: ``side``'s biases and covariance with the other
        side's factors; returns whether it was accepted."""
        other = "V" if side == "U" else "U"
        normals = rng.standard_normal(self.dim)
        proposal, accepted = compiled_split_move(
            state[side], state[_BIAS_OF[side]], state[other], state[_BIAS_OF[other]],
            state[f"row_precision_{other}"], state[f"chol_{side}"], self.eta, self.scale_sd,
            self.bias_scale_sd, normals, rng.random(),
        )
        if accepted:
            self._set_covariance(side, state, proposal)
        return accepted

    def rescale(self, state, rng, extra=None):
        """As :meth:`LKJHyperpriors.rescale`, on the factor rows of each side's Cholesky
        factor (the bias row is not rescaled)."""
        D = self.dim
        terms = [(state[f"chol_{side}"][:D] ** 2).sum(axis=1) / (2.0 * self.scale_sd**2)
                 for side in ("U", "V")]
        g = _draw_rescale(terms[0], terms[1], extra, D, rng)
        for side, factor in (("U", g), ("V", 1.0 / g)):
            state[side] *= factor  # in place: the rows are this chain's own arrays
            chol = state[f"chol_{side}"].copy()
            chol[:D] *= factor[:, None]
            self._set_covariance(side, state, chol)
        return g
