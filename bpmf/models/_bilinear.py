"""The bilinear term sum_k U[u_n, k] V[i_n, k] over observed pairs: the hot spot of every model.

Every PyMC graph in bpmf computes it through :func:`pair_dot`, so a faster implementation
(a fused Op) changes one function.
"""


def pair_dot(U, V, user_codes, item_codes):
    """``(U[user_codes] * V[item_codes]).sum(-1)`` as a PyTensor expression."""
    return (U[user_codes] * V[item_codes]).sum(axis=-1)
