r"""Implicit feedback (Bayesian SVD++) in the blocked Gibbs sampler.

Each item has an implicit factor ``Y_j ~ N(0, diag(s_Y^2))`` with half-normal scales
``s_{Y,k} ~ HalfNormal(implicit_scale_sd)``, and a user's ratings see the effective factor
vector ``U_u + o_u``, ``o_u = |N(u)|^{-1/2} sum_{j in N(u)} Y_j``, where ``N(u)`` is the set of
items the user rated in training (optionally with further items the user is known to have
rated, without their ratings). The sweep of :mod:`bpmf.inference.gibbs` gets three steps
from :class:`ImplicitStep`:

1. every ``Y_j`` in turn from its Gaussian conditional given the other ``Y``, the items'
   rows, the hyperparameters and the intercept, **with every user's row** (factors and bias)
   **integrated out** (:mod:`bpmf.kernels.implicit`); the user rows are drawn right after,
   given the new ``Y`` (:func:`bpmf.inference.rows.sample_side` through its ``offset_U``
   hook). Drawing ``Y`` from conditionals that leave ``p(Y, rest | no user rows)`` invariant
   and then the user rows from ``p(rows | Y, rest)`` is a partially collapsed Gibbs step,
   exact for the joint posterior; integrating the rows out removes the posterior coupling
   between ``U_u`` and ``o_u`` (the ratings determine mostly their sum), along which
   alternating single draws would move by small steps;
2. each scale ``s_{Y,k}`` given ``Y[:, k]``: a half-normal scale over ``n_items`` zero-mean
   Gaussians, drawn exactly (:func:`bpmf.inference.hyperpriors.draw_halfnormal_scale`);
3. in the rescaling move of each factor between the sides (``U_k g``, ``V_k / g``), ``Y_k``
   and ``s_{Y,k}`` scale with ``U_k``: the likelihood is unchanged, the density of ``Y_k``
   given ``s_{Y,k}`` is invariant with its Jacobian, and ``s_{Y,k}``'s half-normal prior and
   its own Jacobian ``g`` add ``-s_{Y,k}^2 g^2 / 2 sd^2`` and ``log g`` to the move's log
   density (:meth:`ImplicitStep.rescale_terms`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from bpmf.inference.hyperpriors import draw_halfnormal_scale
from bpmf.inference.rows import row_prior
from bpmf.kernels.implicit import sweep_implicit, user_terms

__all__ = ["ImplicitSets", "ImplicitStep", "implicit_offsets", "implicit_sets"]


@dataclass(frozen=True)
class ImplicitSets:
    """The sets ``N(u)`` in both orders, and ``s_u = |N(u)|^{-1/2}`` (0 for an empty set).

    ``user_indptr``/``user_items``: the items of each user (sorted, distinct);
    ``item_indptr``/``item_users``: the users of each item.
    """

    n_users: int
    n_items: int
    user_indptr: np.ndarray
    user_items: np.ndarray
    item_indptr: np.ndarray
    item_users: np.ndarray
    scale: np.ndarray

    @property
    def n_pairs(self):
        return len(self.user_items)


def implicit_sets(user_codes, item_codes, n_users, n_items, extra=None):
    """Build :class:`ImplicitSets` from the training pairs and optional extra pairs.

    Parameters
    ----------
    user_codes, item_codes : arrays of int
        The training pairs (codes in ``[0, n_users)``, ``[0, n_items)``).
    n_users, n_items : int
    extra : (user_codes, item_codes) or None
        Further pairs whose items join ``N(u)`` without a rating (duplicates are dropped).
    """
    users = np.asarray(user_codes, dtype=np.int64)
    items = np.asarray(item_codes, dtype=np.int64)
    if extra is not None:
        users = np.concatenate([users, np.asarray(extra[0], dtype=np.int64)])
        items = np.concatenate([items, np.asarray(extra[1], dtype=np.int64)])
    keys = np.unique(users * n_items + items)
    users, items = keys // n_items, keys % n_items
    user_indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=user_indptr[1:])
    order = np.lexsort((users, items))
    item_indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(np.bincount(items, minlength=n_items), out=item_indptr[1:])
    counts = np.diff(user_indptr)
    scale = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1)), 0.0)
    return ImplicitSets(
        int(n_users),
        int(n_items),
        user_indptr,
        items.copy(),
        item_indptr,
        users[order].copy(),
        scale,
    )


def implicit_offsets(sets, Y):
    """``o_u = s_u sum_{j in N(u)} Y_j`` for every user, shape ``(n_users, D)``."""
    weights = np.repeat(sets.scale, np.diff(sets.user_indptr))
    matrix = sparse.csr_matrix(
        (weights, sets.user_items, sets.user_indptr), shape=(sets.n_users, sets.n_items)
    )
    return np.asarray(matrix @ Y)


class ImplicitStep:
    """The implicit-feedback steps of one chain (module docstring).

    Parameters
    ----------
    sets : ImplicitSets
    n_factors : int
    scale_sd : float
        Scale of the half-normal prior of each ``s_{Y,k}``.
    biases : bool
        Whether the user rows carry a bias (integrated out with the factors).
    """

    def __init__(self, sets, n_factors, scale_sd, biases):
        self.sets = sets
        self.dim = int(n_factors)
        self.scale_sd = float(scale_sd)
        self.biases = bool(biases)
        self.P = np.empty((sets.n_users, self.dim, self.dim))
        self.G = np.empty((sets.n_users, self.dim))

    def start(self, state, rng, initial_scale=0.1):
        """``Y = 0`` and scales ``initial_scale`` (the first sweep draws ``Y`` from them)."""
        state["Y"] = np.zeros((self.sets.n_items, self.dim))
        state["Y_sd"] = np.full(self.dim, float(initial_scale))
        state["offset_U"] = np.zeros((self.sets.n_users, self.dim))

    def _user_prior(self, state):
        """Prior precision and per-user means of the user rows ``(U_u + o_u, b_u)``, as
        :func:`bpmf.inference.rows.sample_side` forms them (``offset_U`` is set: every user
        has its own mean)."""
        return row_prior(state, "U", self.biases, self.sets.n_users)

    def step(self, state, user_csr, rng):
        """Draw ``Y`` (user rows integrated out), then the scales ``s_Y``; set ``offset_U``."""
        indptr, items, ratings = user_csr
        D = self.dim
        V = state["V"] if state.get("offset_V") is None else state["V"] + state["offset_V"]
        X = np.ones((V.shape[0], D + 1 if self.biases else D))
        X[:, :D] = V
        shift = np.full(V.shape[0], float(state["mu"]))
        if self.biases:
            shift += state["item_bias"]
        prec, mean = self._user_prior(state)
        user_terms(
            indptr, items, ratings, X, shift, float(state["tau"]), prec, mean, self.P, self.G
        )
        Y = np.ascontiguousarray(state["Y"]).copy()
        z = rng.standard_normal(Y.shape)
        sets = self.sets
        sweep_implicit(
            sets.item_indptr, sets.item_users, sets.scale, self.P, self.G, Y,
            1.0 / state["Y_sd"] ** 2, z,
        )
        state["Y"] = Y
        state["Y_sd"] = np.array(
            [draw_halfnormal_scale(Y.shape[0], float(Y[:, k] @ Y[:, k]), self.scale_sd, rng)
             for k in range(D)]
        )
        state["offset_U"] = implicit_offsets(sets, Y)

    def rescale_terms(self, state):
        """``(a, c)`` that the rescaling move adds to each factor's log density of ``t = log g``:
        ``-a e^{2t} + c t`` (``s_{Y,k}``'s prior and its Jacobian)."""
        return 0.5 * state["Y_sd"] ** 2 / self.scale_sd**2, np.ones(self.dim)

    def rescale(self, state, g):
        """Scale ``Y``, ``s_Y`` and the offsets with ``U`` by the move's factors ``g``."""
        state["Y"] = state["Y"] * g
        state["Y_sd"] = state["Y_sd"] * g
        state["offset_U"] = state["offset_U"] * g
