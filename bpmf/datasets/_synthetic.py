"""Synthetic ratings drawn from the BPMF generative model, returned with the true parameters."""

from dataclasses import dataclass

import numpy as np

from bpmf.datasets._ratings import Ratings


@dataclass(frozen=True)
class SyntheticTruth:
    """The parameters the synthetic ratings were drawn from (user/item ids are 0..n-1)."""

    U: np.ndarray
    V: np.ndarray
    mu_U: np.ndarray
    mu_V: np.ndarray
    Sigma_U: np.ndarray
    Sigma_V: np.ndarray
    user_bias: np.ndarray
    item_bias: np.ndarray
    global_mean: float
    noise_sd: float

    def expected(self, users, items):
        """Noise-free mean rating ``mu + b_u + c_i + U_u . V_i`` for id arrays."""
        users = np.asarray(users, dtype=np.intp)
        items = np.asarray(items, dtype=np.intp)
        return (
            self.global_mean
            + self.user_bias[users]
            + self.item_bias[items]
            + np.einsum("nk,nk->n", self.U[users], self.V[items])
        )


def _covariance(n_factors, sd, rng):
    """A random covariance: ``sd``-scaled random correlation matrix (eigenvalues ~ Dirichlet)."""
    if n_factors == 1:
        return np.array([[sd**2]])
    from scipy import stats  # imported here: scipy.stats costs seconds at `import bpmf`

    eigs = rng.dirichlet(np.full(n_factors, 5.0)) * n_factors
    eigs *= n_factors / eigs.sum()  # random_correlation needs the sum exactly n
    corr = stats.random_correlation.rvs(eigs, random_state=rng)
    return sd**2 * corr


def _sample_cells(n_users, n_items, n_ratings, rng):
    """``n_ratings`` distinct (user, item) cells, uniformly, without a dense mask."""
    n_cells = n_users * n_items
    chosen = np.empty(0, dtype=np.int64)
    while len(chosen) < n_ratings:
        extra = int((n_ratings - len(chosen)) * 1.1) + 16
        chosen = np.unique(np.concatenate([chosen, rng.integers(0, n_cells, size=extra)]))
    chosen = rng.permutation(chosen)[:n_ratings]
    return chosen // n_items, chosen % n_items


def make_synthetic_ratings(
    n_users=200,
    n_items=150,
    n_factors=3,
    density=0.1,
    noise_sd=0.5,
    random_state=None,
    *,
    biases=True,
    global_mean=3.0,
    factor_sd=None,
    bias_sd=0.3,
    mean_sd=0.2,
):
    r"""Draw ratings from the (biased) BPMF generative model, with the truth.

    Notes
    -----
    .. math::

        \mu_U, \mu_V &\sim \mathcal N(0, s_\mu^2 I), \qquad
        \Sigma_U, \Sigma_V = s_f^2 \, C, \; C \text{ a random correlation matrix} \\
        U_i &\sim \mathcal N(\mu_U, \Sigma_U), \qquad V_j \sim \mathcal N(\mu_V, \Sigma_V) \\
        b_i, c_j &\sim \mathcal N(0, s_b^2) \quad (\text{zero when } biases=False) \\
        r_{ij} &\sim \mathcal N(\mu + b_i + c_j + U_i^\top V_j, \sigma^2)

    on ``round(density * n_users * n_items)`` cells chosen uniformly. ``factor_sd`` defaults to
    ``n_factors ** -0.25`` so that ``U_i . V_j`` has variance about 1 whatever the rank.

    Returns
    -------
    ratings : Ratings
        Continuous ratings (``scale=None``); user and item ids are integers ``0..n-1``.
    truth : SyntheticTruth
    """
    for label, value in (("n_users", n_users), ("n_items", n_items), ("n_factors", n_factors)):
        if int(value) != value or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}.")
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density!r}.")
    if noise_sd < 0:
        raise ValueError(f"noise_sd must be >= 0, got {noise_sd!r}.")
    rng = np.random.default_rng(random_state)
    factor_sd = n_factors**-0.25 if factor_sd is None else factor_sd
    mu_U, mu_V = (rng.normal(0.0, mean_sd, n_factors) for _ in range(2))
    Sigma_U, Sigma_V = (_covariance(n_factors, factor_sd, rng) for _ in range(2))
    U = rng.multivariate_normal(mu_U, Sigma_U, size=n_users)
    V = rng.multivariate_normal(mu_V, Sigma_V, size=n_items)
    user_bias = rng.normal(0.0, bias_sd, n_users) if biases else np.zeros(n_users)
    item_bias = rng.normal(0.0, bias_sd, n_items) if biases else np.zeros(n_items)
    truth = SyntheticTruth(
        U,
        V,
        mu_U,
        mu_V,
        Sigma_U,
        Sigma_V,
        user_bias,
        item_bias,
        float(global_mean),
        float(noise_sd),
    )
    n_ratings = max(1, int(round(density * n_users * n_items)))
    users, items = _sample_cells(n_users, n_items, n_ratings, rng)
    values = truth.expected(users, items) + rng.normal(0.0, noise_sd, n_ratings)
    return Ratings(users, items, values, scale=None, name="synthetic"), truth
