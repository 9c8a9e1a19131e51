"""The fused PairDot Op equals the plain indexing graph, on every backend, to 1e-10."""

import importlib.util

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad

from bpmf.kernels.pair_dot import PairDot, PairDotGrad, pair_dot, pair_dot_naive

MODES = [
    "FAST_COMPILE",  # Python linker: the numpy perform
    "FAST_RUN",  # C backend
    "NUMBA",
    pytest.param(
        "JAX",
        marks=pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="no jax"),
    ),
]


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(42)
    n_users, n_items, n_factors, n_pairs = 9, 7, 4, 40
    return {
        "U": rng.normal(size=(n_users, n_factors)),
        "V": rng.normal(size=(n_items, n_factors)),
        "u": rng.integers(0, n_users, n_pairs),
        "i": rng.integers(0, n_items, n_pairs),
        "w": rng.normal(size=n_pairs),
        "tU": rng.normal(size=(n_users, n_factors)),
        "tV": rng.normal(size=(n_items, n_factors)),
    }


def _value_and_grads(bilinear, problem, mode):
    U, V = pt.matrix("U"), pt.matrix("V")
    y = bilinear(U, V, problem["u"], problem["i"])
    # a non-linear scalar so the gradient's weights g depend on y
    cost = (y * problem["w"]).sum() + 0.5 * (y**2).sum()
    gU, gV = pytensor.grad(cost, [U, V])
    fn = pytensor.function([U, V], [y, cost, gU, gV], mode=mode)
    return [np.asarray(a) for a in fn(problem["U"], problem["V"])]


@pytest.mark.parametrize("mode", MODES)
def test_values_and_gradients_match_plain_graph(problem, mode):
    fused = _value_and_grads(pair_dot, problem, mode)
    naive = _value_and_grads(pair_dot_naive, problem, "FAST_COMPILE")
    for got, expected in zip(fused, naive, strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
    # the closed form, independently of PyTensor
    expected_y = np.einsum("nk,nk->n", problem["U"][problem["u"]], problem["V"][problem["i"]])
    np.testing.assert_allclose(fused[0], expected_y, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["FAST_RUN", "NUMBA"])
def test_fused_graph_contains_the_op(problem, mode):
    U, V = pt.matrix("U"), pt.matrix("V")
    y = pair_dot(U, V, problem["u"], problem["i"])
    fn = pytensor.function([U, V], pytensor.grad(y.sum(), [U, V]) + [y], mode=mode)
    ops = {type(node.op) for node in fn.maker.fgraph.apply_nodes}
    assert PairDot in ops
    assert PairDotGrad in ops


def test_verify_grad_finite_differences(problem):
    u, i = problem["u"], problem["i"]
    rng = np.random.default_rng(1)
    verify_grad(
        lambda U, V: PairDot()(U, V, u, i), [problem["U"], problem["V"]], rng=rng, mode="FAST_RUN"
    )
    # the gradient Op is differentiable too (Hessian-vector products)
    for output in (0, 1):
        verify_grad(
            lambda U, V, g, output=output: PairDotGrad()(U, V, u, i, g)[output],
            [problem["U"], problem["V"], problem["w"]],
            rng=rng,
            mode="FAST_RUN",
        )


@pytest.mark.parametrize("mode", ["NUMBA"])  # C: verify_grad of PairDotGrad above
def test_second_order_matches_plain_graph(problem, mode):
    """Hessian-vector product of a non-linear cost, fused vs plain."""
    results = []
    for bilinear, run_mode in ((pair_dot, mode), (pair_dot_naive, "FAST_COMPILE")):
        U, V = pt.matrix("U"), pt.matrix("V")
        y = bilinear(U, V, problem["u"], problem["i"])
        cost = (pt.sin(y) * problem["w"]).sum()
        gU, gV = pytensor.grad(cost, [U, V])
        hvp = pytensor.grad((gU * problem["tU"]).sum() + (gV * problem["tV"]).sum(), [U, V])
        fn = pytensor.function([U, V], hvp, mode=run_mode)
        results.append(fn(problem["U"], problem["V"]))
    for got, expected in zip(*results, strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


def test_forward_mode_matches_plain_graph(problem):
    results = []
    for bilinear in (pair_dot, pair_dot_naive):
        U, V = pt.matrix("U"), pt.matrix("V")
        y = bilinear(U, V, problem["u"], problem["i"])
        tangents = [pt.constant(problem["tU"]), pt.constant(problem["tV"])]
        jvp = pytensor.gradient.Rop(y, [U, V], tangents)
        results.append(pytensor.function([U, V], jvp)(problem["U"], problem["V"]))
    np.testing.assert_allclose(results[0], results[1], rtol=0, atol=1e-10)


@pytest.mark.parametrize("mode", ["FAST_RUN", "NUMBA"])
def test_strided_inputs(problem, mode):
    """Transposed (non-contiguous) factor matrices give the same answer."""
    Ut, Vt = pt.matrix("Ut"), pt.matrix("Vt")
    y = pair_dot(Ut.T, Vt.T, problem["u"], problem["i"])
    gUt, gVt = pytensor.grad((y * problem["w"]).sum(), [Ut, Vt])
    fn = pytensor.function([Ut, Vt], [y, gUt, gVt], mode=mode)
    y_val, gUt_val, gVt_val = fn(problem["U"].T.copy(), problem["V"].T.copy())
    expected = _value_and_grads(pair_dot_naive, problem, "FAST_COMPILE")[0]
    np.testing.assert_allclose(y_val, expected, atol=1e-12)
    w_y = problem["w"]
    expected_gU = np.zeros_like(problem["U"])
    np.add.at(expected_gU, problem["u"], w_y[:, None] * problem["V"][problem["i"]])
    np.testing.assert_allclose(gUt_val, expected_gU.T, atol=1e-12)


@pytest.mark.parametrize("mode", ["FAST_RUN", "NUMBA"])
def test_float32(problem, mode):
    U, V = pt.matrix("U", dtype="float32"), pt.matrix("V", dtype="float32")
    y = pair_dot(U, V, problem["u"], problem["i"])
    assert y.dtype == "float32"
    fn = pytensor.function([U, V], y, mode=mode)
    got = fn(problem["U"].astype("float32"), problem["V"].astype("float32"))
    expected = np.einsum("nk,nk->n", problem["U"][problem["u"]], problem["V"][problem["i"]])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["FAST_COMPILE", "FAST_RUN", "NUMBA"])
def test_out_of_range_codes_raise(problem, mode):
    U, V = pt.matrix("U"), pt.matrix("V")
    codes = pt.lvector("codes")
    y = pair_dot(U, V, codes, codes)
    fn = pytensor.function([U, V, codes], y, mode=mode)
    with pytest.raises(IndexError, match="out of range"):
        fn(problem["U"], problem["V"], np.array([0, 100]))
    with pytest.raises(IndexError, match="out of range"):
        fn(problem["U"], problem["V"], np.array([0, -1]))


def test_bad_inputs_are_rejected_when_building():
    with pytest.raises(TypeError, match="integers"):
        PairDot()(pt.matrix(), pt.matrix(), pt.vector(), pt.lvector())
    with pytest.raises(TypeError, match="matrices"):
        PairDot()(pt.vector(), pt.matrix(), pt.lvector(), pt.lvector())


def test_batched_factors_fall_back_to_plain_graph(problem):
    """Leading batch dimensions (as in vectorised posterior predictive) still work."""
    U = pt.tensor3("U")
    V = pt.matrix("V")
    y = pair_dot(U, V, problem["u"], problem["i"])
    batch = np.stack([problem["U"], 2 * problem["U"]])
    got = pytensor.function([U, V], y)(batch, problem["V"])
    expected = np.einsum("nk,nk->n", problem["U"][problem["u"]], problem["V"][problem["i"]])
    np.testing.assert_allclose(got, np.stack([expected, 2 * expected]), atol=1e-12)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("numpyro") is None, reason="no numpyro")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pymc_model_samples_with_numpyro_through_jax():
    """The JAX implementations carry a PyMC model through numpyro (the GPU path)."""
    import pymc as pm

    rng = np.random.default_rng(0)
    n_users, n_items, n_factors = 30, 20, 2
    U_true = rng.normal(size=(n_users, n_factors))
    V_true = rng.normal(size=(n_items, n_factors))
    u = rng.integers(0, n_users, 300)
    i = rng.integers(0, n_items, 300)
    y = np.einsum("nk,nk->n", U_true[u], V_true[i]) + rng.normal(0, 0.1, 300)
    with pm.Model():
        U = pm.Normal("U", 0, 1, shape=(n_users, n_factors))
        V = pm.Normal("V", 0, 1, shape=(n_items, n_factors))
        sigma = pm.HalfNormal("sigma", 1)
        pm.Normal("y", pair_dot(U, V, u, i), sigma, observed=y)
        idata = pm.sample(
            draws=100,
            tune=200,
            chains=1,
            nuts_sampler="numpyro",
            random_seed=1,
            progressbar=False,
            compute_convergence_checks=False,
        )
    sigma_draws = np.asarray(idata.posterior["sigma"]).ravel()
    # noise sd 0.1 is recovered (a broken gradient would leave sigma near the data sd ~1.4)
    assert 0.05 < np.median(sigma_draws) < 0.2
