"""One side's sufficient statistics for the hyperparameter steps, compiled.

The covariance step and the level moves of the correlated prior read a side's rows only
through their sums and scatter, the rows being the factors with the bias as a last column.
These loops make one pass over the two arrays as they are stored, without stacking them;
numpy would copy the stacked rows and sum a narrow array down its columns (about 17 µs for
943 x 10, against 5 µs here).
"""

import numpy as np
from numba import njit

__all__ = ["stacked_scatter", "stacked_sums"]


@njit(cache=True)
def stacked_sums(factors, bias):
    """The column sums of ``[factors, bias]`` (bias last)."""
    n, D = factors.shape
    out = np.zeros(D + 1)
    for i in range(n):
        for a in range(D):
            out[a] += factors[i, a]
        out[D] += bias[i]
    return out


#: rows per chunk of :func:`stacked_scatter`: its column-major copy stays small (a copy of
#: the whole of a large side would be a fresh mapping, page-faulted on every call)
_CHUNK = 128


@njit(cache=True, fastmath={"reassoc", "contract"})
def stacked_scatter(factors, bias):
    """``X^T X`` for ``X = [factors, bias]`` (bias last), exactly symmetric.

    Chunk by chunk of rows, each entry is a dot product of two columns of the chunk copied
    column-major, a loop that vectorises (12 µs for 943 x 11, against 29 µs accumulating row
    by row).
    """
    n, D = factors.shape
    m = D + 1
    columns = np.empty((m, _CHUNK))
    out = np.zeros((m, m))
    for start in range(0, n, _CHUNK):
        count = min(_CHUNK, n - start)
        for i in range(count):
            for a in range(D):
                columns[a, i] = factors[start + i, a]
            columns[D, i] = bias[start + i]
        for a in range(m):
            for b in range(a + 1):
                total = 0.0
                for i in range(count):
                    total += columns[a, i] * columns[b, i]
                out[a, b] += total
    for a in range(m):
        for b in range(a):
            out[b, a] = out[a, b]
    return out
