"""The counter-based standard normals of the row kernels."""

import numpy as np
import pytest
from numba import njit
from scipy import stats

from bpmf.kernels.normals import row_normals
from bpmf.kernels.rows import csr_pair, row_blocks, sample_rows, sample_rows_parallel


@njit(cache=True)
def _fill(key, z):
    for r in range(z.shape[0]):
        row_normals(key, r, z[r])


def _normals(key, n_rows, dim):
    z = np.empty((n_rows, dim))
    _fill(key, z)
    return z


def test_normals_have_the_standard_normal_law():
    """2.2 million draws: KS, the first four moments and the tail masses of N(0, 1), and the
    ziggurat's rare paths (the wedges and the tail beyond 3.65) are exercised."""
    x = _normals(2024, 200_000, 11).ravel()
    n = x.size
    assert stats.kstest(x, "norm").pvalue > 1e-3
    assert abs(x.mean()) < 4 / np.sqrt(n)
    assert abs(x.var() - 1.0) < 4 * np.sqrt(2.0 / n)
    assert abs(stats.skew(x)) < 4 * np.sqrt(6.0 / n)
    assert abs(stats.kurtosis(x)) < 4 * np.sqrt(24.0 / n)
    for t in (2.0, 3.0, 3.65, 4.0):
        p = 2 * stats.norm.sf(t)
        observed = np.mean(np.abs(x) > t)
        assert abs(observed - p) < 4 * np.sqrt(p * (1 - p) / n), (t, observed, p)


def test_rows_and_keys_give_independent_streams():
    z = _normals(7, 50_000, 11)
    bound = 4 / np.sqrt(len(z))
    # coordinates of one row, neighbouring rows, and the same rows under another key
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < bound
    assert abs(np.corrcoef(z[:-1, 0], z[1:, 0])[0, 1]) < bound
    other = _normals(8, 50_000, 11)
    assert abs(np.corrcoef(z.ravel(), other.ravel())[0, 1]) < 4 / np.sqrt(z.size)
    np.testing.assert_array_equal(_normals(7, 10, 11), z[:10])  # a function of (key, row)


@pytest.mark.parametrize("alpha", [0.0, -0.7])
def test_kernel_draws_do_not_depend_on_blocks_or_threads(alpha):
    """With the normals drawn in the kernel from (key, row), one block, many blocks and the
    parallel kernel give the same rows bit for bit; given the key, the draw is the explicit
    normals' draw."""
    import numba

    rng = np.random.default_rng(0)
    n_users, n_items, dim = 300, 40, 4
    users = rng.integers(0, n_users, 6000)
    items = rng.integers(0, n_items, 6000)
    (indptr, partners, values), _ = csr_pair(users, items, rng.normal(size=6000), n_users, n_items)
    X = np.column_stack([rng.normal(size=(n_items, dim)), rng.normal(size=n_items)])
    start = rng.normal(size=(n_users, dim))
    args = (indptr, partners, values, X, 0.2, 2.0 * np.eye(dim), np.ones((1, dim)), 1.5)
    no_z = np.empty((0, dim))

    def draw(kernel, blocks, z=no_z):
        out = start.copy()
        kernel(*args, z, out, True, blocks, alpha, None, 99)
        return out

    one = draw(sample_rows, None)
    many = draw(sample_rows, row_blocks(indptr, block_ratings=200))
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        parallel = draw(sample_rows_parallel, row_blocks(indptr, block_ratings=200))
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(one, many)
    np.testing.assert_array_equal(one, parallel)
    np.testing.assert_array_equal(one, draw(sample_rows, None, _normals(99, n_users, dim)))
