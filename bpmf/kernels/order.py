"""Orders of the observed pairs that keep the factor rows they touch in the CPU caches.

Also home of the linear-time radix sort behind them, which the Gibbs sampler uses to group
the ratings by user and by item, and of :func:`prefetch_row`, a software prefetch for numba
loops that read rows of a matrix in an order the hardware cannot guess.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "CACHE_BYTES",
    "bit_length",
    "cache_friendly_order",
    "default_n_blocks",
    "prefetch_row",
    "radix_sort",
    "user_run_order",
]

_RADIX_BITS = 9  # at most 512 buckets per pass: wider digits were slower at 10^7 ratings
CACHE_BYTES = 1 << 19  # the L2 cache of one core of the development machine (AMD znver3)
# item rows + gradients per block of user_run_order: a share of the L3 cache, not the L2. At
# 10^7 ratings (100,000 items, 19 MB of padded rows) 3-8 blocks took 155-164 ms per gradient,
# 16 blocks 191 ms, the L2-sized 37 blocks 248 ms (user runs too short), one block 311 ms
_RUN_BLOCK_BYTES = 1 << 22


@intrinsic
def prefetch_row(typingctx, matrix, row):
    """In numba code: hint the CPU to fetch the first two cache lines of ``matrix[row]``.

    ``matrix`` is a C-contiguous 2-d array; there is no bounds check, and none is needed: a
    prefetch never faults. Issued some iterations before a loop reads a random row, it lets
    the reads of several rows overlap instead of queueing (:mod:`bpmf.kernels.rows`).
    """

    def codegen(context, builder, signature, args):
        matrix_type = signature.args[0]
        array = context.make_array(matrix_type)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        pointer = cgutils.get_item_pointer(
            context, builder, matrix_type, array, [args[1], zero], wraparound=False
        )
        byte_pointer_type = ir.IntType(8).as_pointer()
        int32 = ir.IntType(32)
        function_type = ir.FunctionType(ir.VoidType(), [byte_pointer_type, int32, int32, int32])
        prefetch = builder.module.declare_intrinsic(
            "llvm.prefetch", [byte_pointer_type], function_type
        )
        byte_pointer = builder.bitcast(pointer, byte_pointer_type)
        # read access, keep in all cache levels, data cache
        flags = [ir.Constant(int32, 0), ir.Constant(int32, 3), ir.Constant(int32, 1)]
        builder.call(prefetch, [byte_pointer, *flags])
        second_line = builder.gep(byte_pointer, [ir.Constant(ir.IntType(64), 64)])
        builder.call(prefetch, [second_line, *flags])
        return context.get_dummy_value()

    return types.void(matrix, row), codegen


@njit(cache=True)
def bit_length(value):
    bits = 0
    while value >> bits:
        bits += 1
    return bits


@njit(cache=True)
def radix_sort(keys, values, spare_keys, spare_values, low_bit, n_bits):
    """Stable sort of ``(keys, values)`` by bits ``low_bit:low_bit + n_bits`` of ``keys``.

    Least-significant digit first; each pass is a counting sort into at most
    ``2**_RADIX_BITS`` buckets, whose write positions stay cached, so the cost is linear in
    the number of keys (a comparison sort grows as ``N log N``; a counting sort into many
    buckets scatters its writes over far-apart places). Returns the sorted pair and the spare
    pair: the four buffers swap roles from pass to pass, so either pair may hold the result.
    """
    n_passes = -(-n_bits // _RADIX_BITS)
    width = -(-n_bits // n_passes) if n_passes else 0
    for radix_pass in range(n_passes):
        shift = low_bit + radix_pass * width
        mask = (1 << min(width, low_bit + n_bits - shift)) - 1
        position = np.zeros(mask + 2, dtype=np.int64)
        for n in range(keys.shape[0]):
            position[((keys[n] >> shift) & mask) + 1] += 1
        for digit in range(mask + 1):
            position[digit + 1] += position[digit]
        for n in range(keys.shape[0]):
            digit = (keys[n] >> shift) & mask
            spare_keys[position[digit]] = keys[n]
            spare_values[position[digit]] = values[n]
            position[digit] += 1
        keys, spare_keys = spare_keys, keys
        values, spare_values = spare_values, values
    return keys, values, spare_keys, spare_values


@njit(cache=True)
def _block_item_order(user_codes, item_codes, n_users, n_items, n_blocks):
    """The permutation that sorts the pairs by (user block, item), ties in input order."""
    n_pairs = user_codes.shape[0]
    item_bits = bit_length(n_items - 1)
    keys = np.empty(n_pairs, dtype=np.int64)
    for n in range(n_pairs):
        keys[n] = ((user_codes[n] * n_blocks // n_users) << item_bits) | item_codes[n]
    _, order, _, _ = radix_sort(
        keys,
        np.arange(n_pairs, dtype=np.int64),
        np.empty(n_pairs, dtype=np.int64),
        np.empty(n_pairs, dtype=np.int64),
        0,
        bit_length(n_blocks - 1) + item_bits,
    )
    return order


def default_n_blocks(n_pairs, n_users, n_items, n_factors=10, cache_bytes=CACHE_BYTES):
    """The number of user blocks :func:`cache_friendly_order` uses, chosen from the sizes.

    Within a block the loop walks the items in increasing order, which reads the rows of
    ``V`` (and of its gradient) once per block; the block's users are visited in random
    order, so their rows should stay cached. Hence two bounds, and the larger is taken:

    * at most ``n_pairs / (2 n_items)`` blocks, so that each walk over the items serves about
      two pairs per item row it reads (more blocks re-read ``V`` for little use; measured at
      10^7 ratings: 128 blocks 1.4x slower than 64);
    * at least enough blocks that one block's user rows and gradient rows,
      ``16 (n_factors + 1)`` bytes per user, fit in ``cache_bytes``.

    Returns an int in ``[1, n_users]``.
    """
    n_users, n_items = max(int(n_users), 1), max(int(n_items), 1)
    by_items = int(n_pairs) // (2 * n_items)
    by_cache = -(-n_users * 16 * (int(n_factors) + 1) // int(cache_bytes))
    return int(min(max(by_items, by_cache, 1), n_users))


def cache_friendly_order(
    user_codes, item_codes, n_users, n_blocks=None, *, n_items=None, n_factors=10,
    cache_bytes=CACHE_BYTES,
):
    """A row order for the pairs that keeps the factor rows they touch in the caches.

    The likelihood is a sum over pairs, so its value does not depend on their order (up to
    rounding), but its speed does once ``U`` and ``V`` outgrow the CPU caches: in random
    order every pair reads a random row of each. This order splits the users into
    ``n_blocks`` contiguous blocks of codes and, within a block, sorts the pairs by item
    (ties keep their input order), so consecutive pairs share the block's cached rows of
    ``U`` and walk ``V`` in increasing order (``bench/scaling.py``).

    Parameters
    ----------
    user_codes, item_codes : array of int, shape (n_pairs,)
        Codes in ``[0, n_users)`` and ``[0, n_items)``.
    n_users : int
    n_blocks : int or None
        Number of user blocks; None chooses it from the sizes (:func:`default_n_blocks`).
    n_items : int or None
        None: one more than the largest item code.
    n_factors, cache_bytes : int
        Used by :func:`default_n_blocks` when ``n_blocks`` is None.

    Returns
    -------
    ndarray of int64
        A permutation of ``range(len(user_codes))``. Computing it is linear in the number of
        pairs (a radix sort; about 0.2 s for 10^7 pairs).

    Notes
    -----
    Smaller two-dimensional tiles (user blocks x item blocks, both a few hundred kilobytes,
    pairs sorted by user or by item within a tile) were measured 2x to 4.5x slower at 10^7
    ratings than this order: at 10^7 ratings the rating matrix is so sparse (5e-4) that a
    tile holds fewer pairs than rows, so no row is reused within a tile, and the item rows
    are no longer read in increasing order.
    """
    user_codes = np.ascontiguousarray(user_codes, dtype=np.int64)
    item_codes = np.ascontiguousarray(item_codes, dtype=np.int64)
    if user_codes.ndim != 1 or user_codes.shape != item_codes.shape:
        raise ValueError(
            f"user_codes and item_codes must be 1-d and of equal length, got shapes "
            f"{user_codes.shape} and {item_codes.shape}"
        )
    n_users = int(n_users)
    if len(user_codes) == 0:
        return np.arange(0, dtype=np.int64)
    if n_items is None:
        n_items = int(item_codes.max()) + 1
    n_items = int(n_items)
    if user_codes.min() < 0 or user_codes.max() >= n_users:
        raise ValueError(f"user_codes must lie in [0, n_users={n_users})")
    if item_codes.min() < 0 or item_codes.max() >= n_items:
        raise ValueError(f"item_codes must lie in [0, n_items={n_items})")
    if n_blocks is None:
        n_blocks = default_n_blocks(len(user_codes), n_users, n_items, n_factors, cache_bytes)
    n_blocks = int(n_blocks)
    if not 1 <= n_blocks:
        raise ValueError(f"n_blocks must be a positive integer or None, got {n_blocks}")
    n_blocks = min(n_blocks, n_users)
    return _block_item_order(user_codes, item_codes, n_users, n_items, n_blocks)


def user_run_order(user_codes, item_codes, n_users, n_items=None, *, n_factors=10,
                   cache_bytes=_RUN_BLOCK_BYTES):
    """A row order for the pairs in runs of one user, for the likelihood's row kernel.

    The items are split into as few contiguous blocks of codes as keep one block's item rows
    and gradient rows (``16 (n_factors + 2)`` bytes per item) within ``cache_bytes``; within
    a block the pairs are sorted by user, and within a user by item. Each user's pairs in a
    block are then consecutive, so the likelihood keeps that user's row and gradient in
    registers for the run, while the item rows it reads stay cached (ML-100K and 10^6
    synthetic ratings: one block, pairs sorted by user then item). The default block size
    is a share of the L3 cache: L2-sized blocks cut the runs too short.

    Parameters and validation as for :func:`cache_friendly_order`; returns a permutation of
    ``range(len(user_codes))`` (int64), computed in linear time.
    """
    user_codes = np.ascontiguousarray(user_codes, dtype=np.int64)
    item_codes = np.ascontiguousarray(item_codes, dtype=np.int64)
    if len(item_codes) and n_items is None:
        n_items = int(item_codes.max()) + 1
    n_items = max(int(n_items or 1), 1)
    n_blocks = max(1, -(-n_items * 16 * (int(n_factors) + 2) // int(cache_bytes)))
    # sort by item first: the block sort keeps ties in input order, so items ascend per user
    by_item = cache_friendly_order(user_codes, item_codes, n_users, 1, n_items=n_items)
    within = cache_friendly_order(
        item_codes[by_item], user_codes[by_item], n_items, n_blocks, n_items=n_users
    )
    return by_item[within]
