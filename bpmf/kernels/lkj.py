r"""Log density and gradient of a factor covariance's full conditional under an LKJ prior.

The factor rows :math:`u_1, \dots, u_n` of one side are :math:`\mathcal N(m, \Sigma)` with
:math:`\Sigma = L L^\top` and :math:`L \sim \mathrm{LKJCholeskyCov}(\eta,
\mathcal N^+(0, s^2))` (PyMC's density: LKJ(:math:`\eta`) on the correlation matrix,
half-normal standard deviations). Given the rows and the mean, the conditional of :math:`L`
depends on the rows only through :math:`n` and the scatter
:math:`S = \sum_i (u_i - m)(u_i - m)^\top`, so one evaluation costs :math:`O(D^3)` whatever
the number of rows.

The parameter vector ``x`` is PyMC's unconstrained form of ``LKJCholeskyCov``: the lower
triangle of :math:`L` in row-major order (``np.tril_indices``) with the diagonal entries
replaced by their logarithms. With :math:`s_k = \lVert L_{k,:} \rVert` the standard
deviations, PyMC's log density of :math:`L` plus the log-Jacobian of that transform plus the
rows' Gaussian log density is, up to a constant,

.. math::

    \sum_k (2\eta - 1 + D - k - n) \log L_{kk}
    - (2\eta - 2 + D) \sum_k \log s_k - \sum_k \frac{s_k^2}{2 s^2}
    - \tfrac12 \operatorname{tr}(\Sigma^{-1} S), \qquad k = 0, \dots, D - 1.

For :math:`D = 1` this is the half-normal prior of the single scale, as in the PyMC graph.
"""

import numpy as np
from numba import njit

from bpmf.kernels.dense import lower_inverse, solve_lower_matrix

__all__ = [
    "lkj_cholesky_prior_logp",
    "relative_cholesky",
    "relative_coordinates",
    "lkj_conditional_logp_grad",
    "lower_inverse",
    "lkj_relative_logp_grad",
    "pack_cholesky",
    "unpack_cholesky",
]


@njit(cache=True)
def unpack_cholesky(x, dim):
    """The lower-triangular ``L`` of the unconstrained vector ``x`` (log diagonal)."""
    L = np.zeros((dim, dim))
    n = 0
    for k in range(dim):
        for j in range(k + 1):
            L[k, j] = np.exp(x[n]) if j == k else x[n]
            n += 1
    return L


@njit(cache=True)
def pack_cholesky(L):
    """The unconstrained vector (log diagonal, row-major lower triangle) of ``L``."""
    dim = L.shape[0]
    x = np.empty(dim * (dim + 1) // 2)
    n = 0
    for k in range(dim):
        for j in range(k + 1):
            x[n] = np.log(L[k, k]) if j == k else L[k, j]
            n += 1
    return x


@njit(cache=True)
def _logp_grad_cholesky(L, scatter, n_rows, eta, scale_sd, last_scale_sd):
    """Log density of ``L`` itself (no transform) given the rows, and its gradient in ``L``.

    The standard deviation of the last row has the half-normal scale ``last_scale_sd`` when
    it is positive (a bias as the last coordinate), ``scale_sd`` otherwise."""
    dim = scatter.shape[0]
    for k in range(dim):
        # a diverging trajectory can reach a singular or overflowing factor: zero density
        if not (1e-150 < L[k, k] < 1e150):
            return -np.inf, np.zeros((dim, dim))
    sd = np.empty(dim)
    for k in range(dim):
        acc = 0.0
        for j in range(k + 1):
            acc += L[k, j] * L[k, j]
        sd[k] = np.sqrt(acc)
    sd_power = 2.0 * eta - 2.0 + dim
    inv_var = np.full(dim, 1.0 / (scale_sd * scale_sd))
    if last_scale_sd > 0.0:
        inv_var[dim - 1] = 1.0 / (last_scale_sd * last_scale_sd)
    logp = 0.0
    for k in range(dim):
        logp += (2.0 * eta - 2.0 + dim - k - n_rows) * np.log(L[k, k])
        logp -= sd_power * np.log(sd[k]) + 0.5 * sd[k] * sd[k] * inv_var[k]
    # trace term: with A = L^-1, tr(Sigma^-1 S) = tr(A S A^T)
    A = lower_inverse(L)
    ASAt = A @ scatter @ A.T
    for k in range(dim):
        logp -= 0.5 * ASAt[k, k]
    # d/dL of -0.5 tr(A^T A S) is A^T A S A^T = A^T (A S A^T)
    grad = A.T @ ASAt
    for k in range(dim):
        d_sd = -sd_power / sd[k] - sd[k] * inv_var[k]
        for j in range(k + 1):
            grad[k, j] += d_sd * L[k, j] / sd[k]
        grad[k, k] += (2.0 * eta - 2.0 + dim - k - n_rows) / L[k, k]
        for j in range(k + 1, dim):
            grad[k, j] = 0.0
    return logp, grad


@njit(cache=True)
def lkj_cholesky_prior_logp(L, eta, scale_sd, last_scale_sd=0.0):
    """Log prior density (up to a constant) of the Cholesky factor ``L`` itself, as a
    density over its lower-triangular entries: ``LKJCholeskyCov(eta)`` with half-normal
    standard deviations (``last_scale_sd`` for the last row when positive)."""
    dim = L.shape[0]
    sd_power = 2.0 * eta - 2.0 + dim
    logp = 0.0
    for k in range(dim):
        if not (1e-150 < L[k, k] < 1e150):  # as _logp_grad_cholesky: zero density
            return -np.inf
        acc = 0.0
        for j in range(k + 1):
            acc += L[k, j] * L[k, j]
        scale = last_scale_sd if (k == dim - 1 and last_scale_sd > 0.0) else scale_sd
        logp += (sd_power - k) * np.log(L[k, k]) - 0.5 * sd_power * np.log(acc)
        logp -= 0.5 * acc / (scale * scale)
    return logp


@njit(cache=True)
def lkj_conditional_logp_grad(x, scatter, n_rows, eta, scale_sd, last_scale_sd=0.0):
    """Log density (up to a constant) of the unconstrained Cholesky factor given the rows, and
    its gradient.

    Parameters
    ----------
    x : ndarray, shape (D (D + 1) / 2,)
        Unconstrained Cholesky factor (see the module docstring).
    scatter : ndarray, shape (D, D)
        :math:`\\sum_i (u_i - m)(u_i - m)^\\top` over the rows (zeros for the prior alone).
    n_rows : float
        Number of rows (0 for the prior alone).
    eta : float
        LKJ shape.
    scale_sd : float
        Scale of the half-normal prior on the standard deviations.
    """
    return lkj_relative_logp_grad(
        x, np.eye(scatter.shape[0]), scatter, n_rows, eta, scale_sd, last_scale_sd
    )


@njit(cache=True)
def lkj_relative_logp_grad(x, base, scatter, n_rows, eta, scale_sd, last_scale_sd=0.0):
    """The same conditional for ``L = base @ T``, in the unconstrained form ``x`` of ``T``.

    ``base`` is a fixed lower-triangular matrix with a positive diagonal (for example the
    Cholesky factor of the rows' sample covariance). The map ``T -> base T`` has a constant
    Jacobian, so the density of ``x`` is that of the unconstrained ``L`` up to a constant;
    with a ``base`` near the conditional's centre, ``T`` is near the identity whatever the
    scale of the rows, and one metric serves every sweep.
    """
    dim = scatter.shape[0]
    T = unpack_cholesky(x, dim)
    logp, grad_L = _logp_grad_cholesky(base @ T, scatter, n_rows, eta, scale_sd, last_scale_sd)
    grad_T = base.T @ grad_L
    grad = np.empty(x.shape[0])
    n = 0
    for k in range(dim):
        logp += np.log(T[k, k])
        for j in range(k + 1):
            if j == k:  # x = log T_kk: chain rule, plus the log-Jacobian log T_kk
                grad[n] = grad_T[k, k] * T[k, k] + 1.0
            else:
                grad[n] = grad_T[k, j]
            n += 1
    return logp, grad


@njit(cache=True)
def relative_coordinates(base, L):
    """The unconstrained coordinates ``x`` of ``T = base^-1 L`` (:func:`pack_cholesky`), the
    point :func:`lkj_relative_logp_grad` reads; ``base`` and ``L`` lower triangular."""
    return pack_cholesky(solve_lower_matrix(base, L))


@njit(cache=True)
def relative_cholesky(base, x):
    """``base @ T`` for the lower-triangular ``T`` of the coordinates ``x``: the inverse of
    :func:`relative_coordinates`."""
    dim = base.shape[0]
    T = unpack_cholesky(x, dim)
    L = np.zeros((dim, dim))
    for a in range(dim):
        for c in range(a + 1):
            s = 0.0
            for k in range(c, a + 1):
                s += base[a, k] * T[k, c]
            L[a, c] = s
    return L
