"""Conditional draws (or conditional means) of every row of one side, shared by the Gibbs
samplers and alternating least squares.

The rows are drawn by blocks of rows (:func:`bpmf.kernels.rows.row_blocks`), cut by their
number of ratings alone; with ``threads > 1`` the blocks are spread over numba's threads. Each
row's standard normals are a function of the row and of one key per side and sweep drawn from
the chain's generator (:mod:`bpmf.kernels.normals`), made where the row is drawn, and the
blocks' residual sums are added in block order, so the draws are bit for bit the same with
one thread or many.
"""

import contextlib
import os

import numba
import numpy as np

from bpmf.kernels.ordinal import linear_predictor
from bpmf.kernels.rows import (
    aligned_zeros,
    csr_pair,
    row_blocks,
    sample_rows,
    sample_rows_parallel,
)

__all__ = [
    "PARALLEL_MIN_RATINGS",
    "SINGLE_PRECISION_MIN_BYTES",
    "partner_dtype",
    "available_cores",
    "chain_layouts",
    "linear_predictors",
    "numba_threads",
    "row_prior",
    "sample_side",
    "workspace",
]

#: Below this many ratings a side's rows are drawn on one thread whatever ``threads`` says:
#: at 10^5 ratings a sweep took 0.078 s on two threads against 0.014 s on one (development
#: machine, busy), the start and the join of each parallel loop costing more than the rows.
PARALLEL_MIN_RATINGS = 500_000


#: From this size of a side's partner rows in double precision (the other side's factors, a
#: one and its biases), the row kernel reads them from a single-precision copy. They no longer
#: fit a core's L2 cache (2 MiB here), every rating's partner row then comes from L3 or from
#: memory, and half the bytes per row is the kernel's main lever: with 10^6 partner rows, 43
#: against 28 ns per rating on the development machine. The sums, the factorisation and the
#: draws stay in double precision; the partner values are rounded to about 7 significant
#: digits (a relative change of 6e-8, far below the posterior's spread).
SINGLE_PRECISION_MIN_BYTES = 8 << 20


def partner_dtype(n_other, dim):
    """The dtype of the partner rows ``X`` (``n_other`` rows of ``dim + 1`` values) that
    :func:`sample_side` hands the row kernel: float32 from
    :data:`SINGLE_PRECISION_MIN_BYTES`, else float64."""
    return np.float32 if n_other * (dim + 1) * 8 >= SINGLE_PRECISION_MIN_BYTES else np.float64


def chain_layouts(user_codes, item_codes, csrs):
    """For a step that rewrites the targets of the regression every sweep: the position in
    the ratings' order of each entry of the user-ordered and of the item-ordered layout, and
    a copy of the shared layouts ``csrs`` (:func:`bpmf.kernels.rows.csr_pair`) with the
    chain's own value arrays."""
    user_perm, item_perm = csr_pair(
        user_codes, item_codes, np.arange(len(user_codes), dtype=float),
        csrs[0][0].shape[0] - 1, csrs[1][0].shape[0] - 1,
    )
    orders = (user_perm[2].astype(np.int64), item_perm[2].astype(np.int64))
    return orders, tuple((indptr, partners, values.copy()) for indptr, partners, values in csrs)


def linear_predictors(state, biases, user_codes, item_codes, out):
    """Into ``out``: each rating's ``mu + b_u + c_i + (U_u + o_u) . (V_i + o_i)`` at ``state``
    (``o`` the implicit offsets ``state["offset_U"]``, ``state["offset_V"]`` where present)."""
    U, V = state["U"], state["V"]
    if state.get("offset_U") is not None:
        U = U + state["offset_U"]
    if state.get("offset_V") is not None:
        V = V + state["offset_V"]
    empty = np.zeros(0)
    linear_predictor(
        float(state["mu"]), np.ascontiguousarray(U), np.ascontiguousarray(V),
        state["user_bias"] if biases else empty, state["item_bias"] if biases else empty,
        user_codes, item_codes, out,
    )


def available_cores():
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@contextlib.contextmanager
def released(lock):
    """Release ``lock`` (held by the caller) for the block, then take it back; nothing for
    None.

    Chains that run in threads hold one such lock through the Python parts of their sweeps
    and release it only around the compiled kernels, which run without the GIL. A chain's
    Python part then runs to its end: without the lock, every numpy call that releases the
    GIL inside it (a matrix product) lets another chain's Python part in, and the two
    interleave while neither draws rows (on ML-100K u1, two chains took 27-38% longer
    than one; with the lock and compiled moves, about 5%).
    """
    if lock is None:
        yield
        return
    lock.release()
    try:
        yield
    finally:
        lock.acquire()


@contextlib.contextmanager
def numba_threads(threads):
    """Run numba's parallel loops of this thread on ``threads`` threads (at most numba's
    pool size) inside the block; numba's setting is per thread, so chains in other threads
    keep theirs."""
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def workspace(n_users, n_items, D, biases):
    """Buffers one chain's sweeps reuse, so that no sweep allocates fresh memory.

    Per side: ``X``, the other side's rows with a column of ones for the bias and a last
    column with the other side's biases (zero without biases), aligned to cache lines, in
    the precision of :func:`partner_dtype`;
    ``rows`` for the drawn (factor, bias) rows, ``z`` for zero noise (conditional means) and
    an empty ``z`` of no rows (normals drawn in the kernel), and ``row_sums`` for each row's
    residual sum.
    """
    dim = D + 1 if biases else D
    work = {}
    for side, n_rows, n_other in (("U", n_users, n_items), ("V", n_items, n_users)):
        X = aligned_zeros((n_other, dim + 1), partner_dtype(n_other, dim))
        if biases:
            X[:, D] = 1.0
        work[side] = {
            "X": X,
            "rows": np.empty((n_rows, dim)),
            "z": np.zeros((n_rows, dim)),
            "no_z": np.empty((0, dim)),
            "row_sums": np.zeros(n_rows),
        }
    return work


_SIDES = {
    "U": ("V", "user_bias", "item_bias"),
    "V": ("U", "item_bias", "user_bias"),
}


def row_prior(state, side, biases, n_rows):
    """The Gaussian prior of the rows ``(<side> + offset, bias)`` that :func:`sample_side`
    draws: their precision ``(dim, dim)`` and their means, one row shared by every row
    ``(1, dim)`` or one per row ``(n_rows, dim)`` when a hook of ``state`` makes them differ.

    The precision is ``row_precision_<side>`` (factors and bias correlated a priori) or
    ``Lambda_<side>`` with the bias's precision; the means are ``mu_<side>`` or
    ``row_mean_<side>``, plus ``offset_<side>``, and ``row_mean_<bias>`` for the bias (zero
    without it).
    """
    _, bias, _ = _SIDES[side]
    D = state[f"Lambda_{side}"].shape[0]
    dim = D + 1 if biases else D
    if f"row_precision_{side}" in state:  # factors and bias correlated a priori
        prec = state[f"row_precision_{side}"]
    else:
        prec = np.zeros((dim, dim))
        prec[:D, :D] = state[f"Lambda_{side}"]
        if biases:
            prec[D, D] = state[f"{bias}_precision"]
    row_mean = state.get(f"row_mean_{side}")
    own_offset = state.get(f"offset_{side}")
    # ``row_mean_<bias>`` (n_rows,): a prior mean per bias (e.g. its regression on features)
    bias_mean = state.get(f"row_mean_{bias}") if biases else None
    if row_mean is None and own_offset is None and bias_mean is None:
        mean = np.zeros((1, dim))
        mean[0, :D] = state[f"mu_{side}"]
        return prec, mean
    mean = np.zeros((n_rows, dim))
    mean[:, :D] = state[f"mu_{side}"] if row_mean is None else row_mean
    if own_offset is not None:
        mean[:, :D] += own_offset
    if bias_mean is not None:
        mean[:, D] = bias_mean
    return prec, mean


def sample_side(
    state, side, csr, biases, work, rng, residuals, noise=True, threads=1, overrelax=0.0,
    row_sums=None, phase_lock=None,
):
    """Draw every row of ``state[side]`` (and its bias) jointly, given the other side.

    With ``residuals``, returns the sum and the sum of squares of the residuals
    ``r - mu - b - c - U.V`` under the new rows. ``noise=False`` gives the conditional means
    instead of draws (a step of alternating least squares). ``threads > 1`` draws the blocks
    of rows in parallel when there are at least :data:`PARALLEL_MIN_RATINGS` ratings; the
    result does not depend on ``threads``. ``overrelax`` in ``(-1, 1)`` overrelaxes each row's
    draw about its conditional mean (:func:`bpmf.kernels.rows.sample_rows`; 0: a plain draw).
    With ``residuals``, an array ``row_sums`` (n_rows) receives each row's residual sum.
    With ``work["sqrt_weights"]`` (one per rating of ``csr``), each rating has the noise
    precision ``tau * w_n`` and the sums returned are weighted by ``w_n``.
    ``phase_lock``: a lock the calling chain holds, released while the kernel runs
    (:func:`released`).
    """
    other, bias, other_bias = _SIDES[side]
    indptr, partners, ratings = csr
    D = state[other].shape[1]
    X, rows, z = work["X"], work["rows"], work["z"]
    # Two hooks for model extensions, both optional arrays in ``state``:
    # ``row_mean_<side>`` (n_rows, D): a prior mean per row (e.g. a regression on side
    # features) instead of the shared ``mu_<side>``; ``offset_<side>`` (n_rows, D): a known
    # addition to each row's factor vector in the likelihood (e.g. implicit feedback), so
    # that the ratings see ``<side> + offset``. The row is drawn as ``w = row + offset``
    # (prior mean shifted by the offset) and the offset taken off again.
    own_offset = state.get(f"offset_{side}")
    other_offset = state.get(f"offset_{other}")
    X[:, :D] = state[other] if other_offset is None else state[other] + other_offset
    if biases:
        X[:, -1] = state[other_bias]
    prec, mean = row_prior(state, side, biases, len(indptr) - 1)
    key = 0
    if noise:  # the kernel draws each row's normals from (key, row)
        key = int(rng.integers(2**63))
        z = work["no_z"]
    else:
        overrelax = 0.0
    if overrelax:
        rows[:, :D] = state[side] if own_offset is None else state[side] + own_offset
        if biases:
            rows[:, D] = state[bias]
    blocks = work.get("blocks")
    if blocks is None or blocks[-1] != len(indptr) - 1:
        blocks = work["blocks"] = row_blocks(indptr)
    args = (
        indptr,
        partners,
        ratings,
        X,
        state["mu"],
        prec,
        mean @ prec.T,
        state["tau"],
        z,
        rows,
        residuals,
        blocks,
        float(overrelax),
        np.empty(0) if row_sums is None else row_sums,
        key,
        # per-rating noise weights (the noise-weights step), in this side's rating order
        work.get("sqrt_weights", np.empty(0)),
    )
    with released(phase_lock):
        if threads > 1 and len(ratings) >= PARALLEL_MIN_RATINGS:
            with numba_threads(threads):
                sums = sample_rows_parallel(*args)
        else:
            sums = sample_rows(*args)
    state[side] = rows[:, :D].copy() if own_offset is None else rows[:, :D] - own_offset
    if biases:
        state[bias] = rows[:, D].copy()
    return sums
