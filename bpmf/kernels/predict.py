"""Expected ratings per posterior draw, without the ``(draws, pairs, factors)`` temporaries.

``mu + b_u + c_i + U_u . V_i`` for every draw and pair is the core of every prediction,
interval and recommendation. Gathering the factor rows of all pairs for all draws first (as
plain numpy indexing does) writes and reads ``draws x pairs x factors`` floats (1.6 GB for
1,000 draws of MovieLens 100K's 20,000 test pairs at 10 factors); this loop reads one draw's
rows at a time, which stay in the cache, and writes only the result; the posterior mean
(``predict``) accumulates over the draws and keeps one value per pair. Large requests split
their work over threads (the loops release the GIL), which gives the same numbers.
"""

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

__all__ = ["column_quantiles", "expected_means", "expected_ratings", "mean_normal_cdf"]


#: products (draws x pairs x factors) below which one thread computes everything
THREADED_MIN_WORK = 20_000_000


def _split_over_threads(kernel, args, n, work, threads, out):
    """``kernel(*args, start, stop, out)`` over ``[0, n)``: in one call, or cut into equal
    runs on ``threads`` threads (None: the CPUs this process may use) when ``work``
    products reach :data:`THREADED_MIN_WORK` per extra thread."""
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    threads = max(1, min(int(threads), n, work // THREADED_MIN_WORK + 1))
    if threads == 1:
        kernel(*args, 0, n, out)
        return
    bounds = np.linspace(0, n, threads + 1).astype(int)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [
            pool.submit(kernel, *args, int(start), int(stop), out)
            for start, stop in zip(bounds[:-1], bounds[1:], strict=True)
        ]:
            future.result()


def expected_ratings(U, V, mu, user_bias, item_bias, user_codes, item_codes, threads=None):
    """``out[s, p] = mu[s] + user_bias[s, u_p] + item_bias[s, i_p] + U[s, u_p] . V[s, i_p]``.

    A negative code reads row 0 (the caller overwrites those pairs); biases of shape
    ``(draws, 1)`` of zeros stand for a model without biases when the codes are clamped.
    ``threads``: threads that share the draws of a large request (None: the CPUs this
    process may use).
    """
    n_samples, n_pairs = U.shape[0], user_codes.shape[0]
    out = np.empty((n_samples, n_pairs))
    args = (U, V, mu, user_bias, item_bias, user_codes, item_codes)
    _split_over_threads(_expected_into, args, n_samples, n_samples * n_pairs * U.shape[2],
                        threads, out)
    return out


def expected_means(U, V, mu, user_bias, item_bias, user_codes, item_codes, threads=None):
    """The mean over draws of :func:`expected_ratings` for pairs of seen users and items
    (codes >= 0), accumulated draw by draw: memory of one value per pair instead of one per
    draw and pair. ``threads`` share the pairs of a large request."""
    n_samples, n_pairs = U.shape[0], user_codes.shape[0]
    out = np.zeros(n_pairs)
    args = (U, V, mu, user_bias, item_bias, user_codes, item_codes)
    _split_over_threads(_accumulate_means, args, n_pairs, n_samples * n_pairs * U.shape[2],
                        threads, out)
    return out / n_samples


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _accumulate_means(U, V, mu, user_bias, item_bias, user_codes, item_codes, start, stop,
                      out):
    """``out[p] += sum over draws of the expected rating`` for the pairs ``start:stop``, draw
    by draw (one draw's rows stay in the cache while every pair reads them)."""
    n_factors = U.shape[2]
    clamp_users = user_bias.shape[1] == 1
    clamp_items = item_bias.shape[1] == 1
    for s in range(U.shape[0]):
        for p in range(start, stop):
            u = user_codes[p]
            i = item_codes[p]
            acc = mu[s] + user_bias[s, 0 if clamp_users else u]
            acc += item_bias[s, 0 if clamp_items else i]
            for k in range(n_factors):
                acc += U[s, u, k] * V[s, i, k]
            out[p] += acc


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _expected_into(U, V, mu, user_bias, item_bias, user_codes, item_codes, start, stop, out):
    """The rows ``start:stop`` (draws) of :func:`expected_ratings` into ``out``."""
    n_pairs = user_codes.shape[0]
    n_factors = U.shape[2]
    clamp_users = user_bias.shape[1] == 1
    clamp_items = item_bias.shape[1] == 1
    for s in range(start, stop):
        for p in range(n_pairs):
            u = max(user_codes[p], 0)
            i = max(item_codes[p], 0)
            acc = mu[s] + user_bias[s, 0 if clamp_users else u]
            acc += item_bias[s, 0 if clamp_items else i]
            for k in range(n_factors):
                acc += U[s, u, k] * V[s, i, k]
            out[s, p] = acc


def mean_normal_cdf(expected, cutpoints, threads=None):
    """``out[p, j] = mean_s Phi(cutpoints[s, j] - expected[s, p])``, shape ``(pairs, K - 1)``:
    the ordinal model's predictive CDF (:mod:`bpmf.models.ordinal_predictive`), in one pass
    over the draws, the pairs split over threads for a large request."""
    expected = np.ascontiguousarray(expected, dtype=float)
    cutpoints = np.ascontiguousarray(cutpoints, dtype=float)
    n_pairs = expected.shape[1]
    out = np.zeros((n_pairs, cutpoints.shape[1]))
    # one normal CDF costs about ten products
    _split_over_threads(_normal_cdf_sums, (expected, cutpoints), n_pairs,
                        10 * expected.size * cutpoints.shape[1], threads, out)
    out /= max(expected.shape[0], 1)
    return out


_SQRT1_2 = 1.0 / math.sqrt(2.0)


@njit(cache=True, nogil=True)
def _normal_cdf_sums(expected, cutpoints, start, stop, out):
    for s in range(expected.shape[0]):
        for p in range(start, stop):
            for j in range(cutpoints.shape[1]):
                out[p, j] += 0.5 * math.erfc((expected[s, p] - cutpoints[s, j]) * _SQRT1_2)


def column_quantiles(values, quantiles, threads=None):
    """``numpy.quantile(values, quantiles, axis=0)`` (its default "linear" method, the same
    numbers bit for bit) of a ``(draws, pairs)`` array, shape ``(len(quantiles), pairs)``.

    The columns are copied into rows and each row is sorted once for every quantile
    (numpy's vectorised sort, the pairs split over threads), instead of the partitions of
    strided columns that ``numpy.quantile`` along the first axis makes.
    """
    rows = np.ascontiguousarray(np.asarray(values, dtype=np.float64).T)  # (pairs, draws)
    q = np.asarray(quantiles, dtype=np.float64).ravel()
    pairs, n = rows.shape
    _split_over_threads(_sort_rows, (rows,), pairs, n * pairs, threads, None)
    # numpy's linear method: index (n - 1) q, its floor and the next, the fraction between,
    # and its interpolation (from the upper end past the midpoint)
    virtual = (n - 1) * q
    previous = np.floor(virtual)
    gamma = virtual - previous
    previous = previous.astype(np.int64)
    below, above = rows[:, previous].T, rows[:, np.minimum(previous + 1, n - 1)].T
    diff = above - below
    t = gamma[:, None]
    out = below + diff * t
    np.subtract(above, diff * (1 - t), out=out, where=t >= 0.5)
    return out


def _sort_rows(rows, start, stop, out):
    """Sort ``rows[start:stop]`` in place along its rows (numpy's sort releases the GIL)."""
    rows[start:stop].sort(axis=1)
