r"""Compiled pieces of the ordered-probit (ordinal) likelihood.

A rating :math:`r_n \in \{1, \dots, K\}` (category index ``k_n = r_n - low`` in ``0..K-1``)
has probability

.. math::

    P(r_n = k \mid \eta_n, c) = \Phi(c_k - \eta_n) - \Phi(c_{k-1} - \eta_n),
    \qquad c_0 = -\infty < c_1 < \dots < c_{K-1} < c_K = +\infty,

with :math:`\eta_n = \mu + b_{u_n} + c'_{i_n} + U_{u_n} \cdot V_{i_n}` the latent score
(unit noise). Equivalently, :math:`r_n = k` when a latent :math:`z_n \sim \mathcal N(\eta_n, 1)`
falls in :math:`(c_{k-1}, c_k]` (Albert & Chib, 1993).

This module holds, in numba:

- :func:`log_ndtr` and :func:`log_prob_between`, the logarithm of
  :math:`\Phi(b) - \Phi(a)` computed without cancellation in either tail;
- :func:`cutpoint_loglik`, :math:`\sum_n \log P(r_n \mid \eta_n, c)`;
- :func:`draw_latents`, the latent scores from their truncated normal conditionals
  (exact rejection samplers that stay efficient and accurate far in the tails);
- :func:`linear_predictor`, :math:`\eta_n` for every rating;

and :class:`OrderedProbitPairLogp`, a PyTensor Op that returns the summed ordered-probit
log-likelihood of all pairs together with its gradient with respect to ``mu``, ``U``, ``V``,
the biases and the cut-points, in one pass (as :class:`bpmf.kernels.likelihood.GaussianPairLogp`
does for the Gaussian likelihood). With :math:`a_n = c_{k_n - 1} - \eta_n`,
:math:`b_n = c_{k_n} - \eta_n`, :math:`P_n = \Phi(b_n) - \Phi(a_n)`:

.. math::

    \frac{\partial \log P_n}{\partial \eta_n} = \frac{\phi(a_n) - \phi(b_n)}{P_n}, \quad
    \frac{\partial \log P_n}{\partial c_{k_n}} = \frac{\phi(b_n)}{P_n}, \quad
    \frac{\partial \log P_n}{\partial c_{k_n - 1}} = -\frac{\phi(a_n)}{P_n},

each ratio evaluated as :math:`\exp(\log \phi - \log P_n)`.
"""

import math

import numba
import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import disconnected_type
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

__all__ = [
    "OrderedProbitPairLogp",
    "cutpoint_loglik",
    "cutpoint_loglik_curvature",
    "draw_latents",
    "linear_predictor",
    "log_ndtr",
    "log_prob_between",
    "ordinal_pair_logp",
    "pointwise_loglik",
    "pair_logp_and_grads",
]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT1_2 = 1.0 / math.sqrt(2.0)


@numba.njit(cache=True, nogil=True)
def log_ndtr(x):
    """``log Phi(x)``; an asymptotic series below -30, where ``erfc`` would lose digits."""
    if x == -np.inf:
        return -np.inf
    if x == np.inf:
        return 0.0
    if x > 5.0:
        return math.log1p(-0.5 * math.erfc(x * _SQRT1_2))
    if x > -30.0:
        return math.log(0.5 * math.erfc(-x * _SQRT1_2))
    # Phi(x) = phi(x) / |x| * (1 - 1/x^2 + 3/x^4 - 15/x^6 + 105/x^8 - ...)
    inv2 = 1.0 / (x * x)
    series = 1.0 - inv2 * (1.0 - 3.0 * inv2 * (1.0 - 5.0 * inv2 * (1.0 - 7.0 * inv2)))
    return -0.5 * x * x - _LOG_SQRT_2PI - math.log(-x) + math.log(series)


@numba.njit(cache=True, nogil=True)
def log_prob_between(a, b):
    """``log(Phi(b) - Phi(a))`` for ``a < b`` (either may be infinite), without cancellation."""
    if not a < b:
        return -np.inf
    if b <= 0.0:  # both in the lower tail: Phi(b) (1 - Phi(a) / Phi(b))
        la, lb = log_ndtr(a), log_ndtr(b)
        return lb + math.log(-math.expm1(la - lb))
    if a >= 0.0:  # both in the upper tail: by symmetry, Phi(-a) - Phi(-b)
        la, lb = log_ndtr(-b), log_ndtr(-a)
        return lb + math.log(-math.expm1(la - lb))
    # a < 0 < b: erf is accurate about 0, and the difference of two values of opposite sign
    # does not cancel
    return math.log(0.5 * (math.erf(b * _SQRT1_2) - math.erf(a * _SQRT1_2)))


@numba.njit(cache=True, nogil=True)
def _log_phi(x):
    if math.isinf(x):
        return -np.inf
    return -0.5 * x * x - _LOG_SQRT_2PI


@numba.njit(cache=True, nogil=True)
def cutpoint_loglik(eta, categories, cuts):
    """``sum_n log(Phi(cuts[k_n + 1] - eta_n) - Phi(cuts[k_n] - eta_n))``.

    ``cuts`` is the extended vector ``(-inf, c_1, ..., c_{K-1}, +inf)`` of length ``K + 1``;
    ``categories`` holds ``k_n`` in ``0..K-1``.
    """
    total = 0.0
    for n in range(eta.shape[0]):
        k = categories[n]
        total += log_prob_between(cuts[k] - eta[n], cuts[k + 1] - eta[n])
    return total


@numba.njit(cache=True, nogil=True)
def cutpoint_loglik_curvature(eta, categories, cuts):
    """:func:`cutpoint_loglik` and its negative Hessian in the cut-points ``c_1..c_{K-1}``.

    Returns ``(loglik, diagonal, off_diagonal)``: the negative Hessian is tridiagonal, with
    ``diagonal`` (K - 1) and ``off_diagonal`` (K - 2, entry ``(k, k + 1)``). The log-likelihood
    is concave in the cut-points (Pratt, 1981), so the matrix is positive semi-definite. With
    ``a``, ``b`` the standardised bounds of a rating, ``P`` its probability,
    ``g_a = phi(a) / P``, ``g_b = phi(b) / P``: ``-d2/dc_k^2 = b g_b + g_b^2``,
    ``-d2/dc_{k-1}^2 = g_a^2 - a g_a``, ``-d2/dc_{k-1} dc_k = -g_a g_b``.
    """
    n_cuts = cuts.shape[0] - 2
    diagonal = np.zeros(n_cuts)
    off = np.zeros(max(n_cuts - 1, 0))
    total = 0.0
    for n in range(eta.shape[0]):
        k = categories[n]
        a, b = cuts[k] - eta[n], cuts[k + 1] - eta[n]
        log_p = log_prob_between(a, b)
        total += log_p
        g_a = math.exp(_log_phi(a) - log_p)
        g_b = math.exp(_log_phi(b) - log_p)
        if k < n_cuts:
            diagonal[k] += b * g_b + g_b * g_b
        if k > 0:
            diagonal[k - 1] += g_a * g_a - a * g_a
        if 0 < k < n_cuts:
            off[k - 1] -= g_a * g_b
    return total, diagonal, off


@numba.njit(cache=True, nogil=True)
def _std_truncnorm(a, b, rng):
    """One draw of ``N(0, 1)`` truncated to ``(a, b)``, ``a < b``, by exact rejection.

    Cases (Robert, 1995): an interval that reaches both sides of 0 and is wide: normal
    proposals; a narrow interval: uniform proposals, accepted with the density ratio to its
    largest value on the interval; an interval in one tail and wide: translated exponential
    proposals with the optimal rate ``(a + sqrt(a^2 + 4)) / 2``. The lower tail is the mirror
    image of the upper one. Every case's acceptance rate is bounded below, however far out
    the interval lies.
    """
    if b <= 0.0 and a != -np.inf:  # mirror the lower tail onto the upper one
        return -_std_truncnorm(-b, -a, rng)
    if a == -np.inf:
        if b == np.inf:
            return rng.standard_normal()
        return -_std_truncnorm(-b, np.inf, rng)
    if a < 0.0:  # a < 0 < b
        if b - a >= 2.0:
            while True:
                x = rng.standard_normal()
                if a < x < b:
                    return x
        while True:  # narrow: the density is largest at 0
            x = a + (b - a) * rng.random()
            if rng.random() <= math.exp(-0.5 * x * x):
                return x
    # 0 <= a < b
    if b != np.inf and (b - a) * (b + a) <= 2.0:
        while True:  # narrow: the density is largest at a
            x = a + (b - a) * rng.random()
            if rng.random() <= math.exp(-0.5 * (x * x - a * a)):
                return x
    rate = 0.5 * (a + math.sqrt(a * a + 4.0))
    while True:
        x = a + rng.standard_exponential() / rate
        if x < b and rng.random() <= math.exp(-0.5 * (x - rate) ** 2):
            return x


@numba.njit(cache=True, nogil=True)
def draw_latents(eta, categories, cuts, rng, out):
    """``out[n] ~ N(eta[n], 1)`` truncated to ``(cuts[k_n], cuts[k_n + 1])``, for every ``n``."""
    for n in range(eta.shape[0]):
        k = categories[n]
        out[n] = eta[n] + _std_truncnorm(cuts[k] - eta[n], cuts[k + 1] - eta[n], rng)


@numba.njit(cache=True, nogil=True)
def linear_predictor(mu, U, V, user_bias, item_bias, user_codes, item_codes, out):
    """``out[n] = mu + user_bias[u_n] + item_bias[i_n] + U[u_n] . V[i_n]`` (empty bias arrays:
    no bias terms)."""
    biases = user_bias.shape[0] > 0
    n_factors = U.shape[1]
    for n in range(user_codes.shape[0]):
        u, i = user_codes[n], item_codes[n]
        value = mu
        for f in range(n_factors):
            value += U[u, f] * V[i, f]
        if biases:
            value += user_bias[u] + item_bias[i]
        out[n] = value


@numba.njit(cache=True, nogil=True)
def pair_logp_and_grads(categories, mu, U, V, user_bias, item_bias, cutpoints, user_codes,
                        item_codes):
    """The summed ordered-probit log-likelihood and its gradients (see the module docstring).

    Returns ``(logp, g_mu, g_U, g_V, g_user_bias, g_item_bias, g_cutpoints)``. Cut-points
    that are not strictly increasing give ``-inf`` and zero gradients.
    """
    n_pairs = categories.shape[0]
    n_cuts = cutpoints.shape[0]
    n_factors = U.shape[1]
    if user_codes.shape[0] != n_pairs or item_codes.shape[0] != n_pairs:
        raise ValueError(
            "OrderedProbitPairLogp: ratings, user_codes and item_codes differ in length"
        )
    if V.shape[1] != n_factors:
        raise ValueError("OrderedProbitPairLogp: U and V have different numbers of columns")
    if user_bias.shape[0] != U.shape[0] or item_bias.shape[0] != V.shape[0]:
        raise ValueError("OrderedProbitPairLogp: a bias length differs from its factor rows")
    g_U = np.zeros(U.shape)
    g_V = np.zeros(V.shape)
    g_b = np.zeros(user_bias.shape[0])
    g_c = np.zeros(item_bias.shape[0])
    g_cut = np.zeros(n_cuts)
    for k in range(1, n_cuts):
        if not cutpoints[k - 1] < cutpoints[k]:
            return -np.inf, 0.0, g_U, g_V, g_b, g_c, g_cut
    cuts = np.empty(n_cuts + 2)
    cuts[0] = -np.inf
    cuts[1:-1] = cutpoints
    cuts[-1] = np.inf
    logp = 0.0
    g_mu = 0.0
    for n in range(n_pairs):
        u, i, k = user_codes[n], item_codes[n], categories[n]
        if u < 0 or u >= U.shape[0] or i < 0 or i >= V.shape[0]:
            raise IndexError("OrderedProbitPairLogp: a user or item code is out of range")
        if k < 0 or k > n_cuts:
            raise IndexError("OrderedProbitPairLogp: a rating category is out of range")
        eta = mu + user_bias[u] + item_bias[i]
        for f in range(n_factors):
            eta += U[u, f] * V[i, f]
        lower, upper = cuts[k] - eta, cuts[k + 1] - eta
        log_p = log_prob_between(lower, upper)
        logp += log_p
        d_lower = math.exp(_log_phi(lower) - log_p)  # phi(a) / P
        d_upper = math.exp(_log_phi(upper) - log_p)  # phi(b) / P
        weight = d_lower - d_upper  # d log P / d eta
        if k > 0:
            g_cut[k - 1] -= d_lower
        if k < n_cuts:
            g_cut[k] += d_upper
        g_mu += weight
        g_b[u] += weight
        g_c[i] += weight
        for f in range(n_factors):
            g_U[u, f] += weight * V[i, f]
            g_V[i, f] += weight * U[u, f]
    return logp, g_mu, g_U, g_V, g_b, g_c, g_cut


def _as_float(x):
    return pt.as_tensor_variable(x).astype("float64")


class OrderedProbitPairLogp(Op):
    """Summed ordered-probit log-likelihood of pairs, with its gradient in the same node.

    Inputs ``(categories, mu, U, V, user_bias, item_bias, cutpoints, user_codes, item_codes)``
    (``categories`` in ``0..K-1``, integer; pass zero vectors as biases for a model without
    them); outputs ``(logp, g_mu, g_U, g_V, g_user_bias, g_item_bias, g_cutpoints)``, where
    every ``g_*`` is the partial derivative of ``logp`` (see the module docstring). The
    pullback multiplies the gradient outputs by the incoming cotangent, so a compiled
    log-density-plus-gradient function runs the pass once. ``perform`` calls the numba kernel
    :func:`pair_logp_and_grads`, and the same kernel serves PyTensor's numba backend (nutpie).
    Second derivatives are not available.
    """

    __props__ = ()

    def make_node(self, categories, mu, U, V, user_bias, item_bias, cutpoints, user_codes,
                  item_codes):
        _register_numba()
        categories = pt.as_tensor_variable(categories)
        user_codes = pt.as_tensor_variable(user_codes)
        item_codes = pt.as_tensor_variable(item_codes)
        floats = [_as_float(x) for x in (mu, U, V, user_bias, item_bias, cutpoints)]
        for name, x, ndim in zip(("mu", "U", "V", "user_bias", "item_bias", "cutpoints"),
                                 floats, (0, 2, 2, 1, 1, 1), strict=True):
            if x.ndim != ndim:
                raise ValueError(f"{name} must have {ndim} dimension(s), got {x.ndim}")
        for name, codes in (("categories", categories), ("user_codes", user_codes),
                            ("item_codes", item_codes)):
            if codes.ndim != 1 or not codes.dtype.startswith(("int", "uint")):
                raise TypeError(f"{name} must be a vector of integers, got {codes.type}")
        outputs = [pt.scalar(dtype="float64"), pt.scalar(dtype="float64")]
        outputs += [pt.tensor(dtype="float64", shape=x.type.shape) for x in floats[1:]]
        return Apply(self, [categories, *floats, user_codes, item_codes], outputs)

    def perform(self, node, inputs, output_storage):
        categories, mu, U, V, b, c, cut, users, items = inputs
        results = pair_logp_and_grads(
            np.ascontiguousarray(categories, dtype=np.int64), float(mu),
            np.ascontiguousarray(U), np.ascontiguousarray(V), np.ascontiguousarray(b),
            np.ascontiguousarray(c), np.ascontiguousarray(cut),
            np.ascontiguousarray(users, dtype=np.int64),
            np.ascontiguousarray(items, dtype=np.int64),
        )
        for storage, value in zip(output_storage, results, strict=True):
            storage[0] = np.asarray(value, dtype="float64")

    def infer_shape(self, fgraph, node, shapes):
        return [(), (), *shapes[2:7]]

    def connection_pattern(self, node):
        n_out = len(node.outputs)
        return [[False] * n_out] + [[True] * n_out] * 6 + [[False] * n_out] * 2

    def pullback(self, inputs, outputs, cotangents):
        if any(_connected(c) for c in cotangents[1:]):
            raise NotImplementedError(
                "OrderedProbitPairLogp has no second derivatives; use pm.OrderedProbit for "
                "Hessians"
            )
        cotangent = cotangents[0]
        if not _connected(cotangent):
            return [disconnected_type() for _ in inputs]
        return [disconnected_type(), *(cotangent * g for g in outputs[1:]),
                disconnected_type(), disconnected_type()]


def _connected(variable):
    from pytensor.gradient import DisconnectedType

    return variable is not None and not isinstance(variable.type, DisconnectedType)


def ordinal_pair_logp(categories, mu, U, V, user_bias, item_bias, cutpoints, user_codes,
                      item_codes):
    """The summed ordered-probit log-likelihood (scalar) of :class:`OrderedProbitPairLogp`.

    ``user_bias`` and ``item_bias`` may be None (a model without biases).
    """
    if (user_bias is None) != (item_bias is None):
        raise ValueError("pass both user_bias and item_bias, or neither")
    if user_bias is None:
        user_bias = pt.zeros(pt.as_tensor_variable(U).shape[0])
        item_bias = pt.zeros(pt.as_tensor_variable(V).shape[0])
    return OrderedProbitPairLogp()(
        categories, mu, U, V, user_bias, item_bias, cutpoints, user_codes, item_codes
    )[0]


_REGISTERED = []


def _register_numba():
    """PyTensor's numba backend (nutpie) calls :func:`pair_logp_and_grads` directly."""
    if _REGISTERED:
        return
    _REGISTERED.append(True)
    from pytensor.link.numba.dispatch.basic import (
        numba_njit,
        register_funcify_default_op_cache_key,
    )

    @register_funcify_default_op_cache_key(OrderedProbitPairLogp)
    def _funcify(op, node=None, **kwargs):
        @numba_njit
        def logp(categories, mu, U, V, user_bias, item_bias, cutpoints, user_codes, item_codes):
            out = pair_logp_and_grads(
                categories.astype(np.int64), mu.item(), np.ascontiguousarray(U),
                np.ascontiguousarray(V), user_bias, item_bias, cutpoints,
                user_codes.astype(np.int64), item_codes.astype(np.int64),
            )
            return (np.asarray(out[0]), np.asarray(out[1]), out[2], out[3], out[4], out[5],
                    out[6])

        return logp, _source_key()


def _source_key():
    from bpmf.kernels.pair_dot import source_key

    return source_key(pair_logp_and_grads.py_func, log_prob_between.py_func, log_ndtr.py_func,
                      _register_numba)


@numba.njit(cache=True, nogil=True)
def pointwise_loglik(eta, categories, cutpoints):
    """``log P(r = k_p | eta[s, p], cutpoints[s])`` for every draw ``s`` and pair ``p``.

    ``eta`` is ``(draws, pairs)``, ``categories`` ``(pairs,)`` in ``0..K-1`` and
    ``cutpoints`` ``(draws, K - 1)``.
    """
    n_draws, n_pairs = eta.shape
    n_cuts = cutpoints.shape[1]
    out = np.empty((n_draws, n_pairs))
    for s in range(n_draws):
        for p in range(n_pairs):
            k = categories[p]
            lower = -np.inf if k == 0 else cutpoints[s, k - 1] - eta[s, p]
            upper = np.inf if k == n_cuts else cutpoints[s, k] - eta[s, p]
            out[s, p] = log_prob_between(lower, upper)
    return out
