r"""Per-user and per-item noise weights in the Gibbs sampler (heteroscedastic noise).

Some users rate consistently and others erratically, and the same holds for items. The
model gives each user and each item a precision weight, so that rating ``n`` of user ``u``
on item ``i`` has the noise

.. math::

    r_n - \eta_n \sim \mathcal N\big(0, \sigma^2 / (a_u c_i)\big), \qquad
    a_u \sim \mathrm{Gamma}(\nu_U / 2, \nu_U / 2), \quad c_i \sim \mathrm{Gamma}(\nu_V / 2,
    \nu_V / 2),

with :math:`\eta_n` the rest of the model (intercept, biases, factors, day biases). The
weights average one a priori; integrated out, each user's (item's) noise is Student-t with
:math:`\nu_U` (:math:`\nu_V`) degrees of freedom, shared by the user's ratings: the
row- and column-specific variances of robust Bayesian matrix factorisation (Lakshminarayanan,
Bouchard & Archambeau, 2011). The degrees of freedom have a uniform prior on the grid
:data:`DF_GRID` (uniform in :math:`\log \nu`, from heavy tails at 1 to nearly Gaussian at
128).

One step of the sweep, given everything else:

1. each rating's residual :math:`e_n = r_n - \eta_n`, and each user's
   :math:`Q_u = \tau \sum_{n \in u} c_{i_n} e_n^2`;
2. :math:`\nu_U` and the users' weights as one block: :math:`\nu_U` from its discrete
   conditional with the weights integrated out (:func:`draw_df`: each user contributes
   :math:`\Gamma(\nu/2 + n_u/2)\,(\nu/2)^{\nu/2} / (\Gamma(\nu/2)\,
   (\nu/2 + Q_u/2)^{\nu/2 + n_u/2})`), then :math:`a_u \sim \mathrm{Gamma}(\nu_U/2 +
   n_u/2,\ \nu_U/2 + Q_u/2)` given it (drawn given the weights instead, :math:`\nu` would
   crawl: a few hundred weights pin it, and they in turn pin the noise level);
3. the items' :math:`\nu_V` and :math:`c_i` likewise, given the new :math:`a`;
4. a scaling move of each side's weights against the noise precision, :math:`(\tau / h,
   h a)`, which leaves every rating's precision :math:`\tau a_u c_i` as it is
   (:func:`scale_move`): the weights' common level and :math:`\tau` are pinned only by the
   weights' prior, and without the move :math:`\sigma` mixes slowly;
5. the weights :math:`w_n = a_u c_i` of every rating, for the other steps: the row kernel
   weights each rating's term by :math:`w_n` (:func:`bpmf.kernels.rows.sample_rows`), and
   the intercept, the noise precision, the bias scales' move and the day biases use the
   weighted sums.
"""

import numpy as np
from scipy import special, stats

from bpmf.inference.rows import linear_predictors, released
from bpmf.kernels.noise_weights import (
    pair_weights,
    rating_weights,
    scaled_squares_from,
    weighted_square_sums,
)

__all__ = ["DF_GRID", "NoiseWeights", "df_constants", "draw_df", "scale_move"]

#: The support of the degrees of freedom of the weights' Gamma prior (uniform over it): 1 to
#: 128 in steps of a factor 2^(1/4).
DF_GRID = 2.0 ** np.arange(0.0, 7.01, 0.25)


def df_constants(counts, grid=DF_GRID):
    """The part of :func:`draw_df`'s log posterior that depends on the rows' counts only,
    per value of ``grid``."""
    counts = np.asarray(counts, dtype=np.float64)
    values, multiplicity = np.unique(counts, return_counts=True)
    half = 0.5 * grid[:, None]
    per_count = (half * np.log(half) - special.gammaln(half)
                 + special.gammaln(half + 0.5 * values))
    return per_count @ multiplicity


def draw_df(counts, sums, rng, grid=DF_GRID, constants=None):
    """A draw of ``nu`` from its conditional with the weights integrated out, under a uniform
    prior on ``grid``: row ``r`` has ``counts[r]`` Gaussian residuals of precision
    ``tau w_r c`` whose scaled sum of squares is ``sums[r]`` (``Q_r``) and a weight ``w_r ~
    Gamma(nu/2, rate nu/2)``. ``constants``: :func:`df_constants` of ``counts``, when
    known."""
    counts = np.asarray(counts, dtype=np.float64)
    sums = np.asarray(sums, dtype=np.float64)
    if constants is None:
        constants = df_constants(counts, grid)
    half = 0.5 * grid[:, None]
    log_p = constants - ((half + 0.5 * counts) * np.log(half + 0.5 * sums)).sum(axis=1)
    p = np.exp(log_p - log_p.max())
    return float(grid[rng.choice(len(grid), p=p / p.sum())])


def scale_move(tau, weights, nu, noise_prior, rng):
    """The factor ``h > 0`` of an exact scaling move ``(tau / h, h weights)``, drawn given
    everything else; ``noise_prior`` is the hyperprior's :meth:`noise_prior`.

    A generalised Gibbs step on the multiplicative group (Liu & Sabatti, 2000): the likelihood
    sees only ``tau * weights`` and does not change; the weights' Gamma(nu/2, nu/2) prior, the
    noise's prior, the Jacobian ``h^(n - 1)`` and the Haar measure ``dh / h`` leave, with
    ``n`` weights summing to ``S``:

    - ``sigma ~ HalfNormal(sd)``: ``h ~ Gamma(n nu / 2 + 1/2, rate 1 / (2 sd^2 tau) + nu S / 2)``;
    - ``tau ~ Gamma(alpha, beta)``: ``h ~ GIG(n nu / 2 - alpha, psi=nu S, chi=2 beta tau)``
      (density ``h^(p - 1) exp(-(psi h + chi / h) / 2)``).
    """
    n, total = len(weights), float(np.sum(weights))
    if noise_prior[0] == "halfnormal":
        rate = 0.5 / (noise_prior[1] ** 2 * tau) + 0.5 * nu * total
        return float(rng.gamma(0.5 * n * nu + 0.5, 1.0 / rate))
    _, shape, prior_rate = noise_prior
    p, psi, chi = 0.5 * n * nu - shape, nu * total, 2.0 * prior_rate * tau
    # GIG(p, chi, psi) = sqrt(chi / psi) * geninvgauss(p, sqrt(chi * psi))
    return float(np.sqrt(chi / psi) * stats.geninvgauss.rvs(p, np.sqrt(chi * psi),
                                                             random_state=rng))


class NoiseWeights:
    """The noise-weight step of one Gibbs chain (see the module docstring).

    Parameters
    ----------
    user_codes, item_codes : array of int, shape (n_ratings,)
    ratings : array of float, shape (n_ratings,)
    n_users, n_items : int
    csrs : (user_csr, item_csr)
        The user-ordered and item-ordered layouts (:func:`bpmf.kernels.rows.csr_pair`).
    groups : array of int or None
        With day-specific user biases, each rating's (user, day) group: the residuals then
        take ``state["day_bias"]`` off as well.
    """

    def __init__(self, user_codes, item_codes, ratings, n_users, n_items, csrs, groups=None):
        self.user_codes = np.asarray(user_codes, dtype=np.int64)
        self.item_codes = np.asarray(item_codes, dtype=np.int64)
        self.ratings = np.asarray(ratings, dtype=np.float64)
        self.n_users, self.n_items = int(n_users), int(n_items)
        self.user_counts = np.bincount(self.user_codes, minlength=self.n_users).astype(float)
        self.item_counts = np.bincount(self.item_codes, minlength=self.n_items).astype(float)
        self.df_constants = (df_constants(self.user_counts), df_constants(self.item_counts))
        self.layouts = tuple(csr[:2] for csr in csrs)
        self.groups = (np.empty(0, dtype=np.int64) if groups is None
                       else np.asarray(groups, dtype=np.int64))
        n = len(self.ratings)
        self.squares = np.empty(n)
        self.eta = np.empty(n)
        self.weights = np.ones(n)
        self.roots = (np.empty(n), np.empty(n))
        self.user_sums = np.empty(self.n_users)
        self.item_sums = np.empty(self.n_items)
        # each row's summed weights, handed to the sweep as the sides' counts
        self.row_weights = (np.empty(self.n_users), np.empty(self.n_items))

    def start(self, state):
        """Unit weights and degrees of freedom of 8 in ``state``."""
        state["user_noise_weight"] = np.ones(self.n_users)
        state["item_noise_weight"] = np.ones(self.n_items)
        state["noise_df_user"] = 8.0
        state["noise_df_item"] = 8.0

    def scaled_squares(self, state, biases, lock=None, eta=None):
        """Each rating's ``tau e_n^2`` at ``state``, into ``self.squares``; ``eta``: the
        ratings' linear predictors without the day biases at ``state``, when already known."""
        if eta is None:
            eta = self.eta
            with released(lock):
                linear_predictors(state, biases, self.user_codes, self.item_codes, eta)
        with released(lock):
            scaled_squares_from(self.ratings, eta, state.get("day_bias", np.zeros(0)),
                                self.groups, float(state["tau"]), self.squares)
        return self.squares

    def step(self, state, biases, work, rng, eta=None, noise_prior=None):
        """Draw the weights and their degrees of freedom given the rest (steps 1-4), and set
        the rows' weights and weighted counts in ``work`` (step 5). ``eta``: the linear
        predictors at ``state`` (without the day biases) when known; ``noise_prior``: the
        hyperprior's (:func:`scale_move`), None for a fixed noise (no scaling move). The
        compiled passes run without the chain's lock ``work["phase_lock"]``."""
        lock = work.get("phase_lock")
        squares = self.scaled_squares(state, biases, lock, eta)
        users, items = self.user_codes, self.item_codes
        with released(lock):
            weighted_square_sums(squares, users, items, state["item_noise_weight"],
                                 self.user_sums)
        nu = state["noise_df_user"] = draw_df(self.user_counts, self.user_sums, rng,
                                              constants=self.df_constants[0])
        user_weight = rng.gamma(0.5 * nu + 0.5 * self.user_counts,
                                1.0 / (0.5 * nu + 0.5 * self.user_sums))
        with released(lock):
            weighted_square_sums(squares, items, users, user_weight, self.item_sums)
        nu = state["noise_df_item"] = draw_df(self.item_counts, self.item_sums, rng,
                                              constants=self.df_constants[1])
        item_weight = rng.gamma(0.5 * nu + 0.5 * self.item_counts,
                                1.0 / (0.5 * nu + 0.5 * self.item_sums))
        state["user_noise_weight"], state["item_noise_weight"] = user_weight, item_weight
        if noise_prior is not None:
            for name, df in (("user_noise_weight", "noise_df_user"),
                             ("item_noise_weight", "noise_df_item")):
                h = scale_move(float(state["tau"]), state[name], state[df], noise_prior, rng)
                state["tau"] = float(state["tau"]) / h
                state[name] = state[name] * h
        self.set_weights(state, work)

    def set_weights(self, state, work):
        """Each rating's weight ``w_n = a_u c_i`` from ``state``, into ``work``: the square
        roots in each side's layout (``sqrt_weights``), the rows' summed weights
        (``counts``) and the total (``weight_total``); in the ratings' order into
        ``self.weights`` when the day biases need them."""
        a, c = state["user_noise_weight"], state["item_noise_weight"]
        root_a, root_c = np.sqrt(a), np.sqrt(c)
        with released(work.get("phase_lock")):
            for side, (indptr, partners), roots, counts, rows, partner in (
                ("U", self.layouts[0], self.roots[0], self.row_weights[0], root_a, root_c),
                ("V", self.layouts[1], self.roots[1], self.row_weights[1], root_c, root_a),
            ):
                # both sides' totals are the same sum
                work["weight_total"] = rating_weights(indptr, partners, rows, partner, roots,
                                                      counts)
                work[side]["counts"] = counts
                work[side]["sqrt_weights"] = roots
            if len(self.groups):
                pair_weights(self.user_codes, self.item_codes, a, c, self.weights)
