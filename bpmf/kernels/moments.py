"""Running moments of large arrays, updated in place on numba's threads.

:func:`welford_parallel` is Welford's update of a running mean and sum of squared deviations,
element by element, exactly as the numpy expressions ``delta = value - mean; mean += delta /
count; m2 += delta * (value - mean)`` compute it (the same operations in the same order, no
fused multiply-adds), so a fit gives the same numbers whichever of the two runs.
"""

from numba import njit, prange

__all__ = ["welford_parallel"]


@njit(cache=True, nogil=True, parallel=True)
def welford_parallel(mean, m2, value, count):
    """In place: ``mean`` and ``m2`` (flat, contiguous) updated with the ``count``-th ``value``."""
    for n in prange(mean.shape[0]):
        delta = value[n] - mean[n]
        mean[n] = mean[n] + delta / count
        m2[n] = m2[n] + delta * (value[n] - mean[n])
