"""Per-row sums of the residuals of a fitted matrix factorisation, in one pass over the ratings."""

import numpy as np
from numba import njit

__all__ = ["row_residual_sums"]


@njit(cache=True, nogil=True)
def row_residual_sums(indptr, partners, values, rows, partner_rows, row_bias, partner_bias, shift):
    """``sums[r] = sum_n (values[n] - shift - row_bias[r] - partner_bias[j] - rows[r] .
    partner_rows[j])`` over the ratings ``n`` of row ``r`` (CSR ``indptr``), ``j = partners[n]``.
    """
    n_rows = indptr.shape[0] - 1
    dim = rows.shape[1]
    sums = np.zeros(n_rows)
    for r in range(n_rows):
        total = 0.0
        for n in range(indptr[r], indptr[r + 1]):
            j = partners[n]
            fitted = shift + row_bias[r] + partner_bias[j]
            for k in range(dim):
                fitted += rows[r, k] * partner_rows[j, k]
            total += values[n] - fitted
        sums[r] = total
    return sums
