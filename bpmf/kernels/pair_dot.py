"""Fused PyTensor Ops for the sparse bilinear term of matrix factorisation.

The term ``y[n] = sum_k U[u[n], k] * V[i[n], k]`` over the ``N`` observed (user, item) pairs is
the hot spot of every model in :mod:`bpmf.models`; :func:`pair_dot` builds it for the
textbook likelihood and :func:`pair_dot_naive` keeps the plain-indexing graph for tests and
benchmarks. Built from plain PyTensor indexing it
materialises two ``(N, D)`` gathers, an ``(N, D)`` product and, in the gradient, two ``(N, D)``
scatter-adds through ``AdvancedIncSubtensor``. The Ops here do the same work in one pass over
the pairs without any ``(N, D)`` temporary:

* :class:`PairDot` computes ``y``;
* :class:`PairDotGrad` computes its vector-Jacobian product, the scatter-adds
  ``gU[r] = sum_{n: u[n] = r} g[n] V[i[n]]`` and ``gV[c] = sum_{n: i[n] = c} g[n] U[u[n]]``.
  It is itself differentiable (it is bilinear in ``(U, V)`` and linear in ``g``), so Hessian
  products work too.

Both Ops have a numpy ``perform`` (reference implementation, used by the Python linker), C code
(the default ``FAST_RUN`` / ``cvm`` backend), a numba implementation (the ``NUMBA`` mode, used by
nutpie) and a JAX implementation (the ``JAX`` mode, used by numpyro / blackjax). The numba and
JAX registrations happen on first use of an Op so that importing :mod:`bpmf` imports neither.

Index arrays must hold valid row positions: ``0 <= u[n] < U.shape[0]`` and
``0 <= i[n] < V.shape[0]``; every backend raises ``IndexError`` otherwise (no negative-index
wrap-around, which in a rating model would silently mean a different user).
"""

import hashlib
import importlib.util
import inspect

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType, disconnected_type
from pytensor.graph.basic import Apply
from pytensor.link.c.op import COp
from pytensor.scalar import upcast

__all__ = [
    "PairDot",
    "PairDotGrad",
    "connected",
    "pair_dot",
    "pair_dot_naive",
    "register_once",
    "source_key",
]

_C_VERSION = (2,)


def _check_indices(U, V, user_codes, item_codes):
    if U.shape[1] != V.shape[1]:
        raise ValueError(f"U has {U.shape[1]} columns but V has {V.shape[1]}")
    if user_codes.shape != item_codes.shape:
        raise ValueError(
            f"user_codes has shape {user_codes.shape} but item_codes has {item_codes.shape}"
        )
    if user_codes.size:
        if user_codes.min() < 0 or user_codes.max() >= U.shape[0]:
            raise IndexError(f"user code out of range [0, {U.shape[0]})")
        if item_codes.min() < 0 or item_codes.max() >= V.shape[0]:
            raise IndexError(f"item code out of range [0, {V.shape[0]})")


def connected(variable):
    """Whether a gradient input is a real tensor (not None, not disconnected)."""
    return variable is not None and not isinstance(variable.type, DisconnectedType)


def _as_inputs(U, V, user_codes, item_codes):
    U = pt.as_tensor_variable(U)
    V = pt.as_tensor_variable(V)
    user_codes = pt.as_tensor_variable(user_codes)
    item_codes = pt.as_tensor_variable(item_codes)
    if U.ndim != 2 or V.ndim != 2:
        raise TypeError(f"U and V must be matrices, got ndim {U.ndim} and {V.ndim}")
    if user_codes.ndim != 1 or item_codes.ndim != 1:
        raise TypeError("user_codes and item_codes must be vectors")
    for codes in (user_codes, item_codes):
        if not codes.dtype.startswith(("int", "uint")):
            raise TypeError(f"codes must be integers, got dtype {codes.dtype}")
    dtype = upcast(U.dtype, V.dtype)
    if dtype not in ("float32", "float64"):
        dtype = "float64"
    return U.astype(dtype), V.astype(dtype), user_codes, item_codes, dtype


# --------------------------------------------------------------------------------------------
# C code shared by the two Ops: loops over pairs with byte strides (inputs may be views).
# --------------------------------------------------------------------------------------------

_C_PROLOGUE = """
    npy_intp n_pairs = PyArray_DIMS({u})[0];
    npy_intp n_rows_U = PyArray_DIMS({U})[0];
    npy_intp n_rows_V = PyArray_DIMS({V})[0];
    npy_intp n_factors = PyArray_DIMS({U})[1];
    if (PyArray_DIMS({V})[1] != n_factors) {{
        PyErr_SetString(PyExc_ValueError, "PairDot: U and V have different numbers of columns");
        {fail}
    }}
    if (PyArray_DIMS({i})[0] != n_pairs) {{
        PyErr_SetString(PyExc_ValueError, "PairDot: user_codes and item_codes differ in length");
        {fail}
    }}
    /* contiguous views (copies only when the inputs are strided) so the loops vectorise */
    PyArrayObject *U_c = PyArray_GETCONTIGUOUS({U});
    PyArrayObject *V_c = PyArray_GETCONTIGUOUS({V});
    PyArrayObject *u_c = PyArray_GETCONTIGUOUS({u});
    PyArrayObject *i_c = PyArray_GETCONTIGUOUS({i});
    if (!U_c || !V_c || !u_c || !i_c) {{
        Py_XDECREF(U_c); Py_XDECREF(V_c); Py_XDECREF(u_c); Py_XDECREF(i_c);
        {fail}
    }}
    const dtype_{U} *__restrict__ U_data = (const dtype_{U} *) PyArray_DATA(U_c);
    const dtype_{V} *__restrict__ V_data = (const dtype_{V} *) PyArray_DATA(V_c);
    const dtype_{u} *__restrict__ u_data = (const dtype_{u} *) PyArray_DATA(u_c);
    const dtype_{i} *__restrict__ i_data = (const dtype_{i} *) PyArray_DATA(i_c);
    int bad_index = 0;
"""

_C_EPILOGUE = """
    Py_DECREF(U_c); Py_DECREF(V_c); Py_DECREF(u_c); Py_DECREF(i_c);
"""


class PairDot(COp):
    """``y[n] = sum_k U[u[n], k] V[i[n], k]``: the fused sparse bilinear term.

    Inputs are ``U`` (n_users, D), ``V`` (n_items, D) of one float dtype and integer vectors
    ``user_codes``, ``item_codes`` of length N; the output is a vector of length N.
    """

    __props__ = ()

    def make_node(self, U, V, user_codes, item_codes):
        _register_backends()
        U, V, user_codes, item_codes, dtype = _as_inputs(U, V, user_codes, item_codes)
        out = pt.tensor(dtype=dtype, shape=(user_codes.type.shape[0],))
        return Apply(self, [U, V, user_codes, item_codes], [out])

    def perform(self, node, inputs, output_storage):
        U, V, user_codes, item_codes = inputs
        _check_indices(U, V, user_codes, item_codes)
        output_storage[0][0] = np.einsum("nk,nk->n", U[user_codes], V[item_codes])

    def infer_shape(self, fgraph, node, shapes):
        return [(shapes[2][0],)]

    def connection_pattern(self, node):
        return [[True], [True], [False], [False]]

    def pullback(self, inputs, outputs, cotangents):
        U, V, user_codes, item_codes = inputs
        (g,) = cotangents
        gU, gV = PairDotGrad()(U, V, user_codes, item_codes, g)
        return [gU, gV, disconnected_type(), disconnected_type()]

    def pushforward(self, inputs, outputs, tangents):
        U, V, user_codes, item_codes = inputs
        tU, tV = tangents[:2]
        terms = []
        if connected(tU):
            terms.append(PairDot()(tU, V, user_codes, item_codes))
        if connected(tV):
            terms.append(PairDot()(U, tV, user_codes, item_codes))
        if not terms:
            return [disconnected_type()]
        return [sum(terms[1:], terms[0])]

    def c_code_cache_version(self):
        return _C_VERSION

    def c_code(self, node, name, inputs, outputs, sub):
        U, V, u, i = inputs
        (out,) = outputs
        fail = sub["fail"]
        prologue = _C_PROLOGUE.format(U=U, V=V, u=u, i=i, fail=fail)
        cleanup_fail = _C_EPILOGUE + fail
        return f"""
        {{
        {prologue}
        if ({out} == NULL || PyArray_NDIM({out}) != 1 || PyArray_DIMS({out})[0] != n_pairs
            || !PyArray_IS_C_CONTIGUOUS({out})) {{
            Py_XDECREF({out});
            npy_intp dims[1] = {{n_pairs}};
            {out} = (PyArrayObject *) PyArray_EMPTY(1, dims, PyArray_TYPE({U}), 0);
            if ({out} == NULL) {{ {cleanup_fail} }}
        }}
        dtype_{out} *__restrict__ y = (dtype_{out} *) PyArray_DATA({out});
        for (npy_intp n = 0; n < n_pairs; ++n) {{
            npy_intp r = (npy_intp) u_data[n];
            npy_intp c = (npy_intp) i_data[n];
            if (r < 0 || r >= n_rows_U || c < 0 || c >= n_rows_V) {{ bad_index = 1; break; }}
            const dtype_{U} *__restrict__ Ur = U_data + r * n_factors;
            const dtype_{V} *__restrict__ Vc = V_data + c * n_factors;
            dtype_{out} acc = 0;
            for (npy_intp k = 0; k < n_factors; ++k) acc += Ur[k] * Vc[k];
            y[n] = acc;
        }}
        {_C_EPILOGUE}
        if (bad_index) {{
            PyErr_SetString(PyExc_IndexError, "PairDot: user or item code out of range");
            {fail}
        }}
        }}
        """


class PairDotGrad(COp):
    """Vector-Jacobian product of :class:`PairDot`: scatter-adds of ``g``-weighted rows.

    ``PairDotGrad()(U, V, u, i, g)`` returns ``(gU, gV)`` with ``gU`` shaped like ``U``,
    ``gU[r] = sum_{n: u[n]=r} g[n] V[i[n]]``, and ``gV[c] = sum_{n: i[n]=c} g[n] U[u[n]]``.
    """

    __props__ = ()

    def make_node(self, U, V, user_codes, item_codes, g):
        _register_backends()
        U, V, user_codes, item_codes, dtype = _as_inputs(U, V, user_codes, item_codes)
        g = pt.as_tensor_variable(g).astype(dtype)
        if g.ndim != 1:
            raise TypeError("g must be a vector")
        outputs = [
            pt.tensor(dtype=dtype, shape=U.type.shape),
            pt.tensor(dtype=dtype, shape=V.type.shape),
        ]
        return Apply(self, [U, V, user_codes, item_codes, g], outputs)

    def perform(self, node, inputs, output_storage):
        U, V, user_codes, item_codes, g = inputs
        _check_indices(U, V, user_codes, item_codes)
        if g.shape != user_codes.shape:
            raise ValueError(f"g has shape {g.shape} but the codes have {user_codes.shape}")
        gU = np.zeros_like(U)
        gV = np.zeros_like(V)
        np.add.at(gU, user_codes, g[:, None] * V[item_codes])
        np.add.at(gV, item_codes, g[:, None] * U[user_codes])
        output_storage[0][0] = gU
        output_storage[1][0] = gV

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[0], shapes[1]]

    def connection_pattern(self, node):
        return [[False, True], [True, False], [False, False], [False, False], [True, True]]

    def pullback(self, inputs, outputs, cotangents):
        # <aU, gU> + <aV, gV> = sum_n g[n] (aU[u_n].V[i_n] + U[u_n].aV[i_n])
        U, V, user_codes, item_codes, g = inputs
        aU, aV = cotangents
        has_aU = connected(aU)
        has_aV = connected(aV)
        grad_U = grad_V = grad_g = None
        if has_aU:
            # d/dV of sum_n g_n aU[u_n].V[i_n]  is the item scatter of g * aU[u]
            _, grad_V = PairDotGrad()(aU, V, user_codes, item_codes, g)
            grad_g = PairDot()(aU, V, user_codes, item_codes)
        if has_aV:
            grad_U, _ = PairDotGrad()(U, aV, user_codes, item_codes, g)
            term = PairDot()(U, aV, user_codes, item_codes)
            grad_g = term if grad_g is None else grad_g + term
        return [
            disconnected_type() if grad_U is None else grad_U,
            disconnected_type() if grad_V is None else grad_V,
            disconnected_type(),
            disconnected_type(),
            disconnected_type() if grad_g is None else grad_g,
        ]

    def c_code_cache_version(self):
        return _C_VERSION

    def c_code(self, node, name, inputs, outputs, sub):
        U, V, u, i, g = inputs
        gU, gV = outputs
        fail = sub["fail"]
        prologue = _C_PROLOGUE.format(U=U, V=V, u=u, i=i, fail=fail)
        cleanup_fail = _C_EPILOGUE + fail
        alloc = []
        for out, src in ((gU, U), (gV, V)):
            alloc.append(f"""
            if ({out} == NULL || PyArray_NDIM({out}) != 2
                || PyArray_DIMS({out})[0] != PyArray_DIMS({src})[0]
                || PyArray_DIMS({out})[1] != PyArray_DIMS({src})[1]
                || !PyArray_IS_C_CONTIGUOUS({out})) {{
                Py_XDECREF({out});
                {out} = (PyArrayObject *) PyArray_ZEROS(2, PyArray_DIMS({src}),
                                                        PyArray_TYPE({src}), 0);
                if ({out} == NULL) {{ {cleanup_fail} }}
            }} else {{
                memset(PyArray_DATA({out}), 0, PyArray_NBYTES({out}));
            }}
            """)
        alloc = "\n".join(alloc)
        return f"""
        {{
        {prologue}
        if (PyArray_DIMS({g})[0] != n_pairs) {{
            PyErr_SetString(PyExc_ValueError, "PairDotGrad: g and the codes differ in length");
            {cleanup_fail}
        }}
        {alloc}
        const char *g_data = (const char *) PyArray_DATA({g});
        npy_intp g_s = PyArray_STRIDES({g})[0];
        dtype_{gU} *__restrict__ gU_data = (dtype_{gU} *) PyArray_DATA({gU});
        dtype_{gV} *__restrict__ gV_data = (dtype_{gV} *) PyArray_DATA({gV});
        for (npy_intp n = 0; n < n_pairs; ++n) {{
            npy_intp r = (npy_intp) u_data[n];
            npy_intp c = (npy_intp) i_data[n];
            if (r < 0 || r >= n_rows_U || c < 0 || c >= n_rows_V) {{ bad_index = 1; break; }}
            dtype_{g} w = *(const dtype_{g} *)(g_data + n * g_s);
            const dtype_{U} *__restrict__ Ur = U_data + r * n_factors;
            const dtype_{V} *__restrict__ Vc = V_data + c * n_factors;
            dtype_{gU} *__restrict__ gUr = gU_data + r * n_factors;
            dtype_{gV} *__restrict__ gVc = gV_data + c * n_factors;
            for (npy_intp k = 0; k < n_factors; ++k) gUr[k] += w * Vc[k];
            for (npy_intp k = 0; k < n_factors; ++k) gVc[k] += w * Ur[k];
        }}
        {_C_EPILOGUE}
        if (bad_index) {{
            PyErr_SetString(PyExc_IndexError, "PairDotGrad: user or item code out of range");
            {fail}
        }}
        }}
        """


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


# --------------------------------------------------------------------------------------------
# numba and JAX backends, registered on first use
# --------------------------------------------------------------------------------------------

def register_once(register_numba, register_jax):
    """A function that runs ``register_numba()`` and, when JAX is installed, ``register_jax()``
    the first time it is called and does nothing afterwards (Ops call it from ``make_node``, so
    importing :mod:`bpmf` imports neither numba's dispatch nor JAX)."""
    done = False

    def register():
        nonlocal done
        if done:
            return
        done = True
        register_numba()
        if importlib.util.find_spec("jax") is not None:
            register_jax()

    return register


def source_key(*objects):
    """An integer that changes whenever the source of ``objects`` (functions, modules) does.

    PyTensor's numba cache finds a compiled Op by the Op and the integer its funcify returns
    only, and serves the old compiled code after an edit of the kernel unless that integer
    changes; a hash of the kernels' source makes that automatic. Falls back to 0 when the
    source files are not available.
    """
    try:
        text = "".join(inspect.getsource(obj) for obj in objects)
    except (OSError, TypeError):
        return 0
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def _register_numba():
    from pytensor.link.numba.dispatch.basic import (
        numba_njit,
        register_funcify_default_op_cache_key,
    )

    @numba_njit
    def _pair_dot(U, V, user_codes, item_codes):
        n_pairs = user_codes.shape[0]
        n_factors = U.shape[1]
        if V.shape[1] != n_factors:
            raise ValueError("PairDot: U and V have different numbers of columns")
        if item_codes.shape[0] != n_pairs:
            raise ValueError("PairDot: user_codes and item_codes differ in length")
        U = np.ascontiguousarray(U)
        V = np.ascontiguousarray(V)
        out = np.empty(n_pairs, dtype=U.dtype)
        n_rows_U, n_rows_V = U.shape[0], V.shape[0]
        for n in range(n_pairs):
            r = user_codes[n]
            c = item_codes[n]
            if r < 0 or r >= n_rows_U or c < 0 or c >= n_rows_V:
                raise IndexError("PairDot: user or item code out of range")
            acc = 0.0
            for k in range(n_factors):
                acc += U[r, k] * V[c, k]
            out[n] = acc
        return out

    @numba_njit
    def _pair_dot_grad(U, V, user_codes, item_codes, g):
        n_pairs = user_codes.shape[0]
        n_factors = U.shape[1]
        if V.shape[1] != n_factors:
            raise ValueError("PairDotGrad: U and V have different numbers of columns")
        if item_codes.shape[0] != n_pairs or g.shape[0] != n_pairs:
            raise ValueError("PairDotGrad: codes and g differ in length")
        U = np.ascontiguousarray(U)
        V = np.ascontiguousarray(V)
        gU = np.zeros(U.shape, dtype=U.dtype)
        gV = np.zeros(V.shape, dtype=V.dtype)
        n_rows_U, n_rows_V = U.shape[0], V.shape[0]
        for n in range(n_pairs):
            r = user_codes[n]
            c = item_codes[n]
            if r < 0 or r >= n_rows_U or c < 0 or c >= n_rows_V:
                raise IndexError("PairDotGrad: user or item code out of range")
            w = g[n]
            # two loops: the stores into gU cannot alias the loads for gV, so both vectorise
            for k in range(n_factors):
                gU[r, k] += w * V[c, k]
            for k in range(n_factors):
                gV[c, k] += w * U[r, k]
        return gU, gV

    key = source_key(_register_numba)  # the integer enters PyTensor's numba cache key

    @register_funcify_default_op_cache_key(PairDot)
    def _funcify_pair_dot(op, node=None, **kwargs):
        return _pair_dot, key

    @register_funcify_default_op_cache_key(PairDotGrad)
    def _funcify_pair_dot_grad(op, node=None, **kwargs):
        return _pair_dot_grad, key


def _register_jax():
    import jax.numpy as jnp
    from pytensor.link.jax.dispatch import jax_funcify

    @jax_funcify.register(PairDot)
    def _jax_pair_dot(op, node=None, **kwargs):
        def pair_dot(U, V, user_codes, item_codes):
            return jnp.einsum("nk,nk->n", U[user_codes], V[item_codes])

        return pair_dot

    @jax_funcify.register(PairDotGrad)
    def _jax_pair_dot_grad(op, node=None, **kwargs):
        def pair_dot_grad(U, V, user_codes, item_codes, g):
            gU = jnp.zeros_like(U).at[user_codes].add(g[:, None] * V[item_codes])
            gV = jnp.zeros_like(V).at[item_codes].add(g[:, None] * U[user_codes])
            return gU, gV

        return pair_dot_grad


# the Ops call this from make_node (first use)
_register_backends = register_once(_register_numba, _register_jax)
