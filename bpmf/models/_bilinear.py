"""The bilinear term sum_k U[u_n, k] V[i_n, k] over observed pairs: the hot spot of every model.

The models' fused likelihood (:mod:`bpmf.models._likelihood`) computes it inside one Op; their
textbook likelihood (``fused_likelihood=False``) computes it through :func:`pair_dot`, the fused
:class:`~bpmf.models._ops.PairDot` Op (one pass over the pairs, scatter-add gradient, C / numba /
JAX implementations). :func:`pair_dot_naive` keeps the plain-indexing graph for tests and
benchmarks.
"""

import pytensor.tensor as pt

from bpmf.models._ops import PairDot

__all__ = ["pair_dot", "pair_dot_naive"]


def pair_dot(U, V, user_codes, item_codes):
    """``(U[user_codes] * V[item_codes]).sum(-1)`` as a PyTensor expression, fused.

    Parameters
    ----------
    U : TensorLike, shape (n_users, n_factors)
    V : TensorLike, shape (n_items, n_factors)
    user_codes, item_codes : TensorLike of int, shape (n_pairs,)
        Row positions in ``U`` and ``V``; must lie in ``[0, n_rows)``.

    Returns
    -------
    TensorVariable, shape (n_pairs,)
        The per-pair dot products. Its gradient is a fused scatter-add into the rows of ``U``
        and ``V`` with no ``(n_pairs, n_factors)`` temporaries.

    Notes
    -----
    Inputs that are not a matrix pair with code vectors (for example factor arrays with extra
    leading batch dimensions) fall back to :func:`pair_dot_naive`.
    """
    U = pt.as_tensor_variable(U)
    V = pt.as_tensor_variable(V)
    user_codes = pt.as_tensor_variable(user_codes)
    item_codes = pt.as_tensor_variable(item_codes)
    if U.ndim == 2 and V.ndim == 2 and user_codes.ndim == 1 and item_codes.ndim == 1:
        return PairDot()(U, V, user_codes, item_codes)
    return pair_dot_naive(U, V, user_codes, item_codes)


def pair_dot_naive(U, V, user_codes, item_codes):
    """``(U[user_codes] * V[item_codes]).sum(-1)`` built from plain PyTensor indexing."""
    U = pt.as_tensor_variable(U)
    V = pt.as_tensor_variable(V)
    return (U[..., user_codes, :] * V[..., item_codes, :]).sum(axis=-1)
