r"""Compiled kernels of the implicit-feedback step of the Gibbs sampler (Bayesian SVD++).

A user's effective factor vector is ``U_u + o_u`` with ``o_u = s_u sum_{j in N(u)} Y_j`` and
``s_u = |N(u)|^{-1/2}``. With the user's row ``w_u = (U_u + o_u, b_u)`` integrated out (its
prior is Gaussian, ``N(m_u + (o_u, 0), P0^{-1})``), the user's ratings are Gaussian in ``o_u``:
their log density is ``-d^T P_u d / 2 + d^T G_u`` in a change ``d`` of ``o_u``, with

.. math::

    M_u = (P_0 + \tau A_u)^{-1}, \quad A_u = \sum_{i \in R(u)} x_i x_i^\top, \quad
    P_u = [P_0 - P_0 M_u P_0]_{D \times D}, \quad
    G_u = [P_0 M_u \tau X_u^\top (y_u - X_u \bar w_u)]_{D},

``x_i = (V_i, 1)`` (or ``V_i`` without biases), ``y_u`` the ratings less the intercept and the
item biases, ``\bar w_u`` the row's prior mean. :func:`user_terms` computes ``P_u`` and
``G_u``; :func:`sweep_implicit` then draws every ``Y_j`` in turn from its Gaussian conditional
(precision ``diag(1 / s_Y^2) + sum_{u: j in N(u)} s_u^2 P_u``, linear term
``sum_u s_u (G_u + s_u P_u Y_j)``, ``G_u`` at the current ``Y``): after each draw user ``u``'s
gradient becomes ``G_u - s_u P_u (Y_j^new - Y_j^old)``, so every draw conditions on the current
values of the others. The changes are accumulated per user and applied when ``P_u`` is next
read, so that each pair ``(u, j)`` reads ``P_u`` once (about ``2 D^2`` operations per pair).
"""

import numpy as np
from numba import njit

from bpmf.kernels.dense import cholesky_into, solve_lower_into, solve_lower_transposed_into
from bpmf.kernels.gram import add_gram, gram_rows

__all__ = ["offsets_into", "sweep_implicit", "sweep_implicit_given_rows", "user_terms"]

# ``reassoc`` lets LLVM vectorise the sums over the factors (results change at the rounding
# level only); ``contract`` allows fused multiply-adds.
_FASTMATH = {"reassoc", "contract"}


_CHUNK = 256  # ratings gathered at a time into a transposed buffer (as the row kernel does)


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def user_terms(indptr, items, ratings, X, item_shift, tau, prior_prec, prior_mean, P_out, G_out):
    """``P_u`` and ``G_u`` of every user (module docstring), with the user's row integrated out.

    Parameters
    ----------
    indptr, items, ratings : the user-major CSR of the ratings.
    X : (n_items, dim) the item rows ``x_i`` (factors, then a one for the user's bias).
    item_shift : (n_items,) what each rating has besides ``x_i . w_u`` (intercept and item
        bias).
    tau : the noise precision.
    prior_prec : (dim, dim) the user rows' prior precision ``P_0``.
    prior_mean : (n_users or 1, dim) the rows' prior means ``\\bar w_u`` (offsets included).
    P_out : (n_users, D, D), G_out : (n_users, D) written.
    """
    n_users = indptr.shape[0] - 1
    dim = X.shape[1]
    D = P_out.shape[1]
    per_row = prior_mean.shape[0] > 1
    A = np.empty((dim, dim))
    L = np.empty((dim, dim))
    g = np.empty(dim)
    y = np.empty(dim)
    W = np.empty((dim, dim))
    col = np.empty(dim)
    # the item rows, transposed, with the targets in row ``dim`` (add_gram)
    Xt = np.zeros((gram_rows(dim), _CHUNK + 8))
    tiles = np.empty((Xt.shape[0], Xt.shape[0]))
    no_prefetch = items.shape[0]  # the item rows are read from the cache: nothing to prefetch
    for u in range(n_users):
        r = u if per_row else 0
        for a in range(dim):
            g[a] = 0.0
            for b in range(dim):
                A[a, b] = 0.0
        start, stop = indptr[u], indptr[u + 1]
        for begin in range(start, stop, _CHUNK):
            count = min(_CHUNK, stop - begin)
            for k in range(count):
                i = items[begin + k]
                for a in range(dim):
                    Xt[a, k] = X[i, a]
                Xt[dim, k] = ratings[begin + k] - item_shift[i]
            add_gram(Xt, tiles, dim, count, 1.0, A, g, items, X, no_prefetch, 0, 0)
        for a in range(dim):
            for b in range(a):
                A[b, a] = A[a, b]
        # g = tau X^T (y - X mean) ; then A <- P0 + tau A = L L^T
        for a in range(dim):
            acc = 0.0
            for b in range(dim):
                acc += A[a, b] * prior_mean[r, b]
            g[a] = tau * (g[a] - acc)
        for a in range(dim):
            for b in range(dim):
                A[a, b] = prior_prec[a, b] + tau * A[a, b]
        cholesky_into(A, L)
        # W = L^{-1} P0, column by column
        for b in range(dim):
            solve_lower_into(L, prior_prec[:, b], col)
            for a in range(dim):
                W[a, b] = col[a]
        solve_lower_into(L, g, y)
        # P_u = P0 - W^T W ; G_u = W^T L^{-1} tau g  (= P0 M tau g)
        for a in range(D):
            s = 0.0
            for k in range(dim):
                s += W[k, a] * y[k]
            G_out[u, a] = s
            for b in range(a + 1):
                s = prior_prec[a, b]
                for k in range(dim):
                    s -= W[k, a] * W[k, b]
                P_out[u, a, b] = s
                P_out[u, b, a] = s


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def sweep_implicit(indptr, users, scale, P, G, Y, prior_precision, z):
    """Draw every ``Y_j`` in turn from its Gaussian conditional (module docstring).

    Parameters
    ----------
    indptr, users : item-major CSR of the implicit sets: the users ``u`` with ``j in N(u)``.
    scale : (n_users,) ``s_u = |N(u)|^{-1/2}``.
    P : (n_users, D, D), G : (n_users, D) from :func:`user_terms`; on return ``G`` holds the
        gradients at the new ``Y``.
    Y : (n_items, D) updated in place.
    prior_precision : (D,) the diagonal prior precision ``1 / s_Y^2`` of each factor.
    z : (n_items, D) standard normals (zeros: each ``Y_j`` is set to its conditional mean).
    """
    n_items = indptr.shape[0] - 1
    n_users = P.shape[0]
    D = Y.shape[1]
    Q = np.empty((D, D))
    L = np.empty((D, D))
    h = np.empty(D)
    m = np.empty(D)
    v = np.empty(D)
    t = np.empty(D)
    # moved[u] = s_u * sum of the changes of the Y_j of N(u) drawn so far in this sweep, so
    # that user u's gradient now is G_u - P_u moved[u] (applied lazily, once per pair)
    moved = np.zeros((n_users, D))
    for j in range(n_items):
        # Q = sum_u s_u^2 P_u and h = sum_u s_u (G_u - P_u moved_u + s_u P_u Y_j), in one pass
        # over each P_u: h = sum_u s_u G_u + sum_u s_u P_u (s_u Y_j - moved_u)
        for a in range(D):
            h[a] = 0.0
            for b in range(D):
                Q[a, b] = 0.0
        for n in range(indptr[j], indptr[j + 1]):
            u = users[n]
            s = scale[u]
            s2 = s * s
            for b in range(D):
                t[b] = s * (s * Y[j, b] - moved[u, b])
            for a in range(D):
                acc = s * G[u, a]
                for b in range(D):
                    p = P[u, a, b]
                    Q[a, b] += s2 * p
                    acc += p * t[b]
                h[a] += acc
        for a in range(D):
            Q[a, a] += prior_precision[a]
        cholesky_into(Q, L)
        solve_lower_into(L, h, v)
        for a in range(D):
            t[a] = v[a] + z[j, a]
        solve_lower_transposed_into(L, t, m)  # the mean L^-T L^-1 h plus L^-T z
        for n in range(indptr[j], indptr[j + 1]):
            u = users[n]
            s = scale[u]
            for a in range(D):
                moved[u, a] += s * (m[a] - Y[j, a])
        for a in range(D):
            Y[j, a] = m[a]
    for u in range(n_users):
        for a in range(D):
            acc = 0.0
            for b in range(D):
                acc += P[u, a, b] * moved[u, b]
            G[u, a] -= acc


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def sweep_implicit_given_rows(indptr, users, scale, residuals, bias_residuals, prior_prec, Y,
                              prior_precision, z, weights):
    """Draw every ``Y_j`` in turn given the effective rows ``W_u = U_u + o_u`` (held fixed):
    with ``r_u = W_u - o_u - m_u`` (``residuals``, the rows about their prior means) and the
    rows' prior ``r_u ~ N(0, P0^{-1})``, ``Y_j``'s conditional has precision
    ``Q_j = diag(1 / s_Y^2) + c_j [P0]_{DD}``, ``c_j = sum_u s_u^2``, and linear term
    ``h_j = [P0 sum_u s_u (r_u + s_u Y_j, e_u)]_D`` over the users ``u`` with ``j in N(u)``
    (``e_u`` the bias residual, the prior's last coordinate; absent without biases).

    Every ``Q_j`` is diagonal in one basis: with ``Lambda = diag(1 / s_Y^2)`` and
    ``Lambda^{-1/2} [P0]_{DD} Lambda^{-1/2} = E diag(l) E^T``, ``M = Lambda^{-1/2} E`` gives
    ``Q_j^{-1} = M diag(1 / (1 + c_j l)) M^T``, so a draw is
    ``M ((M^T h_j) / (1 + c_j l) + z / sqrt(1 + c_j l))``: two mat-vecs per item instead
    of a factorisation.

    With centred offsets (``weights`` of length ``n_items``), ``o_u = s_u sum_{j in N(u)} Y_j -
    sum_j w_j Y_j`` with ``w_j = sum_{u: j in N(u)} s_u / n_users``, so that the offsets
    average zero over the users: ``Y_j`` enters every user's offset with the coefficient
    ``a_uj = s_u [j in N(u)] - w_j``. Then ``c_j = sum_u a_uj^2 = sum_{u in N(j)} s_u^2 -
    n_users w_j^2`` and the linear term is ``[P0 (sum_{u in N(j)} s_u q_u - w_j T)]_D`` with
    ``q_u = (r_u + a_uj Y_j, e_u)`` and ``T = sum_u (r_u, e_u)``, which no draw of ``Y`` changes
    (``sum_u a_uj = 0``). The change ``w_j (Y_j^new - Y_j^old)`` that a draw makes to every
    ``r_u`` is summed in one vector and added to all rows at the end.

    Parameters
    ----------
    indptr, users, scale : as :func:`sweep_implicit`.
    residuals : (n_users, D) ``r_u``, updated in place (``r_u -= a_uj (Y_j^new - Y_j^old)``).
    bias_residuals : (n_users,) ``e_u`` (length 0 without biases).
    prior_prec : (dim, dim) ``P0``, ``dim = D`` or ``D + 1``.
    Y : (n_items, D) updated in place; prior_precision : (D,); z : (n_items, D) normals.
    weights : (n_items,) ``w_j`` for centred offsets, or length 0 for the plain sums.
    """
    n_items = indptr.shape[0] - 1
    D = Y.shape[1]
    dim = prior_prec.shape[0]
    root = np.empty(D)
    B = np.empty((D, D))
    for a in range(D):
        root[a] = 1.0 / np.sqrt(prior_precision[a])
    for a in range(D):
        for b in range(D):
            B[a, b] = root[a] * prior_prec[a, b] * root[b]
    values, vectors = np.linalg.eigh(B)
    M = np.empty((D, D))
    for a in range(D):
        for b in range(D):
            M[a, b] = root[a] * vectors[a, b]
    acc = np.empty(dim)
    h = np.empty(D)
    w = np.empty(D)
    n_users = residuals.shape[0]
    centred = weights.shape[0] > 0
    total = np.zeros(dim)  # T: fixed through the sweep
    common = np.zeros(D)  # the change shared by every r_u, added at the end
    if centred:
        for u in range(n_users):
            for a in range(D):
                total[a] += residuals[u, a]
            if dim > D:
                total[D] += bias_residuals[u]
    for j in range(n_items):
        wj = weights[j] if centred else 0.0
        for a in range(dim):
            acc[a] = 0.0
        c = 0.0
        for n in range(indptr[j], indptr[j + 1]):
            u = users[n]
            s = scale[u]
            c += s * s
            for a in range(D):
                acc[a] += s * (residuals[u, a] + common[a] + (s - wj) * Y[j, a])
            if dim > D:
                acc[D] += s * bias_residuals[u]
        if centred:
            c -= n_users * wj * wj
            for a in range(dim):
                acc[a] -= wj * total[a]
        for a in range(D):
            t = 0.0
            for b in range(dim):
                t += prior_prec[a, b] * acc[b]
            h[a] = t
        for k in range(D):
            t = 0.0
            for a in range(D):
                t += M[a, k] * h[a]
            d = 1.0 + c * values[k]
            w[k] = t / d + z[j, k] / np.sqrt(d)
        for a in range(D):
            t = 0.0
            for k in range(D):
                t += M[a, k] * w[k]
            h[a] = t - Y[j, a]  # the change of Y_j
            Y[j, a] = t
        for n in range(indptr[j], indptr[j + 1]):
            u = users[n]
            s = scale[u]
            for a in range(D):
                residuals[u, a] -= s * h[a]
        if centred:
            for a in range(D):
                common[a] += wj * h[a]
    if centred:
        for u in range(n_users):
            for a in range(D):
                residuals[u, a] += common[a]


@njit(cache=True, nogil=True)
def offsets_into(indptr, items, scale, Y, out):
    """``out[u] = s_u sum_{j in N(u)} Y_j`` from the user-major CSR of the sets."""
    D = Y.shape[1]
    for u in range(indptr.shape[0] - 1):
        for a in range(D):
            out[u, a] = 0.0
        for n in range(indptr[u], indptr[u + 1]):
            j = items[n]
            for a in range(D):
                out[u, a] += Y[j, a]
        for a in range(D):
            out[u, a] *= scale[u]
