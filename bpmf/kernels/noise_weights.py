"""Compiled passes over the ratings for the per-user and per-item noise weights
(:mod:`bpmf.inference.noise_weights`)."""

import numba

__all__ = ["pair_weights", "rating_weights", "scaled_squares_from", "weighted_square_sums"]


@numba.njit(cache=True, nogil=True)
def pair_weights(user_codes, item_codes, user_weight, item_weight, out):
    """``out[n] = user_weight[user_codes[n]] * item_weight[item_codes[n]]``, in place."""
    for n in range(user_codes.shape[0]):
        out[n] = user_weight[user_codes[n]] * item_weight[item_codes[n]]


@numba.njit(cache=True, nogil=True)
def scaled_squares_from(ratings, eta, day_bias, groups, tau, out):
    """``out[n] = tau * (r_n - eta_n - d_g)^2`` from known linear predictors ``eta`` (the day
    term only where ``groups`` is not empty)."""
    days = groups.shape[0] > 0
    for n in range(ratings.shape[0]):
        e = ratings[n] - eta[n]
        if days:
            e -= day_bias[groups[n]]
        out[n] = tau * e * e


@numba.njit(cache=True, nogil=True)
def weighted_square_sums(squares, codes, other_codes, other_weight, out):
    """``out[r] = sum over the ratings n of row r (``codes[n] == r``) of
    ``other_weight[other_codes[n]] * squares[n]``, in place."""
    out[:] = 0.0
    for n in range(squares.shape[0]):
        out[codes[n]] += other_weight[other_codes[n]] * squares[n]


@numba.njit(cache=True, nogil=True)
def rating_weights(indptr, partners, row_root, partner_root, roots, counts):
    """For one side's layout (``indptr``, ``partners``): each rating's square-root weight
    ``row_root[r] * partner_root[j]`` (the square roots of the rows' and the partners'
    weights) into ``roots``, in the layout's order, and each row's summed weights into
    ``counts``. Returns the total weight."""
    total = 0.0
    for r in range(indptr.shape[0] - 1):
        row_total = 0.0
        for k in range(indptr[r], indptr[r + 1]):
            root = row_root[r] * partner_root[partners[k]]
            roots[k] = root
            row_total += root * root
        counts[r] = row_total
        total += row_total
    return total
