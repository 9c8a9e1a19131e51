"""A fused Gaussian log-likelihood Op for matrix factorisation: value and gradient in one pass.

The likelihood of every model in :mod:`bpmf.models` is

.. math::

    \\log p(r \\mid \\theta) = \\sum_{n=1}^{N} \\log \\mathcal{N}\\left(r_n \\mid
        \\mu + b_{u_n} + c_{i_n} + U_{u_n} \\cdot V_{i_n},\\ \\sigma\\right)

over the ``N`` observed (user, item) pairs. Built from plain PyTensor nodes (even with the fused
:class:`~bpmf.kernels.pair_dot.PairDot`) the value and the gradient need several passes over the
pairs: gathers of the biases, the bilinear term, the residuals, then bias scatter-adds and the
factor scatter-adds. :class:`GaussianPairLogp` computes the log-likelihood *and all its partial
derivatives* in a single loop over the pairs. With residual :math:`e_n = r_n - \\hat r_n` and
weight :math:`w_n = e_n / \\sigma^2`:

.. math::

    \\frac{\\partial \\log p}{\\partial \\mu} = \\sum_n w_n, \\quad
    \\frac{\\partial \\log p}{\\partial b_p} = \\sum_{n: u_n = p} w_n, \\quad
    \\frac{\\partial \\log p}{\\partial U_p} = \\sum_{n: u_n = p} w_n V_{i_n},

the same for the items, and with :math:`S = \\sum_n e_n^2`,

.. math::

    \\log p = -N \\log \\sigma - \\tfrac{N}{2} \\log 2\\pi - \\frac{S}{2 \\sigma^2}, \\quad
    \\frac{\\partial \\log p}{\\partial \\sigma} = -\\frac{N}{\\sigma} + \\frac{S}{\\sigma^3}.

The gradients are extra outputs of the same Apply node, and the Op's pullback multiplies them by
the incoming cotangent, so a compiled log-density-plus-gradient function evaluates the node once.

Backends: a numpy ``perform`` (reference, Python linker), C code (``FAST_RUN``, used by PyMC's
own NUTS and ``find_MAP``), numba (the ``NUMBA`` mode, used by nutpie) and JAX (numpyro). As in
:mod:`bpmf.kernels.pair_dot`, the numba and JAX registrations happen on first use.
When the type of ``U`` knows its number of columns (PyMC models with dims), the numba backend
uses a row kernel compiled with SIMD instructions (:mod:`bpmf.kernels.simd`), fastest on pairs
in runs of one user (:func:`bpmf.kernels.order.user_run_order`, what :func:`rating_likelihood`
passes).

Codes must satisfy ``0 <= user_codes[n] < U.shape[0]`` and ``0 <= item_codes[n] < V.shape[0]``.
The numpy, C and numba backends raise ``IndexError`` otherwise; constant codes are also checked
when the graph is built whenever the row counts are known statically. A jitted JAX function
cannot raise on values, so there an out-of-range code makes the log-likelihood and all its
gradients NaN (never a silent wrap-around to another user).

A scale ``sigma <= 0`` gives ``logp = -inf`` with zero gradients, like PyMC's bounded ``Normal``
log-density.
"""

import functools
import math

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import disconnected_type
from pytensor.graph.basic import Apply, Constant
from pytensor.link.c.op import COp

from bpmf.kernels.order import CACHE_BYTES, user_run_order
from bpmf.kernels.pair_dot import PairDot, connected, register_once, source_key

__all__ = ["GaussianPairLogp", "gaussian_pair_logp", "rating_likelihood"]

_C_VERSION = (1,)
_LOG_2PI = math.log(2.0 * math.pi)
# numba compiles the SIMD row kernel for a number of factors up to this, when it is static
# (beyond, the padded rows and their register copies outgrow the vector registers anyway)
_MAX_FIXED_FACTORS = 64
# pairs ahead of the current one whose factor rows the numba loop prefetches, once U and V
# together outgrow the L2 cache (``order.CACHE_BYTES``, shared with the pair order)
_PREFETCH_AHEAD = 8

# positions of the inputs of the two variants of the Op
_FLOAT_INPUTS = {
    True: ("ratings", "mu", "U", "V", "user_bias", "item_bias", "sigma"),
    False: ("ratings", "mu", "U", "V", "sigma"),
}
_OUTPUTS = {
    True: ("logp", "g_mu", "g_U", "g_V", "g_user_bias", "g_item_bias", "g_sigma"),
    False: ("logp", "g_mu", "g_U", "g_V", "g_sigma"),
}


def _check_values(ratings, U, V, user_bias, item_bias, user_codes, item_codes):
    """Shape and range checks shared by ``perform`` (the compiled backends repeat them)."""
    n_pairs = ratings.shape[0]
    if user_codes.shape != (n_pairs,) or item_codes.shape != (n_pairs,):
        raise ValueError(
            f"ratings has {n_pairs} entries but user_codes has shape {user_codes.shape} and "
            f"item_codes {item_codes.shape}; pass one code of each per rating"
        )
    if U.shape[1] != V.shape[1]:
        raise ValueError(f"U has {U.shape[1]} columns but V has {V.shape[1]}")
    if user_bias is not None:
        if user_bias.shape[0] != U.shape[0]:
            raise ValueError(
                f"user_bias has {user_bias.shape[0]} entries but U has {U.shape[0]} rows"
            )
        if item_bias.shape[0] != V.shape[0]:
            raise ValueError(
                f"item_bias has {item_bias.shape[0]} entries but V has {V.shape[0]} rows"
            )
    if n_pairs:
        if user_codes.min() < 0 or user_codes.max() >= U.shape[0]:
            raise IndexError(f"GaussianPairLogp: user code out of range [0, {U.shape[0]})")
        if item_codes.min() < 0 or item_codes.max() >= V.shape[0]:
            raise IndexError(f"GaussianPairLogp: item code out of range [0, {V.shape[0]})")


def _check_constant_codes(codes, n_rows, side):
    """Build-time range check of constant codes against a statically known row count."""
    if not isinstance(codes, Constant) or codes.data.size == 0:
        return
    low, high = int(codes.data.min()), int(codes.data.max())
    if low < 0 or (n_rows is not None and high >= n_rows):
        bound = "?" if n_rows is None else n_rows
        raise IndexError(
            f"GaussianPairLogp: {side} code out of range [0, {bound}): codes span [{low}, {high}]"
        )


class GaussianPairLogp(COp):
    """Sum of Normal log-densities of ratings around a biased bilinear mean, with its gradient.

    Parameters
    ----------
    biases : bool, default True
        With biases the inputs are ``(ratings, mu, U, V, user_bias, item_bias, sigma,
        user_codes, item_codes)`` and the outputs ``(logp, g_mu, g_U, g_V, g_user_bias,
        g_item_bias, g_sigma)``; without, the two bias inputs and their gradients are absent.

    Notes
    -----
    Output 0 is :math:`\\sum_n \\log \\mathcal{N}(r_n \\mid \\mu + b_{u_n} + c_{i_n} +
    U_{u_n} \\cdot V_{i_n}, \\sigma)`; every other output is the partial derivative of output 0
    with respect to the matching float input (see the module docstring for the formulas). The
    gradient outputs are not themselves differentiable: asking for a second derivative raises
    ``NotImplementedError``.
    """

    __props__ = ("biases",)

    def __init__(self, biases=True):
        self.biases = bool(biases)

    def make_node(self, *inputs):
        _register_backends()
        names = _FLOAT_INPUTS[self.biases] + ("user_codes", "item_codes")
        if len(inputs) != len(names):
            raise TypeError(
                f"GaussianPairLogp(biases={self.biases}) takes {len(names)} inputs "
                f"({', '.join(names)}), got {len(inputs)}"
            )
        inputs = [pt.as_tensor_variable(x) for x in inputs]
        floats = [x.astype("float64") for x in inputs[:-2]]
        user_codes, item_codes = inputs[-2:]
        expected_ndim = {"ratings": 1, "mu": 0, "U": 2, "V": 2}
        expected_ndim |= {"user_bias": 1, "item_bias": 1, "sigma": 0}
        for name, x in zip(names[:-2], floats, strict=True):
            if x.ndim != expected_ndim[name]:
                raise ValueError(
                    f"{name} must have {expected_ndim[name]} dimension(s), got {x.ndim}"
                )
        for name, codes in (("user_codes", user_codes), ("item_codes", item_codes)):
            if codes.ndim != 1:
                raise ValueError(f"{name} must be a vector, got {codes.ndim} dimensions")
            if not codes.dtype.startswith(("int", "uint")):
                raise TypeError(f"{name} must hold integers, got dtype {codes.dtype}")
        U, V = floats[2], floats[3]
        _check_constant_codes(user_codes, U.type.shape[0], "user")
        _check_constant_codes(item_codes, V.type.shape[0], "item")
        shapes = {
            "logp": (),
            "g_mu": (),
            "g_U": U.type.shape,
            "g_V": V.type.shape,
            "g_sigma": (),
        }
        if self.biases:
            shapes["g_user_bias"] = floats[4].type.shape
            shapes["g_item_bias"] = floats[5].type.shape
        outputs = [pt.tensor(dtype="float64", shape=shapes[name]) for name in _OUTPUTS[self.biases]]
        return Apply(self, [*floats, user_codes, item_codes], outputs)

    def _split(self, inputs):
        """(ratings, mu, U, V, user_bias, item_bias, sigma, user_codes, item_codes)."""
        if self.biases:
            return tuple(inputs)
        ratings, mu, U, V, sigma, user_codes, item_codes = inputs
        return ratings, mu, U, V, None, None, sigma, user_codes, item_codes

    def perform(self, node, inputs, output_storage):
        ratings, mu, U, V, user_bias, item_bias, sigma, user_codes, item_codes = self._split(inputs)
        _check_values(ratings, U, V, user_bias, item_bias, user_codes, item_codes)
        mu, sigma = float(mu), float(sigma)
        prediction = mu + np.einsum("nk,nk->n", U[user_codes], V[item_codes])
        if self.biases:
            prediction += user_bias[user_codes] + item_bias[item_codes]
        residual = ratings - prediction
        n_pairs = ratings.shape[0]
        sse = float(residual @ residual)
        if sigma > 0:
            inv_var = 1.0 / (sigma * sigma)
            logp = -n_pairs * math.log(sigma) - 0.5 * n_pairs * _LOG_2PI - 0.5 * sse * inv_var
            g_sigma = -n_pairs / sigma + sse * inv_var / sigma
        else:
            inv_var, logp, g_sigma = 0.0, -np.inf, 0.0
        weight = residual * inv_var
        g_U = np.zeros_like(U)
        g_V = np.zeros_like(V)
        np.add.at(g_U, user_codes, weight[:, None] * V[item_codes])
        np.add.at(g_V, item_codes, weight[:, None] * U[user_codes])
        results = [np.asarray(logp), np.asarray(weight.sum()), g_U, g_V]
        if self.biases:
            results.append(np.bincount(user_codes, weights=weight, minlength=U.shape[0]))
            results.append(np.bincount(item_codes, weights=weight, minlength=V.shape[0]))
        results.append(np.asarray(g_sigma))
        for storage, value in zip(output_storage, results, strict=True):
            storage[0] = np.asarray(value, dtype="float64")

    def infer_shape(self, fgraph, node, shapes):
        if self.biases:
            _, _, U, V, user_bias, item_bias, _, _, _ = shapes
            return [(), (), U, V, user_bias, item_bias, ()]
        _, _, U, V, _, _, _ = shapes
        return [(), (), U, V, ()]

    def connection_pattern(self, node):
        n_outputs = len(node.outputs)
        n_floats = len(node.inputs) - 2
        return [[True] * n_outputs] * n_floats + [[False] * n_outputs] * 2

    def pullback(self, inputs, outputs, cotangents):
        if any(connected(c) for c in cotangents[1:]):
            raise NotImplementedError(
                "GaussianPairLogp does not implement second derivatives (the derivative of its "
                "gradient outputs); build the likelihood with pm.Normal(..., observed=...) to get "
                "Hessians"
            )
        ratings, mu, U, V, user_bias, item_bias, sigma, user_codes, item_codes = self._split(inputs)
        (cotangent, *_) = cotangents
        if not connected(cotangent):
            return [disconnected_type() for _ in inputs]
        # the derivative with respect to the ratings is not an output (it would cost an (N,)
        # write per evaluation); it is built lazily and only computed when someone asks for it
        prediction = mu + PairDot()(U, V, user_codes, item_codes)
        if self.biases:
            prediction = prediction + user_bias[user_codes] + item_bias[item_codes]
        g_ratings = -cotangent * (ratings - prediction) / (sigma * sigma)
        g_ratings = pt.switch(pt.gt(sigma, 0), g_ratings, 0.0)
        return [g_ratings, *(cotangent * g for g in outputs[1:]), *[disconnected_type()] * 2]

    def c_code_cache_version(self):
        return _C_VERSION

    def c_code(self, node, name, inputs, outputs, sub):
        if self.biases:
            r, mu, U, V, b, c, sigma, u, i = inputs
            logp, gmu, gU, gV, gb, gc, gsigma = outputs
        else:
            r, mu, U, V, sigma, u, i = inputs
            logp, gmu, gU, gV, gsigma = outputs
            b = c = gb = gc = None
        fail = sub["fail"]
        arrays = [x for x in (r, U, V, b, c, u, i) if x is not None]
        contiguous = {x: f"{x}_contig" for x in arrays}
        release = " ".join(f"Py_XDECREF({contiguous[x]});" for x in arrays)
        cleanup_fail = f"{{ {release} {fail} }}"
        declare = "\n".join(
            f"PyArrayObject *{contiguous[x]} = PyArray_GETCONTIGUOUS({x});" for x in arrays
        )
        any_null = " || ".join(f"!{contiguous[x]}" for x in arrays)

        def alloc_scalar(out):
            return f"""
            if ({out} == NULL || PyArray_NDIM({out}) != 0) {{
                Py_XDECREF({out});
                {out} = (PyArrayObject *) PyArray_EMPTY(0, NULL, NPY_FLOAT64, 0);
                if ({out} == NULL) {cleanup_fail}
            }}
            """

        def alloc_like(out, src):
            return f"""
            if ({out} == NULL || PyArray_NDIM({out}) != PyArray_NDIM({src})
                || !PyArray_CompareLists(PyArray_DIMS({out}), PyArray_DIMS({src}),
                                         PyArray_NDIM({src}))
                || !PyArray_IS_C_CONTIGUOUS({out})) {{
                Py_XDECREF({out});
                {out} = (PyArrayObject *) PyArray_ZEROS(PyArray_NDIM({src}), PyArray_DIMS({src}),
                                                        NPY_FLOAT64, 0);
                if ({out} == NULL) {cleanup_fail}
            }} else {{
                memset(PyArray_DATA({out}), 0, PyArray_NBYTES({out}));
            }}
            """

        allocs = [alloc_scalar(x) for x in (logp, gmu, gsigma)]
        allocs += [alloc_like(gU, U), alloc_like(gV, V)]
        bias_checks = bias_setup = bias_loop = ""
        if self.biases:
            allocs += [alloc_like(gb, b), alloc_like(gc, c)]
            bias_checks = f"""
            if (PyArray_DIMS({b})[0] != n_rows_U || PyArray_DIMS({c})[0] != n_rows_V) {{
                PyErr_SetString(PyExc_ValueError,
                    "GaussianPairLogp: user_bias (item_bias) length differs from rows of U (V)");
                {fail}
            }}
            """
            bias_setup = f"""
            const npy_float64 *__restrict__ b_data =
                (const npy_float64 *) PyArray_DATA({contiguous[b]});
            const npy_float64 *__restrict__ c_data =
                (const npy_float64 *) PyArray_DATA({contiguous[c]});
            npy_float64 *__restrict__ gb_data = (npy_float64 *) PyArray_DATA({gb});
            npy_float64 *__restrict__ gc_data = (npy_float64 *) PyArray_DATA({gc});
            """
            bias_loop = "acc += b_data[p] + c_data[q];"
        bias_scatter = "gb_data[p] += w; gc_data[q] += w;" if self.biases else ""
        allocs = "\n".join(allocs)
        return f"""
        {{
        npy_intp n_pairs = PyArray_DIMS({r})[0];
        npy_intp n_rows_U = PyArray_DIMS({U})[0];
        npy_intp n_rows_V = PyArray_DIMS({V})[0];
        npy_intp n_factors = PyArray_DIMS({U})[1];
        if (PyArray_DIMS({u})[0] != n_pairs || PyArray_DIMS({i})[0] != n_pairs) {{
            PyErr_SetString(PyExc_ValueError,
                "GaussianPairLogp: ratings, user_codes and item_codes differ in length");
            {fail}
        }}
        if (PyArray_DIMS({V})[1] != n_factors) {{
            PyErr_SetString(PyExc_ValueError,
                "GaussianPairLogp: U and V have different numbers of columns");
            {fail}
        }}
        {bias_checks}
        {declare}
        if ({any_null}) {cleanup_fail}
        {allocs}
        const npy_float64 mu_value = *(const npy_float64 *) PyArray_DATA({mu});
        const npy_float64 sigma_value = *(const npy_float64 *) PyArray_DATA({sigma});
        const npy_float64 inv_var = sigma_value > 0 ? 1.0 / (sigma_value * sigma_value) : 0.0;
        const npy_float64 *__restrict__ r_data =
            (const npy_float64 *) PyArray_DATA({contiguous[r]});
        const npy_float64 *__restrict__ U_data =
            (const npy_float64 *) PyArray_DATA({contiguous[U]});
        const npy_float64 *__restrict__ V_data =
            (const npy_float64 *) PyArray_DATA({contiguous[V]});
        const dtype_{u} *__restrict__ u_data = (const dtype_{u} *) PyArray_DATA({contiguous[u]});
        const dtype_{i} *__restrict__ i_data = (const dtype_{i} *) PyArray_DATA({contiguous[i]});
        npy_float64 *__restrict__ gU_data = (npy_float64 *) PyArray_DATA({gU});
        npy_float64 *__restrict__ gV_data = (npy_float64 *) PyArray_DATA({gV});
        {bias_setup}
        npy_float64 sse = 0.0, gmu_sum = 0.0;
        int bad_index = 0;
        for (npy_intp n = 0; n < n_pairs; ++n) {{
            npy_intp p = (npy_intp) u_data[n];
            npy_intp q = (npy_intp) i_data[n];
            if (p < 0 || p >= n_rows_U || q < 0 || q >= n_rows_V) {{ bad_index = 1; break; }}
            const npy_float64 *__restrict__ Up = U_data + p * n_factors;
            const npy_float64 *__restrict__ Vq = V_data + q * n_factors;
            npy_float64 acc = mu_value;
            {bias_loop}
            for (npy_intp k = 0; k < n_factors; ++k) acc += Up[k] * Vq[k];
            npy_float64 e = r_data[n] - acc;
            sse += e * e;
            npy_float64 w = e * inv_var;
            gmu_sum += w;
            {bias_scatter}
            npy_float64 *__restrict__ gUp = gU_data + p * n_factors;
            npy_float64 *__restrict__ gVq = gV_data + q * n_factors;
            for (npy_intp k = 0; k < n_factors; ++k) gUp[k] += w * Vq[k];
            for (npy_intp k = 0; k < n_factors; ++k) gVq[k] += w * Up[k];
        }}
        {release}
        if (bad_index) {{
            PyErr_SetString(PyExc_IndexError, "GaussianPairLogp: user or item code out of range");
            {fail}
        }}
        npy_float64 n_obs = (npy_float64) n_pairs;
        if (sigma_value > 0) {{
            *(npy_float64 *) PyArray_DATA({logp}) =
                -n_obs * log(sigma_value) - 0.5 * n_obs * {_LOG_2PI!r} - 0.5 * sse * inv_var;
            *(npy_float64 *) PyArray_DATA({gsigma}) =
                -n_obs / sigma_value + sse * inv_var / sigma_value;
        }} else {{
            *(npy_float64 *) PyArray_DATA({logp}) = -NPY_INFINITY;
            *(npy_float64 *) PyArray_DATA({gsigma}) = 0.0;
        }}
        *(npy_float64 *) PyArray_DATA({gmu}) = gmu_sum;
        }}
        """


def gaussian_pair_logp(ratings, mu, U, V, user_bias, item_bias, sigma, user_codes, item_codes):
    """Summed Normal log-likelihood of ratings around ``mu + b[u] + c[i] + U[u].V[i]``, fused.

    Parameters
    ----------
    ratings : TensorLike, shape (n_pairs,)
        Observed ratings (usually a constant or ``pm.Data``).
    mu : TensorLike, scalar
        Global mean.
    U : TensorLike, shape (n_users, n_factors)
    V : TensorLike, shape (n_items, n_factors)
    user_bias : TensorLike, shape (n_users,), or None
    item_bias : TensorLike, shape (n_items,), or None
        Per-user and per-item offsets; pass both or neither.
    sigma : TensorLike or float, scalar
        Noise standard deviation.
    user_codes, item_codes : TensorLike of int, shape (n_pairs,)
        Row positions in ``U`` and ``V``; must lie in ``[0, n_rows)``.

    Returns
    -------
    TensorVariable, scalar float64
        :math:`\\sum_n \\log \\mathcal{N}(r_n \\mid \\mu + b_{u_n} + c_{i_n} + U_{u_n} \\cdot
        V_{i_n}, \\sigma)`. Its gradient comes from the same :class:`GaussianPairLogp` node, so
        value and gradient together cost one pass over the pairs. Use it in a PyMC model as
        ``pm.Potential("rating", gaussian_pair_logp(...))``.

    Raises
    ------
    ValueError
        If only one of the biases is given or an input has the wrong number of dimensions.
    IndexError
        If constant codes are out of range of statically known row counts (otherwise when the
        compiled function runs).

    Notes
    -----
    Only first derivatives are available; a Hessian request raises ``NotImplementedError``.
    All float inputs are upcast to float64.
    """
    if (user_bias is None) != (item_bias is None):
        raise ValueError(
            "pass both user_bias and item_bias, or neither (None, None) for a model without biases"
        )
    if user_bias is None:
        op = GaussianPairLogp(biases=False)
        return op(ratings, mu, U, V, sigma, user_codes, item_codes)[0]
    op = GaussianPairLogp(biases=True)
    return op(ratings, mu, U, V, user_bias, item_bias, sigma, user_codes, item_codes)[0]


# --------------------------------------------------------------------------------------------
# numba and JAX backends, registered on first use
# --------------------------------------------------------------------------------------------

def _register_numba():
    from numba import carray
    from pytensor.link.numba.dispatch.basic import (
        numba_njit,
        register_funcify_default_op_cache_key,
    )

    from bpmf.kernels.order import prefetch_row
    from bpmf.kernels.simd import slp_njit, stack_buffer

    log_2pi = _LOG_2PI

    @numba_njit
    def finish(n_pairs, sse, sigma):
        """The log-likelihood and its sigma-derivative from the sum of squared residuals."""
        if sigma > 0:
            inv_var = 1.0 / (sigma * sigma)
            logp = -n_pairs * np.log(sigma) - 0.5 * n_pairs * log_2pi - 0.5 * sse * inv_var
            return logp, -n_pairs / sigma + sse * inv_var / sigma
        return -np.inf, 0.0

    def make_kernel(biases):
        # For a number of factors known only when called. ``biases`` is a closure constant:
        # numba compiles the bias-free loop without branches.
        @numba_njit
        def kernel(ratings, mu, U, V, user_bias, item_bias, sigma, user_codes, item_codes):
            n_pairs = ratings.shape[0]
            n_factors = U.shape[1]
            n_rows_U, n_rows_V = U.shape[0], V.shape[0]
            if user_codes.shape[0] != n_pairs or item_codes.shape[0] != n_pairs:
                raise ValueError(
                    "GaussianPairLogp: ratings, user_codes and item_codes differ in length"
                )
            if V.shape[1] != n_factors:
                raise ValueError("GaussianPairLogp: U and V have different numbers of columns")
            if biases and (user_bias.shape[0] != n_rows_U or item_bias.shape[0] != n_rows_V):
                raise ValueError(
                    "GaussianPairLogp: user_bias (item_bias) length differs from the rows of U (V)"
                )
            U = np.ascontiguousarray(U)
            V = np.ascontiguousarray(V)
            g_U = np.zeros((n_rows_U, n_factors), dtype=np.float64)
            g_V = np.zeros((n_rows_V, n_factors), dtype=np.float64)
            g_b = np.zeros(user_bias.shape[0], dtype=np.float64)
            g_c = np.zeros(item_bias.shape[0], dtype=np.float64)
            inv_var = 1.0 / (sigma * sigma) if sigma > 0 else 0.0
            sse = 0.0
            g_mu = 0.0
            # prefetching pays once the factor rows spill out of the L2 cache; below, its
            # extra instructions cost ~10% (ML-100K u1: 1.27 -> 1.39 ms for the loop)
            prefetch = (n_rows_U + n_rows_V) * n_factors * 8 > CACHE_BYTES
            for n in range(n_pairs):
                if prefetch and n + _PREFETCH_AHEAD < n_pairs:
                    # rows of large factor matrices come from memory: ask for them early
                    ahead_p = user_codes[n + _PREFETCH_AHEAD]
                    ahead_q = item_codes[n + _PREFETCH_AHEAD]
                    prefetch_row(U, ahead_p)
                    prefetch_row(g_U, ahead_p)
                    prefetch_row(V, ahead_q)
                    prefetch_row(g_V, ahead_q)
                p = user_codes[n]
                q = item_codes[n]
                if p < 0 or p >= n_rows_U or q < 0 or q >= n_rows_V:
                    raise IndexError("GaussianPairLogp: user or item code out of range")
                acc = mu
                if biases:
                    acc += user_bias[p] + item_bias[q]
                for k in range(n_factors):
                    acc += U[p, k] * V[q, k]
                e = ratings[n] - acc
                sse += e * e
                w = e * inv_var
                g_mu += w
                if biases:
                    g_b[p] += w
                    g_c[q] += w
                # two loops: the stores into g_U cannot alias the loads for g_V, so both vectorise
                for k in range(n_factors):
                    g_U[p, k] += w * V[q, k]
                for k in range(n_factors):
                    g_V[q, k] += w * U[p, k]
            logp, g_sigma = finish(n_pairs, sse, sigma)
            return logp, g_mu, g_U, g_V, g_b, g_c, g_sigma

        return kernel

    def make_row_kernel(biases, n_factors):
        # For a number of factors known when compiling. The biases ride along as two extra
        # columns, U' = [U, b, 1] and V' = [V, 1, c], padded with zeros to a multiple of four
        # (10 factors: 12 columns, three AVX2 registers), so that the dot product, the
        # residual's weight and both gradients are whole-row SIMD operations (slp_njit). The
        # pairs come in runs of one user (rating_likelihood's order): the user's row and its
        # gradient stay in registers (stack_buffer) for the run, and only the item's gradient
        # row is updated in memory. Any order gives the same numbers; runs make it fast.
        # ML-100K u1, 10 factors: the loop alone 1.03 -> 0.47-0.55 ms; BPMF's log-density +
        # gradient 1.42 -> 0.74-0.79 ms (bench/logp_speed.py).
        K = n_factors
        W = -(-(K + 2 if biases else K) // 4) * 4

        # plain loops rather than slice assignments: numba took 3x longer to compile those
        @numba_njit
        def padded(M, bias, bias_col, one_col):
            """``M`` in ``W`` columns, with its bias and a column of ones when ``biases``."""
            out = np.zeros((M.shape[0], W), dtype=np.float64)
            for r in range(M.shape[0]):
                for k in range(K):
                    out[r, k] = M[r, k]
                if biases:
                    out[r, bias_col] = bias[r]
                    out[r, one_col] = 1.0
            return out

        @numba_njit
        def unpadded(G, bias_col):
            """The factor columns of padded gradient rows ``G``, and their bias column."""
            g = np.empty((G.shape[0], K), dtype=np.float64)
            g_bias = np.empty(G.shape[0] if biases else 0, dtype=np.float64)
            for r in range(G.shape[0]):
                for k in range(K):
                    g[r, k] = G[r, k]
                if biases:
                    g_bias[r] = G[r, bias_col]
            return g, g_bias

        @slp_njit
        def kernel(ratings, mu, U, V, user_bias, item_bias, sigma, user_codes, item_codes):
            n_pairs = ratings.shape[0]
            n_rows_U, n_rows_V = U.shape[0], V.shape[0]
            if U.shape[1] != K or V.shape[1] != K:
                raise ValueError(
                    "GaussianPairLogp: U or V has another number of columns than its type"
                )
            if user_codes.shape[0] != n_pairs or item_codes.shape[0] != n_pairs:
                raise ValueError(
                    "GaussianPairLogp: ratings, user_codes and item_codes differ in length"
                )
            if biases and (user_bias.shape[0] != n_rows_U or item_bias.shape[0] != n_rows_V):
                raise ValueError(
                    "GaussianPairLogp: user_bias (item_bias) length differs from the rows of U (V)"
                )
            A = padded(U, user_bias, K, K + 1)  # [U, b, 1, 0...]
            B = padded(V, item_bias, K + 1, K)  # [V, 1, c, 0...]
            g_A = np.zeros((n_rows_U, W), dtype=np.float64)
            g_B = np.zeros((n_rows_V, W), dtype=np.float64)
            row = carray(stack_buffer(W), W)
            g_row = carray(stack_buffer(W), W)
            inv_var = 1.0 / (sigma * sigma) if sigma > 0 else 0.0
            sse = 0.0
            g_mu = 0.0
            prefetch = (n_rows_U + n_rows_V) * W * 8 > CACHE_BYTES
            n = 0
            while n < n_pairs:
                p = user_codes[n]
                if p < 0 or p >= n_rows_U:
                    raise IndexError("GaussianPairLogp: user or item code out of range")
                for k in range(W):
                    row[k] = A[p, k]
                    g_row[k] = 0.0
                while n < n_pairs and user_codes[n] == p:
                    if prefetch and n + _PREFETCH_AHEAD < n_pairs:
                        ahead_q = item_codes[n + _PREFETCH_AHEAD]
                        prefetch_row(B, ahead_q)
                        prefetch_row(g_B, ahead_q)
                        # short runs (many item blocks) start from a random user row too
                        ahead_p = user_codes[n + _PREFETCH_AHEAD]
                        prefetch_row(A, ahead_p)
                        prefetch_row(g_A, ahead_p)
                    q = item_codes[n]
                    if q < 0 or q >= n_rows_V:
                        raise IndexError("GaussianPairLogp: user or item code out of range")
                    dot = 0.0
                    for k in range(W):
                        dot += row[k] * B[q, k]
                    e = ratings[n] - mu - dot
                    sse += e * e
                    w = e * inv_var
                    g_mu += w
                    for k in range(W):
                        g_row[k] += w * B[q, k]
                    for k in range(W):
                        g_B[q, k] += w * row[k]
                    n += 1
                for k in range(W):
                    g_A[p, k] += g_row[k]
            g_U, g_b = unpadded(g_A, K)
            g_V, g_c = unpadded(g_B, K + 1)
            logp, g_sigma = finish(n_pairs, sse, sigma)
            return logp, g_mu, g_U, g_V, g_b, g_c, g_sigma

        return kernel

    def make_functions(fixed_factors):
        if fixed_factors > 0:
            kernel_with_biases = make_row_kernel(True, fixed_factors)
            kernel_without_biases = make_row_kernel(False, fixed_factors)
        else:
            kernel_with_biases = make_kernel(True)
            kernel_without_biases = make_kernel(False)

        @numba_njit
        def with_biases(ratings, mu, U, V, user_bias, item_bias, sigma, user_codes, item_codes):
            logp, g_mu, g_U, g_V, g_b, g_c, g_sigma = kernel_with_biases(
                ratings, mu.item(), U, V, user_bias, item_bias, sigma.item(), user_codes, item_codes
            )
            return np.asarray(logp), np.asarray(g_mu), g_U, g_V, g_b, g_c, np.asarray(g_sigma)

        @numba_njit
        def without_biases(ratings, mu, U, V, sigma, user_codes, item_codes):
            no_bias = np.zeros(0, dtype=np.float64)
            logp, g_mu, g_U, g_V, _, _, g_sigma = kernel_without_biases(
                ratings, mu.item(), U, V, no_bias, no_bias, sigma.item(), user_codes, item_codes
            )
            return np.asarray(logp), np.asarray(g_mu), g_U, g_V, np.asarray(g_sigma)

        return {True: with_biases, False: without_biases}

    functions = {}

    @register_funcify_default_op_cache_key(GaussianPairLogp)
    def _funcify_gaussian_pair_logp(op, node=None, **kwargs):
        # specialise on the number of factors when U's type knows it (PyMC models with dims)
        static = None if node is None else node.inputs[2].type.shape[1]
        fixed_factors = static if static is not None and 0 < static <= _MAX_FIXED_FACTORS else 0
        if fixed_factors not in functions:
            functions[fixed_factors] = make_functions(fixed_factors)
        # the integer enters PyTensor's numba cache key, which ignores the function's code:
        # a hash of the kernels' source, then the specialisation
        return functions[fixed_factors][op.biases], _kernel_source_key() * 1000 + fixed_factors


@functools.cache
def _kernel_source_key():
    """A hash of the numba kernels' source: PyTensor's numba cache key (see ``source_key``)."""
    from bpmf.kernels import order, simd

    return source_key(_register_numba, order, simd)


def _register_jax():
    import jax.numpy as jnp
    from pytensor.link.jax.dispatch import jax_funcify

    log_2pi = _LOG_2PI

    def _logp_and_grads(ratings, mu, U, V, user_bias, item_bias, sigma, user_codes, item_codes):
        n_pairs = ratings.shape[0]
        # jit cannot raise on values: an out-of-range code poisons every output with NaN
        bad = jnp.any(
            (user_codes < 0)
            | (user_codes >= U.shape[0])
            | (item_codes < 0)
            | (item_codes >= V.shape[0])
        )
        U_rows = U[user_codes]
        V_rows = V[item_codes]
        prediction = mu + jnp.einsum("nk,nk->n", U_rows, V_rows)
        if user_bias is not None:
            prediction = prediction + user_bias[user_codes] + item_bias[item_codes]
        residual = ratings - prediction
        sse = residual @ residual
        positive = sigma > 0
        safe_sigma = jnp.where(positive, sigma, 1.0)
        inv_var = jnp.where(positive, 1.0 / (safe_sigma * safe_sigma), 0.0)
        logp = jnp.where(
            positive,
            -n_pairs * jnp.log(safe_sigma) - 0.5 * n_pairs * log_2pi - 0.5 * sse * inv_var,
            -jnp.inf,
        )
        g_sigma = jnp.where(positive, -n_pairs / safe_sigma + sse * inv_var / safe_sigma, 0.0)
        weight = residual * inv_var
        results = [
            logp,
            weight.sum(),
            jnp.zeros_like(U).at[user_codes].add(weight[:, None] * V_rows),
            jnp.zeros_like(V).at[item_codes].add(weight[:, None] * U_rows),
        ]
        if user_bias is not None:
            results.append(jnp.zeros_like(user_bias).at[user_codes].add(weight))
            results.append(jnp.zeros_like(item_bias).at[item_codes].add(weight))
        results.append(g_sigma)
        return tuple(jnp.where(bad, jnp.nan, x) for x in results)

    @jax_funcify.register(GaussianPairLogp)
    def _jax_gaussian_pair_logp(op, node=None, **kwargs):
        if op.biases:
            return _logp_and_grads

        def without_biases(ratings, mu, U, V, sigma, user_codes, item_codes):
            return _logp_and_grads(ratings, mu, U, V, None, None, sigma, user_codes, item_codes)

        return without_biases


def rating_likelihood(train, mu, U, V, user_bias, item_bias, sigma, fused=True, offset=None):
    """Add the Gaussian likelihood of ``train``'s ratings, named ``rating``, to the current model.

    ``fused=True`` adds one :class:`GaussianPairLogp` as a ``pm.Potential``, over the pairs in
    :func:`user_run_order`; ``fused=False`` adds the textbook
    ``pm.Normal("rating", ..., observed=...)`` over ``pm.Data`` codes (dims ``obs``), the same
    density built from plain nodes. ``user_bias`` and ``item_bias`` are both given or both None.
    ``offset`` (a tensor, one term per rating in ``train``'s order, e.g. the day biases) is
    added to every mean; the fused Op has no such input, so it takes the plain graph.
    """
    import pymc as pm

    from bpmf.kernels.pair_dot import pair_dot

    if fused and offset is None:
        order = user_run_order(
            train.user_codes, train.item_codes, train.n_users, train.n_items,
            n_factors=U.type.shape[1] or 10,
        )
        return pm.Potential("rating", gaussian_pair_logp(
            train.values[order], mu, U, V, user_bias, item_bias, sigma,
            train.user_codes[order], train.item_codes[order],
        ))
    user_codes = pm.Data("user_codes", train.user_codes, dims="obs")
    item_codes = pm.Data("item_codes", train.item_codes, dims="obs")
    expected = mu + pair_dot(U, V, user_codes, item_codes)
    if user_bias is not None:
        expected = expected + user_bias[user_codes] + item_bias[item_codes]
    if offset is not None:
        expected = expected + offset
    return pm.Normal("rating", expected, sigma, observed=train.values, dims="obs")


# the Ops call this from make_node (first use)
_register_backends = register_once(_register_numba, _register_jax)
