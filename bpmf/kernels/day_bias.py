"""Compiled passes over the ratings for the day-specific user biases
(:mod:`bpmf.inference.day_bias`)."""

import numba

__all__ = ["adjusted_ratings", "group_residual_sums"]


@numba.njit(cache=True, nogil=True)
def group_residual_sums(ratings, eta, groups, sums):
    """``sums[g] = sum over the ratings n of group g of (ratings[n] - eta[n])``, in place."""
    sums[:] = 0.0
    for n in range(ratings.shape[0]):
        sums[groups[n]] += ratings[n] - eta[n]


@numba.njit(cache=True, nogil=True)
def adjusted_ratings(ratings, groups, day_bias, out):
    """``out[n] = ratings[n] - day_bias[groups[n]]`` (ratings and groups in one layout's
    order)."""
    for n in range(ratings.shape[0]):
        out[n] = ratings[n] - day_bias[groups[n]]
