"""Orders of the observed pairs that keep the factor rows they touch in the CPU caches."""

import numpy as np

__all__ = ["cache_friendly_order"]


def cache_friendly_order(user_codes, item_codes, n_users, n_blocks=64):
    """A row order for the pairs that keeps the factor rows they touch in the caches.

    The likelihood is a sum over pairs, so its value does not depend on their order, but its
    speed does once ``U`` and ``V`` outgrow the CPU caches: in random order every pair reads
    a random row of each. This order visits the users in ``n_blocks`` contiguous blocks and,
    within a block, the pairs by item, so consecutive pairs share rows of ``U`` (one block's
    rows stay cached) and walk ``V`` in order (``bench/scaling.py``).

    Returns
    -------
    ndarray of int
        A permutation of ``range(len(user_codes))``.
    """
    user_codes = np.asarray(user_codes)
    block = user_codes // max(1, int(n_users) // int(n_blocks))
    return np.lexsort((np.asarray(item_codes), block))
