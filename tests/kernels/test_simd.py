"""slp_njit compiles with LLVM's SLP vectoriser and leaves numba's settings as they were."""

import numpy as np
from numba import carray, config, njit

from bpmf.kernels.simd import slp_njit, stack_buffer

WIDTH = 4


def _sum_of_squares(matrix):
    acc = carray(stack_buffer(WIDTH), WIDTH)
    for k in range(WIDTH):
        acc[k] = 0.0
    for n in range(matrix.shape[0]):
        for k in range(WIDTH):
            acc[k] += matrix[n, k] * matrix[n, k]
    total = 0.0
    for k in range(WIDTH):
        total += acc[k]
    return total


def _vector_ir(dispatcher):
    return "x double>" in "\n".join(dispatcher.inspect_llvm().values())


def test_slp_njit_vectorises_the_row_loop_and_restores_the_setting(monkeypatch):
    # without the loop vectoriser, only the SLP vectoriser can produce vectors of doubles
    monkeypatch.setattr(config, "LOOP_VECTORIZE", 0)
    monkeypatch.setattr(config, "SLP_VECTORIZE", 0)
    matrix = np.random.default_rng(0).normal(size=(37, WIDTH))
    kernel = slp_njit(_sum_of_squares, fastmath=False)

    @njit
    def caller(matrix):  # reached from jitted code, as PyTensor's numba backend calls it
        return kernel(matrix)

    np.testing.assert_allclose(caller(matrix), np.sum(matrix**2), rtol=1e-13)
    assert config.SLP_VECTORIZE == 0
    assert _vector_ir(kernel)
    plain = njit(_sum_of_squares)
    np.testing.assert_allclose(plain(matrix), np.sum(matrix**2), rtol=1e-13)
    assert not _vector_ir(plain)
