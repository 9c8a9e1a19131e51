r"""The side-feature regression block of the blocked Gibbs sampler (Macau-style link).

With a side's features :math:`x_u \in \mathbb R^F` (rows of ``X``), its factor rows and
biases regress on them,

.. math::

    U_u \sim \mathcal N(\mu_U + B_U^\top x_u, \Sigma_U), \qquad
    b_u \sim \mathcal N(\beta_U^\top x_u, s_b^2),

and the link :math:`B'_U = [B_U, \beta_U]` (``F x (D + 1)``) has the matrix normal prior
:math:`B'_U \sim \mathcal{MN}(0, I_F / \lambda_U, C_U)` with the rows' own prior covariance
:math:`C_U = \mathrm{diag}(\Sigma_U, s_b^2)` as column covariance and
:math:`\lambda_U \sim \mathrm{Gamma}(a, b)` (without biases :math:`B'_U = B_U`,
:math:`C_U = \Sigma_U`). Given the residual rows :math:`R = [U - 1 \mu_U^\top, b]`:

.. math::

    B'_U \mid \cdot \sim \mathcal{MN}\big(P^{-1} X^\top R,\ P^{-1},\ C_U\big),
    \quad P = X^\top X + \lambda_U I, \qquad
    \lambda_U \mid \cdot \sim \mathrm{Gamma}\big(a + F (D + 1) / 2,\
    b + \mathrm{tr}(B'_U C_U^{-1} B_U'^\top) / 2\big),

both exact conditional draws. The prior of :math:`B'_U` adds, in the conditionals of the
other hyperparameters, :math:`F` pseudo-rows of scatter :math:`\lambda_U B_U^\top B_U` to
:math:`\Sigma_U`'s and :math:`F` values :math:`\sqrt{\lambda_U} \beta_U` to the bias scale's;
:func:`bias_prior_values` and :func:`link_scatter` give them to those steps. The rows' prior
means go to the row step through ``state["row_mean_U"]`` (and ``row_mean_user_bias``).

State keys (per side ``U``/``V``): ``B_U``, ``user_bias_link``, ``link_precision_U`` and
the fitted link means ``link_mean_U = X B_U``, ``link_mean_user_bias = X beta_U``.
"""

import numpy as np

__all__ = [
    "LINK_DIMS",
    "FeatureLinks",
    "bias_prior_values",
    "link_scatter",
]

_BIAS = {"U": "user_bias", "V": "item_bias"}

#: The link variables recorded per draw and their dims after ``(chain, draw)``.
LINK_DIMS = {
    "B_U": ("user_feature", "factor"),
    "B_V": ("item_feature", "factor"),
    "user_bias_link": ("user_feature",),
    "item_bias_link": ("item_feature",),
    "link_precision_U": (),
    "link_precision_V": (),
}


def link_scatter(side, state):
    """``(extra scatter, extra count)`` of a side's covariance conditional from its link's
    prior: ``(lambda B^T B, F)``, or ``(None, 0)`` without features on that side."""
    B = state.get(f"B_{side}")
    if B is None:
        return None, 0
    return state[f"link_precision_{side}"] * (B.T @ B), B.shape[0]


def bias_prior_values(bias, state):
    """The values whose count and sum of squares set a bias scale's conditional: the biases
    about their link means, and with a link ``sqrt(lambda) beta`` (its prior's pseudo-values)."""
    values = state[bias]
    link = state.get(f"{bias}_link")
    if link is None:
        return values
    side = "U" if bias == "user_bias" else "V"
    return np.concatenate([values - state[f"link_mean_{bias}"],
                           np.sqrt(state[f"link_precision_{side}"]) * link])


class FeatureLinks:
    """The link block of each side that has features.

    Parameters
    ----------
    designs : dict
        ``{"U": X_users or None, "V": X_items or None}``, each ``(n_rows, F)`` in the
        rows' code order.
    biases : bool
        Whether the biases regress on the features too (the model's biases).
    precision_shape, precision_rate : float
        ``a``, ``b`` of the ``Gamma(a, b)`` prior of each ``lambda``.
    """

    def __init__(self, designs, biases, precision_shape=1.0, precision_rate=1.0):
        self.designs = {side: np.ascontiguousarray(X, dtype=np.float64)
                        for side, X in designs.items() if X is not None}
        self.gram = {side: X.T @ X for side, X in self.designs.items()}
        self.biases = bool(biases)
        self.shape = float(precision_shape)
        self.rate = float(precision_rate)

    @property
    def sides(self):
        return tuple(self.designs)

    def start(self, state, n_factors):
        """A chain's start: zero links, ``lambda`` at its prior mean."""
        for side, X in self.designs.items():
            state[f"B_{side}"] = np.zeros((X.shape[1], n_factors))
            state[f"link_precision_{side}"] = self.shape / self.rate
            if self.biases:
                state[f"{_BIAS[side]}_link"] = np.zeros(X.shape[1])
            self._update_means(side, state)

    def _update_means(self, side, state):
        X = self.designs[side]
        state[f"link_mean_{side}"] = X @ state[f"B_{side}"]
        if self.biases:
            bias = _BIAS[side]
            state[f"link_mean_{bias}"] = X @ state[f"{bias}_link"]

    def row_means(self, state):
        """Set the row step's per-row prior means: ``mu + X B`` and ``X beta``."""
        for side in self.designs:
            state[f"row_mean_{side}"] = state[f"mu_{side}"] + state[f"link_mean_{side}"]
            if self.biases:
                bias = _BIAS[side]
                state[f"row_mean_{bias}"] = state[f"link_mean_{bias}"]

    def step(self, state, rng):
        """Draw each side's link given its rows and covariance, then its ``lambda``."""
        for side, X in self.designs.items():
            lam = state[f"link_precision_{side}"]
            residual = state[side] - state[f"mu_{side}"]
            chol_cov = np.linalg.cholesky(state[f"Sigma_{side}"])
            if self.biases:
                bias = _BIAS[side]
                residual = np.column_stack([residual, state[bias]])
                dim = residual.shape[1]
                full = np.zeros((dim, dim))
                full[:-1, :-1] = chol_cov
                full[-1, -1] = 1.0 / np.sqrt(state[f"{bias}_precision"])
                chol_cov = full
            precision = self.gram[side] + lam * np.eye(X.shape[1])
            chol_p = np.linalg.cholesky(precision)
            mean = np.linalg.solve(chol_p.T, np.linalg.solve(chol_p, X.T @ residual))
            z = rng.standard_normal(mean.shape)
            link = mean + np.linalg.solve(chol_p.T, z) @ chol_cov.T
            D = state[side].shape[1]
            state[f"B_{side}"] = link[:, :D]
            if self.biases:
                state[f"{_BIAS[side]}_link"] = link[:, D]
            # tr(B' C^-1 B'^T) = ||B' C^-T||_F^2 with C = chol_cov chol_cov^T
            whitened = np.linalg.solve(chol_cov, link.T)
            rate = self.rate + 0.5 * float((whitened**2).sum())
            state[f"link_precision_{side}"] = rng.gamma(self.shape + 0.5 * link.size, 1.0 / rate)
            self._update_means(side, state)

    def allocate(self, out, chains, draws):
        for side, X in self.designs.items():
            F = X.shape[1]
            D = out["mu_U"].shape[2]
            out[f"B_{side}"] = np.empty((chains, draws, F, D))
            out[f"link_precision_{side}"] = np.empty((chains, draws))
            if self.biases:
                out[f"{_BIAS[side]}_link"] = np.empty((chains, draws, F))

    def record(self, out, chain, draw, state):
        for side in self.designs:
            names = [f"B_{side}", f"link_precision_{side}"]
            if self.biases:
                names.append(f"{_BIAS[side]}_link")
            for name in names:
                out[name][chain, draw] = state[name]
