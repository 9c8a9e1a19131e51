"""Small dense linear algebra of the hyperparameter steps and of the LKJ block's NUTS, compiled.

A Gibbs sweep factors, solves and inverts a dozen ``D x D`` matrices (``D`` is the number of
factors, about ten): the factor covariances, the precisions of the translation moves. For
matrices this small numpy's LAPACK wrappers cost more in call overhead (5-10 µs each, with
their error-state handling) than the arithmetic; these loops take about a microsecond. Each
function reads only the lower triangle of a symmetric argument.

They keep the GIL, as do the other small kernels of the hyperparameter steps
(:mod:`bpmf.kernels.lkj`, :mod:`bpmf.kernels.nuts`, :mod:`bpmf.kernels.slice`,
:mod:`bpmf.kernels.scatter`): with chains in threads, releasing and retaking it around a
microsecond of work handed it to another chain at every call (on ML-100K u1 two chains took
6.5-7.1 s with these released against 5.8 s kept).
"""

import numpy as np
from numba import njit

__all__ = [
    "cholesky_into",
    "cholesky_lower",
    "covariance_base",
    "covariance_blocks",
    "gaussian_from_precision",
    "inverse_from_cholesky",
    "lower_inverse",
    "lower_matvec",
    "lower_transposed_matvec",
    "solve_lower",
    "solve_lower_into",
    "solve_lower_matrix",
    "solve_lower_transposed",
    "solve_lower_transposed_into",
]


@njit(cache=True)
def _factor_into(P, L):
    """:func:`cholesky_into` returning False, where it would raise, when ``P`` is not
    positive definite (``L`` is then partly written)."""
    n = P.shape[0]
    for a in range(n):
        for b in range(a + 1):
            s = P[a, b]
            for k in range(b):
                s -= L[a, k] * L[b, k]
            if a == b:
                if not s > 0.0:
                    return False
                L[a, a] = np.sqrt(s)
            else:
                L[a, b] = s / L[b, b]
        for b in range(a + 1, n):
            L[a, b] = 0.0
    return True


@njit(cache=True)
def cholesky_into(P, L):
    """Write the lower Cholesky factor of the symmetric positive definite ``P`` into ``L``
    (upper triangle zeroed); raises ``LinAlgError`` when ``P`` is not positive definite."""
    if not _factor_into(P, L):
        raise np.linalg.LinAlgError("Matrix is not positive definite")


@njit(cache=True)
def solve_lower_into(L, v, out):
    """``out = L^-1 v`` for a lower-triangular ``L`` (forward substitution)."""
    n = L.shape[0]
    for a in range(n):
        s = v[a]
        for k in range(a):
            s -= L[a, k] * out[k]
        out[a] = s / L[a, a]


@njit(cache=True)
def solve_lower_transposed_into(L, v, out):
    """``out = L^-T v`` for a lower-triangular ``L`` (back substitution)."""
    n = L.shape[0]
    for a in range(n - 1, -1, -1):
        s = v[a]
        for k in range(a + 1, n):
            s -= L[k, a] * out[k]
        out[a] = s / L[a, a]


@njit(cache=True)
def cholesky_lower(P):
    """The lower Cholesky factor of the symmetric positive definite ``P``; raises
    ``LinAlgError`` when ``P`` is not positive definite."""
    L = np.empty(P.shape)
    cholesky_into(P, L)
    return L


@njit(cache=True)
def solve_lower(L, v):
    """``L^-1 v`` for a lower-triangular ``L``."""
    out = np.empty(v.shape[0])
    solve_lower_into(L, v, out)
    return out


@njit(cache=True)
def solve_lower_transposed(L, v):
    """``L^-T v`` for a lower-triangular ``L``."""
    out = np.empty(v.shape[0])
    solve_lower_transposed_into(L, v, out)
    return out


@njit(cache=True)
def lower_inverse(L):
    """Inverse of a lower-triangular matrix by forward substitution.

    Never raises: a vanishing pivot gives infinities, which make the density ``-inf`` or
    NaN, and the NUTS trajectory that reached it ends as a divergence (LAPACK's inverse
    would raise from inside the compiled sampler instead).
    """
    dim = L.shape[0]
    A = np.zeros((dim, dim))
    for j in range(dim):
        A[j, j] = 1.0 / L[j, j]
        for i in range(j + 1, dim):
            acc = 0.0
            for k in range(j, i):
                acc += L[i, k] * A[k, j]
            A[i, j] = -acc / L[i, i]
    return A


@njit(cache=True)
def solve_lower_matrix(L, B):
    """``L^-1 B`` for a lower-triangular ``L``, column by column."""
    out = np.empty(B.shape)
    for c in range(B.shape[1]):
        solve_lower_into(L, B[:, c], out[:, c])
    return out


@njit(cache=True)
def gaussian_from_precision(P, linear, z):
    """A draw of ``N(P^-1 linear, P^-1)`` from the standard normals ``z``:
    ``L^-T (L^-1 linear + z)`` with ``P = L L^T``."""
    L = cholesky_lower(P)
    y = solve_lower(L, linear)
    for a in range(y.shape[0]):
        y[a] += z[a]
    return solve_lower_transposed(L, y)


@njit(cache=True)
def inverse_from_cholesky(L):
    """``(L L^T)^-1 = L^-T L^-1`` for a lower-triangular ``L`` with a positive diagonal,
    exactly symmetric."""
    n = L.shape[0]
    A = lower_inverse(L)  # lower triangular
    out = np.empty((n, n))
    for a in range(n):
        for b in range(a + 1):
            s = 0.0
            for k in range(a, n):  # A[k, a] and A[k, b] vanish for k < a
                s += A[k, a] * A[k, b]
            out[a, b] = s
            out[b, a] = s
    return out


@njit(cache=True)
def lower_matvec(L, y):
    """``L y`` for a lower-triangular ``L``."""
    n = y.shape[0]
    out = np.empty(n)
    for i in range(n):
        acc = 0.0
        for k in range(i + 1):
            acc += L[i, k] * y[k]
        out[i] = acc
    return out


@njit(cache=True)
def lower_transposed_matvec(L, g):
    """``L^T g`` for a lower-triangular ``L``."""
    n = g.shape[0]
    out = np.zeros(n)
    for i in range(n):
        gi = g[i]
        for k in range(i + 1):
            out[k] += L[i, k] * gi
    return out


@njit(cache=True)
def covariance_blocks(L, d):
    """From the lower Cholesky factor ``L`` of a covariance ``S``: ``S = L L^T``, ``S^-1``,
    and the inverse of the leading ``d x d`` block of ``S`` (whose Cholesky factor is the
    leading block of ``L``)."""
    n = L.shape[0]
    cov = np.empty((n, n))
    for a in range(n):
        for b in range(a + 1):
            s = 0.0
            for k in range(b + 1):
                s += L[a, k] * L[b, k]
            cov[a, b] = s
            cov[b, a] = s
    return cov, inverse_from_cholesky(L), inverse_from_cholesky(np.ascontiguousarray(L[:d, :d]))


@njit(cache=True)
def covariance_base(scatter, n_rows):
    """The Cholesky factor of ``scatter / n_rows``, the rows' sample covariance, as a base
    for the LKJ block's NUTS coordinates; the identity with no more rows than dimensions, or
    when the covariance is singular or nearly so (diagonal ratio below 1e-6: rows in a
    subspace)."""
    dim = scatter.shape[0]
    if n_rows > dim:
        L = np.zeros((dim, dim))
        if _factor_into(scatter / n_rows, L):
            low, high = L[0, 0], L[0, 0]
            for a in range(dim):
                low, high = min(low, L[a, a]), max(high, L[a, a])
            if low > 1e-6 * high:
                return L
    return np.eye(dim)
