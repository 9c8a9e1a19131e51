r"""Implicit feedback (Bayesian SVD++) in the blocked Gibbs sampler.

Each item has an implicit factor ``Y_j ~ N(0, diag(s_Y^2))`` with half-normal scales
``s_{Y,k} ~ HalfNormal(implicit_scale_sd)``, and a user's ratings see the effective factor
vector ``U_u + o_u``, ``o_u = |N(u)|^{-1/2} sum_{j in N(u)} Y_j``, where ``N(u)`` is the set of
items the user rated in training (optionally with further items the user is known to have
rated, without their ratings). The sweep of :mod:`bpmf.inference.gibbs` gets three steps
from :class:`ImplicitStep`:

1. the implicit factors, in one of two exact ways (``sampler_config["implicit_step"]``):

   - ``"rows"`` (the default): every ``Y_j`` in turn given the **effective** user rows
     ``W_u = U_u + o_u``, held fixed while ``U`` moves with the offsets. In the coordinates
     ``(W, Y)`` (unit Jacobian) the ratings see ``W`` only, and ``Y`` enters the user rows'
     prior ``W_u - o_u ~ N(m_u, P0^{-1})``, so each ``Y_j``'s conditional is Gaussian with
     precision ``diag(1 / s_Y^2) + c_j [P0]_{DD}`` (``c_j = sum_u s_u^2``): about ``4 D``
     operations per pair (:func:`bpmf.kernels.implicit.sweep_implicit_given_rows`). A common
     shift ``Y_j + e``, ``U_u - sqrt(|N(u)|) e`` (effective rows unchanged) follows, ``e``
     from its Gaussian conditional under the priors of ``Y`` and the rows;
   - ``"collapsed"``: every ``Y_j`` from its Gaussian conditional **with every user's row**
     (factors and bias) **integrated out** (:func:`bpmf.kernels.implicit.sweep_implicit`),
     the user rows then drawn afresh given the new ``Y``: a partially collapsed Gibbs step,
     exact for the joint posterior, that removes the posterior coupling between ``U_u`` and
     ``o_u`` at about ``2 D^2`` operations per pair and a pass over the ratings.

   Either way the user rows are drawn next, given ``Y``
   (:func:`bpmf.inference.rows.sample_side` through its ``offset_U`` hook). On MovieLens
   100K u1 the two were alike in their diagnostics, and ``"rows"`` made the sweep 2.7x
   faster;
2. each scale ``s_{Y,k}`` given ``Y[:, k]``: a half-normal scale over ``n_items`` zero-mean
   Gaussians, drawn exactly (:func:`bpmf.inference.hyperpriors.draw_halfnormal_scale`);
3. in the rescaling move of each factor between the sides (``U_k g``, ``V_k / g``), ``Y_k``
   and ``s_{Y,k}`` scale with ``U_k``: the likelihood is unchanged, the density of ``Y_k``
   given ``s_{Y,k}`` is invariant with its Jacobian, and ``s_{Y,k}``'s half-normal prior and
   its own Jacobian ``g`` add ``-s_{Y,k}^2 g^2 / 2 sd^2`` and ``log g`` to the move's log
   density (:meth:`ImplicitStep.rescale_terms`).

The items' side (``implicit="item"`` or ``"both"``) is the same with the roles swapped: each
user has a factor ``Z_i``, an item's ratings see ``V_j + |N(j)|^{-1/2} sum_{i in N(j)} Z_i``
(``offset_V``), and ``Z`` scales with ``V``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bpmf.inference.hyperpriors import draw_halfnormal_scale
from bpmf.inference.rows import row_prior
from bpmf.kernels.implicit import (
    offsets_into,
    sweep_implicit,
    sweep_implicit_given_rows,
    user_terms,
)

__all__ = [
    "IMPLICIT_KEYS",
    "IMPLICIT_METHODS",
    "OFFSET_MEANS",
    "ImplicitSets",
    "ImplicitStep",
    "centring_weights",
    "implicit_offsets",
    "implicit_sets",
]


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


def centring_weights(sets):
    """``w_j = sum_{u: j in N(u)} s_u / n_users`` (``n_users`` rows of the sets): ``sum_j w_j
    Y_j`` is the users' mean of the plain sums ``s_u sum_{j in N(u)} Y_j``."""
    per_pair = np.repeat(sets.scale, np.diff(sets.user_indptr))
    return np.bincount(sets.user_items, weights=per_pair, minlength=sets.n_items) / sets.n_users


def implicit_offsets(sets, Y):
    """``o_u = s_u sum_{j in N(u)} Y_j`` for every user, shape ``(n_users, D)``."""
    Y = np.ascontiguousarray(Y, dtype=float)
    out = np.empty((sets.n_users, Y.shape[1]))
    offsets_into(sets.user_indptr, sets.user_items, sets.scale, Y, out)
    return out


#: the ways :class:`ImplicitStep` draws the implicit factors
IMPLICIT_METHODS = ("rows", "collapsed")

#: per side of the implicit factors' owner: (implicit factors, their scales, offset, the
#: side's rows, the other side, the side's bias, the other side's bias)
IMPLICIT_KEYS = {
    "U": ("Y", "Y_sd", "offset_U", "U", "V", "user_bias", "item_bias"),
    "V": ("Z", "Z_sd", "offset_V", "V", "U", "item_bias", "user_bias"),
}

#: the per-draw mean of the plain sums that centred offsets subtract, per side
OFFSET_MEANS = {"U": "offset_mean_U", "V": "offset_mean_V"}


class ImplicitStep:
    """The implicit-feedback steps of one chain for one side (module docstring).

    Parameters
    ----------
    sets : ImplicitSets
        For ``side="U"`` the sets ``N(u)`` of items per user; for ``side="V"`` the sets
        ``N(i)`` of users per item, built with the roles swapped (``implicit_sets(item_codes,
        user_codes, n_items, n_users)``).
    n_factors : int
    scale_sd : float
        Scale of the half-normal prior of each ``s_{Y,k}``.
    biases : bool
        Whether the rows carry a bias (integrated out with the factors).
    side : {"U", "V"}
        The side whose effective factors get the offsets: the users (SVD++, factors ``Y``
        of the items, offsets ``offset_U``) or the items (factors ``Z`` of the users,
        offsets ``offset_V``).
    method : {"rows", "collapsed"}
        ``"rows"`` (default): the implicit factors given the effective rows ``W = U + o``,
        the rows moving with the offsets (:meth:`step_given_rows`), then a common shift of
        the factors (:meth:`translate`); about ``4 D`` operations per pair. ``"collapsed"``:
        given the ratings with the rows integrated out (:meth:`step_collapsed`); about
        ``2 D^2`` per pair and a pass over the ratings. Both are exact; on ML-100K u1 their
        diagnostics were alike and "rows" ran the sweep 2.7x faster.
    """

    def __init__(self, sets, n_factors, scale_sd, biases, side="U", method="rows",
                 centered=False):
        if side not in IMPLICIT_KEYS:
            raise ValueError(f"side must be 'U' or 'V', got {side!r}")
        if method not in IMPLICIT_METHODS:
            raise ValueError(f"method must be one of {IMPLICIT_METHODS}, got {method!r}")
        if centered and method != "rows":
            raise ValueError("centred implicit offsets are drawn by the 'rows' step only; use "
                             "implicit_step='rows' or model_config['implicit_centered']=False.")
        self.method = method
        self.centered = bool(centered)
        self.mean_name = OFFSET_MEANS[side]
        # w_j = sum_{u: j in N(u)} s_u / n_users: o_u = s_u sum Y_j - sum_j w_j Y_j averages 0
        self.weights = (centring_weights(sets) if self.centered else np.empty(0))
        self.sets = sets
        self.dim = int(n_factors)
        self.scale_sd = float(scale_sd)
        self.biases = bool(biases)
        self.side = side
        (self.factors, self.scales, self.offset, self.rows, self.other, self.bias,
         self.other_bias) = IMPLICIT_KEYS[side]
        # the collapsed step's per-row terms (n_rows x D x D: allocated for it only)
        if method == "collapsed":
            self.P = np.empty((sets.n_users, self.dim, self.dim))
            self.G = np.empty((sets.n_users, self.dim))

    def start(self, state, rng):
        """Implicit factors 0 and scales at their prior's scale (the first sweep draws the
        factors from them). Started at a tenth of it, the chains on ML-100K spent the
        whole warm-up growing the scales, with the noise sd drifting along."""
        state[self.factors] = np.zeros((self.sets.n_items, self.dim))
        state[self.scales] = np.full(self.dim, self.scale_sd)
        state[self.offset] = np.zeros((self.sets.n_users, self.dim))
        state[self.mean_name] = np.zeros(self.dim)

    def offsets(self, state, Y):
        """The offsets of implicit factors ``Y`` (centred or not), with the mean of the plain
        sums that centring subtracts stored in ``state`` (zero without centring)."""
        offsets = implicit_offsets(self.sets, Y)
        mean = self.weights @ Y if self.centered else np.zeros(self.dim)
        if self.centered:
            offsets -= mean
        state[self.mean_name] = mean
        return offsets

    def _row_prior(self, state):
        """Prior precision and per-row means of the rows ``(<side> + offset, bias)``, as
        :func:`bpmf.inference.rows.sample_side` forms them (the offset is set: every row
        has its own mean)."""
        return row_prior(state, self.side, self.biases, self.sets.n_users)

    def _residuals(self, state):
        """The rows' prior precision ``P0`` and the rows about their base prior means,
        ``(n_rows, dim)``: factors, then the bias (``row_prior``'s means include the
        offsets, which the effective rows carry too)."""
        D = self.dim
        prec, mean = self._row_prior(state)
        residual = np.zeros((self.sets.n_users, prec.shape[0]))
        residual[:, :D] = state[self.rows] + state[self.offset] - mean[:, :D]
        if self.biases:
            residual[:, D] = state[self.bias] - mean[:, D]
        return prec, residual

    def step(self, state, csr, rng):
        """One implicit-feedback step of the sweep, as ``method`` says (class docstring);
        ``csr``: the side-major CSR of the ratings (the users' for ``"U"``)."""
        if self.method == "rows":
            self.step_given_rows(state, rng)
            self.translate(state, rng)
        else:
            self.step_collapsed(state, csr, rng)

    def step_collapsed(self, state, csr, rng):
        """Draw the implicit factors (the side's rows integrated out), then their scales; set
        the offsets."""
        indptr, partners, ratings = csr
        D = self.dim
        other_offset = state.get(f"offset_{self.other}")
        V = state[self.other] if other_offset is None else state[self.other] + other_offset
        X = np.ones((V.shape[0], D + 1 if self.biases else D))
        X[:, :D] = V
        shift = np.full(V.shape[0], float(state["mu"]))
        if self.biases:
            shift += state[self.other_bias]
        prec, mean = self._row_prior(state)
        user_terms(
            indptr, partners, ratings, X, shift, float(state["tau"]), prec, mean, self.P, self.G
        )
        Y = np.ascontiguousarray(state[self.factors]).copy()
        z = rng.standard_normal(Y.shape)
        sets = self.sets
        sweep_implicit(
            sets.item_indptr, sets.item_users, sets.scale, self.P, self.G, Y,
            1.0 / state[self.scales] ** 2, z,
        )
        self._set_factors(state, Y, rng)
        state[self.offset] = self.offsets(state, Y)

    def _set_factors(self, state, Y, rng):
        """Store the new implicit factors and draw their scales given them (a half-normal
        scale over the implicit factors' zero-mean Gaussians, per factor, exactly)."""
        state[self.factors] = Y
        state[self.scales] = np.array(
            [draw_halfnormal_scale(Y.shape[0], float(Y[:, k] @ Y[:, k]), self.scale_sd, rng)
             for k in range(self.dim)]
        )

    def step_given_rows(self, state, rng):
        """Draw the implicit factors given the effective rows ``W = rows + offset`` (held
        fixed: the rows move with the offsets), then their scales; set the offsets.

        In the coordinates ``(W, Y)`` (unit Jacobian from ``(U, Y)``) the ratings depend on
        ``W`` only, and ``Y`` enters through the rows' prior ``W_u - o_u ~ N(m_u, P0^{-1})``:
        each ``Y_j``'s conditional is Gaussian with a precision that shares ``P0``
        (:func:`bpmf.kernels.implicit.sweep_implicit_given_rows`)."""
        D = self.dim
        prec, residual = self._residuals(state)
        offset = state[self.offset]
        bias_res = residual[:, D] if self.biases else np.empty(0)
        Y = np.ascontiguousarray(state[self.factors]).copy()
        z = rng.standard_normal(Y.shape)
        sets = self.sets
        sweep_implicit_given_rows(
            sets.item_indptr, sets.item_users, sets.scale,
            np.ascontiguousarray(residual[:, :D]), np.ascontiguousarray(bias_res),
            np.ascontiguousarray(prec), Y, 1.0 / state[self.scales] ** 2, z, self.weights,
        )
        self._set_factors(state, Y, rng)
        new_offset = self.offsets(state, Y)
        state[self.rows] = state[self.rows] + offset - new_offset
        state[self.offset] = new_offset

    def translate(self, state, rng):
        """A common shift of the implicit factors, ``Y_j + e``, with the rows taking it off
        again (``U_u - sqrt(n_u) e``, ``n_u = |N(u)|``): the effective rows and so the
        likelihood are unchanged; ``e`` is drawn from its Gaussian conditional under the
        priors of ``Y`` and of the rows."""
        D = self.dim
        prec, residual = self._residuals(state)
        rows = state[self.rows]
        offset = state[self.offset]
        counts = np.diff(self.sets.user_indptr).astype(float)
        root = np.sqrt(counts)  # |N(u)| s_u: the change of o_u per unit of e
        weight = counts.sum()  # sum_u root_u^2
        if self.centered:  # centred offsets change by root_u - mean(root)
            root = root - root.mean()
            weight = root @ root
        Y = state[self.factors]
        inv = 1.0 / state[self.scales] ** 2
        precision = np.diag(Y.shape[0] * inv) + weight * prec[:D, :D]
        linear = -Y.sum(axis=0) * inv + (root @ residual @ prec.T)[:D]
        L = np.linalg.cholesky(precision)
        e = np.linalg.solve(L.T, np.linalg.solve(L, linear) + rng.standard_normal(D))
        state[self.factors] = Y + e
        state[self.mean_name] = state[self.mean_name] + self.weights.sum() * e
        shift = np.outer(root, e)
        state[self.offset] = offset + shift
        state[self.rows] = rows - shift

    def rescale_terms(self, state):
        """``(a, c)`` that the rescaling move adds to each factor's log density of ``t``, the
        log of the factor by which this side's rows scale: ``-a e^{2t} + c t`` (the scales'
        prior and their Jacobian)."""
        return 0.5 * state[self.scales] ** 2 / self.scale_sd**2, np.ones(self.dim)

    def rescale(self, state, g):
        """Scale the implicit factors, their scales and the offsets with the side's rows by
        ``g`` (the rows' own factor: ``g`` for ``U``, ``1 / g`` for ``V``)."""
        for key in (self.factors, self.scales, self.offset, self.mean_name):
            state[key] = state[key] * g
