"""AdaGrad and SGD-with-momentum: hand-computed steps and sparse row updates."""

import numpy as np
import pytest

from bpmf.baselines import SGD, AdaGrad


def test_adagrad_dense_step_matches_hand_computation():
    param = np.array([1.0, -2.0])
    opt = AdaGrad(learning_rate=0.1, eps=1e-8)
    opt.update("w", param, np.array([0.5, -1.0]))
    # G = g^2, step = 0.1 * g / (|g| + eps) -> 0.1 * sign(g)
    np.testing.assert_allclose(param, [0.9, -1.9], rtol=1e-7)
    opt.update("w", param, np.array([1.0, 1.0]))
    # G = [0.25 + 1, 1 + 1]; step = 0.1 * 1 / sqrt(G)
    np.testing.assert_allclose(param, [0.9 - 0.1 / np.sqrt(1.25), -1.9 - 0.1 / np.sqrt(2.0)])
    np.testing.assert_allclose(opt.state_["w"], [1.25, 2.0])


def test_adagrad_sparse_rows_touch_only_their_rows():
    param = np.arange(1.0, 9.0).reshape(4, 2)
    before = param.copy()
    opt = AdaGrad(learning_rate=0.1, eps=1e-8)
    opt.update("emb", param, np.array([[0.5, -1.0], [2.0, 4.0]]), rows=[2, 0])
    np.testing.assert_array_equal(param[[1, 3]], before[[1, 3]])
    np.testing.assert_array_equal(opt.state_["emb"][[1, 3]], 0.0)
    np.testing.assert_allclose(param[2], before[2] - 0.1 * np.array([1.0, -1.0]), rtol=1e-7)
    np.testing.assert_allclose(param[0], before[0] - 0.1 * np.array([1.0, 1.0]), rtol=1e-7)
    np.testing.assert_allclose(opt.state_["emb"][[0, 2]], [[4.0, 16.0], [0.25, 1.0]])
    # a second step on row 2 uses its own accumulator only
    opt.update("emb", param, np.array([[1.0, 0.0]]), rows=[2])
    np.testing.assert_allclose(param[2, 0], before[2, 0] - 0.1 - 0.1 / np.sqrt(1.25), rtol=1e-7)
    np.testing.assert_allclose(param[0], before[0] - 0.1, rtol=1e-7)


def test_repeated_rows_are_summed_before_the_update():
    grads = np.array([[0.3, -0.2], [0.4, 0.1]])
    a, b = np.ones((3, 2)), np.ones((3, 2))
    AdaGrad(learning_rate=0.2).update("p", a, grads, rows=[1, 1])
    AdaGrad(learning_rate=0.2).update("p", b, grads.sum(axis=0, keepdims=True), rows=[1])
    np.testing.assert_allclose(a, b)


def test_adagrad_minimises_a_quadratic():
    rng = np.random.default_rng(0)
    target = rng.standard_normal(5)
    w = np.zeros(5)
    opt = AdaGrad(learning_rate=0.5)
    for _ in range(2000):
        opt.update("w", w, 2 * (w - target))
    np.testing.assert_allclose(w, target, atol=1e-6)


def test_sgd_momentum_hand_computation_and_lazy_rows():
    param = np.zeros((3, 1))
    opt = SGD(learning_rate=0.1, momentum=0.9)
    opt.update("p", param, np.array([[1.0]]), rows=[0])
    opt.update("p", param, np.array([[1.0]]), rows=[0])
    # v1 = 1, v2 = 0.9 + 1 = 1.9; p = -0.1 * (1 + 1.9)
    np.testing.assert_allclose(param[0], [-0.29])
    np.testing.assert_array_equal(param[1:], 0.0)
    dense = np.array([1.0])
    SGD(learning_rate=0.5, momentum=0.0).update("d", dense, np.array([2.0]))
    np.testing.assert_allclose(dense, [0.0])


@pytest.mark.parametrize("bad", [0.0, -0.1, np.nan, "fast"])
def test_non_positive_learning_rate_is_rejected(bad):
    with pytest.raises(ValueError, match="learning_rate"):
        AdaGrad(learning_rate=bad)
    with pytest.raises(ValueError, match="learning_rate"):
        SGD(learning_rate=bad)


def test_bad_momentum_and_gradient_shapes_are_rejected():
    with pytest.raises(ValueError, match="momentum"):
        SGD(momentum=1.0)
    opt = AdaGrad()
    with pytest.raises(ValueError, match="shape"):
        opt.update("p", np.zeros((3, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="row-sparse"):
        opt.update("p", np.zeros((3, 2)), np.zeros((2, 3)), rows=[0, 1])
    with pytest.raises(ValueError, match="rows must lie"):
        opt.update("p", np.zeros((3, 2)), np.zeros((1, 2)), rows=[3])
