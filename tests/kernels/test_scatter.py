"""A side's sums and scatter, and the covariance blocks of a Cholesky factor, against numpy."""

import numpy as np
import pytest

from bpmf.kernels.dense import covariance_blocks
from bpmf.kernels.scatter import stacked_scatter, stacked_sums


@pytest.mark.parametrize("n_rows", [1, 127, 128, 129, 1682])
@pytest.mark.parametrize("dim", [1, 10])
def test_stacked_sums_and_scatter_match_numpy(n_rows, dim):
    rng = np.random.default_rng(n_rows + dim)
    factors = rng.normal(size=(n_rows, dim))
    bias = rng.normal(size=n_rows)
    stacked = np.column_stack([factors, bias])
    np.testing.assert_allclose(stacked_sums(factors, bias), stacked.sum(axis=0), rtol=1e-12,
                               atol=1e-12)
    scatter = stacked_scatter(factors, bias)
    np.testing.assert_allclose(scatter, stacked.T @ stacked, rtol=1e-12, atol=1e-10)
    np.testing.assert_array_equal(scatter, scatter.T)


@pytest.mark.parametrize("d", [1, 3, 4])
def test_covariance_blocks_match_numpy(d):
    rng = np.random.default_rng(d)
    L = np.tril(rng.normal(size=(d + 1, d + 1)))
    np.fill_diagonal(L, np.abs(np.diag(L)) + 0.5)
    cov, precision, leading_precision = covariance_blocks(L, d)
    np.testing.assert_allclose(cov, L @ L.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(precision, np.linalg.inv(L @ L.T), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(leading_precision, np.linalg.inv((L @ L.T)[:d, :d]), rtol=1e-9,
                               atol=1e-9)

