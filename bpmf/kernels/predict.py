"""Expected ratings per posterior draw, without the ``(draws, pairs, factors)`` temporaries.

``mu + b_u + c_i + U_u . V_i`` for every draw and pair is the core of every prediction,
interval and recommendation. Gathering the factor rows of all pairs for all draws first (as
plain numpy indexing does) writes and reads ``draws x pairs x factors`` floats (1.6 GB for
1,000 draws of MovieLens 100K's 20,000 test pairs at 10 factors); this loop reads one draw's
rows at a time, which stay in the cache, and writes only the result.
"""

import numpy as np
from numba import njit

__all__ = ["expected_ratings"]


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def expected_ratings(U, V, mu, user_bias, item_bias, user_codes, item_codes):
    """``out[s, p] = mu[s] + user_bias[s, u_p] + item_bias[s, i_p] + U[s, u_p] . V[s, i_p]``.

    A negative code reads row 0 (the caller overwrites those pairs); biases of shape
    ``(draws, 1)`` of zeros stand for a model without biases when the codes are clamped.
    """
    n_samples = U.shape[0]
    n_pairs = user_codes.shape[0]
    n_factors = U.shape[2]
    clamp_users = user_bias.shape[1] == 1
    clamp_items = item_bias.shape[1] == 1
    out = np.empty((n_samples, n_pairs))
    for s in range(n_samples):
        for p in range(n_pairs):
            u = max(user_codes[p], 0)
            i = max(item_codes[p], 0)
            acc = mu[s] + user_bias[s, 0 if clamp_users else u]
            acc += item_bias[s, 0 if clamp_items else i]
            for k in range(n_factors):
                acc += U[s, u, k] * V[s, i, k]
            out[s, p] = acc
    return out
