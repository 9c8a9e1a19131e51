"""The cache-friendly pair order: a permutation, its exact block structure, and fewer cache misses.

Locality is measured without timings: a least-recently-used cache of a fixed number of factor
rows is simulated over the rows of ``U`` and ``V`` that the likelihood's loop reads, pair by
pair, in the given order, and its misses are counted.
"""

from collections import OrderedDict

import numpy as np
import pytest

from bpmf.kernels.order import cache_friendly_order, default_n_blocks, prefetch_row


def _pairs(n_users, n_items, n_pairs, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_users, n_pairs), rng.integers(0, n_items, n_pairs)


def _lru_misses(user_codes, item_codes, n_users, capacity):
    """Misses of an LRU cache of ``capacity`` rows over the rows of U and V read pair by pair."""
    cache = OrderedDict()
    misses = 0
    for row in np.column_stack([user_codes, n_users + np.asarray(item_codes)]).ravel():
        if row in cache:
            cache.move_to_end(row)
            continue
        misses += 1
        cache[row] = None
        if len(cache) > capacity:
            cache.popitem(last=False)
    return misses


@pytest.mark.parametrize(
    ("n_users", "n_items", "n_pairs", "n_blocks"),
    [(300, 200, 5000, None), (300, 200, 5000, 7), (50, 3000, 4000, 1000), (1, 1, 3, None)],
)
def test_is_the_block_then_item_permutation(n_users, n_items, n_pairs, n_blocks):
    users, items = _pairs(n_users, n_items, n_pairs, seed=0)
    users[:30], items[:30] = 0, 0  # repeated pairs: ties keep their input order
    order = cache_friendly_order(users, items, n_users, n_blocks, n_items=n_items)
    np.testing.assert_array_equal(np.sort(order), np.arange(n_pairs))
    used = default_n_blocks(n_pairs, n_users, n_items) if n_blocks is None else n_blocks
    used = min(used, n_users)
    blocks = users * used // n_users
    np.testing.assert_array_equal(order, np.lexsort((items, blocks)))
    # consecutive pairs change user block n_blocks - 1 times, and the items decrease only there
    sorted_blocks, sorted_items = blocks[order], items[order]
    assert np.all(np.diff(sorted_blocks) >= 0)
    new_block = np.diff(sorted_blocks) > 0
    assert np.all(np.diff(sorted_items)[~new_block] >= 0)
    assert new_block.sum() == len(np.unique(blocks)) - 1


def test_fewer_cache_misses_than_random_or_user_order():
    """Each user row is loaded about once and each item row about once per block.

    The bound ``n_users + n_blocks * n_items`` on the misses holds when one block's users fit
    in the cache. Random order misses on most reads once the rows outnumber the cache; plain
    user order loads each user once but reads the item rows in random order.
    """
    n_users, n_items, n_pairs, capacity = 3000, 1500, 60_000, 512
    users, items = _pairs(n_users, n_items, n_pairs, seed=1)
    n_blocks = default_n_blocks(n_pairs, n_users, n_items)
    assert -(-n_users // n_blocks) < capacity / 2  # a block's users fit in half the cache
    order = cache_friendly_order(users, items, n_users, n_items=n_items)
    tiled = _lru_misses(users[order], items[order], n_users, capacity)
    random_order = np.random.default_rng(2).permutation(n_pairs)
    shuffled = _lru_misses(users[random_order], items[random_order], n_users, capacity)
    by_user = np.lexsort((items, users))
    user_sorted = _lru_misses(users[by_user], items[by_user], n_users, capacity)
    bound = n_users + n_blocks * n_items
    assert tiled <= bound, (tiled, bound)
    assert shuffled > 3 * bound, (shuffled, bound)
    assert tiled < 0.3 * shuffled and tiled < 0.75 * user_sorted, (tiled, shuffled, user_sorted)


def test_default_block_count_follows_the_sizes():
    n_factors, cache_bytes = 10, 1 << 19
    for n_pairs, n_users, n_items in [
        (10**4, 200, 100),
        (10**6, 20_000, 10_000),
        (10**7, 200_000, 100_000),
        (8 * 10**4, 943, 1682),
        (10**8, 2_000_000, 1_000_000),
    ]:
        n_blocks = default_n_blocks(n_pairs, n_users, n_items, n_factors, cache_bytes)
        assert 1 <= n_blocks <= n_users
        users_per_block = -(-n_users // n_blocks)
        # a block's user and gradient rows fit in the cache, or a block is a single user
        assert users_per_block * 16 * (n_factors + 1) <= cache_bytes or users_per_block == 1
        # and there are no more blocks than either rule asks for
        by_items = n_pairs // (2 * n_items)
        by_cache = -(-n_users * 16 * (n_factors + 1) // cache_bytes)
        assert n_blocks == min(max(by_items, by_cache, 1), n_users)
    # the number of blocks grows with the data: more users per cache, more pairs per item
    counts = [default_n_blocks(50 * n, n, n // 2) for n in (10**3, 10**4, 10**5, 10**6)]
    assert counts == sorted(counts)


def test_bad_input_is_rejected():
    users, items = np.array([0, 1, 2]), np.array([0, 1, 0])
    with pytest.raises(ValueError, match="equal length"):
        cache_friendly_order(users, items[:2], 3)
    with pytest.raises(ValueError, match="user_codes must lie"):
        cache_friendly_order(users, items, 2)
    with pytest.raises(ValueError, match="item_codes must lie"):
        cache_friendly_order(users, items, 3, n_items=1)
    with pytest.raises(ValueError, match="n_blocks"):
        cache_friendly_order(users, items, 3, 0)
    assert cache_friendly_order(users[:0], items[:0], 3).shape == (0,)


def test_prefetch_row_is_only_a_hint():
    """Prefetching rows (the last one included, whose second line lies past the array) changes
    nothing a loop computes."""
    from numba import njit

    @njit
    def gathered_sum(matrix, rows):
        total = 0.0
        for n in range(rows.shape[0]):
            if n + 2 < rows.shape[0]:
                prefetch_row(matrix, rows[n + 2])
            prefetch_row(matrix, matrix.shape[0] - 1)
            for k in range(matrix.shape[1]):
                total += matrix[rows[n], k] * (k + 1)
        return total

    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(50, 3))
    rows = rng.integers(0, 50, 200)
    expected = sum(matrix[r, k] * (k + 1) for r in rows for k in range(3))
    np.testing.assert_allclose(gathered_sum(matrix, rows), expected, rtol=1e-12)


@pytest.mark.parametrize("cache_bytes", [1 << 19, 2000])
def test_user_run_order_groups_each_item_block_by_user_then_item(cache_bytes):
    from bpmf.kernels.order import user_run_order

    rng = np.random.default_rng(4)
    n_users, n_items, n_pairs = 50, 80, 1500
    pairs = rng.choice(n_users * n_items, n_pairs, replace=False)
    users, items = pairs // n_items, pairs % n_items
    order = user_run_order(users, items, n_users, n_items, n_factors=3, cache_bytes=cache_bytes)
    assert np.array_equal(np.sort(order), np.arange(n_pairs))
    n_blocks = max(1, -(-n_items * 16 * 5 // cache_bytes))
    assert (n_blocks == 1) == (cache_bytes == 1 << 19)
    block = items[order] * n_blocks // n_items
    # blocks in increasing order; within a block (user, item) strictly increasing
    key = (block * n_users + users[order]) * n_items + items[order]
    assert np.all(np.diff(key) > 0)
