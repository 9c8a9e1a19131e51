"""Compiled passes over the ratings for the day-specific user biases
(:mod:`bpmf.inference.day_bias`)."""

import numba

__all__ = ["adjusted_ratings", "group_residual_sums"]


@numba.njit(cache=True, nogil=True)
def group_residual_sums(ratings, eta, groups, sums, weights, counts):
    """``sums[g] = sum over the ratings n of group g of (ratings[n] - eta[n])``, in place;
    with ``weights`` (one per rating, else of length 0) the sum of ``weights[n] (ratings[n] -
    eta[n])``, and ``counts[g]`` the group's summed weights."""
    sums[:] = 0.0
    if weights.shape[0] == 0:
        for n in range(ratings.shape[0]):
            sums[groups[n]] += ratings[n] - eta[n]
        return
    counts[:] = 0.0
    for n in range(ratings.shape[0]):
        sums[groups[n]] += weights[n] * (ratings[n] - eta[n])
        counts[groups[n]] += weights[n]


@numba.njit(cache=True, nogil=True)
def adjusted_ratings(ratings, groups, day_bias, out):
    """``out[n] = ratings[n] - day_bias[groups[n]]`` (ratings and groups in one layout's
    order)."""
    for n in range(ratings.shape[0]):
        out[n] = ratings[n] - day_bias[groups[n]]
