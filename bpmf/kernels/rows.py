"""Compiled kernels of the Gibbs samplers: conditional draws of every row of one side.

Given the other side's rows, the rows of one side (a user's factor vector with its bias, or an
item's) are conditionally independent Gaussians. :func:`sample_rows` draws them all in one
pass over the ratings grouped by row (a CSR layout that :func:`csr_pair` builds once by a
radix sort); with zero noise it returns the conditional means, the ridge solutions of
alternating least squares. The rows are processed in blocks (:func:`row_blocks`, cut by
their number of ratings only), each with its own scratch buffers and prefetch stream;
:func:`sample_rows_parallel` spreads the blocks over numba's threads (``prange``) and gives
the same rows and residual sums, bit for bit, as :func:`sample_rows` on one thread. The
partner rows ``X`` may be float32 (large sides: :mod:`bpmf.inference.rows`); everything the
kernels compute from them is float64.
"""

import numpy as np
from numba import njit, prange

from bpmf.kernels.gram import add_gram, gram_rows
from bpmf.kernels.normals import row_normals
from bpmf.kernels.order import bit_length, prefetch_row, radix_sort

__all__ = [
    "CHUNK",
    "aligned_zeros",
    "csr_pair",
    "row_blocks",
    "sample_rows",
    "sample_rows_parallel",
]

# --------------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------------


# Once the other side's rows outgrow the caches (10^7 ratings: 10-20 MB), every rating reads a
# random row from memory, and the kernel would wait on each read in turn. So it works on chunks
# of a row's ratings: a gather loop copies the chunk's partner rows into a small transposed
# buffer, issuing a software prefetch for the partner row ``_PREFETCH_DISTANCE`` ratings ahead
# (the reads overlap instead of queueing: 77 ns -> 21 ns per random row of a 19 MB matrix on
# the development machine); the precision and the shift are then sums of products over that
# buffer, which vectorise, and while they compute, the prefetches run on to ``_LOOKAHEAD``
# ratings past the chunk, so the next row's reads overlap this row's arithmetic.
# ``reassoc`` lets LLVM vectorise those sums (it reorders additions: results change at the
# rounding level only); ``contract`` allows fused multiply-adds.
_FASTMATH = {"reassoc", "contract"}
CHUNK = 256  # ratings gathered at a time: a (D+1) x 256 buffer stays in the L1/L2 cache
_PREFETCH_DISTANCE = 16  # ratings ahead; 8 was slower at 10^7 ratings
_LOOKAHEAD = 32  # 16, 48 and 64 were 5-10% slower at 10^7 ratings (noisy, shared machine)
# Below this size the partner rows stay in the L2 cache and prefetches only cost instructions
# (ML-100K u1, 161 KB: 7% of the row sweep)
PREFETCH_MIN_BYTES = 1 << 20


@njit(cache=True, nogil=True)
def _prefetch_until(other_sorted, X, issued, stop):
    """Prefetch the partner rows of ratings ``issued:stop``; returns the new ``issued``."""
    stop = min(stop, other_sorted.shape[0])
    while issued < stop:
        prefetch_row(X, other_sorted[issued])
        issued += 1
    return issued


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _gather(start, count, other_sorted, ratings_sorted, X, shift, Xt, issued, sqrt_weights):
    """Copy partner rows ``start:start+count`` into ``Xt`` (transposed), their targets into
    its row ``dim``; with ``sqrt_weights`` (one per rating, else of length 0) each column is
    multiplied by its rating's square-root weight.

    Keeps the prefetches ``_PREFETCH_DISTANCE`` ratings ahead; returns the new ``issued``.
    """
    dim = X.shape[1] - 1
    weighted = sqrt_weights.shape[0] > 0
    for k in range(count):
        issued = _prefetch_until(other_sorted, X, issued, start + k + _PREFETCH_DISTANCE)
        j = other_sorted[start + k]
        if weighted:
            root = sqrt_weights[start + k]
            for a in range(dim):
                Xt[a, k] = X[j, a] * root
            Xt[dim, k] = (ratings_sorted[start + k] - shift - X[j, dim]) * root
        else:
            for a in range(dim):
                Xt[a, k] = X[j, a]
            Xt[dim, k] = ratings_sorted[start + k] - shift - X[j, dim]
    return issued


def aligned_zeros(shape, dtype=np.float64):
    """A zero C-contiguous array whose data starts on a 64-byte cache line."""
    size = int(np.prod(shape))
    itemsize = np.dtype(dtype).itemsize
    buffer = np.zeros(size + 64 // itemsize, dtype=dtype)
    offset = (-buffer.ctypes.data % 64) // itemsize
    return buffer[offset : offset + size].reshape(shape)


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _sample_block(
    first,
    last,
    indptr,
    other_sorted,
    ratings_sorted,
    X,
    shift,
    prior_prec,
    prior_h,
    tau,
    z,
    out,
    residuals,
    alpha,
    row_sums,
    key,
    sqrt_weights,
):
    """Rows ``first:last`` of :func:`sample_rows`, with their own scratch buffers and
    prefetch stream; returns the block's ``(sum_n e_n, sum_n e_n^2)``."""
    dim = X.shape[1] - 1
    P = np.empty((dim, dim))
    L = np.empty((dim, dim))
    inverse_pivot = np.empty(dim)
    h = np.empty(dim)
    y = np.empty(dim)
    previous = np.empty(dim)
    noise = np.empty(dim)
    own_normals = z.shape[0] == 0  # the rows' normals from (key, row), drawn here
    weighted = sqrt_weights.shape[0] > 0
    noise_scale = np.sqrt(1.0 - alpha * alpha)
    per_row_prior = prior_h.shape[0] > 1
    # the partner rows, transposed, and the targets in row ``dim`` (add_gram); padded: rows
    # 2 KiB apart would share cache sets
    Xt = np.zeros((gram_rows(dim), CHUNK + 8))
    tiles = np.empty((Xt.shape[0], Xt.shape[0]))
    errors = np.empty(CHUNK)
    sum_errors = 0.0
    sum_squares = 0.0
    # the partner rows of ratings [indptr[first], issued) are prefetched; past the last rating,
    # nothing is: a small X is read from the cache
    no_prefetch = other_sorted.shape[0]
    prefetching = X.shape[0] * X.shape[1] * 8 >= PREFETCH_MIN_BYTES
    issued = indptr[first] if prefetching else no_prefetch
    per_step = -(-_LOOKAHEAD // (Xt.shape[0] // 2))
    for r in range(first, last):
        hr = r if per_row_prior else 0
        for a in range(dim):
            h[a] = prior_h[hr, a]
            for b in range(a + 1):
                P[a, b] = prior_prec[a, b]
        start, stop = indptr[r], indptr[r + 1]
        for begin in range(start, stop, CHUNK):
            count = min(CHUNK, stop - begin)
            issued = _gather(begin, count, other_sorted, ratings_sorted, X, shift, Xt, issued,
                             sqrt_weights)
            # while the sums compute, fetch the rows of the ratings ahead
            issued = add_gram(
                Xt,
                tiles,
                dim,
                count,
                tau,
                P,
                h,
                other_sorted,
                X,
                issued,
                per_step,
                begin + count + _LOOKAHEAD,
            )
        # Cholesky P = L L^T (lower triangle)
        for a in range(dim):
            s = P[a, a]
            for k in range(a):
                s -= L[a, k] * L[a, k]
            if s < 1e-12 * P[a, a]:
                # round-off in a nearly singular precision (a factor covariance near the edge
                # of its support, as a single user's can be): keep the pivot positive
                s = 1e-12 * P[a, a]
            if not s > 0.0:
                raise np.linalg.LinAlgError("Gibbs: posterior precision is not positive definite")
            L[a, a] = np.sqrt(s)
            # one division per pivot: the solves below multiply by its reciprocal
            inverse_pivot[a] = 1.0 / L[a, a]
            for b in range(a + 1, dim):
                s = P[b, a]
                for k in range(a):
                    s -= L[b, k] * L[a, k]
                L[b, a] = s * inverse_pivot[a]
        # forward solve L y = h, then add noise: L^T row = y + z  =>  row ~ N(P^-1 h, P^-1).
        # Overrelaxed (alpha != 0): row = m + alpha (previous - m) + sqrt(1 - alpha^2) L^-T z
        # with m = P^-1 h, i.e. L^T (row - alpha previous) = (1 - alpha) y + sqrt(1 - alpha^2) z
        for a in range(dim):
            s = h[a]
            for k in range(a):
                s -= L[a, k] * y[k]
            y[a] = s * inverse_pivot[a]
        if own_normals:
            row_normals(key, r, noise)
        else:
            for a in range(dim):
                noise[a] = z[r, a]
        if alpha != 0.0:
            for a in range(dim):
                previous[a] = out[r, a]
                y[a] = (1.0 - alpha) * y[a] + noise_scale * noise[a]
        else:
            for a in range(dim):
                y[a] += noise[a]
        for a in range(dim - 1, -1, -1):
            s = y[a]
            for k in range(a + 1, dim):
                s -= L[k, a] * out[r, k]
            out[r, a] = s * inverse_pivot[a]
        if alpha != 0.0:
            # the back solve above read out[r, k > a] as (row - alpha previous)[k]: it solved
            # for row - alpha previous, so add alpha previous back now
            for a in range(dim):
                out[r, a] += alpha * previous[a]
        if residuals:
            row_total = 0.0
            for begin in range(start, stop, CHUNK):
                count = min(CHUNK, stop - begin)
                if stop - start > CHUNK:  # the buffer holds only the last chunk: gather again
                    _gather(
                        begin,
                        count,
                        other_sorted,
                        ratings_sorted,
                        X,
                        shift,
                        Xt,
                        begin if prefetching else no_prefetch,
                        sqrt_weights,
                    )
                for k in range(count):
                    errors[k] = Xt[dim, k]
                for a in range(dim):
                    coefficient = out[r, a]
                    for k in range(count):
                        errors[k] -= Xt[a, k] * coefficient
                # weighted: errors[k] is sqrt(w) e, so the sums are of w e and w e^2
                if weighted:
                    for k in range(count):
                        row_total += errors[k] * sqrt_weights[begin + k]
                        sum_squares += errors[k] * errors[k]
                else:
                    for k in range(count):
                        row_total += errors[k]
                        sum_squares += errors[k] * errors[k]
            sum_errors += row_total
            if row_sums.shape[0] > 0:
                row_sums[r] = row_total
    return sum_errors, sum_squares


@njit(cache=True, nogil=True)
def _ordered_total(block_sums):
    """Sum of the blocks' residual sums in block order (no reassociation: the total is the
    same whichever thread drew which block)."""
    sum_errors = 0.0
    sum_squares = 0.0
    for b in range(block_sums.shape[0]):
        sum_errors += block_sums[b, 0]
        sum_squares += block_sums[b, 1]
    return sum_errors, sum_squares


@njit(cache=True, nogil=True)
def sample_rows(
    indptr,
    other_sorted,
    ratings_sorted,
    X,
    shift,
    prior_prec,
    prior_h,
    tau,
    z,
    out,
    residuals,
    blocks=None,
    alpha=0.0,
    row_sums=None,
    key=0,
    sqrt_weights=None,
):
    """Draw every row ``r`` from N(P^-1 h, P^-1), in place into ``out``; one thread.

    ``P = prior_prec + tau * sum_n x_n x_n^T`` and ``h = prior_h + tau * sum_n x_n t_n`` over the
    ratings ``n`` of row ``r`` (positions ``indptr[r]:indptr[r+1]`` of the sorted arrays), with
    ``x_n = X[other_sorted[n], :-1]`` and target ``t_n = ratings_sorted[n] - shift -
    X[other_sorted[n], -1]`` (the last column of ``X`` holds the other side's offsets, e.g. its
    biases). ``prior_h`` has one row shared by every row, or one row per row (per-row prior
    means). ``z`` holds standard normals, one row per row of ``out``. The rows are drawn by
    blocks, rows ``blocks[b]:blocks[b+1]`` (:func:`row_blocks`; None: one block).

    ``alpha`` in ``(-1, 1)`` overrelaxes the draw (Adler, 1981): the new row is
    ``m + alpha (x - m) + sqrt(1 - alpha^2) P^-1/2 z`` where ``m = P^-1 h`` and ``x`` is the row
    that ``out[r]`` holds on entry. The map leaves N(m, P^-1) invariant and is reversible with
    respect to it for every alpha, so it is an exact Gibbs update; a negative alpha moves each
    row to the far side of its conditional mean, which suppresses the random walk of two
    strongly coupled sides. ``alpha = 0`` is the plain draw and ignores ``out`` on entry.

    ``sqrt_weights`` (one per rating, in the sorted order; None: all ones) weights each
    rating's term in ``P`` and ``h`` by ``w_n = sqrt_weights[n]^2``, a noise precision of
    ``tau * w_n`` for that rating (per-rating noise scales); the returned sums are then
    ``sum_n w_n e_n`` and ``sum_n w_n e_n^2``, and the row sums weighted likewise.

    Returns ``(sum_n e_n, sum_n e_n^2)`` over all ratings of the residuals
    ``e_n = t_n - x_n . out[r]`` under the new rows when ``residuals`` is true, else zeros;
    each block sums its own ratings and the blocks' sums are added in block order. With
    ``residuals`` and an array ``row_sums`` (n_rows), each row's sum of its residuals is
    written there too.
    """
    if blocks is None:
        blocks = np.array([0, indptr.shape[0] - 1], dtype=np.int64)
    if row_sums is None:
        row_sums = np.empty(0)
    if sqrt_weights is None:
        sqrt_weights = np.empty(0)
    n_blocks = blocks.shape[0] - 1
    block_sums = np.zeros((n_blocks, 2))
    for b in range(n_blocks):
        block_sums[b, 0], block_sums[b, 1] = _sample_block(
            blocks[b],
            blocks[b + 1],
            indptr,
            other_sorted,
            ratings_sorted,
            X,
            shift,
            prior_prec,
            prior_h,
            tau,
            z,
            out,
            residuals,
            alpha,
            row_sums,
            key,
            sqrt_weights,
        )
    return _ordered_total(block_sums)


@njit(cache=True, nogil=True, parallel=True)
def sample_rows_parallel(
    indptr,
    other_sorted,
    ratings_sorted,
    X,
    shift,
    prior_prec,
    prior_h,
    tau,
    z,
    out,
    residuals,
    blocks=None,
    alpha=0.0,
    row_sums=None,
    key=0,
    sqrt_weights=None,
):
    """:func:`sample_rows` with the blocks spread over numba's threads (``prange``).

    Every block does exactly what it does in :func:`sample_rows` (the same rows, the same
    normals ``z``, the same order of additions) and the blocks' residual sums are added in
    block order, so the result is bit for bit that of :func:`sample_rows`, whatever the
    number of threads.
    """
    if blocks is None:
        blocks = np.array([0, indptr.shape[0] - 1], dtype=np.int64)
    if row_sums is None:
        row_sums = np.empty(0)
    if sqrt_weights is None:
        sqrt_weights = np.empty(0)
    n_blocks = blocks.shape[0] - 1
    block_sums = np.zeros((n_blocks, 2))
    for b in prange(n_blocks):
        block_sums[b, 0], block_sums[b, 1] = _sample_block(
            blocks[b],
            blocks[b + 1],
            indptr,
            other_sorted,
            ratings_sorted,
            X,
            shift,
            prior_prec,
            prior_h,
            tau,
            z,
            out,
            residuals,
            alpha,
            row_sums,
            key,
            sqrt_weights,
        )
    return _ordered_total(block_sums)


#: Ratings per block of rows: blocks are cut by this count alone, never by the number of
#: threads, so the blocks (and hence the draws and sums) are the same on every machine.
BLOCK_RATINGS = 8192
MAX_BLOCKS = 1024


def row_blocks(indptr, block_ratings=None):
    """Block boundaries over the rows: about ``block_ratings`` ratings per block (by default
    :data:`BLOCK_RATINGS`, more when that would give over :data:`MAX_BLOCKS` blocks)."""
    n_rows = indptr.shape[0] - 1
    n_ratings = int(indptr[-1])
    if block_ratings is None:
        block_ratings = max(BLOCK_RATINGS, -(-n_ratings // MAX_BLOCKS))
    cuts = np.searchsorted(indptr, np.arange(block_ratings, n_ratings, block_ratings))
    return np.unique(np.concatenate([[0], cuts, [n_rows]])).astype(np.int64)


@njit(cache=True, nogil=True)
def _split_keys(keys, low_bits, n_rows):
    """In place: ``keys`` sorted by ``row << low_bits | other`` become the other codes."""
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    mask = (1 << low_bits) - 1
    for n in range(keys.shape[0]):
        indptr[(keys[n] >> low_bits) + 1] += 1
        keys[n] &= mask
    for r in range(n_rows):
        indptr[r + 1] += indptr[r]
    return indptr


@njit(cache=True, nogil=True)
def csr_pair(user_codes, item_codes, ratings, n_users, n_items):
    """The ratings grouped by user and by item, in the order of ``np.lexsort``.

    Returns ``(indptr, item codes, ratings)`` sorted by (user, item) and ``(indptr, user codes,
    ratings)`` sorted by (item, user); ties keep their input order. A radix sort of the key
    ``user << item_bits | item``, then a stable radix sort of that order by item alone: the
    cost is linear in the number of ratings (a few passes, each cache friendly), where a
    comparison sort grows as ``N log N`` and a one-pass counting sort by row scatters its
    writes over ``n_rows`` far-apart places.
    """
    n_ratings = user_codes.shape[0]
    user_bits = bit_length(n_users - 1)
    item_bits = bit_length(n_items - 1)
    keys = np.empty(n_ratings, dtype=np.int64)
    for n in range(n_ratings):
        keys[n] = (user_codes[n] << item_bits) | item_codes[n]
    by_user, user_values, free_keys, free_values = radix_sort(
        keys,
        ratings.copy(),
        np.empty(n_ratings, dtype=np.int64),
        np.empty(n_ratings),
        0,
        user_bits + item_bits,
    )
    # in user order, re-key as ``item << user_bits | user`` and sort stably by the item bits
    for n in range(n_ratings):
        user = by_user[n] >> item_bits
        free_keys[n] = ((by_user[n] - (user << item_bits)) << user_bits) | user
    free_values[:] = user_values
    by_item, item_values, _, _ = radix_sort(
        free_keys,
        free_values,
        np.empty(n_ratings, dtype=np.int64),
        np.empty(n_ratings),
        user_bits,
        item_bits,
    )
    user_indptr = _split_keys(by_user, item_bits, n_users)
    item_indptr = _split_keys(by_item, user_bits, n_items)
    return (user_indptr, by_user, user_values), (item_indptr, by_item, item_values)
