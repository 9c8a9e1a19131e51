"""The chunked sums of products of the row kernels against numpy's."""

import numpy as np
import pytest

from bpmf.kernels.gram import add_gram, gram_rows, padded_count


@pytest.mark.parametrize("dim", [1, 2, 5, 11, 12])
@pytest.mark.parametrize("count", [1, 7, 8, 45, 256])
def test_add_gram_matches_the_normal_equations(dim, count):
    rng = np.random.default_rng(dim * 1000 + count)
    x = rng.normal(size=(count, dim))
    t = rng.normal(size=count)
    Xt = np.zeros((gram_rows(dim), 264))
    Xt[:, :] = np.nan  # what a previous chunk left behind past ``count`` must not count
    Xt[dim + 1 :] = 0.0  # the padding rows stay zero (the kernels allocate them so)
    Xt[:dim, :count] = x.T
    Xt[dim, :count] = t
    P0 = np.tril(rng.normal(size=(dim, dim)))
    h0 = rng.normal(size=dim)
    P, h = P0.copy(), h0.copy()
    tiles = np.empty((Xt.shape[0], Xt.shape[0]))
    no_prefetch = np.zeros(0, dtype=np.int64)
    add_gram(Xt, tiles, dim, count, 0.5, P, h, no_prefetch, x, 0, 0, 0)
    np.testing.assert_allclose(np.tril(P), np.tril(P0 + 0.5 * x.T @ x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h, h0 + 0.5 * x.T @ t, rtol=1e-12, atol=1e-12)
    # the upper triangle is not touched
    np.testing.assert_array_equal(np.triu(P, 1), np.triu(P0, 1))


def test_buffer_shape_helpers():
    assert [gram_rows(d) for d in (1, 2, 10, 11)] == [2, 4, 12, 12]
    assert [padded_count(c) for c in (1, 8, 9, 256)] == [8, 8, 16, 256]
