r"""The ordered-probit (ordinal) likelihood in the blocked Gibbs sampler, by data augmentation.

The ordinal model of :class:`bpmf.models.BPMF` (``likelihood="ordinal"``) observes a rating
:math:`r_n \in \{1, \dots, K\}` when a latent score
:math:`z_n \sim \mathcal N(\eta_n, 1)`, :math:`\eta_n = \mu + b_{u_n} + c'_{i_n} +
(U_{u_n} + o^U_{u_n}) \cdot (V_{i_n} + o^V_{i_n})` (``o`` the optional likelihood offsets
``state["offset_U"]``, ``state["offset_V"]``), falls in :math:`(c_{r_n - 1}, c_{r_n}]`, with
:math:`c_0 = -\infty`, :math:`c_K = +\infty` and ordered cut-points
:math:`c_1 < \dots < c_{K-1}` under the prior

.. math::

    p(c) \propto \prod_{k=1}^{K-1} \mathcal N(c_k \mid m_k, s_c^2)\,
    \mathbb 1[c_1 < \dots < c_{K-1}], \qquad m_k = \text{low} + k - \tfrac12

(the midpoints between consecutive ratings). Given the latent scores the rest of the model is
the Gaussian model with ``sigma = 1`` and the ratings replaced by ``z``, so the existing row,
intercept and hyperparameter steps apply unchanged. :class:`OrdinalGibbs` adds, per sweep:

1. **(c, z) as one block** from :math:`p(c, z \mid \eta, r)`: first :math:`c` from
   :math:`p(c \mid \eta, r) \propto p(c) \prod_n [\Phi(c_{r_n} - \eta_n) -
   \Phi(c_{r_n - 1} - \eta_n)]` (the latents integrated out) by random-walk Metropolis steps on
   :math:`\theta = (c_1, \log(c_2 - c_1), \dots, \log(c_{K-1} - c_{K-2}))` (target including
   the Jacobian :math:`\prod_k (c_k - c_{k-1})`), then every :math:`z_n` from
   :math:`\mathcal N(\eta_n, 1)` truncated to :math:`(c_{r_n - 1}, c_{r_n}]`. The Metropolis
   steps leave :math:`p(c \mid \eta, r)` invariant and the truncated normals are exact
   conditionals, so the pair of steps leaves :math:`p(c, z \mid \eta, r)` invariant (Cowles,
   1996). The proposal is Gaussian about the current point with covariance ``s^2 F^{-1}``,
   ``F`` the negative Hessian of the target in ``c`` (tridiagonal; positive definite since
   the ordered-probit log-likelihood is concave in the cut-points) carried to
   :math:`\theta`: it follows the conditional's shape whatever :math:`\eta` is. As the
   covariance depends on the point, the acceptance ratio includes the proposal densities
   both ways (Metropolis-Hastings), which keeps the step exact. Only the scale ``s`` adapts,
   toward an acceptance rate of 0.3 during the warm-up. After the warm-up the proposal is
   frozen as a whole: its covariance is ``s^2 F^{-1}`` at the first draw after the warm-up,
   fixed from then on, so the proposal is symmetric, the acceptance ratio is the ratio of the
   targets, and no curvature is computed (about a third of the step's cost on MovieLens
   100K); every kept draw comes from a fixed kernel. The cut-points are drawn every
   :data:`WARMUP_CUTPOINT_EVERY`-th sweep of the warm-up and every :data:`CUTPOINT_EVERY`-th
   after it (a fixed cycle of kernels; the latents are drawn given the current cut-points
   in every sweep): each draw costs passes over all the ratings, and the level shift (3.)
   moves the cut-points every sweep.
2. **the latents into the regression**: ``z`` is written into the value arrays of both CSR
   layouts (user order and item order), which the row kernel regresses on.
3. **a level shift** :math:`(\mu + d, c + d, z + d)` after the other steps: it leaves every
   :math:`z_n - \eta_n` and the intervals' positions relative to :math:`z` unchanged, so only
   the priors of :math:`\mu` and :math:`c` depend on :math:`d`, and :math:`d` is drawn from
   that Gaussian conditional (a generalised Gibbs step of Liu & Sabatti, 2000; the translation
   has unit Jacobian and keeps the cut-points ordered). Without it, :math:`\mu` and the
   cut-points, whose common level the likelihood does not identify, would move together only
   by steps of order :math:`N^{-1/2}`. The latents need not be shifted in the state: the next
   sweep draws them afresh before they are used.
"""

import numpy as np
from scipy.linalg import solve_triangular

from bpmf.inference.rows import chain_layouts, linear_predictors
from bpmf.kernels.ordinal import (
    cutpoint_loglik,
    cutpoint_loglik_curvature,
    draw_latents,
)

__all__ = ["OrdinalGibbs", "cutpoint_prior_means", "rating_categories"]

#: Metropolis steps on the cut-points per sweep
METROPOLIS_STEPS = 2
#: target acceptance rate of the cut-point proposals during the warm-up
TARGET_ACCEPT = 0.3
#: Metropolis steps per sweep after the warm-up: each costs a pass over the ratings (3 ms on
#: MovieLens 100K u1, as much as the latent draws), and the latents move the target every sweep
FROZEN_STEPS = 1
#: After the warm-up the cut-point step runs every this many sweeps (a fixed cycle of kernels
#: that each leave the posterior invariant); the latents are drawn every sweep. The level
#: shift moves the cut-points every sweep: on MovieLens 100K u1 their bulk ESS was 1,563-1,577
#: of 1,800 draws at 6 (seed 0; 1,893-1,902 for seed 1), 1,791-1,798 at 2
CUTPOINT_EVERY = 6
#: During the warm-up the adapting cut-point step runs every this many sweeps (each costs two
#: passes over the ratings with the curvature, 15 ms on u1)
WARMUP_CUTPOINT_EVERY = 2


def rating_categories(ratings, low, high):
    """Category indices ``r - low`` in ``0..K-1`` of integer ratings on ``low..high``.

    Raises ``ValueError`` (one line) for a rating that is not a whole number or lies off the
    scale.
    """
    ratings = np.asarray(ratings, dtype=float)
    whole = np.round(ratings)
    if not np.all(np.abs(ratings - whole) < 1e-9):
        bad = ratings[np.abs(ratings - whole) >= 1e-9][0]
        raise ValueError(
            f"likelihood='ordinal' needs whole-number ratings, got {bad!r}; round the ratings "
            "or use likelihood='gaussian'."
        )
    if whole.min() < low or whole.max() > high:
        raise ValueError(
            f"ratings span [{whole.min():g}, {whole.max():g}], outside the ordinal scale "
            f"[{low:g}, {high:g}]; widen rating_scale."
        )
    return (whole - low).astype(np.int64)


def cutpoint_prior_means(low, high):
    """Prior means of the ``K - 1`` cut-points: the midpoints ``low + 0.5, ..., high - 0.5``."""
    return np.arange(low, high, dtype=float) + 0.5


def _to_theta(cuts):
    return np.concatenate([cuts[:1], np.log(np.diff(cuts))])


def _from_theta(theta):
    return theta[0] + np.concatenate([[0.0], np.cumsum(np.exp(theta[1:]))])


class OrdinalGibbs:
    """The ordinal steps of one Gibbs chain (see the module docstring).

    Parameters
    ----------
    user_codes, item_codes : array of int, shape (n_ratings,)
    categories : array of int, shape (n_ratings,)
        ``r_n - low`` in ``0..K-1``.
    n_categories : int
        ``K``.
    csrs : (user_csr, item_csr)
        The shared CSR layouts of :func:`bpmf.kernels.rows.csr_pair`; the chain gets its own
        copies of the value arrays, which it overwrites with the latents every sweep.
    prior_means : array, shape (K - 1,)
    prior_sd : float
    tune : int
        Sweeps (calls of :meth:`step`) during which the proposal adapts.
    """

    def __init__(self, user_codes, item_codes, categories, n_categories, csrs, prior_means,
                 prior_sd, tune):
        self.user_codes = user_codes
        self.item_codes = item_codes
        self.categories = categories
        self.n_cuts = int(n_categories) - 1
        self.prior_means = np.asarray(prior_means, dtype=float)
        self.prior_sd = float(prior_sd)
        self.tune = int(tune)
        n = len(categories)
        # positions of each rating in the user-ordered and item-ordered layouts
        (self.user_order, self.item_order), self.csrs = chain_layouts(user_codes, item_codes,
                                                                      csrs)
        self.eta = np.empty(n)
        self.latent = np.empty(n)
        self.calls = 0
        self.accepted = 0
        self.log_scale = np.log(2.38 / np.sqrt(max(self.n_cuts, 1)))
        self.frozen_chol = None  # after the warm-up: the proposal's fixed precision factor

    # ------------------------------------------------------------------ pieces
    def start(self, state):
        """Initial cut-points (the prior means) in ``state["cutpoints"]``; fixes ``tau = 1``."""
        state["cutpoints"] = self.prior_means.copy()
        state["tau"] = 1.0

    def _evaluate(self, theta):
        """Log target of ``theta`` (cut-point log-likelihood, prior, Jacobian), the extended
        cut-points, and the Cholesky factor of the local proposal covariance."""
        cuts = _from_theta(theta)
        if not (np.all(np.isfinite(cuts)) and np.all(np.diff(cuts) > 0)):
            return -np.inf, None, None  # beyond floating point: a proposal to reject
        extended = np.concatenate([[-np.inf], cuts, [np.inf]])
        loglik, diagonal, off = cutpoint_loglik_curvature(self.eta, self.categories, extended)
        prior = -0.5 * np.sum((cuts - self.prior_means) ** 2) / self.prior_sd**2
        # the negative Hessian in c (likelihood and prior), carried to theta by dc/dtheta
        curvature = np.diag(diagonal + 1.0 / self.prior_sd**2)
        if self.n_cuts > 1:
            curvature += np.diag(off, 1) + np.diag(off, -1)
        jacobian = np.tril(np.ones((self.n_cuts, self.n_cuts)))
        jacobian[:, 1:] *= np.exp(theta[1:])
        precision = jacobian.T @ curvature @ jacobian
        chol_precision = np.linalg.cholesky(0.5 * (precision + precision.T))
        return loglik + prior + np.sum(theta[1:]), extended, chol_precision

    def _log_target(self, theta):
        """Log target of ``theta`` and the extended cut-points, without the curvature."""
        cuts = _from_theta(theta)
        if not (np.all(np.isfinite(cuts)) and np.all(np.diff(cuts) > 0)):
            return -np.inf, None
        extended = np.concatenate([[-np.inf], cuts, [np.inf]])
        prior = -0.5 * np.sum((cuts - self.prior_means) ** 2) / self.prior_sd**2
        return cutpoint_loglik(self.eta, self.categories, extended) + prior + np.sum(theta[1:]), \
            extended

    def _frozen_steps(self, theta, rng):
        """After the warm-up: random-walk Metropolis with a fixed Gaussian proposal (the local
        curvature at the first draw after the warm-up, times the tuned scale), symmetric, so
        the acceptance ratio is the ratio of the targets and no curvature is computed."""
        if self.frozen_chol is None:
            self.frozen_chol = self._evaluate(theta)[2]
        current, extended = self._log_target(theta)
        scale = np.exp(self.log_scale)
        for _ in range(FROZEN_STEPS):
            noise = rng.standard_normal(self.n_cuts)
            proposal = theta + scale * solve_triangular(self.frozen_chol.T, noise, lower=False)
            value, proposal_extended = self._log_target(proposal)
            if np.log(rng.random()) < value - current:
                theta, current, extended = proposal, value, proposal_extended
        return extended

    # ------------------------------------------------------------------ the steps
    def _adaptive_steps(self, theta, rng):
        """The warm-up's Metropolis-Hastings steps with the local, point-dependent proposal
        (the scale adapting toward the target acceptance); returns the extended cut-points."""
        adapting = self.calls < self.tune
        current, extended, chol = self._evaluate(theta)
        for _ in range(METROPOLIS_STEPS if self.n_cuts else 0):
            scale = np.exp(self.log_scale)
            noise = rng.standard_normal(self.n_cuts)
            # theta' = theta + scale * L^-T noise, L L^T the local precision: N(theta, scale^2
            # (L L^T)^-1)
            proposal = theta + scale * solve_triangular(chol.T, noise, lower=False)
            value, proposal_extended, proposal_chol = self._evaluate(proposal)
            if proposal_chol is None:
                continue
            back = proposal_chol.T @ (theta - proposal) / scale
            log_ratio = value - current
            log_ratio += -0.5 * back @ back + np.sum(np.log(np.diag(proposal_chol)))
            log_ratio -= -0.5 * noise @ noise + np.sum(np.log(np.diag(chol)))
            accept = np.log(rng.random()) < log_ratio
            if accept:
                theta, current, extended, chol = proposal, value, proposal_extended, proposal_chol
            if adapting:
                self.accepted += int(accept)
                # Robbins-Monro on the proposal scale toward the target acceptance
                self.log_scale += (float(accept) - TARGET_ACCEPT) / np.sqrt(1.0 + self.calls)
        return extended

    def step(self, state, biases, rng):
        """Draw ``(c, z)`` given the rest (step 1) and write ``z`` into the chain's layouts
        (step 2); adapt the proposal during the first ``tune`` calls."""
        linear_predictors(state, biases, self.user_codes, self.item_codes, self.eta)
        theta = _to_theta(state["cutpoints"])
        warmup = self.calls < self.tune
        if not self.n_cuts or (warmup and self.calls % WARMUP_CUTPOINT_EVERY == 0):
            extended = self._adaptive_steps(theta, rng)
        elif not warmup and (self.calls + 1 - self.tune) % CUTPOINT_EVERY == 0:
            extended = self._frozen_steps(theta, rng)
        else:  # a sweep without the cut-point step: the latents given the current ones
            extended = np.concatenate([[-np.inf], state["cutpoints"], [np.inf]])
        self.calls += 1
        state["cutpoints"] = extended[1:-1].copy()
        draw_latents(self.eta, self.categories, extended, rng, self.latent)
        self.csrs[0][2][:] = self.latent[self.user_order]
        self.csrs[1][2][:] = self.latent[self.item_order]

    def shift(self, state, config, rng, hyper=None):
        """The level shift ``(mu + d, c + d)`` of step 3, ``d`` from its Gaussian conditional
        (``hyper`` is not needed)."""
        mu_prec = 1.0 / config["mu_sd"] ** 2
        cut_prec = 1.0 / self.prior_sd**2
        precision = mu_prec + self.n_cuts * cut_prec
        linear = -mu_prec * (state["mu"] - config["intercept_mean"]) - cut_prec * np.sum(
            state["cutpoints"] - self.prior_means
        )
        d = linear / precision + rng.standard_normal() / np.sqrt(precision)
        state["mu"] += d
        state["cutpoints"] = state["cutpoints"] + d
