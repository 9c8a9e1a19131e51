r"""Day-specific user biases in the blocked Gibbs sampler (``model_config["user_day_bias"]``).

A user's ratings on one day share a bias on top of the user's own (Koren, 2009, the
:math:`b_{u,t}` of timeSVD++): rating :math:`n` of user :math:`u` on day :math:`t` is

.. math::

    r_n \sim \mathcal N(\mu + b_u + c_i + U_u \cdot V_i + d_{g_n}, \sigma^2), \qquad
    d_g \sim \mathcal N(0, s_d^2), \qquad s_d \sim \text{HalfNormal}(\text{day\_bias\_scale\_sd}),

with one group :math:`g = (u, t)` per user and UTC day on which the user rated. Given the
day biases the rest of the model is the plain one with the ratings :math:`r_n - d_{g_n}`,
so every other step applies unchanged to those adjusted ratings. :class:`DayBiasGibbs` adds,
per sweep:

1. every :math:`d_g` from its Gaussian conditional given the rest, with precision
   :math:`s_d^{-2} + \tau n_g` and mean :math:`\tau \sum_{n \in g} e_n` over that precision,
   :math:`e_n` the rating less the rest of its linear predictor; then :math:`s_d` from its
   conditional given the :math:`d_g` (:func:`~bpmf.inference.hyperpriors.draw_halfnormal_scale`),
   then both scaled together, :math:`(g d, g s_d)` with :math:`g` from its conditional (a
   truncated normal: a generalised Gibbs step on the multiplicative group);
2. the adjusted ratings :math:`r_n - d_{g_n}` into the value arrays of both CSR layouts,
   which the row kernel regresses on;
3. a shift of each user's bias against the day biases of that user,
   :math:`(b_u + \delta_u, d_{g} - \delta_u \; \forall g \ni u)`: it leaves every rating's
   linear predictor unchanged, so only the two priors see :math:`\delta_u`, and
   :math:`\delta_u` is drawn from that Gaussian conditional (a generalised Gibbs step, Liu &
   Sabatti, 2000). A user who rated on a single day has :math:`b_u` and :math:`d_g`
   identified only through their priors, and without the move they would trade by small
   steps.
"""

import numpy as np

from bpmf.inference.hyperpriors import draw_halfnormal_scale, positive_normal
from bpmf.inference.rows import chain_layouts, linear_predictors
from bpmf.kernels.day_bias import adjusted_ratings, group_residual_sums

__all__ = ["DAY_SECONDS", "DayBiasGibbs", "day_groups", "days_of"]

#: Seconds per day: days are UTC calendar days of Unix time
DAY_SECONDS = 86_400


def days_of(times):
    """The UTC day number (days since 1970-01-01) of each Unix time in seconds."""
    return np.floor(np.asarray(times, dtype=np.float64) / DAY_SECONDS).astype(np.int64)


def day_groups(user_codes, days):
    """``(codes, group_users, group_days)``: the group of each rating among the distinct
    (user, day) pairs, which are sorted by user then day."""
    user_codes = np.asarray(user_codes, dtype=np.int64)
    days = np.asarray(days, dtype=np.int64)
    keys = np.stack([user_codes, days], axis=1)
    groups, codes = np.unique(keys, axis=0, return_inverse=True)
    return codes.reshape(-1).astype(np.int64), groups[:, 0].copy(), groups[:, 1].copy()


class DayBiasGibbs:
    """The day-bias steps of one Gibbs chain (see the module docstring).

    Parameters
    ----------
    user_codes, item_codes : array of int, shape (n_ratings,)
    ratings : array of float, shape (n_ratings,)
    groups : array of int, shape (n_ratings,)
        The (user, day) group of each rating, in ``[0, n_groups)``.
    group_users : array of int, shape (n_groups,)
        The user of each group.
    csrs : (user_csr, item_csr)
        The shared CSR layouts of :func:`bpmf.kernels.rows.csr_pair`; the chain gets its own
        copies of the value arrays, which it overwrites with the adjusted ratings every sweep.
    scale_sd : float
        The half-normal prior scale of ``s_d``.
    """

    def __init__(self, user_codes, item_codes, ratings, groups, group_users, csrs, scale_sd):
        self.user_codes = np.asarray(user_codes, dtype=np.int64)
        self.item_codes = np.asarray(item_codes, dtype=np.int64)
        self.ratings = np.asarray(ratings, dtype=np.float64)
        self.groups = np.asarray(groups, dtype=np.int64)
        self.group_users = np.asarray(group_users, dtype=np.int64)
        self.n_groups = len(self.group_users)
        self.scale_sd = float(scale_sd)
        self.counts = np.bincount(self.groups, minlength=self.n_groups).astype(np.float64)
        self.groups_per_user = np.bincount(
            self.group_users, minlength=csrs[0][0].shape[0] - 1
        ).astype(np.float64)
        orders, self.csrs = chain_layouts(self.user_codes, self.item_codes, csrs)
        # the ratings and their groups in the user-ordered and item-ordered layouts
        self.layouts = [(self.ratings[order], self.groups[order]) for order in orders]
        self.eta = np.empty(len(self.ratings))
        self.sums = np.empty(self.n_groups)
        # each rating's noise weight (set by the noise-weight step; None: all ones), and the
        # groups' summed weights in place of their counts
        self.weights = None
        self.weighted_counts = self.counts.copy()

    def start(self, state):
        """Zero day biases and a starting scale of 0.1 in ``state``."""
        state["day_bias"] = np.zeros(self.n_groups)
        state["day_bias_precision"] = 100.0

    def step(self, state, biases, rng):
        """Draw the day biases and their scale given the rest (step 1) and write the adjusted
        ratings into the chain's layouts (step 2)."""
        sums = self.residual_sums(state, biases)
        day_bias = self.draw_biases(state, sums, rng)
        self.draw_scale(state, day_bias, sums, rng)
        for (ratings, groups), (_, _, values) in zip(self.layouts, self.csrs, strict=True):
            adjusted_ratings(ratings, groups, state["day_bias"], values)

    def residual_sums(self, state, biases):
        """Each group's sum of its ratings less the rest of their linear predictors (weighted
        by the ratings' noise weights, where set, with ``weighted_counts`` then the groups'
        summed weights); the linear predictors stay in ``self.eta``."""
        linear_predictors(state, biases, self.user_codes, self.item_codes, self.eta)
        group_residual_sums(self.ratings, self.eta, self.groups, self.sums,
                            np.empty(0) if self.weights is None else self.weights,
                            self.weighted_counts)
        return self.sums

    def draw_biases(self, state, sums, rng):
        """The day biases from their Gaussian conditional given the scale and ``sums``."""
        precision = state["day_bias_precision"] + state["tau"] * self.weighted_counts
        return (state["tau"] * sums / precision
                + rng.standard_normal(self.n_groups) / np.sqrt(precision))

    def draw_scale(self, state, day_bias, sums, rng):
        """The scale given ``day_bias``, then both scaled together, into ``state``.

        The scaling move ``(g d, g s_d)``: the biases' prior and the Jacobian cancel against
        the Haar measure ``dg / g``, leaving the likelihood (Gaussian in ``g``) and the
        half-normal prior of ``g s_d``, so ``g`` is a normal truncated to ``g > 0`` (as the
        bias scales' move of the sampler). It moves the scale along the direction that the
        two conditional draws explore only by small steps when the biases are well
        determined.
        """
        tau = float(state["tau"])
        scale = draw_halfnormal_scale(self.n_groups, float(day_bias @ day_bias), self.scale_sd,
                                      rng)
        quadratic = float(self.weighted_counts @ (day_bias * day_bias))
        precision = tau * quadratic + (scale / self.scale_sd) ** 2
        g = positive_normal(tau * float(day_bias @ sums) / precision, 1.0 / np.sqrt(precision),
                            rng)
        state["day_bias"] = g * day_bias
        state["day_bias_precision"] = 1.0 / (g * scale) ** 2

    def shift(self, state, config, rng, hyper):
        """Step 3: ``(b_u + delta_u, d_g - delta_u)`` for every user's bias and day biases;
        ``hyper`` gives the user biases' prior terms (``bias_terms``), which with correlated
        biases condition on the user's factors."""
        if "user_bias" not in state:
            return
        lam_d = float(state["day_bias_precision"])
        # a shift b -> b - e changes the biases' log prior by -lam e^2 / 2 + e w (per user)
        lam_b, weights = hyper.bias_terms("user_bias", state)
        day_sums = np.bincount(self.group_users, weights=state["day_bias"],
                               minlength=len(state["user_bias"]))
        # log density of delta: -lam_b delta^2 / 2 - w delta - lam_d sum_g (d_g - delta)^2 / 2
        precision = lam_b + lam_d * self.groups_per_user
        mean = (lam_d * day_sums - weights) / precision
        delta = mean + rng.standard_normal(len(day_sums)) / np.sqrt(precision)
        state["user_bias"] = state["user_bias"] + delta
        state["day_bias"] = state["day_bias"] - delta[self.group_users]
