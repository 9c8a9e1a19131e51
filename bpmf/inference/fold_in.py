r"""Fold-in: posterior draws of the rows of new users (or new items) without a refit.

Given one posterior draw of everything else, a new user's factor vector and bias
:math:`x = (U_u, b_u)` have the Gaussian conditional of the Gibbs sampler's row step:

.. math::

    P = \Lambda + \tau \sum_n y_n y_n^\top, \qquad
    h = \Lambda m + \tau \sum_n y_n (r_n - \mu - c_{i_n}), \qquad x \sim \mathcal N(P^{-1} h,
    P^{-1}),

with :math:`y_n = (V_{i_n}, 1)` over the user's ratings :math:`r_n`, :math:`\tau = \sigma^{-2}`,
the prior precision :math:`\Lambda = \mathrm{diag}(\Sigma_U^{-1}, s_b^{-2})` (with correlated
biases, the inverse of the joint covariance of the factors and the bias, from ``Sigma_U``,
``user_bias_factor_cov`` and ``user_bias_sd``) and prior mean :math:`m = (\mu_U, 0)`, all
taken from that draw; new items are symmetric, given ``U`` and the
user biases. One draw of each new row per posterior draw gives joint draws of the old
parameters and the new rows, which predict exactly as the fitted posterior does.

What this samples is :math:`p(\theta \mid R)\, p(x \mid \theta, R_\text{new})`: the fitted
posterior of the old parameters :math:`\theta` is kept as it is, not updated by the new
ratings (which a refit would do, through :math:`p(R_\text{new} \mid \theta)`). With a few new
rows against many fitted ones the difference is small; it is the usual fold-in.

The prior mean may differ from row to row (``links``): with side features it is
:math:`(\mu_U + B_U^\top x_u, \beta_U^\top x_u)` from each draw's link. With implicit feedback
on the users' side (``offsets``), the ratings see :math:`U_u + o_u` with
:math:`o_u = |N(u)|^{-1/2} \sum_{j \in N(u)} Y_j` over the new user's rated items; the
effective row :math:`w = U_u + o_u` is drawn with its prior mean shifted by :math:`o_u`, as
the sampler's row step does, and :math:`U_u = w - o_u` is returned.
"""

import numpy as np
from numba import get_num_threads, njit, prange

from bpmf.inference.implicit import implicit_sets
from bpmf.kernels.dense import cholesky_into, solve_lower_into, solve_lower_transposed_into
from bpmf.kernels.implicit import offsets_into
from bpmf.kernels.normals import row_normals
from bpmf.kernels.rows import csr_pair, sample_rows

__all__ = ["fold_in_rows", "fold_in_rows_with_days", "new_implicit_offsets"]

_SIDES = {
    "U": ("V", "user_bias", "item_bias"),
    "V": ("U", "item_bias", "user_bias"),
}


@njit(cache=True, nogil=True, parallel=True)
def _draw_per_sample(
    indptr,
    partner_sorted,
    ratings_sorted,
    partners,
    used,
    offsets,
    has_biases,
    mu,
    tau,
    precision,
    linear,
    keys,
    rows,
    n_chunks,
):
    """For each posterior draw ``s``, the new rows given that draw's partners (the kernel's
    ``X``: the rated partners ``used`` in compact order, with their factors, a column of ones
    for the bias and their biases). The draws are cut into ``n_chunks`` runs spread over
    numba's threads, each run with one scratch ``X``; each draw takes its normals from its own
    key ``keys[s]``, so the result does not depend on the cut or the number of threads."""
    n_samples = partners.shape[0]
    n_factors = partners.shape[2]
    n_used = used.shape[0]
    dim = rows.shape[2]
    no_z = np.empty((0, dim))
    for c in prange(n_chunks):
        X = np.zeros((n_used, dim + 1))
        if has_biases:
            X[:, n_factors] = 1.0
        for s in range(c * n_samples // n_chunks, (c + 1) * n_samples // n_chunks):
            for j in range(n_used):
                partner = used[j]
                for k in range(n_factors):
                    X[j, k] = partners[s, partner, k]
                X[j, dim] = offsets[s, partner]
            sample_rows(
                indptr,
                partner_sorted,
                ratings_sorted,
                X,
                mu[s],
                precision[s],
                linear[s],
                tau[s],
                no_z,
                rows[s],
                False,
                None,
                0.0,
                None,
                keys[s],
            )


def fold_in_rows(draws, side, row_codes, partner_codes, ratings, n_rows, rng, links=(None, None),
                 offsets=None):
    """Draw the rows of ``n_rows`` new users (``side="U"``) or items (``"V"``), per draw.

    Parameters
    ----------
    draws : dict of str -> ndarray
        Posterior draws with one leading ``sample`` axis: ``U``, ``V``, ``mu``, ``sigma``,
        ``Sigma_U``/``Sigma_V`` and, where the model has them, ``mu_U``/``mu_V`` (else zero
        means) and the biases with their scales ``user_bias_sd``/``item_bias_sd``.
    side : {"U", "V"}
    row_codes : array of int, shape (n_ratings,)
        The new row of each rating, in ``[0, n_rows)``; every new row has a rating.
    partner_codes : array of int, shape (n_ratings,)
        The fitted item (for new users) or user (for new items) of each rating.
    ratings : array of float, shape (n_ratings,)
    n_rows : int
    rng : numpy Generator
    links : (ndarray or None, ndarray or None)
        Per-row additions to the prior means: of the factors ``(samples, n_rows, n_factors)``
        (added to ``mu_U``) and of the biases ``(samples, n_rows)`` (side features' link
        means, :func:`bpmf.models._features.cold_start_links`).
    offsets : ndarray or None, shape (samples, n_rows, n_factors)
        Known offsets ``o`` that the ratings add to the new rows (implicit feedback); the
        returned factors are ``w - o`` for the drawn effective rows ``w``.

    Returns
    -------
    factors : ndarray, shape (samples, n_rows, n_factors)
    biases : ndarray, shape (samples, n_rows), or None for a model without biases
    """
    partners, partner_offsets, has_biases, precision, linear = _row_priors(
        draws, side, n_rows, links, offsets
    )
    n_samples, _, n_factors = partners.shape
    dim = precision.shape[1]
    # only the partners that the new ratings touch are copied per draw, in compact order
    used, compact = np.unique(np.asarray(partner_codes, dtype=np.int64), return_inverse=True)
    (indptr, partner_sorted, ratings_sorted), _ = csr_pair(
        np.asarray(row_codes, dtype=np.int64),
        compact.astype(np.int64),
        np.asarray(ratings, dtype=np.float64),
        int(n_rows),
        len(used),
    )
    keys = rng.integers(2**63, size=n_samples)
    rows = np.empty((n_samples, int(n_rows), dim))
    _draw_per_sample(
        indptr,
        partner_sorted,
        ratings_sorted,
        partners,
        used,
        partner_offsets,
        has_biases,
        np.asarray(draws["mu"], dtype=np.float64),
        1.0 / np.asarray(draws["sigma"], dtype=np.float64) ** 2,
        precision,
        linear,
        keys,
        rows,
        min(n_samples, 4 * get_num_threads()),
    )
    factors = np.ascontiguousarray(rows[:, :, :n_factors])
    if offsets is not None:
        factors -= offsets
    return factors, (np.ascontiguousarray(rows[:, :, n_factors]) if has_biases else None)


def fold_in_rows_with_days(draws, row_codes, item_codes, ratings, group_codes, n_rows, n_groups,
                           rng, links=(None, None), offsets=None):
    r"""Draw the rows of ``n_rows`` new users of a model with day-specific user biases, and the
    biases of their ``n_groups`` (user, day) groups, per draw.

    Every group of a new user is new, with a bias :math:`d_g \sim \mathcal N(0, s_d^2)`
    shared by its ratings. Integrated out, it makes a group's residuals correlated, with
    precision :math:`\tau (I - \kappa_g 1 1^\top)`,
    :math:`\kappa_g = s_d^2 / (\sigma^2 + n_g s_d^2)` (Sherman-Morrison), so the row
    :math:`x` has the Gaussian conditional

    .. math::

        P = \Lambda + \tau \sum_g \Big(\sum_{n \in g} y_n y_n^\top
        - \kappa_g s_g s_g^\top\Big), \qquad
        h = \Lambda m + \tau \sum_g \Big(\sum_{n \in g} y_n t_n - \kappa_g s_g T_g\Big),

    with :math:`s_g = \sum_{n \in g} y_n`, :math:`T_g = \sum_{n \in g} t_n`; then each
    :math:`d_g` given the row, with precision :math:`s_d^{-2} + \tau n_g` and mean
    :math:`\tau \sum_{n \in g} (t_n - y_n \cdot x)` over that precision. The pair of draws is
    an exact draw of the rows and day biases given the fitted draw.

    Parameters are those of :func:`fold_in_rows` for ``side="U"`` (``item_codes`` the fitted
    items), with ``group_codes`` (n_ratings,) the group of each rating in ``[0, n_groups)``,
    each group within one row; ``draws`` also holds ``day_bias_sd``.

    Returns
    -------
    factors : ndarray, shape (samples, n_rows, n_factors)
    biases : ndarray, shape (samples, n_rows), or None for a model without biases
    day_biases : ndarray, shape (samples, n_groups)
    """
    partners, partner_offsets, has_biases, precision, linear = _row_priors(
        draws, "U", n_rows, links, offsets
    )
    n_samples, _, n_factors = partners.shape
    dim = precision.shape[1]
    row_codes = np.asarray(row_codes, dtype=np.int64)
    group_codes = np.asarray(group_codes, dtype=np.int64)
    order = np.lexsort((group_codes, row_codes))  # each row's ratings, group by group
    indptr = np.zeros(int(n_rows) + 1, dtype=np.int64)
    np.add.at(indptr, row_codes + 1, 1)
    keys = rng.integers(2**63, size=n_samples)
    rows = np.empty((n_samples, int(n_rows), dim))
    day_biases = np.empty((n_samples, int(n_groups)))
    _draw_with_days(
        np.cumsum(indptr),
        np.asarray(item_codes, dtype=np.int64)[order],
        np.asarray(ratings, dtype=np.float64)[order],
        group_codes[order],
        partners,
        partner_offsets,
        has_biases,
        np.asarray(draws["mu"], dtype=np.float64),
        1.0 / np.asarray(draws["sigma"], dtype=np.float64) ** 2,
        np.asarray(draws["day_bias_sd"], dtype=np.float64) ** 2,
        precision,
        linear,
        keys,
        rows,
        day_biases,
    )
    factors = np.ascontiguousarray(rows[:, :, :n_factors])
    if offsets is not None:
        factors -= offsets
    biases = np.ascontiguousarray(rows[:, :, n_factors]) if has_biases else None
    return factors, biases, day_biases


@njit(cache=True, nogil=True, parallel=True, fastmath={"reassoc", "contract"})
def _draw_with_days(indptr, items, ratings, groups, partners, partner_offsets, has_biases, mu,
                    tau, day_var, precision, linear, keys, rows, day_biases):
    """The draws of :func:`fold_in_rows_with_days`; each draw's normals come from its key
    ``keys[s]`` (the row's from its row index, a group's from ``n_rows`` + its index), so the
    result does not depend on the number of threads. Each group's sums are taken without
    ``tau`` and added to the lower triangle of the precision (which the Cholesky factor
    reads) once per group; ``reassoc`` lets them vectorise (rounding-level changes only)."""
    n_rows = indptr.shape[0] - 1
    n_factors = partners.shape[2]
    dim = rows.shape[2]
    shared = linear.shape[1] == 1
    for s in prange(partners.shape[0]):
        total = np.empty(dim)
        linear_sum = np.empty(dim)
        gram = np.empty((dim, dim))
        Yt = np.empty((dim, 64))
        targets = np.empty(64)
        P = np.empty((dim, dim))
        L = np.empty((dim, dim))
        w = np.empty(dim)
        x = np.empty(dim)
        h = np.empty(dim)
        z = np.empty(dim)
        z_day = np.empty(1)
        tau_s = tau[s]
        for r in range(n_rows):
            P[:, :] = precision[s]
            h[:] = linear[s, 0] if shared else linear[s, r]
            start = indptr[r]
            while start < indptr[r + 1]:  # one group of the row's ratings
                stop = start
                target_sum = 0.0
                while stop < indptr[r + 1] and groups[stop] == groups[start]:
                    stop += 1
                count = stop - start
                if count > Yt.shape[1]:
                    Yt = np.empty((dim, count))
                    targets = np.empty(count)
                for n in range(count):  # the group's partner rows, transposed
                    item = items[start + n]
                    for k in range(n_factors):
                        Yt[k, n] = partners[s, item, k]
                    if has_biases:
                        Yt[n_factors, n] = 1.0
                    targets[n] = ratings[start + n] - mu[s] - partner_offsets[s, item]
                for n in range(count):
                    target_sum += targets[n]
                for a in range(dim):
                    acc_t = 0.0
                    acc_1 = 0.0
                    for n in range(count):
                        acc_t += Yt[a, n] * targets[n]
                        acc_1 += Yt[a, n]
                    linear_sum[a] = acc_t
                    total[a] = acc_1
                    for b in range(a + 1):
                        acc = 0.0
                        for n in range(count):
                            acc += Yt[a, n] * Yt[b, n]
                        gram[a, b] = acc
                kappa = day_var[s] / (1.0 / tau_s + (stop - start) * day_var[s])
                for a in range(dim):
                    h[a] += tau_s * (linear_sum[a] - kappa * total[a] * target_sum)
                    for b in range(a + 1):
                        P[a, b] += tau_s * (gram[a, b] - kappa * total[a] * total[b])
                start = stop
            # x = L^-T (L^-1 h + z) with P = L L^T: a draw of N(P^-1 h, P^-1)
            row_normals(keys[s], r, z)
            cholesky_into(P, L)
            solve_lower_into(L, h, w)
            for a in range(dim):
                w[a] += z[a]
            solve_lower_transposed_into(L, w, x)
            rows[s, r, :] = x
            start = indptr[r]
            while start < indptr[r + 1]:  # the row's day biases given the row
                stop = start
                residual = 0.0
                while stop < indptr[r + 1] and groups[stop] == groups[start]:
                    item = items[stop]
                    fitted = partner_offsets[s, item] + (x[n_factors] if has_biases else 0.0)
                    for k in range(n_factors):
                        fitted += partners[s, item, k] * x[k]
                    residual += ratings[stop] - mu[s] - fitted
                    stop += 1
                day_precision = 1.0 / day_var[s] + tau_s * (stop - start)
                row_normals(keys[s], n_rows + groups[start], z_day)
                day_biases[s, groups[start]] = (tau_s * residual / day_precision
                                                + z_day[0] / np.sqrt(day_precision))
                start = stop


def _row_priors(draws, side, n_rows, links, offsets):
    """Per draw: the partners' factors and offsets (their biases), whether the model has
    biases, and the new rows' prior precision ``(samples, dim, dim)`` and ``precision @ mean``
    (``(samples, 1, dim)``, or ``(samples, n_rows, dim)`` with per-row means)."""
    if side not in _SIDES:
        raise ValueError(f"side must be 'U' or 'V', got {side!r}")
    other, bias, other_bias = _SIDES[side]
    partners = np.asarray(draws[other], dtype=np.float64)
    n_samples, n_partners, n_factors = partners.shape
    has_biases = bias in draws and other_bias in draws
    dim = n_factors + 1 if has_biases else n_factors
    factor_cov = np.asarray(draws[f"Sigma_{side}"], dtype=np.float64)
    means = draws.get(f"mu_{side}")
    means = np.zeros((n_samples, n_factors)) if means is None else np.asarray(means)
    cross = draws.get(f"{bias}_factor_cov") if has_biases else None
    if cross is not None:  # correlated biases: the joint prior of the factors and the bias
        cov = np.zeros((n_samples, dim, dim))
        cov[:, :n_factors, :n_factors] = factor_cov
        cov[:, :n_factors, n_factors] = cov[:, n_factors, :n_factors] = np.asarray(cross)
        cov[:, n_factors, n_factors] = np.asarray(draws[f"{bias}_sd"]) ** 2
        precision = np.linalg.inv(cov)
    else:
        precision = np.zeros((n_samples, dim, dim))
        precision[:, :n_factors, :n_factors] = np.linalg.inv(factor_cov)
        if has_biases:
            precision[:, n_factors, n_factors] = 1.0 / np.asarray(draws[f"{bias}_sd"]) ** 2
    partner_offsets = (
        np.asarray(draws[other_bias], dtype=np.float64)
        if has_biases
        else np.zeros((n_samples, n_partners))
    )
    link_factors, link_biases = links
    if link_factors is None and link_biases is None and offsets is None:
        linear = np.einsum("sab,sb->sa", precision[:, :, :n_factors], means)[:, None, :]
    else:  # one prior mean per row: (factors + offsets, bias)
        row_means = np.zeros((n_samples, int(n_rows), dim))
        row_means[:, :, :n_factors] = means[:, None, :]
        for extra in (link_factors, offsets):
            if extra is not None:
                row_means[:, :, :n_factors] += extra
        if link_biases is not None and has_biases:
            row_means[:, :, n_factors] = link_biases
        linear = np.matmul(row_means, np.transpose(precision, (0, 2, 1)))
    return partners, partner_offsets, has_biases, precision, linear


def new_implicit_offsets(draws, row_codes, item_codes, n_rows):
    """The implicit offsets ``o_u = |N(u)|^-1/2 sum_{j in N(u)} Y_j`` of ``n_rows`` new users
    per draw, ``(samples, n_rows, n_factors)``: ``N(u)`` holds the fitted items of the new
    user's ratings (``row_codes``, ``item_codes``), ``Y`` the draws' implicit factors. A model
    with centred offsets (``offset_mean_U`` in ``draws``) has that mean taken off, as its
    fitted users' offsets have."""
    Y = np.asarray(draws["Y"], dtype=np.float64)
    sets = implicit_sets(row_codes, item_codes, int(n_rows), Y.shape[1])
    out = np.empty((Y.shape[0], int(n_rows), Y.shape[2]))
    _offsets_per_draw(sets.user_indptr, sets.user_items, sets.scale, Y, out)
    if "offset_mean_U" in draws:
        out -= np.asarray(draws["offset_mean_U"])[:, None, :]
    return out


@njit(cache=True, nogil=True, parallel=True)
def _offsets_per_draw(indptr, items, scale, Y, out):
    for s in prange(Y.shape[0]):
        offsets_into(indptr, items, scale, Y[s], out[s])
